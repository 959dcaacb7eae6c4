use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};
use opgate_store::{new_id, Webhook};

use crate::server::{owner, type_names};
use crate::types::{CreateWebhookInput, WebhookWithSecret};
use crate::Webhooks;

/// `webhooks.create`: a new endpoint and its signing secret, shown once.
pub(crate) struct Create(pub Arc<Webhooks>);

impl Operation for Create {
    const META: OpMeta = OpMeta {
        id: "webhooks.create",
        scope: "webhooks:write",
        side_effect: SideEffect::Export,
        summary: "Create a webhook endpoint for the organization's events of the caller's mode; its signing secret is returned only in this response.",
    };
    const ERRORS: &'static [Code] = &[Code::Conflict];
    const EXAMPLE: &'static str = r#"{"url": "https://hooks.example.com/opgate", "event_types": ["api_key.created", "api_key.revoked"], "description": "Key changes to the security team."}"#;
    type Input = CreateWebhookInput;
    type Output = WebhookWithSecret;

    async fn call(
        &self,
        ctx: Context,
        input: CreateWebhookInput,
    ) -> Result<WebhookWithSecret, Error> {
        let owner = owner(&ctx)?;
        let url = self.0.check_url(&input.url)?;
        let (secret, sealed) = self.0.new_secret();
        let now = ctx.now().unix();
        let types = type_names(&input.event_types.unwrap_or_default());
        let webhook = Webhook {
            seq: 0,
            id: new_id("wh"),
            org_id: owner.org_id,
            mode: owner.mode,
            url,
            description: input.description,
            event_types: types,
            secret_sealed: sealed,
            disabled_at: None,
            disabled_reason: None,
            created_by: ctx.principal.id.clone(),
            created_at: now,
            updated_at: now,
        };
        ctx.set_target(&webhook.id);
        let stored = self.0.store.insert_webhook(webhook).await?;
        Ok(WebhookWithSecret {
            secret,
            webhook: stored.into(),
        })
    }
}
