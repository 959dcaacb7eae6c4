//! SQLite behind [`KeyStore`]: one writer thread owns the write connection and commits whatever writes are
//! waiting as one transaction (group commit, one fsync for many writes); reads run on a small pool of
//! read-only connections on tokio's blocking threads. Nothing here blocks an async worker thread.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use tokio::sync::oneshot;

use crate::{migrations, KeyPage, KeyRecord, KeyStore, NewKey, StoreError};

/// Writes waiting at once that go into one transaction, at most.
const MAX_BATCH: usize = 512;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;

/// One write: runs inside its own savepoint, learns whether its batch committed, then answers its caller.
trait WriteJob: Send {
    /// Runs the write; `false` rolls back this job's savepoint only.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Reports the outcome once the batch's commit is known.
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

struct Job<F, R> {
    work: Option<F>,
    result: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<F, R> WriteJob for Job<F, R>
where
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send,
    R: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let work = self.work.take().expect("a write job runs once");
        let result = work(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
        let result = match (self.result, commit) {
            (Some(Ok(_)), Err(e)) => Err(e),
            (Some(result), _) => result,
            (None, Err(e)) => Err(e),
            (None, Ok(())) => Err(StoreError::Closed),
        };
        let _ = self.reply.send(result);
    }
}

enum Msg {
    Write(Box<dyn WriteJob>),
    Close(oneshot::Sender<()>),
}

struct Inner {
    path: PathBuf,
    writer: mpsc::Sender<Msg>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
}

/// The SQLite store. Cheap to clone; all clones share the writer thread and the reader pool.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies migrations and starts the writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk before its caller hears of it, so an acknowledged write survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::apply(&mut conn)?;

        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("opgate-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: tx,
                writer_thread: Mutex::new(Some(thread)),
                readers: Mutex::new(Vec::new()),
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
    pub async fn write<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            work: Some(work),
            result: None,
            reply,
        };
        self.inner
            .writer
            .send(Msg::Write(Box::new(job)))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `work` on a pooled read-only connection on a blocking thread.
    pub async fn read<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
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
        .map_err(|_| StoreError::Closed)?
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

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Msg>) {
    let mut close_reply = None;
    while close_reply.is_none() {
        let mut batch = match rx.recv() {
            Ok(Msg::Write(job)) => vec![job],
            Ok(Msg::Close(reply)) => {
                close_reply = Some(reply);
                Vec::new()
            }
            Err(_) => break,
        };
        while batch.len() < MAX_BATCH && close_reply.is_none() {
            match rx.try_recv() {
                Ok(Msg::Write(job)) => batch.push(job),
                Ok(Msg::Close(reply)) => close_reply = Some(reply),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&conn, batch);
        }
    }
    // Refuse whatever raced with the close.
    drop(rx);
    if let Err((_, e)) = conn.close() {
        tracing::error!(error = %e, "closing the database failed");
    }
    if let Some(reply) = close_reply {
        let _ = reply.send(());
    }
}

fn commit_batch(conn: &Connection, mut batch: Vec<Box<dyn WriteJob>>) {
    let outcome = (|| -> Result<(), StoreError> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for job in batch.iter_mut() {
            conn.execute_batch("SAVEPOINT job")?;
            if job.run(conn) {
                conn.execute_batch("RELEASE job")?;
            } else {
                conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            }
        }
        conn.execute_batch("COMMIT")?;
        Ok(())
    })();
    if let Err(e) = &outcome {
        tracing::error!(error = %e, writes = batch.len(), "write batch failed");
        let _ = conn.execute_batch("ROLLBACK");
    }
    for job in batch {
        job.finish(outcome.clone());
    }
}

const KEY_COLUMNS: &str =
    "seq, id, org_id, name, description, key_prefix, key_hash, permissions, rate_limit, \
                           allowed_ips, created_by, created_at, expires_at, revoked_at";

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    fn json_list(row: &Row<'_>, idx: usize) -> rusqlite::Result<Vec<String>> {
        let text: String = row.get(idx)?;
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
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
    })
}

fn insert(conn: &Connection, key: &NewKey) -> Result<i64, StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO api_keys (id, org_id, name, description, key_prefix, key_hash, permissions, rate_limit,
                               allowed_ips, created_by, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
    ])?;
    Ok(conn.last_insert_rowid())
}

fn select_one(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE {filter}");
    let mut stmt = conn.prepare_cached(&sql)?;
    Ok(stmt.query_row(args, key_from_row).optional()?)
}

#[async_trait::async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, key: NewKey) -> Result<KeyRecord, StoreError> {
        self.write(move |conn| {
            let seq = insert(conn, &key)?;
            select_one(conn, "seq = ?1", [seq])?
                .ok_or_else(|| StoreError::Corrupt("inserted key vanished".into()))
        })
        .await
    }

    async fn insert_keys(&self, keys: Vec<NewKey>) -> Result<(), StoreError> {
        self.write(move |conn| keys.iter().try_for_each(|key| insert(conn, key).map(drop)))
            .await
    }

    async fn key_by_hash(&self, hash: Vec<u8>) -> Result<Option<KeyRecord>, StoreError> {
        self.read(move |conn| select_one(conn, "key_hash = ?1", [hash]))
            .await
    }

    async fn get_key(&self, org_id: &str, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let (org_id, id) = (org_id.to_owned(), id.to_owned());
        self.read(move |conn| select_one(conn, "id = ?1 AND org_id = ?2", [id, org_id]))
            .await
    }

    async fn list_keys(&self, page: KeyPage<'_>) -> Result<Vec<KeyRecord>, StoreError> {
        let org_id = page.org_id.to_owned();
        let (after, limit, include_revoked) =
            (page.after_seq, page.limit as i64, page.include_revoked);
        self.read(move |conn| {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM api_keys
                 WHERE org_id = ?1 AND seq > ?2 AND (?3 OR revoked_at IS NULL)
                 ORDER BY seq LIMIT ?4"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows =
                stmt.query_map(params![org_id, after, include_revoked, limit], key_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn revoke_key(
        &self,
        org_id: &str,
        id: &str,
        now: i64,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let (org_id, id) = (org_id.to_owned(), id.to_owned());
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE api_keys SET revoked_at = ?3 WHERE id = ?1 AND org_id = ?2 AND revoked_at IS NULL",
            )?
            .execute(params![id, org_id, now])?;
            select_one(conn, "id = ?1 AND org_id = ?2", [&id, &org_id])
        })
        .await
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
                org_id: "a",
                after_seq: 0,
                limit: 1000,
                include_revoked: true,
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 200);
        assert!(page.windows(2).all(|w| w[0].seq < w[1].seq));
        assert!(store.get_key("b", &page[0].id).await.unwrap().is_none());

        let revoked = store
            .revoke_key("a", &page[0].id, 1_800_000_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(revoked.revoked_at, Some(1_800_000_000));
        let again = store
            .revoke_key("a", &page[0].id, 1_900_000_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            again.revoked_at,
            Some(1_800_000_000),
            "a second revoke keeps the first time"
        );
        assert!(store
            .revoke_key("b", &page[1].id, 1)
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
}
