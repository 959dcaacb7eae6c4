use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};

use crate::server::{not_found, owner};
use crate::types::{WebhookDetails, WebhookIdInput};
use crate::Webhooks;

/// `webhooks.get`: one endpoint.
pub(crate) struct Get(pub Arc<Webhooks>);

impl Operation for Get {
    const META: OpMeta = OpMeta {
        id: "webhooks.get",
        scope: "webhooks:read",
        side_effect: SideEffect::Read,
        summary: "Get one webhook endpoint (never its secret).",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"webhook_id": "wh_01jf3m8v6k2x9q4w7e5r1t0y8z"}"#;
    type Input = WebhookIdInput;
    type Output = WebhookDetails;

    async fn call(&self, ctx: Context, input: WebhookIdInput) -> Result<WebhookDetails, Error> {
        let owner = owner(&ctx)?;
        ctx.set_target(&input.webhook_id);
        let found = self.0.store.get_webhook(&owner, &input.webhook_id).await?;
        found
            .map(Into::into)
            .ok_or_else(|| not_found(&input.webhook_id))
    }
}
