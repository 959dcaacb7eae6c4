use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};
use opgate_store::{new_id, ServiceAccount};

use crate::server::live_only;
use crate::types::{CreateServiceAccountInput, ServiceAccountDetails};
use crate::Tenancy;

/// `service_accounts.create`: a non-human owner of keys in a workspace.
pub(crate) struct Create(pub Arc<Tenancy>);

impl Operation for Create {
    const META: OpMeta = OpMeta {
        id: "service_accounts.create",
        scope: "service_accounts:write",
        side_effect: SideEffect::Write,
        summary: "Create a service account in a workspace; give its id to `api_keys.create` so that keys belong to it (live mode only).",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str =
        r#"{"name": "deploy-bot", "description": "Keys of the deploy pipeline."}"#;
    type Input = CreateServiceAccountInput;
    type Output = ServiceAccountDetails;

    async fn call(
        &self,
        ctx: Context,
        input: CreateServiceAccountInput,
    ) -> Result<ServiceAccountDetails, Error> {
        live_only(&ctx)?;
        let workspace_id = self.0.workspace_for_new(&ctx, input.workspace_id).await?;
        let now = ctx.now().unix();
        let account = ServiceAccount {
            seq: 0,
            id: new_id("sa"),
            org_id: ctx.principal.org.clone(),
            workspace_id,
            name: input.name,
            description: input.description,
            disabled_at: None,
            created_by: ctx.principal.id.clone(),
            created_at: now,
            updated_at: now,
        };
        ctx.set_target(&account.id);
        Ok(self.0.store.insert_service_account(account).await?.into())
    }
}
