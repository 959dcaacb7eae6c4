use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};
use opgate_store::WebhookPatch;

use crate::server::{not_found, owner};
use crate::types::{WebhookIdInput, WebhookWithSecret};
use crate::Webhooks;

/// `webhooks.rotate_secret`: a new signing secret for an endpoint, shown once; the old one signs nothing more.
pub(crate) struct RotateSecret(pub Arc<Webhooks>);

impl Operation for RotateSecret {
    const META: OpMeta = OpMeta {
        id: "webhooks.rotate_secret",
        scope: "webhooks:write",
        side_effect: SideEffect::Export,
        summary: "Replace a webhook endpoint's signing secret; the new one is returned only in this response and signs every delivery from now on.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"webhook_id": "wh_01jf3m8v6k2x9q4w7e5r1t0y8z"}"#;
    type Input = WebhookIdInput;
    type Output = WebhookWithSecret;

    async fn call(&self, ctx: Context, input: WebhookIdInput) -> Result<WebhookWithSecret, Error> {
        let owner = owner(&ctx)?;
        ctx.set_target(&input.webhook_id);
        let (secret, sealed) = self.0.new_secret();
        let patch = WebhookPatch {
            secret_sealed: Some(sealed),
            ..WebhookPatch::default()
        };
        let updated = self
            .0
            .store
            .update_webhook(&owner, &input.webhook_id, patch, ctx.now().unix())
            .await?
            .ok_or_else(|| not_found(&input.webhook_id))?;
        Ok(WebhookWithSecret {
            secret,
            webhook: updated.into(),
        })
    }
}
