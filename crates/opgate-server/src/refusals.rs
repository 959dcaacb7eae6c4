//! Refusals of state-changing calls before their handler runs (403, 429, 400, 413, 415, 422, 409 for a
//! held idempotency key, and replays) are counted in memory and written to the audit log as one record per
//! principal, operation and outcome per interval, carrying the count: a key hammering a forbidden or
//! rate-limited operation cannot turn each refusal into a durable write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opgate_core::{AuditRecord, Journal, Principal, Records};

/// Distinct (principal, operation, outcome) tallies held at most before an early flush.
const MAX_PENDING: usize = 10_000;

#[derive(Hash, PartialEq, Eq)]
struct Key {
    principal: String,
    /// Refusals in different workspaces are different records: each workspace's log shows its own.
    workspace: Option<String>,
    operation: &'static str,
    status: u16,
    /// Refusals over MCP and over the HTTP API are told apart in the log.
    via: opgate_core::Via,
}

/// The tally of one key since the last flush; the record written is the last refusal, with the count.
struct Tally {
    count: u32,
    last: AuditRecord,
    /// Order of the last refusal among all tallies: records are written in the order refusals happened.
    order: u64,
}

/// The pending tallies, shared by the pipeline and the flusher.
#[derive(Default)]
pub(crate) struct Refusals {
    pending: Mutex<(HashMap<Key, Tally>, u64)>,
    full: tokio::sync::Notify,
}

impl Refusals {
    /// Counts one refusal; `record` describes it (status, code, request id, time).
    pub(crate) fn note(&self, principal: &Principal, record: AuditRecord, operation: &'static str) {
        let key = Key {
            principal: principal.unique_key(),
            workspace: record.workspace_id.clone(),
            operation,
            status: record.status,
            via: record.via,
        };
        let mut guard = self.pending.lock().expect("refusals lock");
        let (pending, order) = &mut *guard;
        *order += 1;
        let tally = pending.entry(key).or_insert_with(|| Tally {
            count: 0,
            last: record.clone(),
            order: 0,
        });
        tally.count = tally.count.saturating_add(1);
        tally.last = record;
        tally.order = *order;
        if pending.len() >= MAX_PENDING {
            self.full.notify_one();
        }
    }

    /// Writes every pending tally as one audit record each.
    pub(crate) async fn flush(&self, journal: &dyn Journal) {
        let pending = std::mem::take(&mut self.pending.lock().expect("refusals lock").0);
        let mut tallies: Vec<Tally> = pending.into_values().collect();
        tallies.sort_by_key(|t| t.order);
        for tally in tallies {
            let record = AuditRecord {
                count: tally.count,
                ..tally.last
            };
            let records = Records {
                audit: Some(record),
                idempotency: None,
            };
            if let Err(e) = journal.record(records).await {
                tracing::error!(error = %e, "writing refused calls to the audit log failed");
            }
        }
    }

    /// Flushes every `interval`, or sooner when too many tallies are pending; runs until aborted.
    pub(crate) fn spawn_flusher(
        self: &Arc<Self>,
        journal: Arc<dyn Journal>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let refusals = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = refusals.full.notified() => {}
                }
                refusals.flush(&*journal).await;
            }
        })
    }
}
