use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};

use opgate_store::Redelivery;

use crate::server::owner;
use crate::types::{DeliveryDetails, RedeliverInput};
use crate::Webhooks;

/// `webhooks.redeliver`: sends a delivery again, in its endpoint's order.
pub(crate) struct Redeliver(pub Arc<Webhooks>);

impl Operation for Redeliver {
    const META: OpMeta = OpMeta {
        id: "webhooks.redeliver",
        scope: "webhooks:write",
        side_effect: SideEffect::Write,
        summary:
            "Send a delivery again now (same event, same `webhook-id`), delivered or failed alike.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound, Code::Conflict];
    const EXAMPLE: &'static str = r#"{"delivery_id": "whd_01jf3m8v6k2x9q4w7e5r1t0y8z"}"#;
    type Input = RedeliverInput;
    type Output = DeliveryDetails;

    async fn call(&self, ctx: Context, input: RedeliverInput) -> Result<DeliveryDetails, Error> {
        let owner = owner(&ctx)?;
        ctx.set_target(&input.delivery_id);
        match self
            .0
            .store
            .redeliver(&owner, &input.delivery_id, ctx.now().unix())
            .await?
        {
            Redelivery::Queued(delivery) => Ok((*delivery).into()),
            Redelivery::NotFound => Err(Error::not_found(format!(
                "delivery_id: no webhook delivery `{}` in this organization",
                input.delivery_id
            ))),
            Redelivery::Gone => Err(Error::conflict(
                "delivery_id: its webhook endpoint was deleted; there is nowhere to send it",
            )),
        }
    }
}
