use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};
use opgate_store::{Guarded, ServiceAccountPatch};

use crate::server::{live_only, within};
use crate::types::{ServiceAccountDetails, UpdateServiceAccountInput};
use crate::Tenancy;

/// `service_accounts.update`: renames, redescribes, disables or enables a service account.
pub(crate) struct Update(pub Arc<Tenancy>);

impl Operation for Update {
    const META: OpMeta = OpMeta {
        id: "service_accounts.update",
        scope: "service_accounts:write",
        side_effect: SideEffect::Write,
        summary: "Change a service account; `disabled: true` makes its keys fail from the very next request (live mode only).",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound, Code::PermissionDenied];
    const EXAMPLE: &'static str =
        r#"{"service_account_id": "sa_01jf3m8v6k2x9q4w7e5r1t0y8z", "disabled": true}"#;
    type Input = UpdateServiceAccountInput;
    type Output = ServiceAccountDetails;

    async fn call(
        &self,
        ctx: Context,
        input: UpdateServiceAccountInput,
    ) -> Result<ServiceAccountDetails, Error> {
        live_only(&ctx)?;
        let id = input.service_account_id;
        ctx.set_target(&id);
        let patch = ServiceAccountPatch {
            name: input.name,
            description: input.description,
            disabled: input.disabled,
        };
        let caller = &ctx.principal.permissions;
        match self
            .0
            .store
            .update_service_account(within(&ctx), &id, patch, ctx.now().unix(), caller)
            .await?
        {
            Guarded::Done(account) => Ok(account.into()),
            Guarded::NotFound => Err(super::not_found(&id)),
            Guarded::Beyond(p) => Err(super::beyond(&p)),
        }
    }
}
