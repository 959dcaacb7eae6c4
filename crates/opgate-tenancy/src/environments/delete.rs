use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};
use opgate_store::Removal;

use crate::server::{live_only, within};
use crate::types::{EnvironmentDetails, EnvironmentIdInput};
use crate::Tenancy;

/// `environments.delete`: removes an environment no active key is bound to.
pub(crate) struct Delete(pub Arc<Tenancy>);

impl Operation for Delete {
    const META: OpMeta = OpMeta {
        id: "environments.delete",
        scope: "environments:write",
        side_effect: SideEffect::Destructive,
        summary: "Delete an environment; 409 while active keys (of either mode) are bound to it (live mode only).",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound, Code::Conflict];
    const EXAMPLE: &'static str = r#"{"environment_id": "env_01jf3m8v6k2x9q4w7e5r1t0y8z"}"#;
    type Input = EnvironmentIdInput;
    type Output = EnvironmentDetails;

    async fn call(
        &self,
        ctx: Context,
        input: EnvironmentIdInput,
    ) -> Result<EnvironmentDetails, Error> {
        live_only(&ctx)?;
        ctx.set_target(&input.environment_id);
        let id = &input.environment_id;
        match self
            .0
            .store
            .delete_environment(within(&ctx), id, ctx.now().unix())
            .await?
        {
            Removal::Removed(env) => Ok(env.into()),
            Removal::NotFound => Err(Error::not_found(format!(
                "environment_id: no environment `{id}` in this organization"
            ))),
            Removal::InUse(why) => Err(Error::conflict(format!("environment_id: {why}"))),
        }
    }
}
