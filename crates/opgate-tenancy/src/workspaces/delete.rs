use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};
use opgate_store::Removal;

use crate::server::{live_only, org_wide_only, within};
use crate::types::{WorkspaceDetails, WorkspaceIdInput};
use crate::Tenancy;

/// `workspaces.delete`: removes an empty workspace and its environments.
pub(crate) struct Delete(pub Arc<Tenancy>);

impl Operation for Delete {
    const META: OpMeta = OpMeta {
        id: "workspaces.delete",
        scope: "workspaces:write",
        side_effect: SideEffect::Destructive,
        summary: "Delete a workspace and its environments; 409 while it has active keys (of either mode) or service accounts, and for the default workspace.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound, Code::Conflict];
    const EXAMPLE: &'static str = r#"{"workspace_id": "ws_01jf3m8v6k2x9q4w7e5r1t0y8z"}"#;
    type Input = WorkspaceIdInput;
    type Output = WorkspaceDetails;

    async fn call(&self, ctx: Context, input: WorkspaceIdInput) -> Result<WorkspaceDetails, Error> {
        live_only(&ctx)?;
        org_wide_only(&ctx, "deleting a workspace")?;
        ctx.set_target(&input.workspace_id);
        match self
            .0
            .store
            .delete_workspace(within(&ctx), &input.workspace_id, ctx.now().unix())
            .await?
        {
            Removal::Removed(w) => Ok(w.into()),
            Removal::NotFound => Err(super::not_found(&input.workspace_id)),
            Removal::InUse(why) => Err(Error::conflict(format!("workspace_id: {why}"))),
        }
    }
}
