//! PostgreSQL behind opgate's storage traits: the engine for a fleet of gateway instances over one database
//! (`--database-url postgres://…`). Same semantics as the SQLite store, trait for trait:
//!
//! - every write is one transaction on a pooled connection, durable when its future resolves;
//! - a write that reads before it decides takes its organization's advisory lock first ([`Tx::lock_org`]),
//!   which gives, per organization, the one-writer-at-a-time order the SQLite writer thread gives;
//! - a call's records (audit, idempotent response) commit with its change, or its change is held open until
//!   the pipeline hands them over ([`opgate_core::Unit`]), exactly as the SQLite writer does;
//! - key changes go to a change log whose positions come from a generation counter bumped in the change's
//!   transaction, and are announced with `NOTIFY` at commit (see [`PgStore::change_signal`]).

mod audit;
mod database;
mod keys;
mod rate;
mod rotation;
mod schema;
mod tenancy;
mod webhooks;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures_util::future::BoxFuture;
use opgate_core::{AuditRecord, Claim, Finisher, Records, Unit};
use opgate_store::{ChangeListener, EventListener, KeyRecord, PayloadBuilder, StoreError};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// The channel key changes are announced on.
pub const KEY_CHANNEL: &str = "opgate_key_changes";
/// How long a held unit waits for its records before it is rolled back (as the SQLite writer).
const HOLD_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool, at most.
const POOL_SIZE: usize = 32;
/// How long a call waits for a pooled connection, or for a new one, before it is refused as unavailable.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// A PostgreSQL error as a [`StoreError`] (its SQLSTATE kept, so that callers can tell a unique violation).
pub(crate) fn pg(e: tokio_postgres::Error) -> StoreError {
    let code = e.code().map(|c| c.code().to_owned());
    let message = match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => e.to_string(),
    };
    StoreError::Postgres { code, message }
}

/// Whether `e` is PostgreSQL's unique violation (SQLSTATE 23505).
#[cfg(test)]
pub(crate) fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres { code: Some(code), .. } if code == "23505")
}

/// What was registered with the store to hear of its commits and to build event payloads.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) key_listeners: RwLock<Vec<ChangeListener>>,
    pub(crate) event_listeners: RwLock<Vec<EventListener>>,
    pub(crate) key_payload: RwLock<Option<PayloadBuilder<KeyRecord>>>,
    pub(crate) workspace_payload: RwLock<Option<PayloadBuilder<opgate_store::Workspace>>>,
    pub(crate) account_payload: RwLock<Option<PayloadBuilder<opgate_store::ServiceAccount>>>,
}

struct Inner {
    pool: Pool,
    config: tokio_postgres::Config,
    closed: AtomicBool,
    hooks: Hooks,
    /// Woken by the `LISTEN` task (started on first use).
    signal: std::sync::Mutex<Option<Arc<tokio::sync::Notify>>>,
    /// A connection of its own for reading the key change log: the follower must catch up even when request
    /// traffic holds every pooled connection (which it does exactly when the follower is behind and every
    /// authentication reads the database).
    follower: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

/// The PostgreSQL store. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

/// A connection in use: inside a write, one transaction. Its statements are prepared once per connection
/// and cached. Dropped while its transaction is open (a cancelled call), the connection is closed rather
/// than returned to the pool, so the transaction is rolled back by the server.
pub struct Tx {
    client: Option<Object>,
    in_tx: bool,
    changed: u64,
    changed_keys: Vec<Vec<u8>>,
    events: usize,
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.in_tx {
            if let Some(client) = self.client.take() {
                drop(Object::take(client));
            }
        }
    }
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Tx {
    fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("a live transaction has its connection")
    }

    async fn statement(&self, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
        self.client().prepare_cached(sql).await.map_err(pg)
    }

    /// Runs a statement that changes rows; returns how many (counted as the write's changes).
    pub async fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        let stmt = self.statement(sql).await?;
        let n = self.client().execute(&stmt, params).await.map_err(pg)?;
        self.changed += n;
        Ok(n)
    }

    /// Runs a statement that changes rows and returns them (`… RETURNING`); each row counts as a change.
    pub async fn modify(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        let stmt = self.statement(sql).await?;
        let rows = self.client().query(&stmt, params).await.map_err(pg)?;
        self.changed += rows.len() as u64;
        Ok(rows)
    }

    /// Runs a query.
    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        let stmt = self.statement(sql).await?;
        self.client().query(&stmt, params).await.map_err(pg)
    }

    /// Runs a query that returns at most one row.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        let stmt = self.statement(sql).await?;
        self.client().query_opt(&stmt, params).await.map_err(pg)
    }

    /// Runs a query that returns exactly one row.
    pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, StoreError> {
        let stmt = self.statement(sql).await?;
        self.client().query_one(&stmt, params).await.map_err(pg)
    }

    /// Takes organization `org_id`'s write lock until the transaction ends: writes that read, then decide,
    /// take it first, so that within an organization they run one at a time as on SQLite.
    pub async fn lock_org(&mut self, org_id: &str) -> Result<(), StoreError> {
        self.query_one(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))",
            &[&org_id],
        )
        .await?;
        Ok(())
    }

    /// Logs that the key with this keyed hash changed (revoked, rotated, updated, its account disabled): a
    /// new generation of the change log, announced to every instance at commit; this instance's listeners
    /// hear of it after the commit, before the write resolves.
    pub async fn key_changed(&mut self, key_hash: &[u8], at: i64) -> Result<(), StoreError> {
        let generation: i64 = self
            .modify(
                "UPDATE key_generation SET value = value + 1 RETURNING value",
                &[],
            )
            .await?[0]
            .try_get(0)
            .map_err(pg)?;
        self.execute(
            "INSERT INTO key_changes (seq, key_hash, at) VALUES ($1, $2, $3)",
            &[&generation, &key_hash, &at],
        )
        .await?;
        self.query_one(
            "SELECT pg_notify($1, $2)",
            &[&KEY_CHANNEL, &generation.to_string()],
        )
        .await?;
        self.changed_keys.push(key_hash.to_vec());
        Ok(())
    }

    /// Notes that the write put an event in the outbox (the dispatcher is woken after the commit).
    pub(crate) fn event_written(&mut self) {
        self.events += 1;
    }

    async fn batch(&self, sql: &str) -> Result<(), StoreError> {
        self.client().batch_execute(sql).await.map_err(pg)
    }
}

/// The store's handle on a held unit: the open transaction, until the records come or the wait ends.
#[derive(Clone)]
struct HeldUnit(Arc<tokio::sync::Mutex<Option<Tx>>>);

impl PgStore {
    /// Connects to the database at `url` (`postgres://…`, or `host=/run/postgresql user=…`), applies the
    /// migrations under the fleet's migration lock, and keeps a pool of connections.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| StoreError::Postgres {
                    code: None,
                    message: format!("invalid database URL: {e}"),
                })?;
        let (mut client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(pg)?;
        let driver = tokio::spawn(connection);
        let migrated = schema::apply(&mut client).await;
        drop(client);
        let _ = driver.await;
        migrated?;
        let manager = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Postgres {
                code: None,
                message: format!("cannot build the connection pool: {e}"),
            })?;
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                config,
                closed: AtomicBool::new(false),
                hooks: Hooks::default(),
                signal: std::sync::Mutex::new(None),
                follower: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The connection settings (for a dedicated `LISTEN` connection).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.inner.config
    }

    pub(crate) fn hooks(&self) -> &Hooks {
        &self.inner.hooks
    }

    async fn connection(&self) -> Result<Tx, StoreError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let client = self
            .inner
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Postgres {
                code: None,
                message: format!("no database connection: {e}"),
            })?;
        Ok(Tx {
            client: Some(client),
            in_tx: false,
            changed: 0,
            changed_keys: Vec::new(),
            events: 0,
        })
    }

    async fn begin(&self) -> Result<Tx, StoreError> {
        let mut tx = self.connection().await?;
        tx.batch("BEGIN").await?;
        tx.in_tx = true;
        Ok(tx)
    }

    /// Commits, then tells this instance's listeners (before the caller hears of the commit: a cache must
    /// not serve a changed key to the next request).
    async fn commit(&self, mut tx: Tx) -> Result<(), StoreError> {
        tx.batch("COMMIT").await?;
        tx.in_tx = false;
        if tx.events > 0 {
            let listeners = self
                .hooks()
                .event_listeners
                .read()
                .expect("hooks lock")
                .clone();
            for listener in &listeners {
                listener();
            }
        }
        let listeners = self
            .hooks()
            .key_listeners
            .read()
            .expect("hooks lock")
            .clone();
        for hash in &tx.changed_keys {
            for listener in &listeners {
                listener(hash);
            }
        }
        Ok(())
    }

    async fn rollback(mut tx: Tx) {
        if tx.batch("ROLLBACK").await.is_ok() {
            tx.in_tx = false;
        }
    }

    /// Runs `work` in a transaction of its own and commits it; resolves after the commit.
    ///
    /// Inside a call's [`Unit`], a write that changed something also commits the call's records: its audit
    /// record in the same transaction, or, for a call under an idempotency key, the records the pipeline
    /// hands over once the response is known (this write then resolves before the commit, and the
    /// pipeline's finish after it). A later write of a held call runs inside the held transaction.
    pub async fn write<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<R, StoreError>> + Send + 'static,
        R: Send + 'static,
    {
        let started = std::time::Instant::now();
        let unit = Unit::current();
        if let Some(HeldUnit(held)) = unit.as_ref().and_then(|u| u.held::<HeldUnit>()) {
            let mut guard = held.lock().await;
            let Some(tx) = guard.as_mut() else {
                return Err(StoreError::Closed);
            };
            tx.batch("SAVEPOINT inner").await?;
            let result = work(tx).await;
            match &result {
                Ok(_) => tx.batch("RELEASE inner").await?,
                Err(_) => tx.batch("ROLLBACK TO inner; RELEASE inner").await?,
            }
            return result;
        }
        let claimed = unit.and_then(|u| u.claim().map(|claim| (u, claim)));
        let release = |claimed: Option<(Arc<Unit>, Claim)>| {
            if let Some((unit, _)) = claimed {
                unit.release();
            }
        };
        let mut tx = match self.begin().await {
            Ok(tx) => tx,
            Err(e) => {
                release(claimed);
                return Err(e);
            }
        };
        let result = match work(&mut tx).await {
            Ok(r) => r,
            Err(e) => {
                Self::rollback(tx).await;
                release(claimed);
                return Err(e);
            }
        };
        let changed = tx.changed > 0;
        match claimed {
            Some((unit, Claim::Audit(record))) if changed => {
                if let Err(e) = insert_audit(&mut tx, &record).await {
                    Self::rollback(tx).await;
                    unit.release();
                    return Err(e);
                }
                if let Err(e) = self.commit(tx).await {
                    unit.release();
                    return Err(e);
                }
                unit.committed();
            }
            Some((unit, Claim::Hold)) if changed => {
                let held = Arc::new(tokio::sync::Mutex::new(Some(tx)));
                let waiting = Arc::clone(&held);
                tokio::spawn(async move {
                    tokio::time::sleep(HOLD_TIMEOUT).await;
                    if let Some(tx) = waiting.lock().await.take() {
                        tracing::error!(
                            "a held unit of work was abandoned or timed out; its change is rolled back"
                        );
                        Self::rollback(tx).await;
                    }
                });
                unit.hold(self.finisher(Arc::clone(&held)), Box::new(HeldUnit(held)));
            }
            claimed => {
                let committed = self.commit(tx).await;
                release(claimed);
                committed?;
            }
        }
        metrics::histogram!("opgate_storage_seconds", "kind" => "write")
            .record(started.elapsed().as_secs_f64());
        Ok(result)
    }

    fn finisher(&self, held: Arc<tokio::sync::Mutex<Option<Tx>>>) -> Finisher {
        let store = self.clone();
        Box::new(move |records: Records| {
            Box::pin(async move {
                let Some(mut tx) = held.lock().await.take() else {
                    return Err(StoreError::Closed.into());
                };
                if let Err(e) = write_records(&mut tx, &records).await {
                    Self::rollback(tx).await;
                    return Err(e.into());
                }
                store.commit(tx).await?;
                Ok::<(), opgate_core::Error>(())
            })
        })
    }

    /// Runs `work` on a pooled connection outside any transaction (each statement sees what was committed
    /// when it started).
    pub async fn read<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<R, StoreError>> + Send + 'static,
        R: Send + 'static,
    {
        let started = std::time::Instant::now();
        let mut tx = self.connection().await?;
        let result = work(&mut tx).await;
        metrics::histogram!("opgate_storage_seconds", "kind" => "read")
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Woken on every key change any instance commits: a task holds a dedicated connection that `LISTEN`s
    /// on [`KEY_CHANNEL`] (pooled connections would drop notifications), reconnecting with backoff. It also
    /// wakes on every (re)connect, since what was announced while disconnected is lost and the follower must
    /// catch up from the change log. The task ends when the store is closed or dropped.
    pub fn change_signal(&self) -> Arc<tokio::sync::Notify> {
        let mut slot = self.inner.signal.lock().expect("signal lock");
        if let Some(signal) = &*slot {
            return Arc::clone(signal);
        }
        let signal = Arc::new(tokio::sync::Notify::new());
        *slot = Some(Arc::clone(&signal));
        let inner = Arc::downgrade(&self.inner);
        let config = self.inner.config.clone();
        let wake = Arc::clone(&signal);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match inner.upgrade() {
                    Some(inner) if !inner.closed.load(Ordering::SeqCst) => {}
                    _ => return,
                }
                if let Err(e) = listen(&config, &wake, &inner).await {
                    tracing::warn!(error = %e, "the key change announcements were interrupted; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                } else {
                    backoff = Duration::from_millis(100);
                }
            }
        });
        signal
    }

    /// Runs `read` on the follower's own connection (connecting it first, or again after a failure), within
    /// [`POOL_WAIT`]; a connection that fails or does not answer in time is dropped, to be made anew next time.
    pub(crate) async fn on_follower_connection<T>(
        &self,
        read: impl for<'c> FnOnce(
            &'c tokio_postgres::Client,
        ) -> futures_util::future::BoxFuture<
            'c,
            Result<T, tokio_postgres::Error>,
        >,
    ) -> Result<T, StoreError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let mut slot = self.inner.follower.lock().await;
        if slot.as_ref().is_none_or(|client| client.is_closed()) {
            let connected =
                tokio::time::timeout(POOL_WAIT, self.inner.config.connect(tokio_postgres::NoTls))
                    .await
                    .map_err(|_| StoreError::Postgres {
                        code: None,
                        message: "connecting for the key change log timed out".into(),
                    })?
                    .map_err(pg)?;
            let (client, connection) = connected;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            *slot = Some(client);
        }
        let client = slot.as_ref().expect("connected above");
        let result = tokio::time::timeout(POOL_WAIT, read(client)).await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                *slot = None;
                Err(pg(e))
            }
            Err(_) => {
                *slot = None;
                Err(StoreError::Postgres {
                    code: None,
                    message: "reading the key change log timed out".into(),
                })
            }
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|tx| Box::pin(async move { tx.batch("SELECT 1").await }))
            .await
    }

    /// Refuses new work and closes the pool's connections and the change-log follower's.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.pool.close();
        *self.inner.follower.lock().await = None;
    }
}

/// One `LISTEN` session: wakes `wake` once connected and on every notification; returns when the connection
/// ends (an error) or the store is closed (`Ok`).
async fn listen(
    config: &tokio_postgres::Config,
    wake: &tokio::sync::Notify,
    inner: &std::sync::Weak<Inner>,
) -> Result<(), StoreError> {
    use futures_util::StreamExt;
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await.map_err(pg)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the LISTEN connection failed");
                    return;
                }
            }
        }
    });
    let result = async {
        client
            .batch_execute(&format!("LISTEN {KEY_CHANNEL}"))
            .await
            .map_err(pg)?;
        wake.notify_one();
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(()) => wake.notify_one(),
                    None => return Err(StoreError::Postgres { code: None, message: "the LISTEN connection closed".into() }),
                },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    match inner.upgrade() {
                        Some(inner) if !inner.closed.load(Ordering::SeqCst) => {}
                        _ => return Ok(()),
                    }
                }
            }
        }
    }
    .await;
    driver.abort();
    result
}

/// Writes a call's records: the audit record and the response kept for replay.
pub(crate) async fn write_records(tx: &mut Tx, records: &Records) -> Result<(), StoreError> {
    if let Some(audit) = &records.audit {
        insert_audit(tx, audit).await?;
    }
    if let Some(kept) = &records.idempotency {
        let r = &kept.response;
        let status = i64::from(r.status);
        tx.execute(
            "INSERT INTO idempotency (principal, key, request_hash, status, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (principal, key) DO UPDATE SET request_hash = EXCLUDED.request_hash,
                status = EXCLUDED.status, body = EXCLUDED.body, created_at = EXCLUDED.created_at",
            &[
                &kept.owner,
                &kept.key,
                &r.request_hash.as_slice(),
                &status,
                &r.body,
                &r.created_at,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Inserts one audit record (a fresh random id: see the SQLite store).
pub(crate) async fn insert_audit(tx: &mut Tx, r: &AuditRecord) -> Result<(), StoreError> {
    let id = opgate_store::new_id("aud");
    let status = i64::from(r.status);
    let count = i64::from(r.count);
    tx.execute(
        "INSERT INTO audit_log (id, at, request_id, principal_kind, principal_id, org_id, operation,
                                target_id, client_ip, status, error_code, count, workspace_id, mode, via)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        &[
            &id,
            &r.at,
            &r.request_id,
            &r.principal_kind,
            &r.principal_id,
            &r.org_id,
            &r.operation,
            &r.target_id,
            &r.client_ip,
            &status,
            &r.error_code,
            &count,
            &r.workspace_id,
            &r.mode.as_str(),
            &r.via.as_str(),
        ],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// The builder of `api_key.*` payloads, if one is registered.
    pub(crate) fn key_payload(&self) -> Option<PayloadBuilder<KeyRecord>> {
        self.hooks().key_payload.read().expect("hooks lock").clone()
    }

    /// The builder of `workspace.*` payloads, if one is registered.
    pub(crate) fn workspace_payload(&self) -> Option<PayloadBuilder<opgate_store::Workspace>> {
        self.hooks()
            .workspace_payload
            .read()
            .expect("hooks lock")
            .clone()
    }

    /// The builder of `service_account.*` payloads, if one is registered.
    pub(crate) fn account_payload(&self) -> Option<PayloadBuilder<opgate_store::ServiceAccount>> {
        self.hooks()
            .account_payload
            .read()
            .expect("hooks lock")
            .clone()
    }
}

/// A fresh, empty database on the test cluster named by `OPGATE_TEST_DATABASE_URL` (see
/// `scripts/pg-cluster`), for tests; `None` when the variable is unset. The URL's database is used to create
/// the new one, whose URL is returned.
#[doc(hidden)]
pub async fn fresh_test_database() -> Option<String> {
    let admin = std::env::var("OPGATE_TEST_DATABASE_URL").ok()?;
    let config: tokio_postgres::Config = admin.parse().expect("OPGATE_TEST_DATABASE_URL parses");
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("the test cluster answers");
    let driver = tokio::spawn(connection);
    let name = format!("opgate_{}", ulid::Ulid::new().to_string().to_lowercase());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("CREATE DATABASE");
    drop(client);
    let _ = driver.await;
    let (base, _) = admin.rsplit_once('/').expect("the URL names a database");
    Some(format!("{base}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrates_once_and_commits_writes() {
        let Some(url) = fresh_test_database().await else {
            eprintln!("OPGATE_TEST_DATABASE_URL unset: skipped");
            return;
        };
        let (a, b) = tokio::join!(PgStore::connect(&url), PgStore::connect(&url));
        let (a, b) = (a.unwrap(), b.unwrap());
        let id = a
            .write(|tx| {
                Box::pin(async move {
                    tx.key_changed(b"hash", 7).await?;
                    tx.key_changed(b"other", 8).await?;
                    Ok(42)
                })
            })
            .await
            .unwrap();
        assert_eq!(id, 42);
        let seqs: Vec<i64> = b
            .read(|tx| {
                Box::pin(async move {
                    let rows = tx
                        .query("SELECT seq FROM key_changes ORDER BY seq", &[])
                        .await?;
                    Ok(rows.iter().map(|r| r.get(0)).collect())
                })
            })
            .await
            .unwrap();
        assert_eq!(seqs, [1, 2]);
        // A failing write leaves nothing behind.
        let failed = a
            .write(|tx| {
                Box::pin(async move {
                    tx.key_changed(b"third", 9).await?;
                    Err::<(), _>(StoreError::Corrupt("no".into()))
                })
            })
            .await;
        assert!(failed.is_err());
        let count: i64 = a
            .read(|tx| {
                Box::pin(async move {
                    Ok(tx
                        .query_one("SELECT count(*) FROM key_changes", &[])
                        .await?
                        .get(0))
                })
            })
            .await
            .unwrap();
        assert_eq!(count, 2);
    }
}
