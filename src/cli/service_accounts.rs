//! `opgate service-accounts create|list|get|update|delete`: one subcommand per `service_accounts.*`
//! operation, one flag per input field, building the server's own input types. The service account id may
//! also be given positionally.

use std::io::{self, Write};

use clap::{Args, Subcommand};
use opgate_client::types::{
    CreateServiceAccountInput, ListServiceAccountsInput, ServiceAccountDetails,
    ServiceAccountIdInput, UpdateServiceAccountInput,
};
use opgate_client::{CallOptions, Timestamp};

use super::{idempotent, nullable, one_id, output, print_call, tabulate, Connection, Exit};

/// `opgate service-accounts ...`.
#[derive(Args)]
pub(crate) struct ServiceAccountsArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: ServiceAccountsCommand,
}

#[derive(Subcommand)]
enum ServiceAccountsCommand {
    /// Create a service account in a workspace; give its id to `api-keys create --service-account-id` so
    /// that keys belong to it (`service_accounts.create`; live mode only).
    Create(CreateArgs),
    /// List service accounts, of one workspace or of every workspace the caller sees, oldest first
    /// (`service_accounts.list`).
    List(ListArgs),
    /// Show one service account (`service_accounts.get`).
    Get(GetArgs),
    /// Rename, redescribe, disable or enable a service account; a disabled account's keys fail from the very
    /// next request (`service_accounts.update`).
    Update(UpdateArgs),
    /// Delete a service account and revoke its keys in the same step (`service_accounts.delete`).
    Delete(DeleteArgs),
}

#[derive(Args)]
struct CreateArgs {
    /// Name of the service account (1–128 characters).
    #[arg(long)]
    name: String,
    /// Free-text description.
    #[arg(long)]
    description: Option<String>,
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
    /// Only service accounts of this workspace (`ws_...`).
    #[arg(long, value_name = "WS_ID")]
    workspace_id: Option<String>,
    /// Stop after this many service accounts; default: all.
    #[arg(long)]
    limit: Option<u32>,
    /// Start after the service account with this id (the last id of a previous page).
    #[arg(long, value_name = "SA_ID")]
    after_id: Option<String>,
    /// Only service accounts created before the one with this id.
    #[arg(long, value_name = "SA_ID")]
    before_id: Option<String>,
}

/// The service account a command acts on: `opgate service-accounts get sa_01...` or `--service-account-id
/// sa_01...` (the form the API reference shows), exactly one of the two.
#[derive(Args)]
#[group(id = "id", required = true, multiple = false)]
struct ServiceAccountId {
    /// Id of the service account (`sa_...`).
    #[arg(value_name = "SA_ID")]
    service_account_id: Option<String>,
    /// Id of the service account, as a flag (instead of SA_ID).
    #[arg(long = "service-account-id", value_name = "SA_ID")]
    service_account_id_flag: Option<String>,
}

impl ServiceAccountId {
    fn into_id(self) -> String {
        one_id(self.service_account_id, self.service_account_id_flag)
    }
}

#[derive(Args)]
struct GetArgs {
    #[command(flatten)]
    account: ServiceAccountId,
}

#[derive(Args)]
struct UpdateArgs {
    #[command(flatten)]
    account: ServiceAccountId,
    /// New name.
    #[arg(long)]
    name: Option<String>,
    /// New description.
    #[arg(long, conflicts_with = "clear_description")]
    description: Option<String>,
    /// Remove the description (sends `null`).
    #[arg(long)]
    clear_description: bool,
    /// `true` (or the bare flag) disables the account: its keys fail with 401 from the next request on;
    /// `false` enables it again.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    disabled: Option<bool>,
    /// `Idempotency-Key` header: a retry with the same key and flags gets the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Args)]
struct DeleteArgs {
    #[command(flatten)]
    account: ServiceAccountId,
    /// `Idempotency-Key` header: a retry with the same key gets the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// Runs `opgate service-accounts ...`.
pub(crate) async fn run(args: ServiceAccountsArgs) -> Result<(), Exit> {
    let client = args.conn.client()?;
    let json = args.conn.json;
    let handle = |options: &CallOptions| match &options.idempotency_key {
        Some(k) => client.service_accounts().idempotency_key(k),
        None => client.service_accounts(),
    };
    match args.command {
        ServiceAccountsCommand::Create(a) => {
            let options = idempotent(a.idempotency_key);
            let input = CreateServiceAccountInput {
                name: a.name,
                description: a.description,
                workspace_id: a.workspace_id,
            };
            if json {
                return print_call(&client, "service_accounts.create", &input, &options).await;
            }
            let account = handle(&options).create(input).await?;
            print_details(&mut io::stdout().lock(), &account, &[])
        }
        ServiceAccountsCommand::List(a) => {
            let input = ListServiceAccountsInput {
                workspace_id: a.workspace_id,
                limit: a.limit,
                after_id: a.after_id,
                before_id: a.before_id,
            };
            if json {
                return print_call(
                    &client,
                    "service_accounts.list",
                    &input,
                    &CallOptions::default(),
                )
                .await;
            }
            let now = Timestamp::now().unix();
            let items = client.service_accounts().list(input).await?;
            tabulate(
                items,
                &["ID", "NAME", "WORKSPACE", "STATUS", "CREATED BY", "CREATED"],
                |a| {
                    vec![
                        a.id,
                        a.name,
                        a.workspace_id,
                        status(a.is_active).to_owned(),
                        a.created_by,
                        output::relative(a.created_at, now),
                    ]
                },
            )
            .await
        }
        ServiceAccountsCommand::Get(a) => {
            let input = ServiceAccountIdInput {
                service_account_id: a.account.into_id(),
            };
            if json {
                return print_call(
                    &client,
                    "service_accounts.get",
                    &input,
                    &CallOptions::default(),
                )
                .await;
            }
            let account = client.service_accounts().get(input).await?;
            print_details(&mut io::stdout().lock(), &account, &[])
        }
        ServiceAccountsCommand::Update(a) => {
            let options = idempotent(a.idempotency_key);
            let input = UpdateServiceAccountInput {
                service_account_id: a.account.into_id(),
                name: a.name,
                description: nullable(a.description, a.clear_description),
                disabled: a.disabled,
            };
            if json {
                return print_call(&client, "service_accounts.update", &input, &options).await;
            }
            let account = handle(&options).update(input).await?;
            print_details(&mut io::stdout().lock(), &account, &[])
        }
        ServiceAccountsCommand::Delete(a) => {
            let options = idempotent(a.idempotency_key);
            let input = ServiceAccountIdInput {
                service_account_id: a.account.into_id(),
            };
            if json {
                return print_call(&client, "service_accounts.delete", &input, &options).await;
            }
            let deleted = handle(&options).delete(input).await?;
            print_details(
                &mut io::stdout().lock(),
                &deleted.service_account,
                &[("revoked_keys", deleted.revoked_keys.to_string())],
            )
        }
    }
}

/// `active` or `disabled`, for the table.
fn status(is_active: bool) -> &'static str {
    if is_active {
        "active"
    } else {
        "disabled"
    }
}

/// A service account as `field  value` lines, followed by `last` (what a deletion did).
fn print_details(
    out: &mut impl Write,
    a: &ServiceAccountDetails,
    last: &[(&str, String)],
) -> Result<(), Exit> {
    let now = Timestamp::now().unix();
    let mut pairs: Vec<(&str, String)> = vec![
        ("id", a.id.clone()),
        ("name", a.name.clone()),
        ("description", output::or(a.description.as_deref(), "-")),
        ("is_active", a.is_active.to_string()),
        ("workspace_id", a.workspace_id.clone()),
        ("org_id", a.org_id.clone()),
        ("created_by", a.created_by.clone()),
        (
            "created_at",
            output::when_exact(Some(a.created_at), now, "-"),
        ),
        (
            "updated_at",
            output::when_exact(Some(a.updated_at), now, "-"),
        ),
    ];
    if a.disabled_at.is_some() {
        pairs.push(("disabled_at", output::when_exact(a.disabled_at, now, "-")));
    }
    pairs.extend_from_slice(last);
    output::fields(out, &pairs)?;
    Ok(())
}
