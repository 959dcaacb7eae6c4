//! The `opgate` commands. `serve`, `config check`, `admin ...`, `spec` and `docs` run the gateway or work on
//! its data directory and description ([`serve`], [`config`], [`admin`], [`reference`]); the rest talk to a
//! running gateway, built on `opgate-client`: typed commands per resource (`opgate api-keys create --name
//! ...`, `opgate auth whoami`, `opgate audit list`, `opgate workspaces ...`, `opgate environments ...`,
//! `opgate service-accounts ...`, `opgate webhooks ...`) and `opgate call <operation_id>` for any operation at
//! all. `--workspace ws_...` (or `OPGATE_WORKSPACE`) sends `X-Workspace-ID` with every call.
//!
//! Output is for humans by default (aligned tables, relative times); `--json` prints exactly what the gateway
//! sent (NDJSON for streams, line by line as it arrives). Exit statuses: 0 success, 2 usage, 3 a refused
//! token or permission (401/403), 4 any other refused request (4xx), 5 a gateway failure (5xx) or an
//! unreachable gateway. A stream that fails midway prints what it got, then exits with the status of its
//! error. Human output and error lines escape control and bidi characters (`output::sanitize`).

pub(crate) mod admin;
pub(crate) mod api_keys;
pub(crate) mod audit;
pub(crate) mod auth;
pub(crate) mod call;
pub(crate) mod config;
pub(crate) mod environments;
pub(crate) mod mcp;
mod output;
pub(crate) mod reference;
pub(crate) mod serve;
pub(crate) mod service_accounts;
pub(crate) mod webhooks;
pub(crate) mod workspaces;

use std::io::{self, Write};

use clap::Args;
use opgate::core::scope;
use opgate_client::{CallOptions, Client, Error as ClientError, ItemStream, Lines, RawReply};

pub(crate) use api_keys::ApiKeysArgs;
pub(crate) use audit::AuditArgs;
pub(crate) use auth::AuthArgs;
pub(crate) use call::CallArgs;
pub(crate) use environments::EnvironmentsArgs;
pub(crate) use service_accounts::ServiceAccountsArgs;
pub(crate) use webhooks::WebhooksArgs;
pub(crate) use workspaces::WorkspacesArgs;

/// Exit status for a command line that does not make sense (clap uses it too).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit status for a rejected token or a missing permission (401, 403).
pub(crate) const EXIT_AUTH: u8 = 3;
/// Exit status for any other error the gateway answered (4xx).
pub(crate) const EXIT_REQUEST: u8 = 4;
/// Exit status when the gateway failed (5xx) or could not be reached.
pub(crate) const EXIT_SERVER: u8 = 5;

/// A failure with its own exit status.
#[derive(Debug)]
pub(crate) struct Exit(pub u8, pub String);

/// Shows the message escaped with [`output::sanitize`]: it may quote what the gateway (or whoever chose an
/// id) sent, and the binary prints it as the `error: ...` line.
impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&output::sanitize(&self.1))
    }
}

impl std::error::Error for Exit {}

impl From<ClientError> for Exit {
    fn from(e: ClientError) -> Self {
        let status = match &e {
            ClientError::Api { status, .. } => match status {
                401 | 403 => EXIT_AUTH,
                s if *s >= 500 => EXIT_SERVER,
                _ => EXIT_REQUEST,
            },
            ClientError::Config(_) => EXIT_USAGE,
            _ => EXIT_SERVER,
        };
        let message = match &e {
            ClientError::Api {
                code,
                message,
                status,
                request_id,
                streamed,
            } => {
                let what = if *streamed {
                    format!("the stream failed: {} ({status})", code.as_str())
                } else {
                    format!("{} ({status})", code.as_str())
                };
                match request_id {
                    Some(id) => format!("{what}: {message} [request {id}]"),
                    None => format!("{what}: {message}"),
                }
            }
            other => other.to_string(),
        };
        Exit(status, message)
    }
}

impl From<io::Error> for Exit {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            // The reader went away (`| head`): not a failure, nothing more to say.
            return Exit(0, String::new());
        }
        Exit(EXIT_SERVER, format!("cannot write the output: {e}"))
    }
}

/// Where the gateway is and who calls it; every command that talks to a gateway takes these.
#[derive(Args, Clone)]
pub(crate) struct Connection {
    /// Base URL of the gateway.
    #[arg(
        long,
        env = "OPGATE_URL",
        default_value = opgate_client::DEFAULT_URL,
        global = true,
        help_heading = "Gateway"
    )]
    url: String,
    /// Bearer token: an API key (`opg_...`) or a session token.
    #[arg(
        long,
        env = "OPGATE_TOKEN",
        hide_env_values = true,
        global = true,
        help_heading = "Gateway"
    )]
    token: Option<String>,
    /// PEM file of a CA (or the gateway's self-signed certificate) to trust for `https://` URLs.
    #[arg(long, env = "OPGATE_CA_CERT", global = true, help_heading = "Gateway")]
    ca_cert: Option<std::path::PathBuf>,
    /// Workspace to work in (`ws_...`), sent as `X-Workspace-ID` with every call: an admin key or a session
    /// then acts in that workspace; a workspace key may name only its own.
    #[arg(
        long,
        env = "OPGATE_WORKSPACE",
        value_name = "WS_ID",
        global = true,
        help_heading = "Gateway"
    )]
    workspace: Option<String>,
    /// Print the gateway's JSON as sent (NDJSON for streams) instead of tables.
    #[arg(long, global = true, help_heading = "Gateway")]
    json: bool,
}

impl Connection {
    fn client(&self) -> Result<Client, Exit> {
        let token =
            self.token
                .as_deref()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    Exit(
                EXIT_USAGE,
                "no token: pass --token or set OPGATE_TOKEN (an API key or a session token)".into(),
            )
                })?;
        let client = match &self.ca_cert {
            None => Client::new(&self.url),
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| Exit(EXIT_USAGE, format!("--ca-cert {}: {e}", path.display())))?;
                Client::with_ca_certificate(&self.url, &pem)
            }
        }
        .map_err(|e| Exit(EXIT_USAGE, e.to_string()))?;
        let client = client.with_token(token);
        Ok(match self.workspace.as_deref().filter(|w| !w.is_empty()) {
            Some(workspace) => client.with_workspace(workspace),
            None => client,
        })
    }
}

/// A command's result as the binary reports it: a closed output pipe (`| head`) is success.
pub(crate) fn finish(
    result: Result<(), Exit>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match result {
        Ok(()) | Err(Exit(0, _)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Prints the gateway's answer as sent: a JSON body with a final newline, or NDJSON lines as they arrive.
async fn print_raw(reply: RawReply) -> Result<(), Exit> {
    match reply {
        RawReply::Json { body, .. } => {
            let mut out = io::stdout().lock();
            out.write_all(&body)?;
            if body.last() != Some(&b'\n') {
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(())
        }
        RawReply::Stream(lines) => print_lines(lines, false).await,
    }
}

/// Prints NDJSON lines as they arrive: as sent, or (`escaped`, for a terminal) with hidden characters turned
/// into JSON escapes of the same value.
async fn print_lines(mut lines: Lines, escaped: bool) -> Result<(), Exit> {
    use futures_util::StreamExt;
    let mut out = io::stdout().lock();
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) if escaped => {
                let text = String::from_utf8_lossy(&line);
                writeln!(out, "{}", output::sanitize_json(&text))?;
            }
            Ok(line) => {
                out.write_all(&line)?;
                out.write_all(b"\n")?;
            }
            Err(e) => {
                out.flush()?;
                return Err(e.into());
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Calls `operation` with `input` and prints the gateway's answer as sent (`--json`).
async fn print_call<T: serde::Serialize>(
    client: &Client,
    operation: &str,
    input: &T,
    options: &CallOptions,
) -> Result<(), Exit> {
    print_raw(client.call_raw(operation, body(input), options).await?).await
}

/// Prints a stream as a table, one row per item as it arrives; a stream that fails midway prints the rows it
/// got, then fails with the stream's error.
async fn tabulate<T: serde::de::DeserializeOwned>(
    mut items: ItemStream<T>,
    header: &[&'static str],
    mut row: impl FnMut(T) -> Vec<String>,
) -> Result<(), Exit> {
    use futures_util::StreamExt;
    let mut table = output::Table::new(io::stdout().lock(), header);
    while let Some(item) = items.next().await {
        match item {
            Ok(item) => table.row(row(item))?,
            Err(e) => {
                table.finish()?;
                return Err(e.into());
            }
        }
    }
    table.finish()?;
    Ok(())
}

/// Call options carrying an `--idempotency-key`, if one was given.
fn idempotent(key: Option<String>) -> CallOptions {
    CallOptions {
        idempotency_key: key,
        ..CallOptions::default()
    }
}

/// The input of a typed command as the JSON body `--json` sends with `call_raw`.
fn body<T: serde::Serialize>(input: &T) -> Vec<u8> {
    serde_json::to_vec(input).expect("input types serialize")
}

/// Warns, on stderr, that the secret just printed is shown this once.
fn warn_secret_once() {
    eprintln!(
        "warning: this is the only time the secret key is shown; store it now, it cannot be retrieved again"
    );
}

/// Parses a comma-separated list flag into a list, dropping empty entries (`--permissions ''` is `[]`).
fn non_empty(items: Vec<String>) -> Vec<String> {
    items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Permissions as given on the command line: `--permissions` entries, with the names the CLI shows for the
/// presets (`read` for `*:read`, `read-write` for `*:write`) taken back to the scopes the gateway knows.
fn permissions(items: Vec<String>) -> Vec<String> {
    non_empty(items)
        .into_iter()
        .map(|p| match p.as_str() {
            "read" => scope::READ_ALL.to_owned(),
            "read-write" => scope::WRITE_ALL.to_owned(),
            _ => p,
        })
        .collect()
}

/// An update field: a new value, `null` (clear), or absent (leave as is).
fn nullable<T>(value: Option<T>, clear: bool) -> Option<Option<T>> {
    if clear {
        Some(None)
    } else {
        value.map(Some)
    }
}

/// The id an `<resource> get|update|delete ...` command acts on: the positional one or the `--<field>` flag
/// (the form the API reference shows); clap lets exactly one through.
fn one_id(positional: Option<String>, flag: Option<String>) -> String {
    positional
        .or(flag)
        .expect("clap requires the id, positionally or as a flag")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_are_escaped() {
        let e = Exit::from(ClientError::Api {
            code: opgate_client::Code::NotFound,
            message: "key_id: no API key `key_\x1b]52;c;ZXZpbA==\x07\r\n\u{202e}`".into(),
            status: 404,
            request_id: Some("req_\u{9b}1".into()),
            streamed: false,
        });
        assert_eq!(e.0, EXIT_REQUEST);
        assert_eq!(
            e.to_string(),
            r"not_found (404): key_id: no API key `key_\x1b]52;c;ZXZpbA==\x07\r\n\u{202e}` [request req_\u{9b}1]"
        );
    }
}
