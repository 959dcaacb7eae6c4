//! `opgate mcp`: the JSON an MCP client needs to connect an AI agent to this gateway's `POST /mcp` endpoint,
//! with the token taken from the environment (the token itself is printed only with `--with-token`).

use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use super::{Exit, EXIT_USAGE};

/// The MCP clients whose configuration format `opgate mcp` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum McpClient {
    /// `.mcp.json` of Claude Code and most clients taking `mcpServers` with `type: "http"`; `${OPGATE_TOKEN}`
    /// is read from the environment.
    Generic,
    /// `~/.cursor/mcp.json` (or `.cursor/mcp.json`): `${env:OPGATE_TOKEN}`.
    Cursor,
    /// VS Code's `.vscode/mcp.json`: VS Code asks for the token once and keeps it in its secret storage.
    Vscode,
    /// Claude Desktop's `claude_desktop_config.json`: it starts local (stdio) servers only, so the `mcp-remote`
    /// bridge (an npm package, run with `npx`) connects it to the gateway; the header goes in its `env`.
    ClaudeDesktop,
}

/// `opgate mcp`.
#[derive(Args)]
pub(crate) struct McpArgs {
    /// Base URL of the gateway; the MCP endpoint is `<url>/mcp`.
    #[arg(long, env = "OPGATE_URL", default_value = opgate_client::DEFAULT_URL)]
    url: String,
    /// The client to configure.
    #[arg(long, value_enum, default_value_t = McpClient::Generic)]
    client: McpClient,
    /// The server's name in the client's configuration.
    #[arg(long, default_value = "opgate")]
    name: String,
    /// The environment variable the client reads the token from.
    #[arg(long, default_value = "OPGATE_TOKEN", value_name = "VAR")]
    token_env: String,
    /// Write the token itself (from `--token` / `OPGATE_TOKEN`) into the configuration instead of a reference
    /// to the environment: the output is then a secret.
    #[arg(long)]
    with_token: bool,
    /// The token, for `--with-token`.
    #[arg(long, env = "OPGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Workspace the agent works in (`ws_...`), sent as `X-Workspace-ID`.
    #[arg(long, env = "OPGATE_WORKSPACE", value_name = "WS_ID")]
    workspace: Option<String>,
}

/// Prints the configuration on stdout, and on stderr where it goes.
pub(crate) fn run(args: McpArgs) -> Result<(), Exit> {
    let (snippet, hint) = snippet(&args)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&snippet).expect("JSON values serialize")
    );
    eprintln!("{hint}");
    Ok(())
}

/// The configuration and a line saying where it goes.
fn snippet(args: &McpArgs) -> Result<(Value, String), Exit> {
    let base = args.url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(Exit(
            EXIT_USAGE,
            format!("--url must be an http:// or https:// URL, not `{base}`"),
        ));
    }
    let url = format!("{base}/mcp");
    let var = &args.token_env;
    let token = |reference: String| -> Result<String, Exit> {
        if !args.with_token {
            return Ok(reference);
        }
        args.token.clone().ok_or_else(|| {
            Exit(
                EXIT_USAGE,
                "--with-token needs the token in --token or OPGATE_TOKEN".into(),
            )
        })
    };
    let mut headers = serde_json::Map::new();
    let header = |headers: &mut serde_json::Map<String, Value>, auth: String| {
        headers.insert("Authorization".into(), json!(format!("Bearer {auth}")));
        if let Some(ws) = &args.workspace {
            headers.insert("X-Workspace-ID".into(), json!(ws));
        }
    };
    let name = &args.name;
    let warning = if args.with_token {
        " It holds the token: keep it out of version control."
    } else {
        ""
    };
    Ok(match args.client {
        McpClient::Generic => {
            header(&mut headers, token(format!("${{{var}}}"))?);
            (
                json!({"mcpServers": {name: {"type": "http", "url": url, "headers": headers}}}),
                format!(
                    "# Put this in the client's MCP configuration (Claude Code: .mcp.json), export {var}, and \
                     start the client.{warning}"
                ),
            )
        }
        McpClient::Cursor => {
            header(&mut headers, token(format!("${{env:{var}}}"))?);
            (
                json!({"mcpServers": {name: {"url": url, "headers": headers}}}),
                format!(
                    "# Put this in ~/.cursor/mcp.json (or .cursor/mcp.json in a project) and start Cursor with \
                     {var} set.{warning}"
                ),
            )
        }
        McpClient::Vscode => {
            let input = format!("{name}-token");
            header(&mut headers, token(format!("${{input:{input}}}"))?);
            let mut config =
                json!({"servers": {name: {"type": "http", "url": url, "headers": headers}}});
            if !args.with_token {
                config["inputs"] = json!([{"type": "promptString", "id": input,
                    "description": "opgate API key (opg_...)", "password": true}]);
            }
            (
                config,
                format!(
                    "# Put this in .vscode/mcp.json; VS Code asks for the key on first start.{warning}"
                ),
            )
        }
        McpClient::ClaudeDesktop => {
            let value = token("<your opgate API key>".into())?;
            let mut env = serde_json::Map::new();
            env.insert(
                "OPGATE_AUTH_HEADER".into(),
                json!(format!("Bearer {value}")),
            );
            let mut bridge = vec![
                json!("-y"),
                json!("mcp-remote"),
                json!(url),
                json!("--header"),
                json!("Authorization:${OPGATE_AUTH_HEADER}"),
            ];
            if let Some(ws) = &args.workspace {
                bridge.push(json!("--header"));
                bridge.push(json!(format!("X-Workspace-ID:{ws}")));
            }
            if base.starts_with("http://") {
                bridge.push(json!("--allow-http"));
            }
            (
                json!({"mcpServers": {name: {"command": "npx", "args": bridge, "env": env}}}),
                format!(
                    "# Put this in claude_desktop_config.json{}; Claude Desktop runs the mcp-remote bridge with \
                     npx (Node.js needed) and does not read your shell's environment.{warning}",
                    if args.with_token {
                        ""
                    } else {
                        " with your key in OPGATE_AUTH_HEADER"
                    }
                ),
            )
        }
    })
}
