//! The `opgate` command line: run the gateway, and administer its data directory offline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use opgate::auth::{NewSession, SessionSettings};
use opgate::keys::{KeySpec, DEFAULT_ORG};
use opgate::server::ServerConfig;
use opgate::{BoxError, DataDir};

mod cli;
mod config;

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
    /// Call any operation on a running gateway: `opgate call api_keys.list '{"limit": 10}'`.
    Call(cli::CallArgs),
    /// Print a shell completion script, e.g. `opgate completions bash > ~/.local/share/bash-completion/completions/opgate`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the OpenAPI 3.1 document of every operation (what `spec/openapi.json` holds).
    Spec {
        /// Write it to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
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

#[derive(Args, Clone)]
struct DataDirArgs {
    /// Directory holding the SQLite database and the server secret.
    #[arg(long, env = "OPGATE_DATA_DIR", default_value = "opgate-data")]
    data_dir: PathBuf,
    /// Server secret keying the stored key hashes (base64, at least 32 bytes); default: `<data-dir>/secret`.
    #[arg(
        long = "secret",
        env = "OPGATE_SECRET",
        hide_env_values = true,
        hide = true
    )]
    secret: Option<String>,
    /// Secret signing session tokens (base64, at least 32 bytes); default: `<data-dir>/session_secret`.
    #[arg(
        long = "session-secret",
        env = "OPGATE_SESSION_SECRET",
        hide_env_values = true,
        hide = true
    )]
    session_secret: Option<String>,
}

impl DataDirArgs {
    fn open(&self) -> Result<DataDir, BoxError> {
        self.open_with(None, None)
    }

    /// Opens the data directory; session tokens must carry `issuer` and `audience` when given.
    fn open_with(
        &self,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<DataDir, BoxError> {
        DataDir::open_with(
            &self.data_dir,
            self.secret.as_deref(),
            &self.session_settings(issuer, audience),
        )
    }

    fn session_settings(
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
struct ServeArgs {
    /// A TOML file of settings, keys named after these flags (`max_body_bytes = 2097152`); the environment and
    /// flags override it.
    #[arg(long, env = "OPGATE_CONFIG")]
    config: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) instead of plain HTTP.
    #[arg(long, env = "OPGATE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "OPGATE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "OPGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    data: DataDirArgs,
    /// Comma-separated CIDRs of proxies whose `X-Forwarded-For` is believed (e.g. `10.0.0.0/8,127.0.0.1/32`).
    #[arg(long, env = "OPGATE_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_ip_or_cidr)]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Requests per minute for keys and sessions without a rate limit of their own (default: unlimited).
    #[arg(long, env = "OPGATE_DEFAULT_RATE_LIMIT", value_parser = clap::value_parser!(u32).range(1..))]
    default_rate_limit: Option<u32>,
    /// Issuer (`iss`) every session token must carry; default: not checked.
    #[arg(long, env = "OPGATE_SESSION_ISSUER")]
    session_issuer: Option<String>,
    /// Audience (`aud`) every session token must name; default: not checked.
    #[arg(long, env = "OPGATE_SESSION_AUDIENCE")]
    session_audience: Option<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "OPGATE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Seconds the server keeps serving after SIGTERM with `/readyz` at 503, before it stops accepting.
    #[arg(long, env = "OPGATE_SHUTDOWN_DELAY_SECONDS", default_value_t = 0)]
    shutdown_delay_seconds: u64,
    /// Seconds a client has to send its request headers; also the idle time after which a keep-alive
    /// connection is closed.
    #[arg(long, env = "OPGATE_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10)]
    header_read_timeout_seconds: u64,
    /// Seconds a request may take from its headers to its response head (503 past it).
    #[arg(long, env = "OPGATE_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    request_timeout_seconds: u64,
    /// Largest request head (request line and headers), in bytes.
    #[arg(long, env = "OPGATE_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    max_header_bytes: usize,
    /// Requests handled at once at most; more get 503 at once.
    #[arg(long, env = "OPGATE_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    max_concurrent_requests: usize,
    /// Requests one principal (key or session) may have in flight at once; more get 503.
    #[arg(long, env = "OPGATE_MAX_CONCURRENT_REQUESTS_PER_PRINCIPAL", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_requests_per_principal: u32,
    /// Streamed (NDJSON) responses one principal may have open at once; more get 503.
    #[arg(long, env = "OPGATE_MAX_STREAMS_PER_PRINCIPAL", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    max_streams_per_principal: u32,
    /// Seconds a request body may take to arrive once its head is in (400 and the connection closes past it).
    #[arg(long, env = "OPGATE_BODY_READ_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    body_read_timeout_seconds: u64,
    /// Seconds a response may make no progress because the client reads nothing, before the connection is
    /// dropped.
    #[arg(long, env = "OPGATE_WRITE_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    write_timeout_seconds: u64,
    /// Open connections at most; past it new connections are closed at once.
    #[arg(long, env = "OPGATE_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Open connections from one client address at most (trusted proxies are exempt); past it new
    /// connections from that address are closed at once.
    #[arg(long, env = "OPGATE_MAX_CONNECTIONS_PER_IP", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_ip: u32,
    /// Days audit records are kept; older ones are deleted hourly in the background (0 keeps them forever).
    #[arg(long, env = "OPGATE_AUDIT_RETENTION_DAYS", default_value_t = 90)]
    audit_retention_days: u32,
    /// Serve Prometheus metrics (`on`, the default: at `GET /metrics` on the API port, or on
    /// `--metrics-listen` when set) or not at all (`off`).
    #[arg(long, env = "OPGATE_METRICS", value_enum, default_value_t = Switch::On)]
    metrics: Switch,
    /// Serve `GET /metrics` on this address instead of the API port (e.g. `127.0.0.1:9090`).
    #[arg(long, env = "OPGATE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Seconds in-flight requests may take to finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "OPGATE_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    shutdown_grace_seconds: u64,
    /// Log format on stderr.
    #[arg(long, env = "OPGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
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
struct MintSessionArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// Organization of the session (`org`).
    #[arg(long, env = "OPGATE_ORG", default_value = DEFAULT_ORG)]
    org: String,
    /// Subject (`sub`): the session's principal id; keys it creates record it as `created_by`.
    #[arg(long)]
    sub: String,
    /// Scopes separated by spaces or commas, e.g. `"api_keys:read api_keys:write"` or `*`.
    #[arg(long)]
    scopes: String,
    /// Seconds until the token expires (at most 30 days).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=opgate::auth::MAX_TTL_SECONDS))]
    ttl: u64,
    /// Issuer (`iss`) to sign in; must match the server's `--session-issuer`.
    #[arg(long, env = "OPGATE_SESSION_ISSUER")]
    issuer: Option<String>,
    /// Audience (`aud`) to sign in; must match the server's `--session-audience`.
    #[arg(long, env = "OPGATE_SESSION_AUDIENCE")]
    audience: Option<String>,
}

#[derive(Args)]
struct CreateKeyArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// Organization that owns the key.
    #[arg(long, env = "OPGATE_ORG", default_value = DEFAULT_ORG)]
    org: String,
    /// Name of the key.
    #[arg(long)]
    name: String,
    /// Comma-separated scopes, e.g. `api_keys:read,api_keys:write` or `*`.
    #[arg(long, value_delimiter = ',', required = true)]
    permissions: Vec<String>,
    /// Requests per minute.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rate_limit: Option<u32>,
    /// Days until the key expires.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650), conflicts_with = "expires_at")]
    expires_in_days: Option<u32>,
    /// Exact expiry as an RFC 3339 time, e.g. `2027-01-31T00:00:00Z`.
    #[arg(long, value_parser = parse_rfc3339)]
    expires_at: Option<opgate::core::Timestamp>,
    /// Comma-separated IP addresses or CIDR ranges the key may be used from (default: any).
    #[arg(long, value_delimiter = ',', value_parser = parse_allowed_ip)]
    allowed_ips: Vec<String>,
}

#[derive(Args)]
struct RevokeKeyArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// Id of the key to revoke (`key_...`), in any organization.
    key_id: String,
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
struct SeedKeysArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// Organization that owns the keys.
    #[arg(long, default_value = DEFAULT_ORG)]
    org: String,
    /// How many keys to insert.
    #[arg(long)]
    count: usize,
    /// Comma-separated scopes of every key.
    #[arg(long, value_delimiter = ',', default_value = "api_keys:read")]
    permissions: Vec<String>,
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
        return match check_config(args, matches, from_file) {
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
            let (argv, from_file) = config::merge(&subcommand(path), &sub, &file, argv)?;
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

/// `opgate config check`: everything `serve` would check before listening, then the effective settings.
fn check_config(
    args: &ServeArgs,
    matches: &ArgMatches,
    from_file: &[String],
) -> Result<(), BoxError> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        opgate::server::Tls::from_pem_files(cert, key)?;
    }
    print!(
        "{}",
        config::describe(&subcommand(&["config", "check"]), matches, from_file)
    );
    println!("# ok: the settings are valid");
    Ok(())
}

async fn run(cli: Cli) -> Result<(), BoxError> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Config(_) => unreachable!("handled before the runtime starts"),
        Command::Admin(AdminCommand::CreateKey(args)) => create_key(args).await,
        Command::Admin(AdminCommand::RevokeKey(args)) => revoke_key(args).await,
        Command::Admin(AdminCommand::SeedKeys(args)) => seed_keys(args).await,
        Command::Admin(AdminCommand::MintSession(args)) => mint_session(args),
        Command::ApiKeys(args) => cli::finish(cli::api_keys::run(args).await),
        Command::Auth(args) => cli::finish(cli::auth::run(args).await),
        Command::Audit(args) => cli::finish(cli::audit::run(args).await),
        Command::Call(args) => cli::finish(cli::call::run(args).await),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "opgate", &mut std::io::stdout());
            Ok(())
        }
        Command::Spec { out } => {
            let text = opgate::spec::render(&opgate::openapi()?);
            match out {
                Some(path) => {
                    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::Docs { spec, out } => write_docs(&spec, &out),
    }
}

fn write_docs(spec: &std::path::Path, out: &std::path::Path) -> Result<(), BoxError> {
    let text = std::fs::read_to_string(spec).map_err(|e| format!("{}: {e}", spec.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", spec.display()))?;
    let pages = opgate::spec::markdown::reference(&doc)?;
    std::fs::create_dir_all(out)?;
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let generated = std::fs::read_to_string(&path)
            .is_ok_and(|t| t.starts_with(opgate::spec::markdown::GENERATED_HEADER));
        if generated && !pages.contains_key(&name) {
            std::fs::remove_file(&path)?;
        }
    }
    for (name, page) in &pages {
        std::fs::write(out.join(name), page)?;
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), BoxError> {
    init_logging(args.log_format);
    let data = args
        .data
        .open_with(args.session_issuer.clone(), args.session_audience.clone())?;
    let _lock = data.lock()?;
    if let Some(admin_key) = data.keys.bootstrap_admin().await? {
        // Printed once, deliberately, on a line of its own; never logged.
        eprintln!("admin key: {admin_key}");
    }
    let registry = data.registry()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(opgate::server::Tls::from_pem_files(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let secs = std::time::Duration::from_secs;
    let config = ServerConfig {
        tls,
        trusted_proxies: args.trusted_proxies,
        default_rate_limit: args.default_rate_limit,
        max_body_bytes: args.max_body_bytes,
        shutdown_grace: secs(args.shutdown_grace_seconds),
        header_read_timeout: secs(args.header_read_timeout_seconds),
        body_read_timeout: secs(args.body_read_timeout_seconds),
        write_timeout: secs(args.write_timeout_seconds),
        shutdown_delay: secs(args.shutdown_delay_seconds),
        request_timeout: secs(args.request_timeout_seconds),
        max_header_bytes: args.max_header_bytes,
        max_concurrent_requests: args.max_concurrent_requests,
        max_concurrent_requests_per_principal: args.max_concurrent_requests_per_principal as usize,
        max_streams_per_principal: args.max_streams_per_principal as usize,
        max_connections: args.max_connections,
        max_connections_per_ip: args.max_connections_per_ip as usize,
        ..ServerConfig::default()
    };
    let metrics = match args.metrics {
        Switch::On => opgate::server::metrics::Metrics::global(),
        Switch::Off => None,
    };
    let on_api_port = metrics.clone().filter(|_| args.metrics_listen.is_none());
    let gateway = data.gateway(registry, config, on_api_port);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = match (metrics, args.metrics_listen) {
        (Some(metrics), Some(addr)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?;
            eprintln!("metrics on http://{}/metrics", listener.local_addr()?);
            Some(tokio::spawn(opgate::server::serve_metrics(
                metrics,
                listener,
                async {
                    let _ = metrics_stopped.await;
                },
            )))
        }
        _ => None,
    };
    eprintln!("opgate listening on {scheme}://{}", listener.local_addr()?);
    let flusher = data
        .keys
        .start_usage_flusher(std::time::Duration::from_secs(1));
    let follower = data
        .keys
        .follow_changes(std::time::Duration::from_millis(500));
    let housekeeping = data.spawn_housekeeping(Some(args.audit_retention_days).filter(|&d| d > 0));
    gateway.serve(listener, shutdown_signal()).await;
    let _ = stop_metrics.send(());
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    flusher.abort();
    follower.abort();
    housekeeping.abort();
    data.keys.flush_usage().await;
    data.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn revoke_key(args: RevokeKeyArgs) -> Result<(), BoxError> {
    let data = args.data.open()?;
    let key = opgate::store::KeyStore::find_key(&data.store, &args.key_id)
        .await?
        .ok_or_else(|| format!("no API key `{}` in this data directory", args.key_id))?;
    let now = opgate::core::Timestamp::now().unix();
    opgate::store::KeyStore::revoke_key(&data.store, &key.org_id, &key.id, now).await?;
    data.store.close().await;
    eprintln!("revoked {} (organization {})", key.id, key.org_id);
    Ok(())
}

async fn create_key(args: CreateKeyArgs) -> Result<(), BoxError> {
    validate_scopes(&args.permissions)?;
    validate_org(&args.org)?;
    let data = args.data.open()?;
    let spec = KeySpec {
        org_id: args.org,
        name: args.name,
        description: None,
        permissions: args.permissions,
        rate_limit: args.rate_limit,
        allowed_ips: args.allowed_ips,
        created_by: "cli".into(),
        expires_at: args.expires_at.or_else(|| {
            let days = i64::from(args.expires_in_days?);
            Some(opgate::core::Timestamp(
                opgate::core::Timestamp::now().unix() + days * 86_400,
            ))
        }),
    };
    let (secret, _) = data.keys.mint(spec).await?;
    data.store.close().await;
    println!("{secret}");
    Ok(())
}

fn mint_session(args: MintSessionArgs) -> Result<(), BoxError> {
    let scopes: Vec<String> = args
        .scopes
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    validate_scopes(&scopes)?;
    validate_org(&args.org)?;
    let settings = args.data.session_settings(args.issuer, args.audience);
    let config = opgate::session_config(&args.data.data_dir, &settings)?;
    let token = config.mint(&NewSession {
        sub: args.sub,
        org: args.org,
        scopes,
        ttl_seconds: args.ttl,
    })?;
    // Printed deliberately, alone on stdout (for `TOKEN=$(opgate admin mint-session ...)`); never logged.
    println!("{token}");
    Ok(())
}

async fn seed_keys(args: SeedKeysArgs) -> Result<(), BoxError> {
    validate_scopes(&args.permissions)?;
    let data = args.data.open()?;
    const CHUNK: usize = 10_000;
    let mut done = 0;
    while done < args.count {
        let n = CHUNK.min(args.count - done);
        let specs = (done..done + n)
            .map(|i| KeySpec {
                org_id: args.org.clone(),
                name: format!("seed-{i}"),
                description: None,
                permissions: args.permissions.clone(),
                rate_limit: None,
                allowed_ips: Vec::new(),
                created_by: "cli".into(),
                expires_at: None,
            })
            .collect();
        data.keys.mint_many(specs).await?;
        done += n;
    }
    data.store.close().await;
    eprintln!("seeded {done} keys into org {}", args.org);
    Ok(())
}

/// Every scope must be one some built-in operation requires (or a wildcard over one): anything else would
/// silently grant nothing.
fn validate_scopes(scopes: &[String]) -> Result<(), BoxError> {
    let catalog = opgate::describe_registry()?.scopes();
    for scope in scopes {
        catalog.check(scope)?;
    }
    Ok(())
}

fn validate_org(org: &str) -> Result<(), BoxError> {
    if opgate::core::validate::is_org_id(org) {
        Ok(())
    } else {
        Err(format!(
            "--org: `{org}` is not an organization id: 1–128 letters, digits, `.`, `_` or `-`, starting with a \
             letter or digit"
        )
        .into())
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain `key=value` fields.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
