//! SQLite behind [`KeyStore`]: one writer thread ([`crate::writer`]) owns the write connection and commits
//! whatever writes are waiting as one transaction; reads run on a small pool of read-only connections on
//! tokio's blocking threads. Nothing here blocks an async worker thread.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use opgate_core::{Claim, Finisher, Records, Unit};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use tokio::sync::oneshot;

use crate::webhooks::key_event;
use crate::writer::{self, Attach, ChangeListener, Held, Job, Msg};
use crate::{
    migrations, KeyChanges, KeyPage, KeyPatch, KeyRecord, KeyStatus, KeyStore, KeyUsage, NewKey,
    Rotation, Scope, StoreError, Update,
};
use opgate_core::{KeyType, Mode};

/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;

/// The store's handle on a held unit: later writes of the same call go through it.
#[derive(Clone)]
struct HeldUnit(mpsc::Sender<Held>);

pub(crate) struct Inner {
    path: PathBuf,
    writer: mpsc::Sender<Msg>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    listeners: Arc<Mutex<Vec<ChangeListener>>>,
    pub(crate) outbox: Arc<crate::webhooks::Outbox>,
}

/// The SQLite store. Cheap to clone; all clones share the writer thread and the reader pool.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) inner: Arc<Inner>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies migrations and starts the writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        restrict_permissions(path)?;
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk before its caller hears of it, so an acknowledged write survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::apply(&mut conn)?;

        let (tx, rx) = mpsc::channel();
        let listeners: Arc<Mutex<Vec<ChangeListener>>> = Arc::default();
        let thread_listeners = Arc::clone(&listeners);
        let outbox: Arc<crate::webhooks::Outbox> = Arc::default();
        let thread_outbox = Arc::clone(&outbox);
        let thread = std::thread::Builder::new()
            .name("opgate-sqlite-writer".into())
            .spawn(move || writer::run(conn, rx, thread_listeners, thread_outbox))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: tx,
                writer_thread: Mutex::new(Some(thread)),
                readers: Mutex::new(Vec::new()),
                listeners,
                outbox,
            }),
        })
    }

    /// Finishes queued writes, closes the write connection and waits for the writer thread.
    /// Later writes fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.writer.send(Msg::Close(tx)).is_ok() {
            let _ = rx.await;
        }
        let thread = self
            .inner
            .writer_thread
            .lock()
            .expect("writer thread lock")
            .take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.inner.readers.lock().expect("reader pool lock").clear();
    }

    /// Runs `work` on the writer thread in the next batch; resolves after the batch has committed.
    ///
    /// Inside a call's [`Unit`], the first write also commits the call's records: its audit record in the same
    /// savepoint, or, for a call under an idempotency key, the records the pipeline hands over once the
    /// response is known (this write then resolves before the commit, and the pipeline's finish after it).
    pub async fn write<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let started = std::time::Instant::now();
        let unit = Unit::current();
        // A later write of a call whose unit is held joins the held savepoint.
        if let Some(HeldUnit(held)) = unit.as_ref().and_then(|u| u.held::<HeldUnit>()) {
            let (job, rx) = Job::new(work, Attach::None);
            held.send(Held::Write(Box::new(job)))
                .map_err(|_| StoreError::Closed)?;
            return rx.await.map_err(|_| StoreError::Closed)?;
        }
        let claimed = unit.and_then(|u| u.claim().map(|claim| (u, claim)));
        let (attach, held) = match &claimed {
            None => (Attach::None, None),
            Some((_, Claim::Audit(record))) => (Attach::Audit(record.clone()), None),
            Some((_, Claim::Hold)) => {
                let (tx, rx) = mpsc::channel();
                (Attach::Hold(rx), Some(tx))
            }
        };
        let attached = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (job, rx) = Job::new(work, attach);
        let job = job.reporting(Arc::clone(&attached));
        self.inner
            .writer
            .send(Msg::Write(Box::new(job)))
            .map_err(|_| StoreError::Closed)?;
        let result = rx.await.map_err(|_| StoreError::Closed)?;
        if let Some((unit, _)) = claimed {
            let attached = attached.load(std::sync::atomic::Ordering::SeqCst);
            match (result.is_ok() && attached, held) {
                (false, _) => unit.release(),
                (true, None) => unit.committed(),
                (true, Some(held)) => unit.hold(finisher(held.clone()), Box::new(HeldUnit(held))),
            }
        }
        metrics::histogram!("opgate_storage_seconds", "kind" => "write")
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Runs `work` on a pooled read-only connection on a blocking thread.
    pub async fn read<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let conn = match inner.readers.lock().expect("reader pool lock").pop() {
                Some(conn) => conn,
                None => open_reader(&inner.path)?,
            };
            let result = work(&conn);
            let mut idle = inner.readers.lock().expect("reader pool lock");
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?;
        metrics::histogram!("opgate_storage_seconds", "kind" => "read")
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Runs `PRAGMA integrity_check` and returns its report (`["ok"]` when sound).
    pub async fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("PRAGMA integrity_check")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

/// The database and its `-wal` / `-shm` companions are readable by their owner only: created 0600 (SQLite
/// gives the companions the database file's mode) and tightened if an older build left them wider.
fn restrict_permissions(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if path.as_os_str() == ":memory:" || path.as_os_str().is_empty() {
            return Ok(());
        }
        let io = |e: std::io::Error| StoreError::Corrupt(format!("{}: {e}", path.display()));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => {}
            }
        }
    }
    Ok(())
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Completes a held unit: hands the records to the writer thread, resolves after they commit with the change.
fn finisher(held: mpsc::Sender<Held>) -> Finisher {
    Box::new(move |records: Records| {
        Box::pin(async move {
            let (reply, done) = oneshot::channel();
            held.send(Held::Finish(Box::new(records), reply))
                .map_err(|_| StoreError::Closed)?;
            done.await.map_err(|_| StoreError::Closed)??;
            Ok::<(), opgate_core::Error>(())
        })
    })
}

const KEY_COLUMNS: &str = "k.seq, k.id, k.org_id, k.name, k.description, k.key_prefix, k.key_hash, \
     k.permissions, k.rate_limit, k.allowed_ips, k.created_by, k.created_at, k.expires_at, k.revoked_at, \
     k.last_used_at, k.last_used_ip, k.last_used_user_agent, k.replaced_by_key_id, k.grace_expires_at, \
     k.workspace_id, k.environment_id, k.mode, k.key_type, k.service_account_id, \
     (k.service_account_id IS NULL OR sa.disabled_at IS NULL AND sa.id IS NOT NULL), \
     k.rotation_interval_days, k.rotation_webhook_url, k.next_rotation_at, k.rotating_to_key_id, \
     (k.rotation_key_sealed IS NOT NULL)";

/// Keys with their service account, for whether it is enabled.
const KEYS_FROM: &str = "api_keys k LEFT JOIN service_accounts sa ON sa.id = k.service_account_id";

/// The rows a scope sees (named parameters `:org`, `:mode`, `:scope_ws`).
const IN_SCOPE: &str =
    "k.org_id = :org AND k.mode = :mode AND (:scope_ws IS NULL OR k.workspace_id = :scope_ws)";

/// The status of a row at `:now`, in SQL; must agree with [`KeyRecord::status_at`].
const STATUS_SQL: &str = "CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked' \
     WHEN k.expires_at <= :now OR k.grace_expires_at <= :now THEN 'expired' \
     WHEN k.replaced_by_key_id IS NOT NULL THEN 'rotating' ELSE 'active' END";

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    fn json_list(row: &Row<'_>, idx: usize) -> rusqlite::Result<Vec<String>> {
        let text: String = row.get(idx)?;
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
        })
    }
    fn named<T>(row: &Row<'_>, idx: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
        let text: String = row.get(idx)?;
        parse(&text).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                idx,
                rusqlite::types::Type::Text,
                format!("unknown value `{text}`").into(),
            )
        })
    }
    Ok(KeyRecord {
        seq: row.get(0)?,
        id: row.get(1)?,
        org_id: row.get(2)?,
        name: row.get(3)?,
        description: row.get(4)?,
        key_prefix: row.get(5)?,
        key_hash: row.get(6)?,
        permissions: json_list(row, 7)?,
        rate_limit: row.get(8)?,
        allowed_ips: json_list(row, 9)?,
        created_by: row.get(10)?,
        created_at: row.get(11)?,
        expires_at: row.get(12)?,
        revoked_at: row.get(13)?,
        last_used_at: row.get(14)?,
        last_used_ip: row.get(15)?,
        last_used_user_agent: row.get(16)?,
        replaced_by_key_id: row.get(17)?,
        grace_expires_at: row.get(18)?,
        workspace_id: row.get(19)?,
        environment_id: row.get(20)?,
        mode: named(row, 21, Mode::parse)?,
        key_type: named(row, 22, KeyType::parse)?,
        service_account_id: row.get(23)?,
        service_account_active: row.get(24)?,
        rotation_interval_days: row.get(25)?,
        rotation_webhook_url: row.get(26)?,
        next_rotation_at: row.get(27)?,
        rotating_to_key_id: row.get(28)?,
        can_rotate_on_schedule: row.get(29)?,
    })
}

pub(crate) fn insert(conn: &Connection, key: &NewKey) -> Result<i64, StoreError> {
    let workspace_id = match (key.key_type, &key.workspace_id) {
        (KeyType::Admin, _) => None,
        (KeyType::Workspace, Some(id)) => Some(id.clone()),
        (KeyType::Workspace, None) => {
            Some(crate::tenancy::ensure_default(conn, &key.org_id, key.created_at)?.id)
        }
    };
    if let Some(ws) = &workspace_id {
        crate::tenancy::check_placement(
            conn,
            &key.org_id,
            ws,
            key.environment_id.as_deref(),
            key.service_account_id.as_deref(),
        )?;
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO api_keys (id, org_id, name, description, key_prefix, key_hash, permissions, rate_limit,
                               allowed_ips, created_by, created_at, expires_at, workspace_id, environment_id,
                               mode, key_type, service_account_id, rotation_interval_days, rotation_webhook_url,
                               next_rotation_at, rotation_key_sealed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
    )?;
    stmt.execute(params![
        key.id,
        key.org_id,
        key.name,
        key.description,
        key.key_prefix,
        key.key_hash,
        serde_json::to_string(&key.permissions).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        key.rate_limit,
        serde_json::to_string(&key.allowed_ips).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        key.created_by,
        key.created_at,
        key.expires_at,
        workspace_id,
        key.environment_id,
        key.mode.as_str(),
        key.key_type.as_str(),
        key.service_account_id,
        key.rotation_interval_days,
        key.rotation_webhook_url,
        key.rotation_interval_days
            .map(|days| key.created_at + i64::from(days) * 86_400),
        key.rotation_key_sealed,
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Records, in the change's own transaction, that the key with this hash changed: every process that caches
/// keys (this server, or another on the same database) follows this log and drops the entry.
pub(crate) fn log_change(conn: &Connection, key_hash: &[u8], now: i64) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO key_changes (key_hash, at) VALUES (?1, ?2)")?
        .execute(params![key_hash, now])?;
    writer::changed(key_hash);
    Ok(())
}

pub(crate) fn select_one(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM {KEYS_FROM} WHERE {filter}");
    let mut stmt = conn.prepare_cached(&sql)?;
    Ok(stmt.query_row(args, key_from_row).optional()?)
}

/// The key `id` if `scope` sees it.
fn select_in_scope(
    conn: &Connection,
    scope: &Scope,
    id: &str,
) -> Result<Option<KeyRecord>, StoreError> {
    select_one(
        conn,
        &format!("k.id = :id AND {IN_SCOPE}"),
        rusqlite::named_params! {
            ":id": id,
            ":org": scope.org_id,
            ":mode": scope.mode.as_str(),
            ":scope_ws": scope.workspace_id,
        },
    )
}

#[async_trait::async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, key: NewKey) -> Result<KeyRecord, StoreError> {
        let events = self.key_payload();
        self.write(move |conn| {
            let seq = insert(conn, &key)?;
            let record = select_one(conn, "k.seq = ?1", [seq])?
                .ok_or_else(|| StoreError::Corrupt("inserted key vanished".into()))?;
            key_event(conn, &events, "created", &record, record.created_at)?;
            Ok(record)
        })
        .await
    }

    async fn insert_first_key(&self, key: NewKey) -> Result<Option<KeyRecord>, StoreError> {
        self.write(move |conn| {
            let any: i64 = conn
                .prepare_cached("SELECT count(*) FROM (SELECT 1 FROM api_keys LIMIT 1)")?
                .query_row([], |r| r.get(0))?;
            if any > 0 {
                return Ok(None);
            }
            let seq = insert(conn, &key)?;
            select_one(conn, "k.seq = ?1", [seq])
        })
        .await
    }

    async fn insert_keys(&self, keys: Vec<NewKey>) -> Result<(), StoreError> {
        self.write(move |conn| keys.iter().try_for_each(|key| insert(conn, key).map(drop)))
            .await
    }

    async fn key_by_hash(&self, hash: Vec<u8>) -> Result<Option<KeyRecord>, StoreError> {
        self.read(move |conn| select_one(conn, "k.key_hash = ?1", [hash]))
            .await
    }

    async fn get_key(&self, scope: &Scope, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let (scope, id) = (scope.clone(), id.to_owned());
        self.read(move |conn| select_in_scope(conn, &scope, &id))
            .await
    }

    async fn list_keys(&self, page: KeyPage<'_>) -> Result<Vec<KeyRecord>, StoreError> {
        let scope = page.scope.clone();
        let filters = page.filters.clone();
        let (after, before, limit, include_revoked) = (
            page.after_seq,
            page.before_seq.unwrap_or(i64::MAX),
            page.limit as i64,
            page.include_revoked,
        );
        let (status, now) = (page.status.map(KeyStatus::as_str), page.now);
        self.read(move |conn| {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM {KEYS_FROM}
                 WHERE {IN_SCOPE} AND k.seq > :after AND k.seq < :before
                   AND (:ws IS NULL OR k.workspace_id = :ws)
                   AND (:env IS NULL OR k.environment_id = :env)
                   AND (:sa IS NULL OR k.service_account_id = :sa)
                   AND (:created_by IS NULL OR k.created_by = :created_by)
                   AND (CASE WHEN :status IS NULL THEN (:include_revoked OR k.revoked_at IS NULL)
                             ELSE {STATUS_SQL} = :status END)
                 ORDER BY k.seq LIMIT :limit"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let args = rusqlite::named_params! {
                ":org": scope.org_id, ":mode": scope.mode.as_str(), ":scope_ws": scope.workspace_id,
                ":after": after, ":before": before,
                ":ws": filters.workspace_id, ":env": filters.environment_id,
                ":sa": filters.service_account_id, ":created_by": filters.created_by,
                ":include_revoked": include_revoked, ":status": status, ":now": now, ":limit": limit,
            };
            let rows = stmt.query_map(args, key_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn revoke_key(
        &self,
        scope: &Scope,
        id: &str,
        now: i64,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let (scope, id) = (scope.clone(), id.to_owned());
        let events = self.key_payload();
        self.write(move |conn| {
            let Some(found) = select_in_scope(conn, &scope, &id)? else {
                return Ok(None);
            };
            let changed = conn
                .prepare_cached(
                    "UPDATE api_keys SET revoked_at = ?2 WHERE seq = ?1 AND revoked_at IS NULL",
                )?
                .execute(params![found.seq, now])?;
            let record = select_one(conn, "k.seq = ?1", [found.seq])?;
            if let (1, Some(record)) = (changed, &record) {
                log_change(conn, &found.key_hash, now)?;
                crate::rotation::cancel_rotation(conn, &found, now)?;
                key_event(conn, &events, "revoked", record, now)?;
            }
            Ok(record)
        })
        .await
    }

    async fn update_key(
        &self,
        scope: &Scope,
        id: &str,
        patch: KeyPatch,
        now: i64,
    ) -> Result<Update, StoreError> {
        let (scope, id) = (scope.clone(), id.to_owned());
        let events = self.key_payload();
        self.write(move |conn| {
            let Some(current) = select_in_scope(conn, &scope, &id)? else {
                return Ok(Update::NotFound);
            };
            // Checked here, inside the write transaction, so two concurrent updates cannot widen a key.
            let widening = patch
                .permissions
                .iter()
                .flatten()
                .find(|p| !opgate_core::scope::covers(&current.permissions, p));
            if let Some(p) = widening {
                return Ok(Update::Widens(p.clone()));
            }
            let json = |v: &Vec<String>| {
                serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
            };
            let permissions = patch.permissions.as_ref().map(json).transpose()?;
            let allowed_ips = patch.allowed_ips.as_ref().map(json).transpose()?;
            conn.prepare_cached(
                "UPDATE api_keys SET
                    name = coalesce(:name, name),
                    description = CASE WHEN :set_description THEN :description ELSE description END,
                    rate_limit = CASE WHEN :set_rate_limit THEN :rate_limit ELSE rate_limit END,
                    allowed_ips = coalesce(:allowed_ips, allowed_ips),
                    permissions = coalesce(:permissions, permissions),
                    rotation_interval_days =
                        CASE WHEN :set_interval THEN :interval ELSE rotation_interval_days END,
                    next_rotation_at = CASE WHEN NOT :set_interval THEN next_rotation_at
                        WHEN :interval IS NULL THEN NULL ELSE :now + :interval * 86400 END,
                    rotation_webhook_url = CASE WHEN :set_url THEN :url ELSE rotation_webhook_url END
                 WHERE seq = :seq",
            )?
            .execute(rusqlite::named_params! {
                ":name": patch.name,
                ":set_description": patch.description.is_some(),
                ":description": patch.description.flatten(),
                ":set_rate_limit": patch.rate_limit.is_some(),
                ":rate_limit": patch.rate_limit.flatten(),
                ":allowed_ips": allowed_ips,
                ":permissions": permissions,
                ":set_interval": patch.rotation_interval_days.is_some(),
                ":interval": patch.rotation_interval_days.flatten(),
                ":set_url": patch.rotation_webhook_url.is_some(),
                ":url": patch.rotation_webhook_url.flatten(),
                ":now": now,
                ":seq": current.seq,
            })?;
            let updated = select_one(conn, "k.seq = ?1", [current.seq])?;
            if let Some(record) = &updated {
                log_change(conn, &record.key_hash, now)?;
                key_event(conn, &events, "updated", record, now)?;
            }
            Ok(updated.map_or(Update::NotFound, |r| Update::Updated(Box::new(r))))
        })
        .await
    }

    async fn rotate_key(
        &self,
        scope: &Scope,
        old_id: &str,
        new: NewKey,
        grace_expires_at: i64,
        now: i64,
    ) -> Result<Rotation, StoreError> {
        let (scope, old_id) = (scope.clone(), old_id.to_owned());
        let events = self.key_payload();
        self.write(move |conn| {
            let Some(old) = select_in_scope(conn, &scope, &old_id)? else {
                return Ok(Rotation::NotFound);
            };
            // The replacement was built from a read before this transaction: if the key changed meanwhile
            // (e.g. an update narrowed it), rotating now would hand out the old settings.
            let unchanged = old.permissions == new.permissions
                && old.rate_limit == new.rate_limit
                && old.allowed_ips == new.allowed_ips;
            if old.status_at(now) != KeyStatus::Active || !unchanged {
                return Ok(Rotation::Conflict(Box::new(old)));
            }
            let seq = insert(conn, &new)?;
            crate::rotation::cancel_rotation(conn, &old, now)?;
            conn.prepare_cached(
                "UPDATE api_keys SET replaced_by_key_id = ?2, grace_expires_at = ?3 WHERE seq = ?1",
            )?
            .execute(params![old.seq, new.id, grace_expires_at])?;
            let old = select_one(conn, "k.seq = ?1", [old.seq])?
                .ok_or_else(|| StoreError::Corrupt("rotated key vanished".into()))?;
            log_change(conn, &old.key_hash, now)?;
            let new = select_one(conn, "k.seq = ?1", [seq])?
                .ok_or_else(|| StoreError::Corrupt("inserted key vanished".into()))?;
            key_event(conn, &events, "rotated", &old, now)?;
            Ok(Rotation::Rotated {
                old: Box::new(old),
                new: Box::new(new),
            })
        })
        .await
    }

    async fn record_usage(&self, usage: Vec<KeyUsage>) -> Result<(), StoreError> {
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(
                "UPDATE api_keys SET last_used_at = ?2, last_used_ip = ?3, last_used_user_agent = ?4
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?2)",
            )?;
            for u in &usage {
                stmt.execute(params![u.key_id, u.at, u.ip, u.user_agent])?;
            }
            Ok(())
        })
        .await
    }

    async fn find_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| select_one(conn, "k.id = ?1", [id]))
            .await
    }

    async fn key_changes(&self, after: i64) -> Result<KeyChanges, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, key_hash FROM key_changes WHERE seq > ?1 ORDER BY seq LIMIT 10000",
            )?;
            let rows = stmt.query_map([after], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            let mut changes = KeyChanges {
                last: after,
                hashes: Vec::new(),
            };
            for row in rows {
                let (seq, hash) = row?;
                changes.last = seq;
                changes.hashes.push(hash);
            }
            if changes.hashes.is_empty() {
                // Nothing after `after`: stay there (a change committed since this read belongs to the next
                // one), unless the log ends before it (the first read, or a log restored from a backup).
                let end: i64 =
                    conn.query_row("SELECT coalesce(max(seq), 0) FROM key_changes", [], |r| {
                        r.get(0)
                    })?;
                changes.last = end.min(after);
            }
            Ok(changes)
        })
        .await
    }

    async fn trim_key_changes(&self, before: i64) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM key_changes WHERE at < ?1")?
                .execute([before])?;
            Ok(())
        })
        .await
    }

    fn on_change(&self, listener: ChangeListener) {
        self.inner
            .listeners
            .lock()
            .expect("listeners lock")
            .push(listener);
    }

    async fn count_keys(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            Ok(conn.query_row("SELECT count(*) FROM api_keys", [], |r| r.get::<_, i64>(0))? as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyFilters;

    fn new_key(i: usize, org: &str) -> NewKey {
        NewKey {
            id: format!("key_{i:04}"),
            org_id: org.into(),
            name: format!("k{i}"),
            description: None,
            key_prefix: "opg_abcdefgh".into(),
            key_hash: format!("hash{i}").into_bytes(),
            permissions: vec!["api_keys:read".into()],
            rate_limit: None,
            allowed_ips: vec![],
            created_by: "test".into(),
            created_at: 1_700_000_000,
            expires_at: None,
            workspace_id: None,
            environment_id: None,
            mode: Mode::Live,
            key_type: KeyType::Admin,
            service_account_id: None,
            rotation_interval_days: None,
            rotation_webhook_url: None,
            rotation_key_sealed: None,
        }
    }

    fn live(org: &str) -> Scope {
        Scope {
            org_id: org.into(),
            mode: Mode::Live,
            workspace_id: None,
        }
    }

    #[tokio::test]
    async fn concurrent_writes_commit_and_a_failing_write_spares_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        store.insert_key(new_key(0, "a")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 1..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.insert_key(new_key(i, "a")).await
            }));
        }
        // A duplicate id fails on its own, without rolling back the writes batched with it.
        let dup = {
            let store = store.clone();
            tokio::spawn(async move { store.insert_key(new_key(0, "a")).await })
        };
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert!(matches!(dup.await.unwrap(), Err(StoreError::Sqlite(_))));
        assert_eq!(store.count_keys().await.unwrap(), 200);

        let page = store
            .list_keys(KeyPage {
                scope: &live("a"),
                after_seq: 0,
                before_seq: None,
                filters: &KeyFilters::default(),
                limit: 1000,
                include_revoked: true,
                status: None,
                now: 1_700_000_000,
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 200);
        assert!(page.windows(2).all(|w| w[0].seq < w[1].seq));
        assert!(store
            .get_key(&live("b"), &page[0].id)
            .await
            .unwrap()
            .is_none());

        let revoked = store
            .revoke_key(&live("a"), &page[0].id, 1_800_000_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(revoked.revoked_at, Some(1_800_000_000));
        let again = store
            .revoke_key(&live("a"), &page[0].id, 1_900_000_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            again.revoked_at,
            Some(1_800_000_000),
            "a second revoke keeps the first time"
        );
        assert!(store
            .revoke_key(&live("b"), &page[1].id, 1)
            .await
            .unwrap()
            .is_none());
        store.close().await;

        let reopened = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        assert_eq!(reopened.count_keys().await.unwrap(), 200);
        assert_eq!(
            reopened.integrity_check().await.unwrap(),
            vec!["ok".to_string()]
        );
        assert!(reopened
            .key_by_hash(b"hash0".to_vec())
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some());
    }

    #[tokio::test]
    async fn the_writer_commits_with_synchronous_full_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let (sync, journal) = store
            .write(|conn| {
                let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
                let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                Ok((sync, journal))
            })
            .await
            .unwrap();
        assert_eq!((sync, journal.as_str()), (2, "wal"), "2 = FULL");
    }

    fn applied(u: Update) -> KeyRecord {
        match u {
            Update::Updated(r) => *r,
            other => panic!("not updated: {other:?}"),
        }
    }

    #[tokio::test]
    async fn lifecycle_update_rotate_usage_and_status_filter() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let now = 1_700_000_100;
        let a = store.insert_key(new_key(1, "o")).await.unwrap();
        let mut expiring = new_key(2, "o");
        expiring.expires_at = Some(now - 1);
        store.insert_key(expiring).await.unwrap();
        let c = store.insert_key(new_key(3, "o")).await.unwrap();
        store.revoke_key(&live("o"), &c.id, now).await.unwrap();

        let patch = KeyPatch {
            name: Some("renamed".into()),
            description: Some(Some("d".into())),
            rate_limit: Some(Some(60)),
            ..KeyPatch::default()
        };
        let updated = applied(store.update_key(&live("o"), &a.id, patch, 1).await.unwrap());
        assert_eq!(
            (updated.name.as_str(), updated.rate_limit),
            ("renamed", Some(60))
        );
        assert_eq!(updated.permissions, a.permissions, "unset fields stay");
        let cleared = store
            .update_key(
                &live("o"),
                &a.id,
                KeyPatch {
                    rate_limit: Some(None),
                    ..KeyPatch::default()
                },
                1,
            )
            .await
            .unwrap();
        let cleared = applied(cleared);
        assert_eq!(
            (cleared.rate_limit, cleared.description.as_deref()),
            (None, Some("d"))
        );
        assert!(matches!(
            store
                .update_key(&live("x"), &a.id, KeyPatch::default(), 1)
                .await
                .unwrap(),
            Update::NotFound
        ));
        let widen = KeyPatch {
            permissions: Some(vec!["*".into()]),
            ..KeyPatch::default()
        };
        assert!(matches!(
            store.update_key(&live("o"), &a.id, widen, 1).await.unwrap(),
            Update::Widens(p) if p == "*"
        ));

        let Rotation::Rotated { old, new } = store
            .rotate_key(&live("o"), &a.id, new_key(4, "o"), now + 10, now)
            .await
            .unwrap()
        else {
            panic!("rotation failed")
        };
        assert_eq!(old.replaced_by_key_id.as_deref(), Some(new.id.as_str()));
        assert_eq!(old.status_at(now), KeyStatus::Rotating);
        assert_eq!(old.status_at(now + 10), KeyStatus::Expired);
        assert!(matches!(
            store
                .rotate_key(&live("o"), &a.id, new_key(5, "o"), now + 10, now)
                .await
                .unwrap(),
            Rotation::Conflict(_)
        ));
        assert!(matches!(
            store
                .rotate_key(&live("o"), &c.id, new_key(6, "o"), now + 10, now)
                .await
                .unwrap(),
            Rotation::Conflict(_)
        ));
        assert!(matches!(
            store
                .rotate_key(&live("p"), &new.id, new_key(7, "p"), now + 10, now)
                .await
                .unwrap(),
            Rotation::NotFound
        ));

        let statuses = |status| {
            let store = store.clone();
            async move {
                store
                    .list_keys(KeyPage {
                        scope: &live("o"),
                        after_seq: 0,
                        before_seq: None,
                        filters: &KeyFilters::default(),
                        limit: 100,
                        include_revoked: false,
                        status,
                        now,
                    })
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.name)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(statuses(Some(KeyStatus::Active)).await, vec!["k4"]);
        assert_eq!(statuses(Some(KeyStatus::Expired)).await, vec!["k2"]);
        assert_eq!(statuses(Some(KeyStatus::Revoked)).await, vec!["k3"]);
        assert_eq!(statuses(Some(KeyStatus::Rotating)).await, vec!["renamed"]);
        assert_eq!(statuses(None).await, vec!["renamed", "k2", "k4"]);

        let usage = |at, ip: &str| KeyUsage {
            key_id: new.id.clone(),
            at,
            ip: Some(ip.into()),
            user_agent: None,
        };
        store
            .record_usage(vec![usage(now + 5, "::1"), usage(now + 2, "10.0.0.1")])
            .await
            .unwrap();
        let got = store.get_key(&live("o"), &new.id).await.unwrap().unwrap();
        assert_eq!(
            (got.last_used_at, got.last_used_ip.as_deref()),
            (Some(now + 5), Some("::1"))
        );
    }

    #[tokio::test]
    async fn expiry_sweeps_delete_old_idempotency_and_audit_records_only() {
        use opgate_core::{AuditRecord, IdempotentResponse, Journal, Records, StoredResponse};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        for (key, at) in [("old", 1_000), ("new", 5_000)] {
            let records = Records {
                audit: Some(AuditRecord {
                    at,
                    request_id: key.into(),
                    principal_kind: "api_key".into(),
                    principal_id: "k".into(),
                    org_id: "o".into(),
                    workspace_id: None,
                    mode: opgate_core::Mode::Live,
                    operation: "api_keys.update".into(),
                    target_id: None,
                    client_ip: None,
                    status: 200,
                    error_code: None,
                    count: 1,
                    via: opgate_core::Via::Http,
                }),
                idempotency: Some(IdempotentResponse {
                    owner: "p".into(),
                    key: key.into(),
                    response: StoredResponse {
                        request_hash: [0; 32],
                        status: 200,
                        body: b"{}".to_vec(),
                        created_at: at,
                    },
                }),
            };
            store.record(records).await.unwrap();
        }
        assert_eq!(store.expire_idempotency(2_000).await.unwrap(), 1);
        assert_eq!(store.expire_audit(2_000).await.unwrap(), 1);
        assert!(store
            .stored_response("p", "old", 0)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .stored_response("p", "new", 0)
            .await
            .unwrap()
            .is_some());
        let left: Vec<String> = store
            .read(|conn| {
                let mut stmt = conn.prepare("SELECT request_id FROM audit_log")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .unwrap();
        assert_eq!(left, vec!["new".to_string()]);
    }
}
