//! `opgate api-keys create|list|get|update|rotate|revoke`: one subcommand per `api_keys.*` operation, one
//! flag per input field (`rate_limit` is `--rate-limit`), building the server's own input types. The key id
//! may also be given positionally. Permissions show the presets `*:read` and `*:write` as `read` and
//! `read-write`, and `--permissions` takes those names too.

use std::io::{self, Write};

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use opgate_client::types::{
    CreateKeyInput, CreateKeyOutput, GetKeyInput, KeyDetails, KeyType, ListKeysInput, Mode,
    RevokeKeyInput, RotateKeyInput, RotateKeyOutput, Status, UpdateKeyInput,
};
use opgate_client::{CallOptions, Timestamp};

use super::output::{self, Table};
use super::{
    body, non_empty, nullable, permissions, print_raw, warn_secret_once, Connection, Exit,
};

/// `opgate api-keys ...`.
#[derive(Args)]
pub(crate) struct ApiKeysArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: ApiKeysCommand,
}

#[derive(Subcommand)]
enum ApiKeysCommand {
    /// Create a key (`api_keys.create`); its secret is printed this once.
    Create(CreateArgs),
    /// List the organization's keys, oldest first (`api_keys.list`).
    List(ListArgs),
    /// Show one key's metadata (`api_keys.get`).
    Get(GetArgs),
    /// Change a key's name, description, rate limit or allowed IPs, or narrow its permissions
    /// (`api_keys.update`); omitted flags leave fields as they are.
    Update(UpdateArgs),
    /// Replace a key with a new one; the old one keeps working for the grace period (`api_keys.rotate`).
    Rotate(RotateArgs),
    /// Revoke a key; it fails from the very next request (`api_keys.revoke`).
    Revoke(RevokeArgs),
}

#[derive(Args)]
struct CreateArgs {
    /// Name of the key (1–128 characters).
    #[arg(long)]
    name: String,
    /// Comma-separated scopes, e.g. `api_keys:read,api_keys:write`, or the presets `read` (`*:read`) and
    /// `read-write` (`*:write`); default: the caller's own.
    #[arg(long, value_delimiter = ',')]
    permissions: Option<Vec<String>>,
    /// Requests per minute (1–1000000); default: the server's.
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Days until the key expires (1–3650); default: never.
    #[arg(long)]
    expires_in_days: Option<u32>,
    /// Comma-separated IP addresses or CIDR ranges the key may be used from; default: any.
    #[arg(long, value_delimiter = ',')]
    allowed_ips: Option<Vec<String>>,
    /// Free-text description.
    #[arg(long)]
    description: Option<String>,
    /// `workspace` (confined to one workspace; the default) or `admin` (organization-wide; only an
    /// organization-wide caller may create one).
    #[arg(long, value_parser = key_type_parser())]
    key_type: Option<KeyType>,
    /// Workspace of a workspace key (`ws_...`); default: the caller's, else `--workspace`, else that of
    /// `--environment-id` or `--service-account-id`, else the organization's default workspace.
    #[arg(long, value_name = "WS_ID")]
    workspace_id: Option<String>,
    /// Bind the key to this environment of its workspace (`env_...`).
    #[arg(long, value_name = "ENV_ID")]
    environment_id: Option<String>,
    /// `live` or `test`; default: the caller's (a test caller cannot create a live key).
    #[arg(long, value_parser = mode_parser())]
    mode: Option<Mode>,
    /// The (enabled) service account of the key's workspace the key belongs to (`sa_...`).
    #[arg(long, value_name = "SA_ID")]
    service_account_id: Option<String>,
    /// Rotate the key every this many days (1–365); its new secret goes to --rotation-webhook-url.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=365))]
    rotation_interval_days: Option<u32>,
    /// Where scheduled rotations deliver the new secret (https://; signed with the key's rotation secret).
    #[arg(long)]
    rotation_webhook_url: Option<String>,
}

#[derive(Args)]
struct ListArgs {
    /// Stop after this many keys; default: all.
    #[arg(long)]
    limit: Option<u32>,
    /// Start after the key with this id (the last id of a previous page).
    #[arg(long)]
    after_id: Option<String>,
    /// Only keys created before the key with this id (paging backwards; still oldest first).
    #[arg(long)]
    before_id: Option<String>,
    /// Only keys of this workspace (`ws_...`).
    #[arg(long, value_name = "WS_ID")]
    workspace_id: Option<String>,
    /// Only keys bound to this environment (`env_...`).
    #[arg(long, value_name = "ENV_ID")]
    environment_id: Option<String>,
    /// Only keys of this service account (`sa_...`).
    #[arg(long, value_name = "SA_ID")]
    service_account_id: Option<String>,
    /// Only keys created by this principal id (a key id or a session subject).
    #[arg(long)]
    created_by: Option<String>,
    /// Include revoked keys.
    #[arg(long)]
    include_revoked: bool,
    /// Only keys with this status.
    #[arg(long, value_parser = status_parser())]
    status: Option<Status>,
}

/// The key a command acts on: `opgate api-keys get key_01...` or `--key-id key_01...` (the form the API
/// reference shows), exactly one of the two.
#[derive(Args)]
#[group(id = "key", required = true, multiple = false)]
struct KeyId {
    /// Id of the key (`key_...`).
    #[arg(value_name = "KEY_ID")]
    key_id: Option<String>,
    /// Id of the key, as a flag (instead of KEY_ID).
    #[arg(long = "key-id", value_name = "KEY_ID")]
    key_id_flag: Option<String>,
}

impl KeyId {
    fn into_id(self) -> String {
        self.key_id
            .or(self.key_id_flag)
            .expect("clap requires one of the two")
    }
}

#[derive(Args)]
struct GetArgs {
    #[command(flatten)]
    key: KeyId,
}

#[derive(Args)]
struct UpdateArgs {
    #[command(flatten)]
    key: KeyId,
    /// New name.
    #[arg(long)]
    name: Option<String>,
    /// New description.
    #[arg(long, conflicts_with = "clear_description")]
    description: Option<String>,
    /// Remove the description (sends `null`).
    #[arg(long)]
    clear_description: bool,
    /// New rate limit in requests per minute.
    #[arg(long, conflicts_with = "clear_rate_limit")]
    rate_limit: Option<u32>,
    /// Remove the key's own rate limit; the server default applies (sends `null`).
    #[arg(long)]
    clear_rate_limit: bool,
    /// New comma-separated allow-list of IP addresses and CIDR ranges.
    #[arg(long, value_delimiter = ',', conflicts_with = "clear_allowed_ips")]
    allowed_ips: Option<Vec<String>>,
    /// Allow any address again (sends `null`).
    #[arg(long)]
    clear_allowed_ips: bool,
    /// New comma-separated permissions (or `read` / `read-write`); each must be held by the key already (keys
    /// can only be narrowed).
    #[arg(long, value_delimiter = ',')]
    permissions: Option<Vec<String>>,
    /// Rotate every this many days (1–365), the next rotation that many days from now.
    #[arg(long, conflicts_with = "clear_rotation_interval_days", value_parser = clap::value_parser!(u32).range(1..=365))]
    rotation_interval_days: Option<u32>,
    /// Stop scheduled rotation (sends `null`).
    #[arg(long)]
    clear_rotation_interval_days: bool,
    /// New rotation webhook URL.
    #[arg(long, conflicts_with = "clear_rotation_webhook_url")]
    rotation_webhook_url: Option<String>,
    /// Remove the rotation webhook URL (sends `null`; stop scheduled rotation first).
    #[arg(long)]
    clear_rotation_webhook_url: bool,
    /// `Idempotency-Key` header: a retry with the same key and flags gets the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Args)]
struct RotateArgs {
    #[command(flatten)]
    key: KeyId,
    /// Seconds the old key keeps working (0–2592000); default 86400.
    #[arg(long)]
    grace_period_seconds: Option<u32>,
}

#[derive(Args)]
struct RevokeArgs {
    #[command(flatten)]
    key: KeyId,
    /// `Idempotency-Key` header: a retry with the same key gets the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `--status`: one of the wire names, offered in help and completions.
fn status_parser() -> impl TypedValueParser<Value = Status> {
    PossibleValuesParser::new(Status::ALL.map(Status::as_str)).map(|name| {
        Status::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .expect("a possible value")
    })
}

/// `--key-type`: `admin` or `workspace`, offered in help and completions.
fn key_type_parser() -> impl TypedValueParser<Value = KeyType> {
    PossibleValuesParser::new(["admin", "workspace"])
        .map(|name| KeyType::parse(&name).expect("a possible value"))
}

/// `--mode`: `live` or `test`, offered in help and completions.
fn mode_parser() -> impl TypedValueParser<Value = Mode> {
    PossibleValuesParser::new(["live", "test"])
        .map(|name| Mode::parse(&name).expect("a possible value"))
}

/// Runs `opgate api-keys ...`.
pub(crate) async fn run(args: ApiKeysArgs) -> Result<(), Exit> {
    let client = args.conn.client()?;
    let json = args.conn.json;
    let keys = client.api_keys();
    match args.command {
        ApiKeysCommand::Create(a) => {
            let input = CreateKeyInput {
                name: a.name,
                permissions: a.permissions.map(permissions),
                rate_limit: a.rate_limit,
                expires_in_days: a.expires_in_days,
                allowed_ips: a.allowed_ips.map(non_empty),
                description: a.description,
                key_type: a.key_type,
                workspace_id: a.workspace_id,
                environment_id: a.environment_id,
                mode: a.mode,
                service_account_id: a.service_account_id,
                rotation_interval_days: a.rotation_interval_days,
                rotation_webhook_url: a.rotation_webhook_url,
            };
            if json {
                let reply = client
                    .call_raw("api_keys.create", body(&input), &CallOptions::default())
                    .await?;
                super::print_raw(reply).await?;
            } else {
                print_created(&keys.create(input).await?)?;
            }
            warn_secret_once();
            Ok(())
        }
        ApiKeysCommand::List(a) => {
            let input = ListKeysInput {
                limit: a.limit,
                after_id: a.after_id,
                before_id: a.before_id,
                workspace_id: a.workspace_id,
                environment_id: a.environment_id,
                service_account_id: a.service_account_id,
                created_by: a.created_by,
                include_revoked: a.include_revoked,
                status: a.status,
            };
            if json {
                let reply = client
                    .call_raw("api_keys.list", body(&input), &CallOptions::default())
                    .await?;
                return print_raw(reply).await;
            }
            let mut stream = keys.list(input).await?;
            let now = Timestamp::now().unix();
            let mut table = Table::new(
                io::stdout().lock(),
                &[
                    "ID",
                    "NAME",
                    "PREFIX",
                    "STATUS",
                    "MODE",
                    "WORKSPACE",
                    "PERMISSIONS",
                    "CREATED",
                    "LAST USED",
                    "EXPIRES",
                ],
            );
            while let Some(key) = stream.next().await {
                match key {
                    Ok(k) => {
                        let expires = output::when(ends_at(&k), now, "never");
                        table.row(vec![
                            k.id,
                            k.name,
                            k.key_prefix,
                            k.status.as_str().to_owned(),
                            k.mode.as_str().to_owned(),
                            output::or(k.workspace_id, "-"),
                            output::permissions(&k.permissions, "-"),
                            output::relative(k.created_at, now),
                            output::when(k.last_used_at, now, "never"),
                            expires,
                        ])?
                    }
                    Err(e) => {
                        table.finish()?;
                        return Err(e.into());
                    }
                }
            }
            table.finish()?;
            Ok(())
        }
        ApiKeysCommand::Get(a) => {
            let input = GetKeyInput {
                key_id: a.key.into_id(),
            };
            if json {
                let reply = client
                    .call_raw("api_keys.get", body(&input), &CallOptions::default())
                    .await?;
                return print_raw(reply).await;
            }
            print_details(&mut io::stdout().lock(), &keys.get(input).await?, &[])
        }
        ApiKeysCommand::Update(a) => {
            let options = CallOptions {
                idempotency_key: a.idempotency_key,
                request_id: None,
            };
            let input = UpdateKeyInput {
                key_id: a.key.into_id(),
                name: a.name,
                description: nullable(a.description, a.clear_description),
                rate_limit: nullable(a.rate_limit, a.clear_rate_limit),
                allowed_ips: nullable(a.allowed_ips.map(non_empty), a.clear_allowed_ips),
                permissions: a.permissions.map(permissions),
                rotation_interval_days: nullable(
                    a.rotation_interval_days,
                    a.clear_rotation_interval_days,
                ),
                rotation_webhook_url: nullable(
                    a.rotation_webhook_url,
                    a.clear_rotation_webhook_url,
                ),
            };
            if json {
                let reply = client
                    .call_raw("api_keys.update", body(&input), &options)
                    .await?;
                return print_raw(reply).await;
            }
            let keys = match options.idempotency_key {
                Some(k) => keys.idempotency_key(k),
                None => keys,
            };
            print_details(&mut io::stdout().lock(), &keys.update(input).await?, &[])
        }
        ApiKeysCommand::Rotate(a) => {
            let input = RotateKeyInput {
                key_id: a.key.into_id(),
                grace_period_seconds: a.grace_period_seconds,
            };
            if json {
                let reply = client
                    .call_raw("api_keys.rotate", body(&input), &CallOptions::default())
                    .await?;
                super::print_raw(reply).await?;
            } else {
                print_rotated(&keys.rotate(input).await?)?;
            }
            warn_secret_once();
            Ok(())
        }
        ApiKeysCommand::Revoke(a) => {
            let options = CallOptions {
                idempotency_key: a.idempotency_key,
                request_id: None,
            };
            let input = RevokeKeyInput {
                key_id: a.key.into_id(),
            };
            if json {
                let reply = client
                    .call_raw("api_keys.revoke", body(&input), &options)
                    .await?;
                return print_raw(reply).await;
            }
            let keys = match options.idempotency_key {
                Some(k) => keys.idempotency_key(k),
                None => keys,
            };
            print_details(&mut io::stdout().lock(), &keys.revoke(input).await?, &[])
        }
    }
}

/// When a key stops working: its expiry or the end of its rotation's grace period, whichever comes first.
fn ends_at(k: &KeyDetails) -> Option<Timestamp> {
    match (k.expires_at, k.grace_expires_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn print_created(out: &CreateKeyOutput) -> Result<(), Exit> {
    let mut stdout = io::stdout().lock();
    print_details(&mut stdout, &out.key_details, &[("key", out.key.clone())])
}

fn print_rotated(out: &RotateKeyOutput) -> Result<(), Exit> {
    let mut stdout = io::stdout().lock();
    let now = Timestamp::now().unix();
    print_details(
        &mut stdout,
        &out.key_details,
        &[
            ("key", out.key.clone()),
            ("old_key_id", out.old_key_id.clone()),
            (
                "old_key_works_until",
                output::when_exact(Some(out.grace_expires_at), now, "-"),
            ),
        ],
    )
}

/// A key's metadata as `field  value` lines, after `first` (the secret, when there is one).
fn print_details(
    out: &mut impl Write,
    k: &KeyDetails,
    first: &[(&str, String)],
) -> Result<(), Exit> {
    let now = Timestamp::now().unix();
    let mut pairs: Vec<(&str, String)> = first.to_vec();
    pairs.extend([
        ("id", k.id.clone()),
        ("name", k.name.clone()),
        ("description", output::or(k.description.as_deref(), "-")),
        ("status", k.status.as_str().to_owned()),
        ("is_active", k.is_active.to_string()),
        ("key_type", k.key_type.as_str().to_owned()),
        ("mode", k.mode.as_str().to_owned()),
        ("key_prefix", k.key_prefix.clone()),
        ("permissions", output::permissions(&k.permissions, "none")),
        (
            "rate_limit",
            k.rate_limit
                .map_or_else(|| "server default".to_owned(), |n| format!("{n}/min")),
        ),
        ("allowed_ips", output::list(&k.allowed_ips, "any")),
        ("org_id", k.org_id.clone()),
        ("workspace_id", output::or(k.workspace_id.as_deref(), "-")),
        (
            "environment_id",
            output::or(k.environment_id.as_deref(), "-"),
        ),
        (
            "service_account_id",
            output::or(k.service_account_id.as_deref(), "-"),
        ),
        ("created_by", k.created_by.clone()),
        (
            "created_at",
            output::when_exact(Some(k.created_at), now, "-"),
        ),
        ("expires_at", output::when_exact(k.expires_at, now, "never")),
        (
            "last_used_at",
            output::when_exact(k.last_used_at, now, "never"),
        ),
    ]);
    if k.last_used_at.is_some() {
        pairs.push(("last_used_ip", output::or(k.last_used_ip.as_deref(), "-")));
        pairs.push((
            "last_used_user_agent",
            output::or(k.last_used_user_agent.as_deref(), "-"),
        ));
    }
    if k.revoked_at.is_some() {
        pairs.push(("revoked_at", output::when_exact(k.revoked_at, now, "-")));
    }
    if k.replaced_by_key_id.is_some() || k.grace_expires_at.is_some() {
        pairs.push((
            "replaced_by_key_id",
            output::or(k.replaced_by_key_id.as_deref(), "-"),
        ));
        pairs.push((
            "grace_expires_at",
            output::when_exact(k.grace_expires_at, now, "-"),
        ));
    }
    if let Some(days) = k.rotation_interval_days {
        pairs.push(("rotation", format!("every {days} days")));
        pairs.push((
            "rotation_webhook_url",
            output::or(k.rotation_webhook_url.as_deref(), "-"),
        ));
        pairs.push((
            "next_rotation_at",
            output::when_exact(k.next_rotation_at, now, "-"),
        ));
    }
    if let Some(new) = &k.rotating_to_key_id {
        pairs.push(("rotating_to_key_id", new.clone()));
    }
    output::fields(out, &pairs)?;
    Ok(())
}
