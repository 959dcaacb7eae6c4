use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};

use crate::server::{not_found, owner};
use crate::types::{WebhookDetails, WebhookIdInput};
use crate::Webhooks;

/// `webhooks.delete`: removes an endpoint; its waiting deliveries are given up.
pub(crate) struct Delete(pub Arc<Webhooks>);

impl Operation for Delete {
    const META: OpMeta = OpMeta {
        id: "webhooks.delete",
        scope: "webhooks:write",
        side_effect: SideEffect::Destructive,
        summary: "Delete a webhook endpoint; its waiting deliveries fail.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"webhook_id": "wh_01jf3m8v6k2x9q4w7e5r1t0y8z"}"#;
    type Input = WebhookIdInput;
    type Output = WebhookDetails;

    async fn call(&self, ctx: Context, input: WebhookIdInput) -> Result<WebhookDetails, Error> {
        let owner = owner(&ctx)?;
        ctx.set_target(&input.webhook_id);
        let deleted = self
            .0
            .store
            .delete_webhook(&owner, &input.webhook_id, ctx.now().unix())
            .await?;
        deleted
            .map(Into::into)
            .ok_or_else(|| not_found(&input.webhook_id))
    }
}
