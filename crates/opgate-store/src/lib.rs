//! Storage for opgate. Handlers talk to the [`KeyStore`] trait; [`SqliteStore`] implements it on an embedded
//! SQLite database so that another backend (e.g. PostgreSQL) can come later without touching handlers.

mod audit;
mod migrations;
mod rotation;
mod sqlite;
mod tenancy;
mod unopened;
mod webhooks;
mod writer;

use std::sync::Arc;

use opgate_core::{KeyType, Mode};

pub use audit::{AuditEntry, AuditLog, AuditPage};
pub use rotation::{
    DueRotation, RotationStart, ScheduleStore, RETRY_FAILED_ROTATION_SECS, SCHEDULED_GRACE_SECS,
};
pub use sqlite::SqliteStore;
pub use tenancy::{
    Creation, Environment, Guarded, Listing, Removal, ServiceAccount, ServiceAccountPatch,
    TenancyStore, Within, Workspace, WorkspacePatch,
};
pub use unopened::Unopened;
pub use webhooks::{
    too_many_endpoints, Attempt, AttemptNext, AttemptRecord, Delivery, DeliveryPage, DeliveryState,
    DueDelivery, EventListener, NewEvent, Owner, PayloadBuilder, Redelivery, Webhook, WebhookPatch,
    WebhookStore, DELIVERY_LEASE_SECS, HISTORY_LIMIT, MAX_ENDPOINTS, PER_ORG_DUE,
};
pub use writer::ChangeListener;

/// Everything the gateway keeps, whichever engine keeps it (SQLite in the data directory, or PostgreSQL for a
/// fleet): the data directory holds one as `Arc<dyn Database>` and hands out each trait from it.
#[async_trait::async_trait]
pub trait Database:
    KeyStore
    + TenancyStore
    + WebhookStore
    + AuditLog
    + ScheduleStore
    + opgate_core::Journal
    + opgate_core::Workspaces
{
    /// Deletes idempotency records created before `cutoff` (unix seconds); returns how many.
    async fn expire_idempotency(&self, cutoff: i64) -> Result<usize, StoreError>;
    /// Deletes audit records older than `cutoff`; returns how many.
    async fn expire_audit(&self, cutoff: i64) -> Result<usize, StoreError>;
    /// Deletes webhook deliveries that ended before `cutoff`, their attempts and the events nothing refers
    /// to any more; returns how many deliveries.
    async fn expire_outbox(&self, cutoff: i64) -> Result<usize, StoreError>;
    /// Whether the database answers now (`/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Called by a serving process once it holds the data directory: on SQLite, which one process serves,
    /// delivery leases found now are ones a crash left behind and are released; on PostgreSQL nothing (other
    /// instances may hold them; they end by themselves).
    async fn recover(&self) -> Result<(), StoreError>;
    /// Finishes what is under way and closes; later calls fail with [`StoreError::Closed`].
    async fn close(&self);
    /// `sqlite` or `postgres`.
    fn engine(&self) -> &'static str;
    /// The rate-limit cells a fleet shares, if this engine serves a fleet.
    fn rate_cells(&self) -> Option<Arc<dyn opgate_core::RateCells>> {
        None
    }
}

#[async_trait::async_trait]
impl Database for SqliteStore {
    async fn expire_idempotency(&self, cutoff: i64) -> Result<usize, StoreError> {
        SqliteStore::expire_idempotency(self, cutoff).await
    }
    async fn expire_audit(&self, cutoff: i64) -> Result<usize, StoreError> {
        SqliteStore::expire_audit(self, cutoff).await
    }
    async fn expire_outbox(&self, cutoff: i64) -> Result<usize, StoreError> {
        SqliteStore::expire_outbox(self, cutoff).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| Ok(conn.execute_batch("SELECT 1")?)).await
    }
    async fn recover(&self) -> Result<(), StoreError> {
        self.write(|conn| {
            conn.execute(
                "UPDATE webhook_deliveries SET leased_until = NULL WHERE leased_until IS NOT NULL",
                [],
            )?;
            Ok(())
        })
        .await
    }
    async fn close(&self) {
        SqliteStore::close(self).await
    }
    fn engine(&self) -> &'static str {
        "sqlite"
    }
}

/// A storage failure. Cloneable because one commit failure is reported to every write in its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("sqlite: {0}")]
    Sqlite(Arc<rusqlite::Error>),
    /// PostgreSQL reported an error, or could not be reached (`code` is its SQLSTATE when it answered).
    #[error("postgres: {message}")]
    Postgres {
        /// The SQLSTATE, e.g. `23505` for a unique violation; `None` when the server was not reached.
        code: Option<String>,
        /// What went wrong.
        message: String,
    },
    /// The store was closed (the server is shutting down).
    #[error("the store is closed")]
    Closed,
    /// A stored value could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// An object the write depends on (a workspace, environment or service account) was deleted or disabled
    /// between the caller's check and the write.
    #[error("{0}")]
    Gone(String),
    /// The write would pass a limit (e.g. the endpoints an organization may have): nothing changed.
    #[error("{0}")]
    Refused(String),
    /// The database was written by a newer opgate.
    #[error("database schema version {found} is newer than this opgate knows ({known})")]
    TooNew {
        /// The version in the file.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
}

/// A storage failure as the contract shows it: the client sees `unavailable`, the failure itself travels as the
/// error's cause to the one log line the pipeline writes for the request.
impl From<StoreError> for opgate_core::Error {
    fn from(e: StoreError) -> Self {
        if let StoreError::Gone(why) = &e {
            return opgate_core::Error::conflict(format!("{why}; retry"));
        }
        if let StoreError::Refused(why) = &e {
            return opgate_core::Error::conflict(why.clone());
        }
        opgate_core::Error::unavailable("storage is unavailable; retry later")
            .with_reason("storage")
            .with_cause(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(Arc::new(e))
    }
}

/// A new public id: `prefix`, `_` and a lowercase ULID. Random, not monotonic: an increment would tell one
/// organization how many objects others made within the same millisecond.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// The objects one call may see: its organization and mode, and within them one workspace or all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The organization.
    pub org_id: String,
    /// The mode: objects of the other mode do not exist for the call.
    pub mode: Mode,
    /// One workspace (a workspace key's, or the one an organization-wide principal named); `None`: all.
    pub workspace_id: Option<String>,
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
    /// Last time the key authenticated a request (unix seconds), flushed in batches.
    pub last_used_at: Option<i64>,
    /// Client address of that request.
    pub last_used_ip: Option<String>,
    /// `User-Agent` of that request.
    pub last_used_user_agent: Option<String>,
    /// The key that replaced this one in a rotation.
    pub replaced_by_key_id: Option<String>,
    /// End of the rotation grace window (unix seconds): the key fails from then on.
    pub grace_expires_at: Option<i64>,
    /// The workspace of a workspace key; `None` for an admin key.
    pub workspace_id: Option<String>,
    /// The environment the key is bound to.
    pub environment_id: Option<String>,
    /// Live or test.
    pub mode: Mode,
    /// Organization-wide (`admin`) or confined to its workspace.
    pub key_type: KeyType,
    /// The service account the key belongs to.
    pub service_account_id: Option<String>,
    /// Whether that service account is enabled (true for keys without one).
    pub service_account_active: bool,
    /// Days between scheduled rotations, if the key rotates itself.
    pub rotation_interval_days: Option<u32>,
    /// Where a scheduled rotation delivers the new secret.
    pub rotation_webhook_url: Option<String>,
    /// When the next scheduled rotation is due (unix seconds).
    pub next_rotation_at: Option<i64>,
    /// The new key of a scheduled rotation under way (its webhook not yet answered).
    pub rotating_to_key_id: Option<String>,
    /// Whether the key holds the signing key of its rotation webhook (keys made before scheduled rotation
    /// existed do not: their secret was never at hand since).
    pub can_rotate_on_schedule: bool,
}

impl KeyRecord {
    /// Whether a call in `scope` may see this key: same organization and mode, and the scope's workspace if
    /// it names one.
    pub fn visible_in(&self, scope: &Scope) -> bool {
        self.org_id == scope.org_id
            && self.mode == scope.mode
            && scope
                .workspace_id
                .as_ref()
                .is_none_or(|w| self.workspace_id.as_ref() == Some(w))
    }
}

/// Where a key stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Usable.
    Active,
    /// Past its expiry or past the grace window of its rotation.
    Expired,
    /// Revoked.
    Revoked,
    /// Replaced by a rotation and still inside the grace window.
    Rotating,
}

impl KeyStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Rotating => "rotating",
        }
    }
}

/// Why a scheduled rotation ended without effect: its old key changed while the webhook was under way.
pub const ROTATION_SUPERSEDED: &str =
    "the key was revoked, rotated or expired while its rotation was under way";

/// Why a scheduled rotation's webhook was never sent: its key was revoked or rotated by hand first.
pub const ROTATION_CANCELLED: &str = "the rotation was cancelled: its key was revoked or rotated";

impl KeyRecord {
    /// Whether a scheduled rotation under way for this key has lost its object at `now`: the key was revoked,
    /// rotated by hand or expired meanwhile, so its replacement must not take effect.
    pub fn rotation_void_at(&self, now: i64) -> bool {
        self.status_at(now) != KeyStatus::Active
    }

    /// The key's status at `now` (unix seconds). Revocation wins over expiry, expiry over rotation.
    pub fn status_at(&self, now: i64) -> KeyStatus {
        if self.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if self.expires_at.is_some_and(|t| now >= t)
            || self.grace_expires_at.is_some_and(|t| now >= t)
        {
            KeyStatus::Expired
        } else if self.replaced_by_key_id.is_some() {
            KeyStatus::Rotating
        } else {
            KeyStatus::Active
        }
    }
}

/// Changes to a key's mutable fields; `None` leaves a field as it is, `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    /// New name.
    pub name: Option<String>,
    /// New description, or cleared.
    pub description: Option<Option<String>>,
    /// New rate limit, or cleared.
    pub rate_limit: Option<Option<u32>>,
    /// New allow-list (empty = any address).
    pub allowed_ips: Option<Vec<String>>,
    /// New permissions.
    pub permissions: Option<Vec<String>>,
    /// New days between scheduled rotations, or cleared (no more scheduled rotations); the next one is due
    /// that many days from the change.
    pub rotation_interval_days: Option<Option<u32>>,
    /// New rotation webhook URL, or cleared.
    pub rotation_webhook_url: Option<Option<String>>,
}

/// The outcome of [`KeyStore::update_key`].
#[derive(Debug, Clone)]
pub enum Update {
    /// The key after the change.
    Updated(Box<KeyRecord>),
    /// No such key in the organization.
    NotFound,
    /// This requested permission is not held by the key: updates only narrow.
    Widens(String),
}

/// The outcome of [`KeyStore::rotate_key`].
#[derive(Debug, Clone)]
pub enum Rotation {
    /// The new key was inserted and the old one now ends at its grace time.
    Rotated {
        /// The old key, with `replaced_by_key_id` and `grace_expires_at` set.
        old: Box<KeyRecord>,
        /// The new key.
        new: Box<KeyRecord>,
    },
    /// No such key in the organization.
    NotFound,
    /// The key is revoked, expired or already rotated.
    Conflict(Box<KeyRecord>),
}

/// One observed use of a key, recorded in memory and flushed in batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    /// The key.
    pub key_id: String,
    /// When (unix seconds).
    pub at: i64,
    /// Client address.
    pub ip: Option<String>,
    /// Client `User-Agent`.
    pub user_agent: Option<String>,
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
    /// The workspace of a workspace key (`None`: the organization's default workspace, made if missing in the
    /// same transaction); ignored for an admin key.
    pub workspace_id: Option<String>,
    /// The environment the key is bound to.
    pub environment_id: Option<String>,
    /// Live or test.
    pub mode: Mode,
    /// Organization-wide (`admin`) or confined to its workspace.
    pub key_type: KeyType,
    /// The service account the key belongs to.
    pub service_account_id: Option<String>,
    /// Days between scheduled rotations.
    pub rotation_interval_days: Option<u32>,
    /// Where a scheduled rotation delivers the new secret.
    pub rotation_webhook_url: Option<String>,
    /// The key that signs this key's rotation webhooks (derived from its secret), sealed.
    pub rotation_key_sealed: Option<Vec<u8>>,
}

/// Filters of [`KeyStore::list_keys`] beyond the scope.
#[derive(Debug, Clone, Default)]
pub struct KeyFilters {
    /// Only keys of this workspace.
    pub workspace_id: Option<String>,
    /// Only keys bound to this environment.
    pub environment_id: Option<String>,
    /// Only keys of this service account.
    pub service_account_id: Option<String>,
    /// Only keys created by this principal.
    pub created_by: Option<String>,
}

/// Which keys a page of [`KeyStore::list_keys`] returns.
#[derive(Debug, Clone)]
pub struct KeyPage<'a> {
    /// What the call may see.
    pub scope: &'a Scope,
    /// Only keys inserted after this sequence number (0 for the start).
    pub after_seq: i64,
    /// Only keys inserted before this sequence number.
    pub before_seq: Option<i64>,
    /// Narrower filters.
    pub filters: &'a KeyFilters,
    /// Page size.
    pub limit: usize,
    /// Whether revoked keys are included (ignored when `status` is given).
    pub include_revoked: bool,
    /// Only keys with this status at `now`.
    pub status: Option<KeyStatus>,
    /// The time statuses are computed at (unix seconds).
    pub now: i64,
}

/// Keys changed since a position of the change log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChanges {
    /// The position to ask from next time.
    pub last: i64,
    /// The keyed hashes of the keys that changed (revoked, rotated, updated), oldest first.
    pub hashes: Vec<Vec<u8>>,
}

/// Storage of API keys. Every write is durable (committed and synced) when its future resolves.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Inserts one key.
    async fn insert_key(&self, key: NewKey) -> Result<KeyRecord, StoreError>;
    /// Inserts many keys in one transaction (seeding and benchmarks).
    async fn insert_keys(&self, keys: Vec<NewKey>) -> Result<(), StoreError>;
    /// Inserts `key` only if the store holds no key at all, in one transaction: the first start mints one
    /// admin key however many instances of a fleet start at once. `None` when a key exists.
    async fn insert_first_key(&self, key: NewKey) -> Result<Option<KeyRecord>, StoreError>;
    /// The key whose secret hashes to `hash`, in any organization.
    async fn key_by_hash(&self, hash: Vec<u8>) -> Result<Option<KeyRecord>, StoreError>;
    /// The key `id` if `scope` sees it.
    async fn get_key(&self, scope: &Scope, id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// One page of an organization's keys in insertion order.
    async fn list_keys(&self, page: KeyPage<'_>) -> Result<Vec<KeyRecord>, StoreError>;
    /// Marks the key revoked at `now` unless it already is; `None` when `scope` sees no such key.
    async fn revoke_key(
        &self,
        scope: &Scope,
        id: &str,
        now: i64,
    ) -> Result<Option<KeyRecord>, StoreError>;
    /// Number of keys in all organizations, revoked included.
    async fn count_keys(&self) -> Result<u64, StoreError>;
    /// Applies `patch` to the key `id` that `scope` sees, in one transaction. New `permissions` may only narrow
    /// the key: each must be covered by the permissions stored at that moment, else nothing changes.
    async fn update_key(
        &self,
        scope: &Scope,
        id: &str,
        patch: KeyPatch,
        now: i64,
    ) -> Result<Update, StoreError>;
    /// In one transaction: checks that `old_id` is active at `now`, inserts `new`, and marks the old key
    /// replaced by it and ending at `grace_expires_at`.
    async fn rotate_key(
        &self,
        scope: &Scope,
        old_id: &str,
        new: NewKey,
        grace_expires_at: i64,
        now: i64,
    ) -> Result<Rotation, StoreError>;
    /// Records the latest use of each key; older observations never overwrite newer ones.
    async fn record_usage(&self, usage: Vec<KeyUsage>) -> Result<(), StoreError>;
    /// The key `id` in whichever organization holds it (offline administration).
    async fn find_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// The key changes logged after position `after` (at most a bounded number per call; `after = 0` from
    /// the start). With no newer change, `last` is `after`, or the log's end when that is before `after` (a
    /// follower starts from `i64::MAX`); never a position it has not read the changes up to.
    async fn key_changes(&self, after: i64) -> Result<KeyChanges, StoreError>;
    /// Deletes change-log entries older than `before` (unix seconds).
    async fn trim_key_changes(&self, before: i64) -> Result<(), StoreError>;
    /// Calls `listener` with the keyed hash of every key a commit of this store changed (revoked, rotated,
    /// updated), after the commit and before the change is acknowledged to anyone.
    fn on_change(&self, listener: ChangeListener);
    /// Woken when another process announces key changes (PostgreSQL's `LISTEN`), and on every reconnect of
    /// that announcement channel; `None` when the store has no such channel (the change log is then polled).
    fn change_signal(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}
