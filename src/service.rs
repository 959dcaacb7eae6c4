//! Running a gateway as one thing: [`Service::builder`] takes the data directory, the settings and your own
//! operations; [`ServiceBuilder::start`] opens the data directory, mints the first admin key on an empty
//! database, starts serving and every background task a gateway needs (key usage, the key change log,
//! housekeeping, refusal tallies); [`Service::shutdown`] stops all of it in order and closes the store.
//! `opgate serve` is this plus argument parsing.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use opgate_auth::SessionSettings;
use opgate_core::{Clock, Registry, RegistryError};
use opgate_server::metrics::Metrics as Recorder;
use opgate_server::{Gateway, ServerConfig};
use opgate_spec::ApiInfo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{BoxError, DataDir, DataDirLock};

/// Where the gateway serves its Prometheus metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metrics {
    /// Not at all; no process-wide recorder is installed (the default for a library).
    #[default]
    Off,
    /// At `GET /metrics` on the API port (what `opgate serve` does by default).
    ApiPort,
    /// At `GET /metrics` on a port of its own.
    Listen(SocketAddr),
}

/// Registers an embedder's operations beside the built-ins.
type Registration = Arc<dyn Fn(&mut Registry) -> Result<(), RegistryError> + Send + Sync>;

/// Settings of a [`Service`], set with its methods, then [`ServiceBuilder::start`].
#[must_use = "a builder does nothing until `start`"]
pub struct ServiceBuilder {
    data_dir: PathBuf,
    listen: SocketAddr,
    listener: Option<std::net::TcpListener>,
    config: ServerConfig,
    secret: Option<String>,
    sessions: SessionSettings,
    clock: Option<Arc<dyn Clock>>,
    metrics: Metrics,
    audit_retention_days: Option<u32>,
    webhook_retention_days: Option<u32>,
    database_url: Option<String>,
    operations: Vec<Registration>,
    webhooks: opgate_webhooks::DispatchConfig,
    docs: bool,
    api_info: ApiInfo,
    upstreams: Vec<opgate_upstream::Declaration>,
}

/// A running gateway: its address, the admin key minted on first start, and the way to stop it.
pub struct Service {
    addr: SocketAddr,
    scheme: &'static str,
    metrics_addr: Option<SocketAddr>,
    admin_key: Option<String>,
    data: DataDir,
    gateway: Arc<Gateway>,
    operations: Operations,
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    _lock: DataDirLock,
}

impl Service {
    /// A gateway keeping its state in `data_dir` (created if needed), listening on `127.0.0.1:8080` unless
    /// told otherwise.
    pub fn builder(data_dir: impl Into<PathBuf>) -> ServiceBuilder {
        ServiceBuilder {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            listener: None,
            config: ServerConfig::default(),
            secret: None,
            sessions: SessionSettings::default(),
            clock: None,
            metrics: Metrics::Off,
            audit_retention_days: Some(90),
            webhook_retention_days: Some(30),
            database_url: None,
            operations: Vec::new(),
            webhooks: opgate_webhooks::DispatchConfig::default(),
            docs: true,
            api_info: crate::api_info(),
            upstreams: Vec::new(),
        }
    }

    /// The address it listens on (the chosen port when built with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, e.g. `http://127.0.0.1:8080` (`https` when serving TLS).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Where `GET /metrics` is served on a port of its own, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The admin key (`*` in organization `default`) minted because the database was empty; `None` on every
    /// later start. Show it to the operator once; it is never available again.
    pub fn admin_key(&self) -> Option<&str> {
        self.admin_key.as_deref()
    }

    /// The opened data directory (store, keys, session settings).
    pub fn data(&self) -> &DataDir {
        &self.data
    }

    /// The gateway itself, e.g. to call it in process with [`Gateway::handle`].
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Replaces the upstream operations (a configuration reload): the new set is built and checked whole,
    /// then swapped in at once, with the docs describing it; calls under way finish on the old set. On an
    /// error nothing changes.
    pub fn reload_upstreams(
        &self,
        upstreams: &[opgate_upstream::Declaration],
    ) -> Result<(), BoxError> {
        let registry = self.operations.registry(&self.data, upstreams)?;
        let docs = self
            .operations
            .docs
            .as_ref()
            .and_then(|info| crate::docs_of(&registry, info));
        self.gateway.replace_operations(registry, docs);
        Ok(())
    }

    /// Serves until `signal` resolves (e.g. Ctrl-C or SIGTERM), then shuts down as [`Service::shutdown`].
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }

    /// Stops: `/readyz` turns 503 for the configured shutdown delay, new connections are refused, in-flight
    /// requests and streams finish within the grace period, then key usage and tallied refusals are written,
    /// the background tasks stop and the store is closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.serving).await;
        for task in &self.background {
            task.abort();
        }
        self.data.keys.flush_usage().await;
        self.data.store.close().await;
        tracing::info!("stopped");
    }
}

impl ServiceBuilder {
    /// The address to listen on (port 0 picks a free port; see [`Service::local_addr`]).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Serves on a listener bound already (e.g. handed over by a supervisor).
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Limits, timeouts, TLS and trusted proxies.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// The server secret keying stored key hashes (base64 or raw, at least 32 bytes) instead of
    /// `<data-dir>/secret`; every instance sharing a database needs the same one.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Session tokens: the secret (default `<data-dir>/session_secret`), the issuer and audience they must
    /// carry. Nothing is read from the environment unless you put it here.
    pub fn sessions(mut self, settings: SessionSettings) -> Self {
        self.sessions = settings;
        self
    }

    /// The clock every time decision reads (tests pass a [`opgate_core::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Where to serve Prometheus metrics (default: off, and no process-wide recorder is installed).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Operations served by upstream services (the `[[upstream]]` tables of a configuration file, see
    /// [`opgate_upstream::load`]), beside the built-ins and yours.
    pub fn upstreams(mut self, upstreams: Vec<opgate_upstream::Declaration>) -> Self {
        self.upstreams = upstreams;
        self
    }

    /// Whether to serve the interactive reference at `GET /docs` and the spec at `GET /openapi.json`
    /// (default: on). Both describe exactly the operations this gateway serves, yours included.
    pub fn docs(mut self, on: bool) -> Self {
        self.docs = on;
        self
    }

    /// The title, version and description of the served spec and reference page (default: opgate's own).
    pub fn api_info(mut self, info: ApiInfo) -> Self {
        self.api_info = info;
        self
    }

    /// Days audit records are kept (default 90; `None` keeps them forever).
    pub fn audit_retention_days(mut self, days: Option<u32>) -> Self {
        self.audit_retention_days = days;
        self
    }

    /// Keeps the data in the PostgreSQL database at `url` instead of SQLite in the data directory (default:
    /// SQLite). Instances sharing a database must share the server and session secrets.
    pub fn database_url(mut self, url: Option<String>) -> Self {
        self.database_url = url;
        self
    }

    /// Days ended webhook deliveries (and their events and attempts) are kept (default 30; `None` keeps them
    /// forever). Pending deliveries are kept whatever their age.
    pub fn webhook_retention_days(mut self, days: Option<u32>) -> Self {
        self.webhook_retention_days = days;
        self
    }

    /// How webhooks are delivered: which addresses they may reach (`--allow-private-webhooks`,
    /// `--allow-insecure-webhooks`), the attempt timeout and the retry schedule.
    pub fn webhooks(mut self, config: opgate_webhooks::DispatchConfig) -> Self {
        self.webhooks = config;
        self
    }

    /// Your own operations, registered beside the built-ins: `|registry| { registry.register(MyOp)?; Ok(()) }`.
    /// It is called again for each registry built (serving, [`ServiceBuilder::openapi`]).
    pub fn operations(
        mut self,
        register: impl Fn(&mut Registry) -> Result<(), RegistryError> + Send + Sync + 'static,
    ) -> Self {
        self.operations.push(Arc::new(register));
        self
    }

    /// The OpenAPI document of this gateway (built-ins and your operations), without opening anything.
    pub fn openapi(&self, info: &ApiInfo) -> Result<serde_json::Value, BoxError> {
        let mut registry = crate::describe_registry()?;
        for register in &self.operations {
            register(&mut registry)?;
        }
        register_upstreams(&mut registry, &self.upstreams)?;
        Ok(opgate_spec::openapi(&registry, info))
    }

    /// Opens the data directory (locking it: one server per directory), mints the admin key on an empty
    /// database, binds the listener and starts serving and the background tasks.
    pub async fn start(self) -> Result<Service, BoxError> {
        let clock = self.clock.unwrap_or_else(opgate_core::SystemClock::shared);
        let data = match &self.database_url {
            Some(url) => {
                DataDir::open_postgres(
                    &self.data_dir,
                    url,
                    self.secret.as_deref(),
                    &self.sessions,
                    clock,
                )
                .await?
            }
            None => DataDir::open_with_clock(
                &self.data_dir,
                self.secret.as_deref(),
                &self.sessions,
                clock,
            )?,
        };
        let lock = data.lock()?;
        data.store.recover().await?;
        let admin_key = data.keys.bootstrap_admin().await?;
        let operations = Operations {
            registered: self.operations,
            policy: self.webhooks.policy,
            docs: self.docs.then(|| self.api_info.clone()),
        };
        let registry = operations.registry(&data, &self.upstreams)?;
        let recorder = match self.metrics {
            Metrics::Off => None,
            Metrics::ApiPort | Metrics::Listen(_) => Some(
                Recorder::global()
                    .ok_or("another metrics recorder is installed in this process")?,
            ),
        };
        let on_api_port = recorder
            .clone()
            .filter(|_| self.metrics == Metrics::ApiPort);
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let gateway = data.gateway(registry, self.config, on_api_port, operations.docs.as_ref());
        let listener = match self.listener {
            Some(listener) => {
                listener.set_nonblocking(true)?;
                TcpListener::from_std(listener)?
            }
            None => TcpListener::bind(self.listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", self.listen))?,
        };
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (stop_metrics, metrics_stopped) = oneshot::channel::<()>();
        let mut background = Vec::new();
        let mut metrics_addr = None;
        if let (Some(recorder), Metrics::Listen(at)) = (recorder, self.metrics) {
            let listener = TcpListener::bind(at)
                .await
                .map_err(|e| format!("cannot listen on {at} for metrics: {e}"))?;
            metrics_addr = Some(listener.local_addr()?);
            background.push(tokio::spawn(opgate_server::serve_metrics(
                recorder,
                listener,
                async {
                    let _ = metrics_stopped.await;
                },
            )));
        }
        background.push(data.keys.start_usage_flusher(Duration::from_secs(1)));
        background.push(data.keys.follow_changes(Duration::from_millis(500)));
        background
            .push(data.spawn_housekeeping(self.audit_retention_days, self.webhook_retention_days));
        background.push(data.dispatcher(self.webhooks.clone()).spawn());
        background.push(data.watch_storage(gateway.storage_up()));
        // Scheduled rotations and expiry notices: due work is looked for every 30 s, at once on start.
        background.push(data.scheduler().spawn(Duration::from_secs(30)));
        let serving = tokio::spawn(Arc::clone(&gateway).serve(listener, async move {
            let _ = stopped.await;
            let _ = stop_metrics.send(());
        }));
        Ok(Service {
            addr,
            scheme,
            metrics_addr,
            admin_key,
            data,
            gateway,
            operations,
            stop: Some(stop),
            serving,
            background,
            _lock: lock,
        })
    }
}

/// What a running gateway's operation set is built from, kept to build it again on a reload.
struct Operations {
    registered: Vec<Registration>,
    policy: opgate_webhooks::guard::Policy,
    docs: Option<ApiInfo>,
}

impl Operations {
    /// The built-ins, the embedder's operations and `upstreams`, in that order.
    fn registry(
        &self,
        data: &DataDir,
        upstreams: &[opgate_upstream::Declaration],
    ) -> Result<Registry, BoxError> {
        let mut registry = data.registry_with(self.policy)?;
        for register in &self.registered {
            register(&mut registry)?;
        }
        register_upstreams(&mut registry, upstreams)?;
        Ok(registry)
    }
}

/// Adds upstream operations to `registry`; an id another operation has is refused, naming it.
fn register_upstreams(
    registry: &mut Registry,
    upstreams: &[opgate_upstream::Declaration],
) -> Result<(), BoxError> {
    for upstream in upstreams {
        registry
            .register_dynamic(upstream.operation()?)
            .map_err(|e| format!("upstream `{}`: {e}", upstream.id))?;
    }
    Ok(())
}
