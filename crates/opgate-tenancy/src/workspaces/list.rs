use std::sync::Arc;

use opgate_core::{Code, Context, Error, Items, OpMeta, SideEffect, StreamOperation};
use opgate_store::Workspace;

use crate::server::{list, within, Paging};
use crate::types::{ListWorkspacesInput, WorkspaceDetails};
use crate::Tenancy;

/// `workspaces.list`: the workspaces the caller sees, oldest first.
pub(crate) struct List(pub Arc<Tenancy>);

impl StreamOperation for List {
    const META: OpMeta = OpMeta {
        id: "workspaces.list",
        scope: "workspaces:read",
        side_effect: SideEffect::Read,
        summary: "List the organization's workspaces (a workspace key sees its own), oldest first, as an NDJSON stream.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"limit": 50}"#;
    type Input = ListWorkspacesInput;
    type Item = WorkspaceDetails;

    async fn call(
        &self,
        ctx: Context,
        input: ListWorkspacesInput,
    ) -> Result<Items<WorkspaceDetails>, Error> {
        // Every organization has its default workspace, including those from before workspaces existed.
        if ctx.workspace.is_none() {
            self.0
                .store
                .default_workspace(&ctx.principal.org, ctx.now().unix())
                .await?;
        }
        let paging = Paging {
            limit: input.limit,
            after_id: input.after_id,
            before_id: input.before_id,
        };
        list::<Workspace, _>(&self.0, Some(within(&ctx)), paging).await
    }
}
