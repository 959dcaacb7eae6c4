//! opgate wired together: the data directory (SQLite database and server secret), the registry of every
//! operation the gateway serves, and the HTTP gateway over them. The `opgate` binary is a thin CLI on top;
//! programs that embed the gateway use these functions and register their own operations beside ours.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use opgate_core as core;
pub use opgate_keys as keys;
pub use opgate_server as server;
pub use opgate_store as store;

use opgate_core::{Registry, RegistryError};
use opgate_keys::{ApiKeyAuthenticator, ApiKeys, KeyHasher};
use opgate_server::{Gateway, Limits};
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

    /// The registry of every built-in operation. Adding an operation adds one line to the crate that owns it.
    pub fn registry(&self) -> Result<Registry, RegistryError> {
        let mut registry = Registry::new();
        self.keys.register(&mut registry)?;
        Ok(registry)
    }

    /// A gateway serving `registry`, authenticating with API keys from this data directory.
    pub fn gateway(&self, registry: Registry, limits: Limits) -> Arc<Gateway> {
        let authenticator = Arc::new(ApiKeyAuthenticator::new(Arc::clone(&self.keys)));
        Gateway::new(Arc::new(registry), authenticator, limits)
    }
}
