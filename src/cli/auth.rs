//! `opgate auth whoami`: who the gateway takes the token for (`auth.whoami`).

use std::io;

use clap::{Args, Subcommand};
use opgate_client::types::{CredentialKind, WhoamiInput};
use opgate_client::{CallOptions, Timestamp};

use super::{body, output, print_raw, Connection, Exit};

/// `opgate auth ...`.
#[derive(Args)]
pub(crate) struct AuthArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Show the caller: credential kind, id, organization, workspace, environment, mode, key type, service
    /// account, permissions, rate limit and expiry (`auth.whoami`).
    Whoami,
}

/// Runs `opgate auth ...`.
pub(crate) async fn run(args: AuthArgs) -> Result<(), Exit> {
    let client = args.conn.client()?;
    match args.command {
        AuthCommand::Whoami => {
            if args.conn.json {
                let reply = client
                    .call_raw(
                        "auth.whoami",
                        body(&WhoamiInput {}),
                        &CallOptions::default(),
                    )
                    .await?;
                return print_raw(reply).await;
            }
            let me = client.auth().whoami().await?;
            let now = Timestamp::now().unix();
            let kind = match me.kind {
                CredentialKind::ApiKey => "api_key",
                CredentialKind::Session => "session",
            };
            output::fields(
                &mut io::stdout().lock(),
                &[
                    ("kind", kind.to_owned()),
                    ("id", me.id),
                    ("org", me.org),
                    ("key_type", output::or(me.key_type.map(|t| t.as_str()), "-")),
                    ("mode", me.mode.as_str().to_owned()),
                    ("workspace_id", output::or(me.workspace_id, "-")),
                    ("environment_id", output::or(me.environment_id, "-")),
                    ("service_account_id", output::or(me.service_account_id, "-")),
                    ("permissions", output::permissions(&me.permissions, "none")),
                    (
                        "rate_limit",
                        me.rate_limit
                            .map_or_else(|| "server default".to_owned(), |n| format!("{n}/min")),
                    ),
                    (
                        "expires_at",
                        output::when_exact(me.expires_at, now, "never"),
                    ),
                ],
            )?;
            Ok(())
        }
    }
}
