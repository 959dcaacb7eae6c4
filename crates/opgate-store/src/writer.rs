//! The writer thread: it owns the write connection and commits whatever writes are waiting as one
//! transaction (group commit: one fsync for many writes), each write in its own savepoint so that a failing
//! one spares the others. It also carries the units of work of state-changing calls ([`opgate_core::Unit`]):
//! a write that claims a unit commits the call's records in its savepoint, or holds its savepoint open until
//! the pipeline hands over the records (calls with an idempotency key, whose response is only known after the
//! handler). After each commit it tells the listeners which keys changed, before any caller hears of it.

use std::cell::RefCell;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opgate_core::{AuditRecord, Records};
use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use crate::StoreError;

/// Writes waiting at once that go into one transaction, at most.
const MAX_BATCH: usize = 512;
/// How long a held unit waits for its records before it is rolled back.
pub(crate) const HOLD_TIMEOUT: Duration = Duration::from_secs(5);

/// Called after a commit with the keyed hash of each key the commit changed.
pub type ChangeListener = Arc<dyn Fn(&[u8]) + Send + Sync>;

thread_local! {
    /// Keys changed by the writes of the transaction under way (writer thread only).
    static CHANGED: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Notes, inside a write, that the key with this hash changed (the listeners hear of it after the commit).
pub(crate) fn changed(key_hash: &[u8]) {
    CHANGED.with(|c| c.borrow_mut().push(key_hash.to_vec()));
}

/// What a write does beside its own work, as the first write of a call's unit.
pub(crate) enum Attach {
    None,
    /// Insert this audit record right after the work, in the same savepoint.
    Audit(Box<AuditRecord>),
    /// Keep the savepoint open after the work and wait here for the call's records.
    Hold(mpsc::Receiver<Held>),
}

/// A message to a held unit.
pub(crate) enum Held {
    /// Another write of the same call, run inside the held savepoint.
    Write(Box<dyn WriteJob>),
    /// The call's records: write them, release the savepoint, answer after the commit.
    Finish(Box<Records>, oneshot::Sender<Result<(), StoreError>>),
}

/// One write: runs inside its own savepoint, learns whether its batch committed, then answers its caller.
pub(crate) trait WriteJob: Send {
    /// Runs the write; `false` rolls back this job's savepoint only.
    fn run(&mut self, conn: &Connection) -> bool;
    /// What the write does beside its work (taken once).
    fn attach(&mut self) -> Attach;
    /// Marks a write that ran as failed after all (its savepoint is rolled back).
    fn fail(&mut self, e: StoreError);
    /// Answers now, before the commit (a held unit's writes: the call goes on while the savepoint is open).
    fn reply_now(&mut self);
    /// Notes that the call's records were attached to this write (it changed something).
    fn mark_attached(&mut self);
    /// Reports the outcome once the batch's commit is known (unless answered already).
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

pub(crate) struct Job<F, R> {
    work: Option<F>,
    attach: Attach,
    /// Set when the call's records went with this write; read by the caller once it has its answer.
    attached: Option<Arc<std::sync::atomic::AtomicBool>>,
    result: Option<Result<R, StoreError>>,
    reply: Option<oneshot::Sender<Result<R, StoreError>>>,
}

impl<F, R> Job<F, R> {
    pub(crate) fn new(work: F, attach: Attach) -> (Self, oneshot::Receiver<Result<R, StoreError>>) {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            work: Some(work),
            attach,
            attached: None,
            result: None,
            reply: Some(reply),
        };
        (job, rx)
    }

    /// The same job, reporting into `flag` whether the call's records went with it.
    pub(crate) fn reporting(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.attached = Some(flag);
        self
    }
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

    fn attach(&mut self) -> Attach {
        std::mem::replace(&mut self.attach, Attach::None)
    }

    fn fail(&mut self, e: StoreError) {
        self.result = Some(Err(e));
    }

    fn reply_now(&mut self) {
        if let (Some(reply), Some(result)) = (self.reply.take(), self.result.take()) {
            let _ = reply.send(result);
        }
    }

    fn mark_attached(&mut self) {
        if let Some(flag) = &self.attached {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn finish(mut self: Box<Self>, commit: Result<(), StoreError>) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        let result = match (self.result, commit) {
            (Some(Ok(_)), Err(e)) => Err(e),
            (Some(result), _) => result,
            (None, Err(e)) => Err(e),
            (None, Ok(())) => Err(StoreError::Closed),
        };
        let _ = reply.send(result);
    }
}

pub(crate) enum Msg {
    Write(Box<dyn WriteJob>),
    Close(oneshot::Sender<()>),
}

/// The writer thread's loop: takes every write waiting (up to [`MAX_BATCH`]), commits them as one transaction,
/// and stops on [`Msg::Close`].
pub(crate) fn run(
    conn: Connection,
    rx: mpsc::Receiver<Msg>,
    listeners: Arc<Mutex<Vec<ChangeListener>>>,
    outbox: Arc<crate::webhooks::Outbox>,
) {
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
            commit_batch(&conn, batch, &listeners, &outbox);
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

fn commit_batch(
    conn: &Connection,
    mut batch: Vec<Box<dyn WriteJob>>,
    listeners: &Mutex<Vec<ChangeListener>>,
    outbox: &crate::webhooks::Outbox,
) {
    let mut finished = Vec::new();
    let outcome = (|| -> Result<(), StoreError> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for job in batch.iter_mut() {
            run_job(conn, job.as_mut(), &mut finished)?;
        }
        conn.execute_batch("COMMIT")?;
        Ok(())
    })();
    let changed = CHANGED.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let events = crate::webhooks::written();
    crate::webhooks::reset_written(0);
    match &outcome {
        Ok(()) => {
            if events > 0 {
                let listeners = outbox.listeners.read().expect("outbox lock").clone();
                for listener in &listeners {
                    listener();
                }
            }
            // Before anyone hears of the commit: a cache must not serve a changed key to the next request.
            let listeners = listeners.lock().expect("listeners lock").clone();
            for hash in &changed {
                for listener in &listeners {
                    listener(hash);
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = batch.len(), "write batch failed");
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    for job in batch {
        job.finish(outcome.clone());
    }
    for reply in finished {
        let _ = reply.send(outcome.clone());
    }
}

/// Runs one job in its savepoint, with what it attaches. `Err` only when the transaction itself failed.
fn run_job(
    conn: &Connection,
    job: &mut dyn WriteJob,
    finished: &mut Vec<oneshot::Sender<Result<(), StoreError>>>,
) -> Result<(), StoreError> {
    let mark = CHANGED.with(|c| c.borrow().len());
    let events_mark = crate::webhooks::written();
    conn.execute_batch("SAVEPOINT job")?;
    let before = conn.total_changes();
    let mut ok = job.run(conn);
    // The call's records go with a write that changed something. A write that changed nothing (a key not
    // found, a rotation refused) leaves the unit open: the call's records, with its real outcome, are
    // written on their own.
    if ok && conn.total_changes() != before {
        match job.attach() {
            Attach::None => {}
            Attach::Audit(record) => match insert_audit(conn, &record) {
                Ok(()) => job.mark_attached(),
                Err(e) => {
                    job.fail(e);
                    ok = false;
                }
            },
            Attach::Hold(held) => {
                job.mark_attached();
                job.reply_now();
                ok = hold(conn, &held, finished);
            }
        }
    }
    if ok {
        conn.execute_batch("RELEASE job")?;
    } else {
        conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
        CHANGED.with(|c| c.borrow_mut().truncate(mark));
        crate::webhooks::reset_written(events_mark);
    }
    Ok(())
}

/// Serves a held unit until its records arrive (written, then `true`), or it is abandoned or times out
/// (`false`: the caller rolls the unit back, and its finisher learns the store could not commit it).
fn hold(
    conn: &Connection,
    held: &mpsc::Receiver<Held>,
    finished: &mut Vec<oneshot::Sender<Result<(), StoreError>>>,
) -> bool {
    loop {
        match held.recv_timeout(HOLD_TIMEOUT) {
            Ok(Held::Write(mut job)) => {
                let inner = conn
                    .execute_batch("SAVEPOINT inner")
                    .map(|()| job.run(conn))
                    .unwrap_or(false);
                let _ = if inner {
                    conn.execute_batch("RELEASE inner")
                } else {
                    conn.execute_batch("ROLLBACK TO inner; RELEASE inner")
                };
                job.reply_now();
                job.finish(Ok(()));
            }
            Ok(Held::Finish(records, reply)) => match write_records(conn, &records) {
                Ok(()) => {
                    finished.push(reply);
                    return true;
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return false;
                }
            },
            Err(_) => {
                tracing::error!(
                    "a held unit of work was abandoned or timed out; its change is rolled back"
                );
                return false;
            }
        }
    }
}

/// Writes a call's records: the audit record and the response kept for replay.
pub(crate) fn write_records(conn: &Connection, records: &Records) -> Result<(), StoreError> {
    if let Some(audit) = &records.audit {
        insert_audit(conn, audit)?;
    }
    if let Some(kept) = &records.idempotency {
        let r = &kept.response;
        conn.prepare_cached(
            "INSERT OR REPLACE INTO idempotency (principal, key, request_hash, status, body, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            kept.owner,
            kept.key,
            r.request_hash.to_vec(),
            r.status,
            r.body,
            r.created_at
        ])?;
    }
    Ok(())
}

pub(crate) fn insert_audit(conn: &Connection, r: &AuditRecord) -> Result<(), StoreError> {
    // A fresh random part each time (not a monotonic increment): ids minted in the same millisecond must
    // not tell one organization how many records others wrote in between. Order comes from `seq`.
    let id = format!("aud_{}", ulid::Ulid::new().to_string().to_lowercase());
    conn.prepare_cached(
        "INSERT INTO audit_log (id, at, request_id, principal_kind, principal_id, org_id, operation,
                                target_id, client_ip, status, error_code, count, workspace_id, mode, via)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        id,
        r.at,
        r.request_id,
        r.principal_kind,
        r.principal_id,
        r.org_id,
        r.operation,
        r.target_id,
        r.client_ip,
        r.status,
        r.error_code,
        r.count,
        r.workspace_id,
        r.mode.as_str(),
        r.via.as_str(),
    ])?;
    Ok(())
}
