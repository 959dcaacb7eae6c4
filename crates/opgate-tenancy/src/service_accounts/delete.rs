use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};

use opgate_store::Guarded;

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
        summary: "Delete a service account and revoke its keys (of either mode) in the same step; 403 if one holds a permission beyond the caller's (live mode only).",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound, Code::PermissionDenied];
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
        let caller = &ctx.principal.permissions;
        match self
            .0
            .store
            .delete_service_account(within(&ctx), id, ctx.now().unix(), caller, ctx.mode())
            .await?
        {
            Guarded::Done((account, revoked_keys)) => Ok(DeleteServiceAccountOutput {
                service_account: account.into(),
                revoked_keys,
            }),
            Guarded::NotFound => Err(super::not_found(id)),
            Guarded::Beyond(p) => Err(super::beyond(&p)),
        }
    }
}
