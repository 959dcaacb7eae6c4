//! `opgate workspaces create|list|get|update|delete`: one subcommand per `workspaces.*` operation, one flag per
//! input field, building the server's own input types. The workspace id may also be given positionally.

use std::io::{self, Write};

use clap::{Args, Subcommand};
use opgate_client::types::{
    CreateWorkspaceInput, ListWorkspacesInput, UpdateWorkspaceInput, WorkspaceDetails,
    WorkspaceIdInput,
};
use opgate_client::{CallOptions, Timestamp};

use super::{idempotent, nullable, one_id, output, print_call, tabulate, Connection, Exit};

/// `opgate workspaces ...`.
#[derive(Args)]
pub(crate) struct WorkspacesArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: WorkspacesCommand,
}

#[derive(Subcommand)]
enum WorkspacesCommand {
    /// Create a workspace (`workspaces.create`; an organization-wide, live-mode caller only).
    Create(CreateArgs),
    /// List the workspaces the caller sees, oldest first (`workspaces.list`).
    List(ListArgs),
    /// Show one workspace (`workspaces.get`).
    Get(GetArgs),
    /// Change a workspace's name or description (`workspaces.update`); omitted flags leave fields as they
    /// are.
    Update(UpdateArgs),
    /// Delete a workspace and its environments; refused while it has active keys or service accounts, and
    /// for the default workspace (`workspaces.delete`).
    Delete(DeleteArgs),
}

#[derive(Args)]
struct CreateArgs {
    /// Name of the workspace (1–128 characters).
    #[arg(long)]
    name: String,
    /// Free-text description.
    #[arg(long)]
    description: Option<String>,
    /// `Idempotency-Key` header: a retry with the same key and flags gets the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Args)]
struct ListArgs {
    /// Stop after this many workspaces; default: all.
    #[arg(long)]
    limit: Option<u32>,
    /// Start after the workspace with this id (the last id of a previous page).
    #[arg(long, value_name = "WS_ID")]
    after_id: Option<String>,
    /// Only workspaces created before the one with this id.
    #[arg(long, value_name = "WS_ID")]
    before_id: Option<String>,
}

/// The workspace a command acts on: `opgate workspaces get ws_01...` or `--workspace-id ws_01...` (the form
/// the API reference shows), exactly one of the two.
#[derive(Args)]
#[group(id = "id", required = true, multiple = false)]
struct WorkspaceId {
    /// Id of the workspace (`ws_...`).
    #[arg(value_name = "WS_ID")]
    workspace_id: Option<String>,
    /// Id of the workspace, as a flag (instead of WS_ID).
    #[arg(long = "workspace-id", value_name = "WS_ID")]
    workspace_id_flag: Option<String>,
}

impl WorkspaceId {
    fn into_id(self) -> String {
        one_id(self.workspace_id, self.workspace_id_flag)
    }
}

#[derive(Args)]
struct GetArgs {
    #[command(flatten)]
    workspace: WorkspaceId,
}

#[derive(Args)]
struct UpdateArgs {
    #[command(flatten)]
    workspace: WorkspaceId,
    /// New name.
    #[arg(long)]
    name: Option<String>,
    /// New description.
    #[arg(long, conflicts_with = "clear_description")]
    description: Option<String>,
    /// Remove the description (sends `null`).
    #[arg(long)]
    clear_description: bool,
    /// `Idempotency-Key` header: a retry with the same key and flags gets the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Args)]
struct DeleteArgs {
    #[command(flatten)]
    workspace: WorkspaceId,
    /// `Idempotency-Key` header: a retry with the same key gets the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// Runs `opgate workspaces ...`.
pub(crate) async fn run(args: WorkspacesArgs) -> Result<(), Exit> {
    let client = args.conn.client()?;
    let json = args.conn.json;
    let handle = |options: &CallOptions| match &options.idempotency_key {
        Some(k) => client.workspaces().idempotency_key(k),
        None => client.workspaces(),
    };
    match args.command {
        WorkspacesCommand::Create(a) => {
            let options = idempotent(a.idempotency_key);
            let input = CreateWorkspaceInput {
                name: a.name,
                description: a.description,
            };
            if json {
                return print_call(&client, "workspaces.create", &input, &options).await;
            }
            print_details(
                &mut io::stdout().lock(),
                &handle(&options).create(input).await?,
            )
        }
        WorkspacesCommand::List(a) => {
            let input = ListWorkspacesInput {
                limit: a.limit,
                after_id: a.after_id,
                before_id: a.before_id,
            };
            if json {
                return print_call(&client, "workspaces.list", &input, &CallOptions::default())
                    .await;
            }
            let now = Timestamp::now().unix();
            let items = client.workspaces().list(input).await?;
            tabulate(
                items,
                &["ID", "NAME", "DEFAULT", "CREATED", "DESCRIPTION"],
                |w| {
                    vec![
                        w.id,
                        w.name,
                        if w.is_default { "yes" } else { "no" }.to_owned(),
                        output::relative(w.created_at, now),
                        output::or(w.description, "-"),
                    ]
                },
            )
            .await
        }
        WorkspacesCommand::Get(a) => {
            let input = WorkspaceIdInput {
                workspace_id: a.workspace.into_id(),
            };
            if json {
                return print_call(&client, "workspaces.get", &input, &CallOptions::default())
                    .await;
            }
            print_details(
                &mut io::stdout().lock(),
                &client.workspaces().get(input).await?,
            )
        }
        WorkspacesCommand::Update(a) => {
            let options = idempotent(a.idempotency_key);
            let input = UpdateWorkspaceInput {
                workspace_id: a.workspace.into_id(),
                name: a.name,
                description: nullable(a.description, a.clear_description),
            };
            if json {
                return print_call(&client, "workspaces.update", &input, &options).await;
            }
            print_details(
                &mut io::stdout().lock(),
                &handle(&options).update(input).await?,
            )
        }
        WorkspacesCommand::Delete(a) => {
            let options = idempotent(a.idempotency_key);
            let input = WorkspaceIdInput {
                workspace_id: a.workspace.into_id(),
            };
            if json {
                return print_call(&client, "workspaces.delete", &input, &options).await;
            }
            print_details(
                &mut io::stdout().lock(),
                &handle(&options).delete(input).await?,
            )
        }
    }
}

/// A workspace as `field  value` lines.
fn print_details(out: &mut impl Write, w: &WorkspaceDetails) -> Result<(), Exit> {
    let now = Timestamp::now().unix();
    output::fields(
        out,
        &[
            ("id", w.id.clone()),
            ("name", w.name.clone()),
            ("description", output::or(w.description.as_deref(), "-")),
            ("is_default", w.is_default.to_string()),
            ("org_id", w.org_id.clone()),
            (
                "created_at",
                output::when_exact(Some(w.created_at), now, "-"),
            ),
            (
                "updated_at",
                output::when_exact(Some(w.updated_at), now, "-"),
            ),
        ],
    )?;
    Ok(())
}
