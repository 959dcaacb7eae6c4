use std::sync::Arc;

use opgate_core::{Context, Error, OpMeta, Operation, SideEffect};
use opgate_store::{new_id, Workspace};

use crate::server::{live_only, org_wide_only};
use crate::types::{CreateWorkspaceInput, WorkspaceDetails};
use crate::Tenancy;

/// `workspaces.create`: a new workspace in the caller's organization.
pub(crate) struct Create(pub Arc<Tenancy>);

impl Operation for Create {
    const META: OpMeta = OpMeta {
        id: "workspaces.create",
        scope: "workspaces:write",
        side_effect: SideEffect::Write,
        summary:
            "Create a workspace in the organization (an organization-wide, live-mode caller only).",
    };
    const EXAMPLE: &'static str =
        r#"{"name": "Payments", "description": "The payments team's keys."}"#;
    type Input = CreateWorkspaceInput;
    type Output = WorkspaceDetails;

    async fn call(
        &self,
        ctx: Context,
        input: CreateWorkspaceInput,
    ) -> Result<WorkspaceDetails, Error> {
        live_only(&ctx)?;
        org_wide_only(&ctx, "creating a workspace")?;
        if let Some(ws) = &ctx.workspace {
            return Err(Error::permission_denied(format!(
                "creating a workspace is an organization-wide change, but X-Workspace-ID confines the call to \
                 workspace `{ws}`; send it without the header"
            )));
        }
        let now = ctx.now().unix();
        let workspace = Workspace {
            seq: 0,
            id: new_id("ws"),
            org_id: ctx.principal.org.clone(),
            name: input.name,
            description: input.description,
            is_default: false,
            created_at: now,
            updated_at: now,
        };
        ctx.set_target(&workspace.id);
        Ok(self.0.store.insert_workspace(workspace).await?.into())
    }
}
