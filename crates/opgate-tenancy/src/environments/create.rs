use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};
use opgate_store::{new_id, Creation, Environment};

use crate::server::live_only;
use crate::types::{CreateEnvironmentInput, EnvironmentDetails};
use crate::Tenancy;

/// `environments.create`: a named environment in a workspace.
pub(crate) struct Create(pub Arc<Tenancy>);

impl Operation for Create {
    const META: OpMeta = OpMeta {
        id: "environments.create",
        scope: "environments:write",
        side_effect: SideEffect::Write,
        summary: "Create an environment (e.g. `production`) in a workspace; its name is unique there (live mode only).",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound, Code::Conflict];
    const EXAMPLE: &'static str = r#"{"name": "production"}"#;
    type Input = CreateEnvironmentInput;
    type Output = EnvironmentDetails;

    async fn call(
        &self,
        ctx: Context,
        input: CreateEnvironmentInput,
    ) -> Result<EnvironmentDetails, Error> {
        live_only(&ctx)?;
        let workspace_id = self.0.workspace_for_new(&ctx, input.workspace_id).await?;
        let environment = Environment {
            seq: 0,
            id: new_id("env"),
            org_id: ctx.principal.org.clone(),
            workspace_id,
            name: input.name,
            created_at: ctx.now().unix(),
        };
        ctx.set_target(&environment.id);
        let name = environment.name.clone();
        match self.0.store.insert_environment(environment).await? {
            Creation::Created(env) => Ok(env.into()),
            Creation::NameTaken => Err(Error::conflict(format!(
                "name: the workspace already has an environment named `{name}`"
            ))),
        }
    }
}
