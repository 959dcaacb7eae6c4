use std::sync::Arc;

use futures_util::{stream, StreamExt};
use opgate_core::{Code, Context, Error, Items, OpMeta, SideEffect, StreamOperation};
use opgate_store::{DeliveryPage, DeliveryState};

use crate::server::owner;
use crate::types::{DeliveryDetails, DeliveryStatus, ListDeliveriesInput};
use crate::Webhooks;

/// Deliveries read per query.
const PAGE_SIZE: usize = 500;
/// Deliveries returned when the request sets no `limit`.
const DEFAULT_LIMIT: u32 = 100;

/// `webhooks.deliveries`: the deliveries of the organization's endpoints, newest first.
pub(crate) struct Deliveries(pub Arc<Webhooks>);

impl StreamOperation for Deliveries {
    const META: OpMeta = OpMeta {
        id: "webhooks.deliveries",
        scope: "webhooks:read",
        side_effect: SideEffect::Read,
        summary: "Stream webhook deliveries, newest first: status, last answer and every attempt with its latency (never a payload or secret).",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"status": "failed", "limit": 20}"#;
    type Input = ListDeliveriesInput;
    type Item = DeliveryDetails;

    async fn call(
        &self,
        ctx: Context,
        input: ListDeliveriesInput,
    ) -> Result<Items<DeliveryDetails>, Error> {
        let owner = owner(&ctx)?;
        let store = Arc::clone(&self.0.store);
        let before = match &input.before_id {
            None => None,
            Some(id) => Some(
                store
                    .get_delivery(&owner, id)
                    .await?
                    .ok_or_else(|| {
                        Error::not_found(format!(
                            "before_id: no webhook delivery `{id}` in this organization"
                        ))
                    })?
                    .seq,
            ),
        };
        let state = input.status.map(|s| match s {
            DeliveryStatus::Pending => DeliveryState::Pending,
            DeliveryStatus::Delivered => DeliveryState::Delivered,
            DeliveryStatus::Failed => DeliveryState::Failed,
        });
        let webhook_id = input.webhook_id;
        let remaining = input.limit.unwrap_or(DEFAULT_LIMIT) as usize;
        let pages = stream::unfold(Some((before, remaining)), move |cursor| {
            let (store, owner, webhook_id) =
                (Arc::clone(&store), owner.clone(), webhook_id.clone());
            async move {
                let (before_seq, remaining) = cursor?;
                if remaining == 0 {
                    return None;
                }
                let limit = remaining.min(PAGE_SIZE);
                let page = DeliveryPage {
                    owner,
                    webhook_id,
                    before_seq,
                    state,
                    limit,
                };
                match store.list_deliveries(page).await {
                    Err(e) => Some((vec![Err(Error::from(e))], None)),
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        let next = (rows.len() == limit)
                            .then(|| rows.last().map(|r| (Some(r.seq), remaining - limit)))
                            .flatten();
                        Some((rows.into_iter().map(|r| Ok(r.into())).collect(), next))
                    }
                }
            }
        });
        Ok(Box::pin(pages.flat_map(stream::iter)))
    }
}
