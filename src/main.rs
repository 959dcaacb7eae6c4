//! The `opgate` command line: run the gateway, and administer its data directory offline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use opgate::keys::{KeySpec, DEFAULT_ORG};
use opgate::server::Limits;
use opgate::{BoxError, DataDir};

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
    /// Administer the data directory offline (no running server needed).
    #[command(subcommand)]
    Admin(AdminCommand),
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
}

impl DataDirArgs {
    fn open(&self) -> Result<DataDir, BoxError> {
        DataDir::open(&self.data_dir, self.secret.as_deref())
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "OPGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    data: DataDirArgs,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "OPGATE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
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

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an API key offline and print only its secret on stdout.
    CreateKey(CreateKeyArgs),
    /// Insert many keys in one transaction (test and benchmark fixtures); prints nothing but a count.
    SeedKeys(SeedKeysArgs),
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
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Days until the key expires.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
    expires_in_days: Option<u32>,
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
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), BoxError> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Admin(AdminCommand::CreateKey(args)) => create_key(args).await,
        Command::Admin(AdminCommand::SeedKeys(args)) => seed_keys(args).await,
    }
}

async fn serve(args: ServeArgs) -> Result<(), BoxError> {
    init_logging(args.log_format);
    let data = args.data.open()?;
    if let Some(admin_key) = data.keys.bootstrap_admin().await? {
        // Printed once, deliberately, on a line of its own; never logged.
        eprintln!("admin key: {admin_key}");
    }
    let registry = data.registry()?;
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_seconds),
        ..Limits::default()
    };
    let gateway = data.gateway(registry, limits);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    eprintln!("opgate listening on http://{}", listener.local_addr()?);
    gateway.serve(listener, shutdown_signal()).await;
    data.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn create_key(args: CreateKeyArgs) -> Result<(), BoxError> {
    validate_scopes(&args.permissions)?;
    let data = args.data.open()?;
    let spec = KeySpec {
        org_id: args.org,
        name: args.name,
        description: None,
        permissions: args.permissions,
        rate_limit: args.rate_limit,
        allowed_ips: Vec::new(),
        created_by: "cli".into(),
        expires_at: args.expires_in_days.map(|d| {
            opgate::core::Timestamp(opgate::core::Timestamp::now().unix() + i64::from(d) * 86_400)
        }),
    };
    let (secret, _) = data.keys.mint(spec).await?;
    data.store.close().await;
    println!("{secret}");
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

fn validate_scopes(scopes: &[String]) -> Result<(), BoxError> {
    match scopes.iter().find(|s| !opgate::core::scope::is_valid(s)) {
        Some(bad) => Err(format!(
            "`{bad}` is not a scope: use `*`, `<resource>:<action>` or `<resource>:*`"
        )
        .into()),
        None => Ok(()),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
