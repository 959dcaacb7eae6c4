use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};

use crate::server::within;
use crate::types::{WorkspaceDetails, WorkspaceIdInput};
use crate::Tenancy;

/// `workspaces.get`: one workspace.
pub(crate) struct Get(pub Arc<Tenancy>);

impl Operation for Get {
    const META: OpMeta = OpMeta {
        id: "workspaces.get",
        scope: "workspaces:read",
        side_effect: SideEffect::Read,
        summary: "Get one workspace.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"workspace_id": "ws_01jf3m8v6k2x9q4w7e5r1t0y8z"}"#;
    type Input = WorkspaceIdInput;
    type Output = WorkspaceDetails;

    async fn call(&self, ctx: Context, input: WorkspaceIdInput) -> Result<WorkspaceDetails, Error> {
        ctx.set_target(&input.workspace_id);
        let found = self
            .0
            .store
            .get_workspace(within(&ctx), &input.workspace_id)
            .await?;
        found
            .map(Into::into)
            .ok_or_else(|| super::not_found(&input.workspace_id))
    }
}
