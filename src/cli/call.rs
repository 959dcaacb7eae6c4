//! `opgate call <operation_id> [JSON | -]`: any operation the gateway serves, known to this binary or not.

use std::io::{self, Write};

use clap::Args;
use opgate_client::{CallOptions, RawReply};

use super::{output, print_lines, warn_secret_once, Connection, Exit, EXIT_USAGE};

/// `opgate call ...`.
#[derive(Args)]
pub(crate) struct CallArgs {
    /// The operation id, e.g. `api_keys.create`.
    operation: String,
    /// The input as a JSON object, or `-` to read it from stdin; default `{}`.
    input: Option<String>,
    /// `Idempotency-Key` header: a retry of a write or destructive call with the same key and body gets the
    /// first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Connection,
}

/// Runs `opgate call ...`: the body is sent as given; the answer is printed as sent with `--json`, else a
/// JSON object is pretty-printed with terminal controls escaped. Streams are NDJSON either way, line by line
/// as they arrive.
pub(crate) async fn run(args: CallArgs) -> Result<(), Exit> {
    let client = args.conn.client()?;
    let input = match args.input.as_deref() {
        None => "{}".to_owned(),
        Some("-") => io::read_to_string(io::stdin())
            .map_err(|e| Exit(EXIT_USAGE, format!("cannot read the input from stdin: {e}")))?,
        Some(text) => text.to_owned(),
    };
    let options = CallOptions {
        idempotency_key: args.idempotency_key,
        request_id: None,
    };
    match client
        .call_raw(&args.operation, input.into_bytes(), &options)
        .await?
    {
        RawReply::Stream(lines) => print_lines(lines, !args.conn.json).await,
        RawReply::Json { body, .. } => {
            let value: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
            let mut out = io::stdout().lock();
            match &value {
                Some(v) if !args.conn.json => {
                    let pretty = serde_json::to_string_pretty(v).expect("a JSON value serializes");
                    writeln!(out, "{}", output::sanitize_json(&pretty))?;
                }
                None if !args.conn.json => {
                    for line in String::from_utf8_lossy(&body).lines() {
                        writeln!(out, "{}", output::sanitize(line))?;
                    }
                }
                _ => {
                    out.write_all(&body)?;
                    if body.last() != Some(&b'\n') {
                        out.write_all(b"\n")?;
                    }
                }
            }
            out.flush()?;
            // An answer carrying a fresh secret (`api_keys.create`, `api_keys.rotate`, ...).
            let secret = value
                .as_ref()
                .and_then(|v| v.get("key"))
                .and_then(|k| k.as_str())
                .is_some_and(|k| k.starts_with(opgate::core::API_KEY_PREFIX));
            if secret {
                warn_secret_once();
            }
            Ok(())
        }
    }
}
