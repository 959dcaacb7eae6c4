//! `opgate environments create|list|delete`: one subcommand per `environments.*` operation, one flag per
//! input field, building the server's own input types. The environment id may also be given positionally.

use std::io::{self, Write};

use clap::{Args, Subcommand};
use opgate_client::types::{
    CreateEnvironmentInput, EnvironmentDetails, EnvironmentIdInput, ListEnvironmentsInput,
};
use opgate_client::{CallOptions, Timestamp};

use super::{idempotent, one_id, output, print_call, tabulate, Connection, Exit};

/// `opgate environments ...`.
#[derive(Args)]
pub(crate) struct EnvironmentsArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: EnvironmentsCommand,
}

#[derive(Subcommand)]
enum EnvironmentsCommand {
    /// Create an environment (e.g. `production`) in a workspace; its name is unique there
    /// (`environments.create`; live mode only).
    Create(CreateArgs),
    /// List environments, of one workspace or of every workspace the caller sees, oldest first
    /// (`environments.list`).
    List(ListArgs),
    /// Delete an environment; refused while active keys are bound to it (`environments.delete`).
    Delete(DeleteArgs),
}

#[derive(Args)]
struct CreateArgs {
    /// Name, unique within the workspace: lowercase letters, digits, `-` and `_` (e.g. `production`).
    #[arg(long)]
    name: String,
    /// The workspace (`ws_...`); default: the one the call works in (`--workspace`), else the organization's
    /// default workspace.
    #[arg(long, value_name = "WS_ID")]
    workspace_id: Option<String>,
    /// `Idempotency-Key` header: a retry with the same key and flags gets the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Args)]
struct ListArgs {
    /// Only environments of this workspace (`ws_...`).
    #[arg(long, value_name = "WS_ID")]
    workspace_id: Option<String>,
    /// Stop after this many environments; default: all.
    #[arg(long)]
    limit: Option<u32>,
    /// Start after the environment with this id (the last id of a previous page).
    #[arg(long, value_name = "ENV_ID")]
    after_id: Option<String>,
    /// Only environments created before the one with this id.
    #[arg(long, value_name = "ENV_ID")]
    before_id: Option<String>,
}

/// The environment a command acts on: `opgate environments delete env_01...` or `--environment-id env_01...`
/// (the form the API reference shows), exactly one of the two.
#[derive(Args)]
#[group(id = "id", required = true, multiple = false)]
struct EnvironmentId {
    /// Id of the environment (`env_...`).
    #[arg(value_name = "ENV_ID")]
    environment_id: Option<String>,
    /// Id of the environment, as a flag (instead of ENV_ID).
    #[arg(long = "environment-id", value_name = "ENV_ID")]
    environment_id_flag: Option<String>,
}

#[derive(Args)]
struct DeleteArgs {
    #[command(flatten)]
    environment: EnvironmentId,
    /// `Idempotency-Key` header: a retry with the same key gets the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// Runs `opgate environments ...`.
pub(crate) async fn run(args: EnvironmentsArgs) -> Result<(), Exit> {
    let client = args.conn.client()?;
    let json = args.conn.json;
    let handle = |options: &CallOptions| match &options.idempotency_key {
        Some(k) => client.environments().idempotency_key(k),
        None => client.environments(),
    };
    match args.command {
        EnvironmentsCommand::Create(a) => {
            let options = idempotent(a.idempotency_key);
            let input = CreateEnvironmentInput {
                name: a.name,
                workspace_id: a.workspace_id,
            };
            if json {
                return print_call(&client, "environments.create", &input, &options).await;
            }
            print_details(
                &mut io::stdout().lock(),
                &handle(&options).create(input).await?,
            )
        }
        EnvironmentsCommand::List(a) => {
            let input = ListEnvironmentsInput {
                workspace_id: a.workspace_id,
                limit: a.limit,
                after_id: a.after_id,
                before_id: a.before_id,
            };
            if json {
                return print_call(
                    &client,
                    "environments.list",
                    &input,
                    &CallOptions::default(),
                )
                .await;
            }
            let now = Timestamp::now().unix();
            let items = client.environments().list(input).await?;
            tabulate(items, &["ID", "NAME", "WORKSPACE", "CREATED"], |e| {
                vec![
                    e.id,
                    e.name,
                    e.workspace_id,
                    output::relative(e.created_at, now),
                ]
            })
            .await
        }
        EnvironmentsCommand::Delete(a) => {
            let options = idempotent(a.idempotency_key);
            let input = EnvironmentIdInput {
                environment_id: one_id(
                    a.environment.environment_id,
                    a.environment.environment_id_flag,
                ),
            };
            if json {
                return print_call(&client, "environments.delete", &input, &options).await;
            }
            print_details(
                &mut io::stdout().lock(),
                &handle(&options).delete(input).await?,
            )
        }
    }
}

/// An environment as `field  value` lines.
fn print_details(out: &mut impl Write, e: &EnvironmentDetails) -> Result<(), Exit> {
    let now = Timestamp::now().unix();
    output::fields(
        out,
        &[
            ("id", e.id.clone()),
            ("name", e.name.clone()),
            ("workspace_id", e.workspace_id.clone()),
            ("org_id", e.org_id.clone()),
            (
                "created_at",
                output::when_exact(Some(e.created_at), now, "-"),
            ),
        ],
    )?;
    Ok(())
}
