//! Storage for opgate. Handlers talk to the [`KeyStore`] trait; [`SqliteStore`] implements it on an embedded
//! SQLite database so that another backend (e.g. PostgreSQL) can come later without touching handlers.

mod migrations;
mod sqlite;

use std::sync::Arc;

pub use sqlite::SqliteStore;

/// A storage failure. Cloneable because one commit failure is reported to every write in its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("sqlite: {0}")]
    Sqlite(Arc<rusqlite::Error>),
    /// The store was closed (the server is shutting down).
    #[error("the store is closed")]
    Closed,
    /// A stored value could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database was written by a newer opgate.
    #[error("database schema version {found} is newer than this opgate knows ({known})")]
    TooNew {
        /// The version in the file.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(Arc::new(e))
    }
}

/// An API key as stored: metadata plus the keyed hash of its secret (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Insertion order; the list cursor.
    pub seq: i64,
    /// Public id, `key_...`.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// First 12 characters of the secret, to recognise a key.
    pub key_prefix: String,
    /// HMAC-SHA256 of the secret under the server secret.
    pub key_hash: Vec<u8>,
    /// Scopes granted.
    pub permissions: Vec<String>,
    /// Requests per minute.
    pub rate_limit: Option<u32>,
    /// IPs and CIDRs allowed to use the key; empty means all.
    pub allowed_ips: Vec<String>,
    /// Principal id that created the key.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
}

/// A key to insert; `seq` and `revoked_at` are assigned by the store.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Public id, `key_...`.
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// First 12 characters of the secret.
    pub key_prefix: String,
    /// HMAC-SHA256 of the secret.
    pub key_hash: Vec<u8>,
    /// Scopes granted.
    pub permissions: Vec<String>,
    /// Requests per minute.
    pub rate_limit: Option<u32>,
    /// IPs and CIDRs allowed; empty means all.
    pub allowed_ips: Vec<String>,
    /// Principal id that created the key.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

/// Which keys a page of [`KeyStore::list_keys`] returns.
#[derive(Debug, Clone)]
pub struct KeyPage<'a> {
    /// Organization to list.
    pub org_id: &'a str,
    /// Only keys inserted after this sequence number (0 for the start).
    pub after_seq: i64,
    /// Page size.
    pub limit: usize,
    /// Whether revoked keys are included.
    pub include_revoked: bool,
}

/// Storage of API keys. Every write is durable (committed and synced) when its future resolves.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Inserts one key.
    async fn insert_key(&self, key: NewKey) -> Result<KeyRecord, StoreError>;
    /// Inserts many keys in one transaction (seeding and benchmarks).
    async fn insert_keys(&self, keys: Vec<NewKey>) -> Result<(), StoreError>;
    /// The key whose secret hashes to `hash`, in any organization.
    async fn key_by_hash(&self, hash: Vec<u8>) -> Result<Option<KeyRecord>, StoreError>;
    /// The key `id` if it belongs to `org_id`.
    async fn get_key(&self, org_id: &str, id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// One page of an organization's keys in insertion order.
    async fn list_keys(&self, page: KeyPage<'_>) -> Result<Vec<KeyRecord>, StoreError>;
    /// Marks the key revoked at `now` unless it already is; `None` when `org_id` has no such key.
    async fn revoke_key(
        &self,
        org_id: &str,
        id: &str,
        now: i64,
    ) -> Result<Option<KeyRecord>, StoreError>;
    /// Number of keys in all organizations, revoked included.
    async fn count_keys(&self) -> Result<u64, StoreError>;
}
