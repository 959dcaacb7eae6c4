use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};
use opgate_store::WebhookPatch;

use crate::server::{not_found, owner, type_names};
use crate::types::{UpdateWebhookInput, WebhookDetails};
use crate::Webhooks;

/// `webhooks.update`: changes an endpoint's URL, event types or description, or disables or enables it.
pub(crate) struct Update(pub Arc<Webhooks>);

impl Operation for Update {
    const META: OpMeta = OpMeta {
        id: "webhooks.update",
        scope: "webhooks:write",
        side_effect: SideEffect::Write,
        summary: "Change a webhook endpoint's URL, event types or description; `enabled: false` holds its events, `enabled: true` delivers them again in order.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str =
        r#"{"webhook_id": "wh_01jf3m8v6k2x9q4w7e5r1t0y8z", "enabled": true}"#;
    type Input = UpdateWebhookInput;
    type Output = WebhookDetails;

    async fn call(&self, ctx: Context, input: UpdateWebhookInput) -> Result<WebhookDetails, Error> {
        let owner = owner(&ctx)?;
        ctx.set_target(&input.webhook_id);
        let url = input.url.map(|u| self.0.check_url(&u)).transpose()?;
        let patch = WebhookPatch {
            url,
            description: input.description,
            event_types: input.event_types.as_deref().map(type_names),
            enabled: input.enabled,
            secret_sealed: None,
        };
        let updated = self
            .0
            .store
            .update_webhook(&owner, &input.webhook_id, patch, ctx.now().unix())
            .await?;
        updated
            .map(Into::into)
            .ok_or_else(|| not_found(&input.webhook_id))
    }
}
