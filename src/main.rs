//! The `opgate` command line: its arguments, parsed here (flags, `OPGATE_*` environment, `--config` file), and
//! handed to the commands in `cli/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use opgate::auth::SessionSettings;
use opgate::keys::DEFAULT_ORG;
use opgate::server::ServerConfig;
use opgate::{BoxError, DataDir};

/// mimalloc instead of the system allocator: a request allocates and frees many small buffers across threads,
/// which glibc's malloc serves with locks and consolidation (docs/benchmarks.md has the figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;

/// opgate: an operation-dispatch RPC gateway. Every call is `POST /v1/op/<operation_id>` with a Bearer token.
#[derive(Parser)]
#[command(name = "opgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Check a config file: `opgate config check --config opgate.toml` prints the effective settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Administer the data directory offline (no running server needed).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Manage the API keys of a running gateway (`--url`, `--token`).
    ApiKeys(cli::ApiKeysArgs),
    /// Ask a running gateway who your token is (`--url`, `--token`).
    Auth(cli::AuthArgs),
    /// Read the audit log of a running gateway (`--url`, `--token`).
    Audit(cli::AuditArgs),
    /// Manage the workspaces of a running gateway (`--url`, `--token`).
    Workspaces(cli::WorkspacesArgs),
    /// Manage the environments of a running gateway's workspaces (`--url`, `--token`).
    Environments(cli::EnvironmentsArgs),
    /// Manage the service accounts (non-human owners of keys) of a running gateway (`--url`, `--token`).
    ServiceAccounts(cli::ServiceAccountsArgs),
    /// Manage the signed webhook endpoints of a running gateway and their deliveries (`--url`, `--token`).
    Webhooks(cli::WebhooksArgs),
    /// Call any operation on a running gateway: `opgate call api_keys.list '{"limit": 10}'`.
    Call(cli::CallArgs),
    /// Print the JSON an MCP client (Claude Code, Cursor, VS Code, Claude Desktop) needs to let an AI agent
    /// call this gateway's operations as tools, with the token read from the environment.
    Mcp(cli::mcp::McpArgs),
    /// Print a shell completion script, e.g. `opgate completions bash > ~/.local/share/bash-completion/completions/opgate`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the OpenAPI 3.1 document of every operation (what `spec/openapi.json` holds), or generate a
    /// client SDK from it: `opgate spec --sdk python --out DIR` (`--from-spec FILE` for any other spec).
    Spec {
        /// Write it to this file instead of stdout; with `--sdk`, the directory to write the package into.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Generate this language's SDK instead of printing the spec (needs `--out DIR`).
        #[arg(long, value_enum, requires = "out")]
        sdk: Option<cli::reference::SdkLanguage>,
        /// The OpenAPI document to generate the SDK from (an embedder's own, say); default: the built-in
        /// operations.
        #[arg(long, value_name = "FILE", requires = "sdk")]
        from_spec: Option<PathBuf>,
        /// Describe the gateway this configuration file sets up: the built-in operations and the file's
        /// `[[upstream]]` operations.
        #[arg(long, value_name = "FILE", conflicts_with = "from_spec")]
        config: Option<PathBuf>,
    },
    /// Generate the Markdown API reference from an OpenAPI document.
    Docs {
        /// The OpenAPI document to read.
        #[arg(long, default_value = "spec/openapi.json")]
        spec: PathBuf,
        /// Directory to write the pages into; stale generated pages there are removed.
        #[arg(long, default_value = "docs/api-reference")]
        out: PathBuf,
    },
}

/// What a fleet's rate limits do while the database cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RateLimitFallback {
    /// Each instance limits on its own, at its share of each limit.
    Open,
    /// Limited callers get 503 until the database answers.
    Closed,
}

#[derive(Args, Clone)]
pub(crate) struct DataDirArgs {
    /// Directory holding the SQLite database and the server secret.
    #[arg(long, env = "OPGATE_DATA_DIR", default_value = "opgate-data")]
    pub(crate) data_dir: PathBuf,
    /// Server secret keying the stored key hashes (base64, at least 32 bytes); default: `<data-dir>/secret`.
    #[arg(
        long = "secret",
        env = "OPGATE_SECRET",
        hide_env_values = true,
        hide = true
    )]
    pub(crate) secret: Option<String>,
    /// Secret signing session tokens (base64, at least 32 bytes); default: `<data-dir>/session_secret`.
    #[arg(
        long = "session-secret",
        env = "OPGATE_SESSION_SECRET",
        hide_env_values = true,
        hide = true
    )]
    pub(crate) session_secret: Option<String>,
    /// PostgreSQL database to keep the data in instead of SQLite in the data directory
    /// (`postgres://user@host/db`, or `postgresql://user@%2Frun%2Fpostgresql/db` for a unix socket): the
    /// engine for several instances behind one load balancer. Every instance must share `OPGATE_SECRET` and
    /// `OPGATE_SESSION_SECRET` (or the same secret files).
    #[arg(long, env = "OPGATE_DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
}

impl DataDirArgs {
    /// Opens the data directory, and the PostgreSQL database when `--database-url` names one.
    pub(crate) async fn open(&self) -> Result<DataDir, BoxError> {
        let sessions = self.session_settings(None, None);
        match &self.database_url {
            Some(url) => {
                DataDir::open_postgres(
                    &self.data_dir,
                    url,
                    self.secret.as_deref(),
                    &sessions,
                    opgate::core::SystemClock::shared(),
                )
                .await
            }
            None => DataDir::open_with(&self.data_dir, self.secret.as_deref(), &sessions),
        }
    }

    pub(crate) fn session_settings(
        &self,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> SessionSettings {
        SessionSettings {
            secret: self.session_secret.clone(),
            issuer,
            audience,
        }
    }
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the settings `serve` would run with (file, environment and flags) and print them, secrets
    /// masked.
    Check(ServeArgs),
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// A TOML file of settings, keys named after these flags (`max_body_bytes = 2097152`); the environment and
    /// flags override it.
    #[arg(long, env = "OPGATE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) instead of plain HTTP.
    #[arg(long, env = "OPGATE_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "OPGATE_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "OPGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    #[command(flatten)]
    pub(crate) data: DataDirArgs,
    /// Comma-separated CIDRs of proxies whose `X-Forwarded-For` is believed (e.g. `10.0.0.0/8,127.0.0.1/32`).
    #[arg(long, env = "OPGATE_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_ip_or_cidr)]
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    /// Requests per minute for keys and sessions without a rate limit of their own (default: unlimited).
    #[arg(long, env = "OPGATE_DEFAULT_RATE_LIMIT", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) default_rate_limit: Option<u32>,
    /// Issuer (`iss`) every session token must carry; default: not checked.
    #[arg(long, env = "OPGATE_SESSION_ISSUER")]
    pub(crate) session_issuer: Option<String>,
    /// Audience (`aud`) every session token must name; default: not checked.
    #[arg(long, env = "OPGATE_SESSION_AUDIENCE")]
    pub(crate) session_audience: Option<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "OPGATE_MAX_BODY_BYTES", default_value_t = ServerConfig::default().max_body_bytes)]
    pub(crate) max_body_bytes: usize,
    /// Seconds the server keeps serving after SIGTERM with `/readyz` at 503, before it stops accepting.
    #[arg(long, env = "OPGATE_SHUTDOWN_DELAY_SECONDS", default_value_t = ServerConfig::default().shutdown_delay.as_secs())]
    pub(crate) shutdown_delay_seconds: u64,
    /// Seconds a client has to send its request headers; also the idle time after which a keep-alive
    /// connection is closed.
    #[arg(long, env = "OPGATE_HEADER_READ_TIMEOUT_SECONDS", default_value_t = ServerConfig::default().header_read_timeout.as_secs())]
    pub(crate) header_read_timeout_seconds: u64,
    /// Seconds a request may take from its headers to its response head (503 past it).
    #[arg(long, env = "OPGATE_REQUEST_TIMEOUT_SECONDS", default_value_t = ServerConfig::default().request_timeout.as_secs())]
    pub(crate) request_timeout_seconds: u64,
    /// Largest request head (request line and headers), in bytes.
    #[arg(long, env = "OPGATE_MAX_HEADER_BYTES", default_value_t = ServerConfig::default().max_header_bytes)]
    pub(crate) max_header_bytes: usize,
    /// Requests handled at once at most; more get 503 at once.
    #[arg(long, env = "OPGATE_MAX_CONCURRENT_REQUESTS", default_value_t = ServerConfig::default().max_concurrent_requests)]
    pub(crate) max_concurrent_requests: usize,
    /// Requests per minute for each organization, all its keys and sessions together (default: unlimited).
    /// Keys can mint keys, so only this bounds a tenant's total.
    #[arg(long, env = "OPGATE_ORG_RATE_LIMIT", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) org_rate_limit: Option<u32>,
    /// In a fleet (`--database-url`), what rate limits do while the database cannot be reached: `open` (each
    /// instance limits on its own, at 1/`--fleet-size` of each limit) or `closed` (limited callers get 503).
    #[arg(long, env = "OPGATE_RATE_LIMIT_FALLBACK", value_enum, default_value_t = RateLimitFallback::Open)]
    pub(crate) rate_limit_fallback: RateLimitFallback,
    /// The number of instances in the fleet, for `--rate-limit-fallback open`.
    #[arg(long, env = "OPGATE_FLEET_SIZE", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) fleet_size: u32,
    /// Requests one organization (all its keys and sessions) may have in flight at once; more get 503.
    #[arg(long, env = "OPGATE_MAX_CONCURRENT_REQUESTS_PER_ORG", default_value_t = ServerConfig::default().max_concurrent_requests_per_org as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_concurrent_requests_per_org: u32,
    /// Requests one principal (key or session) may have in flight at once; more get 503.
    #[arg(long, env = "OPGATE_MAX_CONCURRENT_REQUESTS_PER_PRINCIPAL", default_value_t = ServerConfig::default().max_concurrent_requests_per_principal as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_concurrent_requests_per_principal: u32,
    /// Streamed (NDJSON) responses one principal may have open at once; more get 503.
    #[arg(long, env = "OPGATE_MAX_STREAMS_PER_PRINCIPAL", default_value_t = ServerConfig::default().max_streams_per_principal as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_streams_per_principal: u32,
    /// Seconds a request body may take to arrive once its head is in (400 and the connection closes past it).
    #[arg(long, env = "OPGATE_BODY_READ_TIMEOUT_SECONDS", default_value_t = ServerConfig::default().body_read_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) body_read_timeout_seconds: u64,
    /// Seconds a response may make no progress because the client reads nothing, before the connection is
    /// dropped.
    #[arg(long, env = "OPGATE_WRITE_TIMEOUT_SECONDS", default_value_t = ServerConfig::default().write_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) write_timeout_seconds: u64,
    /// Open connections at most; past it new connections are closed at once.
    #[arg(long, env = "OPGATE_MAX_CONNECTIONS", default_value_t = ServerConfig::default().max_connections)]
    pub(crate) max_connections: usize,
    /// Open connections from one client address at most (trusted proxies are exempt); past it new
    /// connections from that address are closed at once.
    #[arg(long, env = "OPGATE_MAX_CONNECTIONS_PER_IP", default_value_t = ServerConfig::default().max_connections_per_ip as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections_per_ip: u32,
    /// Days audit records are kept; older ones are deleted hourly in the background (0 keeps them forever).
    #[arg(long, env = "OPGATE_AUDIT_RETENTION_DAYS", default_value_t = 90)]
    pub(crate) audit_retention_days: u32,
    /// Days ended webhook deliveries, their attempts and events are kept; older ones are deleted hourly in the
    /// background (0 keeps them forever). Pending deliveries are kept whatever their age.
    #[arg(long, env = "OPGATE_WEBHOOK_RETENTION_DAYS", default_value_t = 30)]
    pub(crate) webhook_retention_days: u32,
    /// Let webhooks reach loopback, private, link-local and other special addresses (development and tests
    /// only: otherwise a webhook URL could reach into the operator's own network).
    #[arg(long, env = "OPGATE_ALLOW_PRIVATE_WEBHOOKS")]
    pub(crate) allow_private_webhooks: bool,
    /// Let webhooks use plain http:// to addresses other than loopback (development only).
    #[arg(long, env = "OPGATE_ALLOW_INSECURE_WEBHOOKS")]
    pub(crate) allow_insecure_webhooks: bool,
    /// Seconds one webhook delivery attempt may take, connecting included (at most 60: a delivery is leased to
    /// one attempt for 90 s).
    #[arg(long, env = "OPGATE_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub(crate) webhook_timeout_seconds: u64,
    /// Serve Prometheus metrics (`on`, the default: at `GET /metrics` on the API port, or on
    /// `--metrics-listen` when set) or not at all (`off`).
    #[arg(long, env = "OPGATE_METRICS", value_enum, default_value_t = Switch::On)]
    pub(crate) metrics: Switch,
    /// Serve `GET /metrics` on this address instead of the API port (e.g. `127.0.0.1:9090`).
    #[arg(long, env = "OPGATE_METRICS_LISTEN")]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Serve the interactive API reference at `GET /docs`, this gateway's OpenAPI document at
    /// `GET /openapi.json`, and for language models `GET /llms.txt` and the Markdown reference at
    /// `GET /docs/<resource>.md`, all without a token (`on`, the default), or none of them (`off`).
    #[arg(long, env = "OPGATE_DOCS", value_enum, default_value_t = Switch::On)]
    pub(crate) docs: Switch,
    /// Browser origins allowed to call the MCP endpoint `POST /mcp` besides loopback ones (comma-separated,
    /// e.g. `https://agents.example.com`); a request with any other `Origin` header gets 403.
    #[arg(long, env = "OPGATE_MCP_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub(crate) mcp_allowed_origins: Vec<String>,
    /// Seconds in-flight requests may take to finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "OPGATE_SHUTDOWN_GRACE_SECONDS", default_value_t = ServerConfig::default().shutdown_grace.as_secs())]
    pub(crate) shutdown_grace_seconds: u64,
    /// Log format on stderr.
    #[arg(long, env = "OPGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub(crate) log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Switch {
    On,
    Off,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an API key offline and print only its secret on stdout.
    CreateKey(CreateKeyArgs),
    /// Revoke an API key offline; a server running on the same data directory refuses it within a second.
    RevokeKey(RevokeKeyArgs),
    /// Insert many keys in one transaction (test and benchmark fixtures); prints nothing but a count.
    SeedKeys(SeedKeysArgs),
    /// Sign a session token (an HS256 JWT) with the session secret and print only the token on stdout.
    MintSession(MintSessionArgs),
}

#[derive(Args)]
pub(crate) struct MintSessionArgs {
    #[command(flatten)]
    pub(crate) data: DataDirArgs,
    /// Organization of the session (`org`).
    #[arg(long, env = "OPGATE_ORG", default_value = DEFAULT_ORG)]
    pub(crate) org: String,
    /// Subject (`sub`): the session's principal id; keys it creates record it as `created_by`.
    #[arg(long)]
    pub(crate) sub: String,
    /// Scopes separated by spaces or commas, e.g. `"api_keys:read api_keys:write"` or `*`.
    #[arg(long)]
    pub(crate) scopes: String,
    /// Seconds until the token expires (at most 30 days).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=opgate::auth::MAX_TTL_SECONDS))]
    pub(crate) ttl: u64,
    /// Issuer (`iss`) to sign in; must match the server's `--session-issuer`.
    #[arg(long, env = "OPGATE_SESSION_ISSUER")]
    pub(crate) issuer: Option<String>,
    /// Audience (`aud`) to sign in; must match the server's `--session-audience`.
    #[arg(long, env = "OPGATE_SESSION_AUDIENCE")]
    pub(crate) audience: Option<String>,
    /// Sign a test-mode session (the `mode: "test"` claim): it sees and makes test objects only.
    #[arg(long)]
    pub(crate) test: bool,
    /// A configuration file whose upstream operations' scopes the token may hold (besides the built-ins').
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct CreateKeyArgs {
    #[command(flatten)]
    pub(crate) data: DataDirArgs,
    /// Organization that owns the key.
    #[arg(long, env = "OPGATE_ORG", default_value = DEFAULT_ORG)]
    pub(crate) org: String,
    /// Name of the key.
    #[arg(long)]
    pub(crate) name: String,
    /// Comma-separated scopes, e.g. `api_keys:read,api_keys:write` or `*`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) permissions: Vec<String>,
    /// Requests per minute.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) rate_limit: Option<u32>,
    /// Days until the key expires.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650), conflicts_with = "expires_at")]
    pub(crate) expires_in_days: Option<u32>,
    /// Exact expiry as an RFC 3339 time, e.g. `2027-01-31T00:00:00Z`.
    #[arg(long, value_parser = parse_rfc3339)]
    pub(crate) expires_at: Option<opgate::core::Timestamp>,
    /// Comma-separated IP addresses or CIDR ranges the key may be used from (default: any).
    #[arg(long, value_delimiter = ',', value_parser = parse_allowed_ip)]
    pub(crate) allowed_ips: Vec<String>,
    /// Mint a test-mode admin key (`opg_test_...`): it sees and makes test objects only.
    /// A configuration file whose upstream operations' scopes the key may hold (besides the built-ins').
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    #[arg(long)]
    pub(crate) test: bool,
}

#[derive(Args)]
pub(crate) struct RevokeKeyArgs {
    #[command(flatten)]
    pub(crate) data: DataDirArgs,
    /// Id of the key to revoke (`key_...`), in any organization.
    pub(crate) key_id: String,
}

/// One allow-list entry, checked like `api_keys.create` checks it (a bare address or a CIDR range) and kept
/// as written.
fn parse_allowed_ip(text: &str) -> Result<String, String> {
    opgate::keys::ip::parse_allowed(text)
        .map(|_| text.to_owned())
        .map_err(|_| format!("`{text}` is not an IP address or CIDR range"))
}

/// An address (`10.0.0.1`, a /32 or /128) or a CIDR range (`10.0.0.0/8`).
fn parse_ip_or_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    opgate::keys::ip::parse_allowed(text.trim())
        .map_err(|_| format!("`{text}` is not an IP address or CIDR range"))
}

fn parse_rfc3339(text: &str) -> Result<opgate::core::Timestamp, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|e| e.to_string())
}

#[derive(Args)]
pub(crate) struct SeedKeysArgs {
    #[command(flatten)]
    pub(crate) data: DataDirArgs,
    /// Organization that owns the keys.
    #[arg(long, default_value = DEFAULT_ORG)]
    pub(crate) org: String,
    /// How many keys to insert.
    #[arg(long)]
    pub(crate) count: usize,
    /// Comma-separated scopes of every key.
    #[arg(long, value_delimiter = ',', default_value = "api_keys:read")]
    pub(crate) permissions: Vec<String>,
}

fn main() -> ExitCode {
    let Parsed { cli, settings } = match parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let (Command::Config(ConfigCommand::Check(args)), Some((matches, from_file))) =
        (&cli.command, &settings)
    {
        let command = subcommand(&["config", "check"]);
        return match cli::config::check(args, &command, matches, from_file) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            match e.downcast_ref::<cli::Exit>() {
                Some(cli::Exit(code, _)) => ExitCode::from(*code),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// A parsed command line: for `serve` and `config check`, the subcommand's final matches and the ids of
/// the settings the config file supplied.
struct Parsed {
    cli: Cli,
    settings: Option<(ArgMatches, Vec<String>)>,
}

/// Parses the command line; for `serve` and `config check` with `--config`, fills in the file's settings
/// under the environment and the flags.
fn parse() -> Result<Parsed, BoxError> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(argv.clone());
    let path: &[&str] = match matches.subcommand() {
        Some(("serve", _)) => &["serve"],
        Some(("config", _)) => &["config", "check"],
        _ => {
            return Ok(Parsed {
                cli: Cli::from_arg_matches(&matches)?,
                settings: None,
            })
        }
    };
    let sub_matches = |m: &ArgMatches| {
        path.iter()
            .try_fold(m.clone(), |m, name| m.subcommand_matches(name).cloned())
    };
    let sub = sub_matches(&matches).expect("the subcommand matched");
    let (matches, from_file) = match sub.get_one::<PathBuf>("config").cloned() {
        None => (matches, Vec::new()),
        Some(file) => {
            let (argv, from_file) = cli::config::merge(&subcommand(path), &sub, &file, argv)?;
            (Cli::command().try_get_matches_from(argv)?, from_file)
        }
    };
    let sub = sub_matches(&matches).expect("the subcommand matched");
    Ok(Parsed {
        cli: Cli::from_arg_matches(&matches)?,
        settings: Some((sub, from_file)),
    })
}

/// The clap command at `path` (e.g. `["config", "check"]`).
fn subcommand(path: &[&str]) -> clap::Command {
    path.iter().fold(Cli::command(), |c, name| {
        c.find_subcommand(name).expect("a known subcommand").clone()
    })
}

async fn run(cli: Cli) -> Result<(), BoxError> {
    match cli.command {
        Command::Serve(args) => cli::serve::run(args).await,
        Command::Config(_) => unreachable!("handled before the runtime starts"),
        Command::Admin(AdminCommand::CreateKey(args)) => cli::admin::create_key(args).await,
        Command::Admin(AdminCommand::RevokeKey(args)) => cli::admin::revoke_key(args).await,
        Command::Admin(AdminCommand::SeedKeys(args)) => cli::admin::seed_keys(args).await,
        Command::Admin(AdminCommand::MintSession(args)) => cli::admin::mint_session(args),
        Command::ApiKeys(args) => cli::finish(cli::api_keys::run(args).await),
        Command::Auth(args) => cli::finish(cli::auth::run(args).await),
        Command::Audit(args) => cli::finish(cli::audit::run(args).await),
        Command::Workspaces(args) => cli::finish(cli::workspaces::run(args).await),
        Command::Environments(args) => cli::finish(cli::environments::run(args).await),
        Command::ServiceAccounts(args) => cli::finish(cli::service_accounts::run(args).await),
        Command::Webhooks(args) => cli::finish(cli::webhooks::run(args).await),
        Command::Call(args) => cli::finish(cli::call::run(args).await),
        Command::Mcp(args) => cli::finish(cli::mcp::run(args)),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "opgate", &mut std::io::stdout());
            Ok(())
        }
        Command::Spec {
            out,
            sdk: Some(language),
            from_spec,
            config,
        } => cli::reference::sdk(
            language,
            from_spec.as_deref(),
            config.as_deref(),
            out.as_deref().expect("clap requires --out"),
        ),
        Command::Spec { out, config, .. } => {
            cli::reference::spec(config.as_deref(), out.as_deref())
        }
        Command::Docs { spec, out } => cli::reference::docs(&spec, &out),
    }
}
