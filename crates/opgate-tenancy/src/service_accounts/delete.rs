use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};

use crate::server::{live_only, within};
use crate::types::{DeleteServiceAccountOutput, ServiceAccountIdInput};
use crate::Tenancy;

/// `service_accounts.delete`: removes a service account and revokes its keys.
pub(crate) struct Delete(pub Arc<Tenancy>);

impl Operation for Delete {
    const META: OpMeta = OpMeta {
        id: "service_accounts.delete",
        scope: "service_accounts:write",
        side_effect: SideEffect::Destructive,
        summary: "Delete a service account and revoke its keys (of either mode) in the same step (live mode only).",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"service_account_id": "sa_01jf3m8v6k2x9q4w7e5r1t0y8z"}"#;
    type Input = ServiceAccountIdInput;
    type Output = DeleteServiceAccountOutput;

    async fn call(
        &self,
        ctx: Context,
        input: ServiceAccountIdInput,
    ) -> Result<DeleteServiceAccountOutput, Error> {
        live_only(&ctx)?;
        let id = &input.service_account_id;
        ctx.set_target(id);
        let deleted = self
            .0
            .store
            .delete_service_account(within(&ctx), id, ctx.now().unix())
            .await?;
        let (account, revoked_keys) = deleted.ok_or_else(|| super::not_found(id))?;
        Ok(DeleteServiceAccountOutput {
            service_account: account.into(),
            revoked_keys,
        })
    }
}
