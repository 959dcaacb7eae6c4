//! opgate as a library: serve your own typed operations beside the built-in ones (API keys, sessions, audit
//! log), with one authentication, scope model, validation, rate limiting, idempotency, audit and spec.
//!
//! (Not compiled as a doc test: the same program, whole, is `examples/embedded`, which the test suite builds as
//! an outside crate and runs.)
//!
//! ```ignore
//! use opgate::core::{Context, Error, OpMeta, Operation, SideEffect};
//!
//! /// Input of `greetings.create`.
//! #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, garde::Validate)]
//! #[serde(deny_unknown_fields)]
//! struct NewGreeting {
//!     /// What to say.
//!     #[garde(length(chars, min = 1, max = 100))]
//!     text: String,
//! }
//!
//! struct Create;
//!
//! impl Operation for Create {
//!     const META: OpMeta = OpMeta {
//!         id: "greetings.create",
//!         scope: "greetings:write",
//!         side_effect: SideEffect::Write,
//!         summary: "Say something.",
//!     };
//!     const EXAMPLE: &'static str = r#"{"text": "Hello!"}"#;
//!     type Input = NewGreeting;
//!     type Output = NewGreeting;
//!
//!     async fn call(&self, _ctx: Context, input: NewGreeting) -> Result<NewGreeting, Error> {
//!         Ok(input)
//!     }
//! }
//!
//! # async fn run() -> Result<(), opgate::BoxError> {
//! let running = opgate::Service::builder("greetings-data")
//!     .operations(|registry| {
//!         registry.register(Create)?;
//!         Ok(())
//!     })
//!     .start()
//!     .await?;
//! println!("serving on {}; admin key {:?}", running.url(), running.admin_key());
//! running.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`Service`] starts and stops everything; [`DataDir`] and [`registry`] are the pieces it is built from.
//! The README's "Embedding opgate" section walks through a whole program (`examples/embedded`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(feature = "logging")]
pub mod logging;
mod service;

pub use service::{Metrics, Service, ServiceBuilder};

pub use opgate_auth as auth;
#[cfg(feature = "client")]
pub use opgate_client as client;
pub use opgate_core as core;
pub use opgate_keys as keys;
pub use opgate_server as server;
pub use opgate_spec as spec;
pub use opgate_store as store;
pub use opgate_store_postgres as store_postgres;
pub use opgate_upstream as upstream;
pub use opgate_webhooks as webhooks;

use opgate_auth::{SessionAuthenticator, SessionConfig, SessionSettings, TokenRouter};
use opgate_core::{Registry, RegistryError};
use opgate_keys::{ApiKeyAuthenticator, ApiKeys, KeyHasher};
use opgate_server::{Gateway, ServerConfig};
use opgate_spec::ApiInfo;
use opgate_store::{AuditLog, Database, SqliteStore};

/// Name of the SQLite file inside the data directory.
pub const DB_FILE: &str = "opgate.db";

/// A boxed error for start-up failures, printed to the operator as is.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The gateway's state on disk, opened.
pub struct DataDir {
    /// Where it lives.
    pub path: PathBuf,
    /// The database: SQLite in the data directory, or PostgreSQL for a fleet.
    pub store: Arc<dyn Database>,
    /// The key service over the database.
    pub keys: Arc<ApiKeys>,
    /// How session tokens are signed and checked (secret, issuer, audience).
    pub sessions: SessionConfig,
    /// The clock every time decision reads (the system's, or a test's manual one).
    pub clock: Arc<dyn opgate_core::Clock>,
    /// Seals the secrets the server must read again (webhook signing secrets) under a key derived from the
    /// server secret.
    pub sealer: opgate_webhooks::Sealer,
}

impl DataDir {
    /// Opens (creating if needed, mode 0700) the data directory: migrates the database and loads the server
    /// secret (`secret_override` wins over `<data-dir>/secret`) and the session secret
    /// (`<data-dir>/session_secret`). Nothing is read from the environment: [`DataDir::open_with`] takes
    /// session settings, and the CLI passes what it read from `OPGATE_*`.
    pub fn open(path: &Path, secret_override: Option<&str>) -> Result<Self, BoxError> {
        Self::open_with(path, secret_override, &SessionSettings::default())
    }

    /// Like [`DataDir::open`], with explicit session settings: the session secret is `sessions.secret` when
    /// given, else `<data-dir>/session_secret` (created on first use, mode 0600).
    pub fn open_with(
        path: &Path,
        secret_override: Option<&str>,
        sessions: &SessionSettings,
    ) -> Result<Self, BoxError> {
        Self::open_with_clock(
            path,
            secret_override,
            sessions,
            opgate_core::SystemClock::shared(),
        )
    }

    /// Like [`DataDir::open_with`], telling time by `clock` (tests move a [`opgate_core::ManualClock`]).
    pub fn open_with_clock(
        path: &Path,
        secret_override: Option<&str>,
        sessions: &SessionSettings,
        clock: Arc<dyn opgate_core::Clock>,
    ) -> Result<Self, BoxError> {
        create_data_dir(path)?;
        let hasher = KeyHasher::load(path, secret_override)?;
        let sessions = SessionConfig::load(path, sessions)?;
        let store = SqliteStore::open(&path.join(DB_FILE))
            .map_err(|e| format!("cannot open database {}: {e}", path.join(DB_FILE).display()))?;
        Ok(Self::assemble(
            path,
            Arc::new(store),
            hasher,
            sessions,
            clock,
        ))
    }

    /// Like [`DataDir::open_with_clock`], keeping the data in the PostgreSQL database at `database_url`
    /// (migrated on open) instead of SQLite: the engine of a fleet. The data directory still holds the
    /// secrets when `secret_override` and the session settings do not give them; every instance of a fleet
    /// must use the same ones.
    pub async fn open_postgres(
        path: &Path,
        database_url: &str,
        secret_override: Option<&str>,
        sessions: &SessionSettings,
        clock: Arc<dyn opgate_core::Clock>,
    ) -> Result<Self, BoxError> {
        create_data_dir(path)?;
        let hasher = KeyHasher::load(path, secret_override)?;
        let sessions = SessionConfig::load(path, sessions)?;
        let store = opgate_store_postgres::PgStore::connect(database_url)
            .await
            .map_err(|e| format!("cannot open the PostgreSQL database: {e}"))?;
        Ok(Self::assemble(
            path,
            Arc::new(store),
            hasher,
            sessions,
            clock,
        ))
    }

    /// The data directory over an opened `store`: the key service, sealer and event payloads wired to it.
    fn assemble(
        path: &Path,
        store: Arc<dyn Database>,
        hasher: KeyHasher,
        sessions: SessionConfig,
        clock: Arc<dyn opgate_core::Clock>,
    ) -> Self {
        let sealer =
            opgate_webhooks::Sealer::new(&hasher.derive_key(opgate_webhooks::SEALING_PURPOSE));
        let keys = ApiKeys::new(
            store.clone(),
            store.clone(),
            sealer.clone(),
            hasher,
            Arc::clone(&clock),
        );
        // `api_key.*` events carry the key's metadata as `api_keys.get` shows it, written with the change.
        store.key_payloads(Arc::new(|record: &opgate_store::KeyRecord, at: i64| {
            serde_json::to_value(opgate_keys::types::KeyDetails::at(record.clone(), at))
                .unwrap_or_default()
        }));
        // `workspace.*` and `service_account.*` carry the object as `workspaces.get` / `service_accounts.get`
        // show it.
        store.workspace_payloads(Arc::new(|ws: &opgate_store::Workspace, _| {
            serde_json::to_value(opgate_tenancy::types::WorkspaceDetails::from(ws.clone()))
                .unwrap_or_default()
        }));
        store.account_payloads(Arc::new(|sa: &opgate_store::ServiceAccount, _| {
            serde_json::to_value(opgate_tenancy::types::ServiceAccountDetails::from(
                sa.clone(),
            ))
            .unwrap_or_default()
        }));
        DataDir {
            path: path.to_owned(),
            store,
            keys,
            sessions,
            clock,
            sealer,
        }
    }

    /// The registry of every built-in operation, served from this data directory, taking webhook URLs the
    /// strict policy allows (no private or loopback addresses, HTTPS).
    pub fn registry(&self) -> Result<Registry, RegistryError> {
        self.registry_with(opgate_webhooks::guard::Policy::default())
    }

    /// Like [`DataDir::registry`], taking webhook URLs `policy` allows.
    pub fn registry_with(
        &self,
        policy: opgate_webhooks::guard::Policy,
    ) -> Result<Registry, RegistryError> {
        let store = &self.store;
        let webhooks = opgate_webhooks::Webhooks::new(store.clone(), self.sealer.clone(), policy);
        registry(&self.keys, store.clone(), store.clone(), &webhooks)
    }

    /// The key scheduler over this data directory (scheduled rotations, expiry notices; start it with
    /// [`opgate_keys::Scheduler::spawn`]).
    pub fn scheduler(&self) -> Arc<opgate_keys::Scheduler> {
        self.keys.scheduler(self.store.clone())
    }

    /// The webhook dispatcher over this data directory's outbox (start it with
    /// [`opgate_webhooks::Dispatcher::spawn`]).
    pub fn dispatcher(
        &self,
        config: opgate_webhooks::DispatchConfig,
    ) -> Arc<opgate_webhooks::Dispatcher> {
        opgate_webhooks::Dispatcher::new(
            self.store.clone(),
            self.sealer.clone(),
            Arc::clone(&self.clock),
            Arc::new(opgate_webhooks::guard::SystemResolver),
            config,
        )
    }

    /// A gateway serving `registry`, authenticating API keys from this data directory and session tokens
    /// signed with its session secret, serving `metrics` at `GET /metrics` when given, and, when `docs` is
    /// given, the reference page and the spec of `registry` described with that info.
    pub fn gateway(
        &self,
        registry: Registry,
        config: ServerConfig,
        metrics: Option<opgate_server::metrics::Metrics>,
        docs: Option<&ApiInfo>,
    ) -> Arc<Gateway> {
        let docs = docs.and_then(|info| docs_of(&registry, info));
        let keys = Arc::new(ApiKeyAuthenticator::new(Arc::clone(&self.keys)));
        let sessions = SessionAuthenticator::new(self.sessions.clone(), Arc::clone(&self.clock));
        let authenticator = Arc::new(TokenRouter::new(keys, sessions));
        let store = self.store.clone();
        let shared_limits = self
            .store
            .rate_cells()
            .map(|cells| (cells, config.shared_limits_down));
        let mut gateway = Gateway::new(Arc::new(registry), authenticator, config)
            .with_journal(store.clone())
            .with_workspaces(store)
            .with_clock(Arc::clone(&self.clock));
        if let Some(metrics) = metrics {
            gateway = gateway.with_metrics(metrics);
        }
        if let Some(docs) = docs {
            gateway = gateway.with_docs(docs);
        }
        // A fleet's limits hold for the fleet: taken from the database's shared cells a lease at a time.
        if let Some((cells, when_down)) = shared_limits {
            gateway = gateway.with_rate_cells(cells, when_down);
        }
        Arc::new(gateway)
    }
}

/// The reference page and spec describing `registry`.
pub(crate) fn docs_of(registry: &Registry, info: &ApiInfo) -> Option<opgate_server::Docs> {
    let site = opgate_spec::page::DocsSite::new(&opgate_spec::openapi(registry, info));
    opgate_server::Docs::new(site.page, &site.csp, site.spec)
        .map(|docs| docs.with_markdown(site.llms, site.markdown))
}

/// The exclusive lock of a data directory, held by one serving gateway for as long as it lives.
#[derive(Debug)]
pub struct DataDirLock {
    _file: Option<std::fs::File>,
}

impl DataDir {
    /// Locks the data directory for serving: a second `opgate serve` on the same directory fails to start,
    /// since two servers would each trust their own cache of the keys. The lock is on the database file itself
    /// (an advisory `flock`, apart from SQLite's own locks), so it cannot be removed from under a running
    /// server. Offline `opgate admin` commands do not take it; their changes reach the server through the key
    /// change log.
    pub fn lock(&self) -> Result<DataDirLock, BoxError> {
        if self.store.engine() != "sqlite" {
            // A fleet shares its database by design; PostgreSQL keeps the instances consistent.
            return Ok(DataDirLock { _file: None });
        }
        let path = self.path.join(DB_FILE);
        let file = std::fs::File::open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: Some(file) }),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!(
                "another opgate server is using the data directory {} (it holds {}); stop it first or use \
                 another --data-dir",
                self.path.display(),
                path.display()
            )
            .into()),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(format!("cannot lock {}: {e}", path.display()).into())
            }
        }
    }

    /// Pings the database every second and keeps `up` (what `GET /readyz` reads) in step: down when a ping
    /// fails or takes over two seconds, up again at the first answer.
    pub fn watch_storage(
        &self,
        up: Arc<std::sync::atomic::AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let answered =
                    tokio::time::timeout(std::time::Duration::from_secs(2), store.ping()).await;
                let ok = matches!(answered, Ok(Ok(())));
                let was = up.swap(ok, std::sync::atomic::Ordering::Relaxed);
                if was != ok {
                    if ok {
                        tracing::info!("the database answers again; ready");
                    } else {
                        tracing::warn!("the database does not answer; /readyz answers 503");
                    }
                }
            }
        })
    }

    /// Starts the background upkeep of the data directory: hourly, idempotency records past their 24 hours,
    /// audit records older than `audit_retention_days` and ended webhook deliveries older than
    /// `webhook_retention_days` (none when `None`) are deleted in small batches.
    pub fn spawn_housekeeping(
        &self,
        audit_retention_days: Option<u32>,
        webhook_retention_days: Option<u32>,
    ) -> tokio::task::JoinHandle<()> {
        let (store, clock) = (self.store.clone(), Arc::clone(&self.clock));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let now = clock.now().unix();
                let cutoff = now - opgate_core::IDEMPOTENCY_RETENTION_SECS;
                if let Err(e) = store.expire_idempotency(cutoff).await {
                    tracing::warn!(error = %e, "expiring idempotency records failed");
                }
                if let Some(days) = audit_retention_days {
                    match store.expire_audit(now - i64::from(days) * 86_400).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            deleted = n,
                            days,
                            "audit records past their retention deleted"
                        ),
                        Err(e) => tracing::warn!(error = %e, "expiring audit records failed"),
                    }
                }
                if let Some(days) = webhook_retention_days {
                    match store.expire_outbox(now - i64::from(days) * 86_400).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            deleted = n,
                            days,
                            "webhook deliveries past their retention deleted"
                        ),
                        Err(e) => tracing::warn!(error = %e, "expiring webhook deliveries failed"),
                    }
                }
            }
        })
    }
}

/// Creates the data directory (and its parents) if needed, mode 0700.
pub fn create_data_dir(path: &Path) -> Result<(), BoxError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .map_err(|e| format!("cannot create data directory {}: {e}", path.display()).into())
}

/// The session configuration of a data directory without opening its database (to mint session tokens):
/// creates the directory and the session secret on first use, as [`DataDir::open_with`] does.
pub fn session_config(path: &Path, settings: &SessionSettings) -> Result<SessionConfig, BoxError> {
    create_data_dir(path)?;
    Ok(SessionConfig::load(path, settings)?)
}

/// The registry of every built-in operation, for describing the API (spec, docs): its handlers sit over a
/// store that was never opened, so building it touches no database.
pub fn describe_registry() -> Result<Registry, BoxError> {
    let store = Arc::new(opgate_store::Unopened);
    let keys = ApiKeys::new(
        store.clone(),
        store.clone(),
        opgate_webhooks::Sealer::new(&[0; 32]),
        KeyHasher::new(&[0u8; 32])?,
        opgate_core::SystemClock::shared(),
    );
    let webhooks = opgate_webhooks::Webhooks::new(
        store.clone(),
        opgate_webhooks::Sealer::new(&[0; 32]),
        opgate_webhooks::guard::Policy::default(),
    );
    Ok(registry(&keys, store.clone(), store, &webhooks)?)
}

/// The registry of every built-in operation. Each resource registers its operations in its own crate; adding
/// a resource adds one line here.
pub fn registry(
    keys: &Arc<ApiKeys>,
    tenancy: Arc<dyn opgate_store::TenancyStore>,
    audit: Arc<dyn AuditLog>,
    webhooks: &Arc<opgate_webhooks::Webhooks>,
) -> Result<Registry, RegistryError> {
    let mut registry = Registry::new();
    keys.register(&mut registry, webhooks.policy())?;
    opgate_tenancy::Tenancy::new(tenancy).register(&mut registry)?;
    webhooks.register(&mut registry)?;
    registry.register(opgate_auth::Whoami)?;
    opgate_audit::register(&mut registry, audit)?;
    Ok(registry)
}

/// The OpenAPI document of the built-in operations, as committed in `spec/openapi.json`.
pub fn openapi() -> Result<serde_json::Value, BoxError> {
    Ok(opgate_spec::openapi(&describe_registry()?, &api_info()))
}

/// Title, version and description of the generated spec.
pub fn api_info() -> ApiInfo {
    ApiInfo {
        title: "opgate".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        description: "Operation-dispatch RPC gateway. Every call is `POST /v1/op/<operation_id>` (or the alias \
                      `POST /v1/<resource>/<action>`) with a Bearer token (an API key or a session token) \
                      and a JSON object body; list operations answer an NDJSON stream."
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Every input field that takes an id (its schema is an id pattern) is fed by a link from some operation's
    /// answer: a stateful client or fuzzer can reach every operation that acts on an object. An operation added
    /// later with an id no answer gives fails here.
    #[test]
    fn every_id_an_operation_takes_is_fed_by_a_link() {
        let spec = crate::openapi().unwrap();
        let schemas = &spec["components"]["schemas"];
        let resolve = |s: &Value| -> Value {
            match s["$ref"].as_str().and_then(|r| r.rsplit('/').next()) {
                Some(name) => schemas[name].clone(),
                None => s.clone(),
            }
        };
        let mut fed = std::collections::BTreeSet::new();
        let mut takes = Vec::new();
        for (_, item) in spec["paths"].as_object().unwrap() {
            let op = &item["post"];
            for link in op["responses"]["200"]["links"]
                .as_object()
                .into_iter()
                .flat_map(|l| l.values())
            {
                for field in link["requestBody"].as_object().unwrap().keys() {
                    fed.insert((
                        link["operationId"].as_str().unwrap().to_owned(),
                        field.clone(),
                    ));
                }
            }
            let input = resolve(&op["requestBody"]["content"]["application/json"]["schema"]);
            for (field, schema) in input["properties"].as_object().into_iter().flatten() {
                let is_id = schema["pattern"]
                    .as_str()
                    .is_some_and(|p| p.contains("[0-7][0-9a-hjkmnp-tv-z]{25}"));
                if is_id {
                    takes.push((
                        op["operationId"].as_str().unwrap().to_owned(),
                        field.clone(),
                    ));
                }
            }
        }
        assert!(!takes.is_empty());
        for taken in &takes {
            assert!(
                fed.contains(taken),
                "no link feeds `{}` of `{}`",
                taken.1,
                taken.0
            );
        }
    }
}
