use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};
use opgate_store::WorkspacePatch;

use crate::server::{live_only, within};
use crate::types::{UpdateWorkspaceInput, WorkspaceDetails};
use crate::Tenancy;

/// `workspaces.update`: renames or redescribes a workspace.
pub(crate) struct Update(pub Arc<Tenancy>);

impl Operation for Update {
    const META: OpMeta = OpMeta {
        id: "workspaces.update",
        scope: "workspaces:write",
        side_effect: SideEffect::Write,
        summary: "Change a workspace's name or description (live mode only).",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str =
        r#"{"workspace_id": "ws_01jf3m8v6k2x9q4w7e5r1t0y8z", "name": "Payments (EU)"}"#;
    type Input = UpdateWorkspaceInput;
    type Output = WorkspaceDetails;

    async fn call(
        &self,
        ctx: Context,
        input: UpdateWorkspaceInput,
    ) -> Result<WorkspaceDetails, Error> {
        live_only(&ctx)?;
        ctx.set_target(&input.workspace_id);
        let patch = WorkspacePatch {
            name: input.name,
            description: input.description,
        };
        let updated = self
            .0
            .store
            .update_workspace(within(&ctx), &input.workspace_id, patch, ctx.now().unix())
            .await?;
        updated
            .map(Into::into)
            .ok_or_else(|| super::not_found(&input.workspace_id))
    }
}
