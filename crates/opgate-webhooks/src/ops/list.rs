use std::sync::Arc;

use futures_util::{stream, StreamExt};
use opgate_core::{Code, Context, Error, Items, OpMeta, SideEffect, StreamOperation};

use crate::server::{not_found, owner};
use crate::types::{ListWebhooksInput, WebhookDetails};
use crate::Webhooks;

/// Endpoints read per query.
const PAGE_SIZE: usize = 500;

/// `webhooks.list`: the organization's endpoints of the caller's mode, oldest first.
pub(crate) struct List(pub Arc<Webhooks>);

impl StreamOperation for List {
    const META: OpMeta = OpMeta {
        id: "webhooks.list",
        scope: "webhooks:read",
        side_effect: SideEffect::Read,
        summary: "List the organization's webhook endpoints of the caller's mode, oldest first, as an NDJSON stream.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"limit": 50}"#;
    type Input = ListWebhooksInput;
    type Item = WebhookDetails;

    async fn call(
        &self,
        ctx: Context,
        input: ListWebhooksInput,
    ) -> Result<Items<WebhookDetails>, Error> {
        let owner = owner(&ctx)?;
        let store = Arc::clone(&self.0.store);
        let after = match &input.after_id {
            None => 0,
            Some(id) => {
                store
                    .get_webhook(&owner, id)
                    .await?
                    .ok_or_else(|| not_found(id))?
                    .seq
            }
        };
        let remaining = input.limit.map_or(usize::MAX, |l| l as usize);
        let pages = stream::unfold(Some((after, remaining)), move |state| {
            let (store, owner) = (Arc::clone(&store), owner.clone());
            async move {
                let (after, remaining) = state?;
                if remaining == 0 {
                    return None;
                }
                let limit = remaining.min(PAGE_SIZE);
                match store.list_webhooks(&owner, after, limit).await {
                    Err(e) => Some((vec![Err(Error::from(e))], None)),
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        let next = (rows.len() == limit)
                            .then(|| rows.last().map(|r| (r.seq, remaining - limit)))
                            .flatten();
                        Some((rows.into_iter().map(|r| Ok(r.into())).collect(), next))
                    }
                }
            }
        });
        Ok(Box::pin(pages.flat_map(stream::iter)))
    }
}
