//! opgate wired together: the data directory (SQLite database and server secret), the registry of every
//! operation the gateway serves, and the HTTP gateway over them. The `opgate` binary is a thin CLI on top;
//! programs that embed the gateway use these functions and register their own operations beside ours.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use opgate_core as core;
pub use opgate_keys as keys;
pub use opgate_server as server;
pub use opgate_spec as spec;
pub use opgate_store as store;

use opgate_core::{Registry, RegistryError};
use opgate_keys::{ApiKeyAuthenticator, ApiKeys, KeyHasher};
use opgate_server::{Gateway, ServerConfig};
use opgate_spec::ApiInfo;
use opgate_store::SqliteStore;

/// Name of the SQLite file inside the data directory.
pub const DB_FILE: &str = "opgate.db";

/// A boxed error for start-up failures, printed to the operator as is.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The gateway's state on disk, opened.
pub struct DataDir {
    /// Where it lives.
    pub path: PathBuf,
    /// The database.
    pub store: SqliteStore,
    /// The key service over the database.
    pub keys: Arc<ApiKeys>,
}

impl DataDir {
    /// Opens (creating if needed, mode 0700) the data directory: migrates the database and loads the server
    /// secret (`secret_override`, from `OPGATE_SECRET`, wins over the file).
    pub fn open(path: &Path, secret_override: Option<&str>) -> Result<Self, BoxError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(path)
            .map_err(|e| format!("cannot create data directory {}: {e}", path.display()))?;
        let hasher = KeyHasher::load(path, secret_override)?;
        let store = SqliteStore::open(&path.join(DB_FILE))
            .map_err(|e| format!("cannot open database {}: {e}", path.join(DB_FILE).display()))?;
        let keys = ApiKeys::new(Arc::new(store.clone()), hasher);
        Ok(DataDir {
            path: path.to_owned(),
            store,
            keys,
        })
    }

    /// The registry of every built-in operation, served from this data directory.
    pub fn registry(&self) -> Result<Registry, RegistryError> {
        registry(&self.keys)
    }

    /// A gateway serving `registry`, authenticating with API keys from this data directory.
    pub fn gateway(&self, registry: Registry, config: ServerConfig) -> Arc<Gateway> {
        let authenticator = Arc::new(ApiKeyAuthenticator::new(Arc::clone(&self.keys)));
        Gateway::new(Arc::new(registry), authenticator, config)
    }
}

/// The registry of every built-in operation with handlers over a throw-away in-memory database: for describing
/// the API (spec, docs), never for serving it.
pub fn describe_registry() -> Result<Registry, BoxError> {
    let store = SqliteStore::open(Path::new(":memory:"))?;
    let keys = ApiKeys::new(Arc::new(store), KeyHasher::new(&[0u8; 32])?);
    Ok(registry(&keys)?)
}

/// The registry of every built-in operation. Each resource registers its operations in its own crate; adding
/// a resource adds one line here.
pub fn registry(keys: &Arc<ApiKeys>) -> Result<Registry, RegistryError> {
    let mut registry = Registry::new();
    keys.register(&mut registry)?;
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
                      `POST /v1/<resource>/<action>`) with a Bearer API key and a JSON object body; list \
                      operations answer an NDJSON stream."
            .into(),
    }
}
