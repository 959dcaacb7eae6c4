//! `opgate audit list`: the organization's audit log, newest first (`audit.list`).

use std::io;

use clap::{Args, Subcommand};
use futures_util::StreamExt;
use opgate_client::types::ListAuditInput;
use opgate_client::{CallOptions, Timestamp};

use super::output::{self, Table};
use super::{body, print_raw, Connection, Exit};

/// `opgate audit ...`.
#[derive(Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List the audit records of write, export and destructive calls, newest first (`audit.list`).
    List(ListArgs),
}

#[derive(Args)]
struct ListArgs {
    /// Most records to show (1–100000); default 100.
    #[arg(long)]
    limit: Option<u32>,
    /// Only records older than the record with this id (`aud_...`, the last id of a previous page).
    #[arg(long)]
    before: Option<String>,
    /// Only records of this operation, e.g. `api_keys.revoke`.
    #[arg(long)]
    operation: Option<String>,
}

/// Runs `opgate audit ...`.
pub(crate) async fn run(args: AuditArgs) -> Result<(), Exit> {
    let client = args.conn.client()?;
    match args.command {
        AuditCommand::List(a) => {
            let input = ListAuditInput {
                limit: a.limit,
                before: a.before,
                operation: a.operation,
            };
            if args.conn.json {
                let reply = client
                    .call_raw("audit.list", body(&input), &CallOptions::default())
                    .await?;
                return print_raw(reply).await;
            }
            let mut stream = client.audit().list(input).await?;
            let now = Timestamp::now().unix();
            let mut table = Table::new(
                io::stdout().lock(),
                &[
                    "ID",
                    "AT",
                    "OPERATION",
                    "STATUS",
                    "ERROR",
                    "PRINCIPAL",
                    "TARGET",
                    "CLIENT IP",
                ],
            );
            while let Some(item) = stream.next().await {
                match item {
                    Ok(r) => table.row(vec![
                        r.id,
                        output::relative(r.at, now),
                        r.operation,
                        r.status.to_string(),
                        output::or(r.error_code, "-"),
                        format!("{}:{}", r.principal_kind, r.principal_id),
                        output::or(r.target_id, "-"),
                        output::or(r.client_ip, "-"),
                    ])?,
                    Err(e) => {
                        table.finish()?;
                        return Err(e.into());
                    }
                }
            }
            table.finish()?;
            Ok(())
        }
    }
}
