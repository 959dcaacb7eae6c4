//! Last-used tracking without a write per request: the authenticator records each use in memory (sharded
//! maps, one short lock per request on one shard) and a background task flushes the latest use of every key
//! to storage in one batch at most a second later, and once more on shutdown.

use std::collections::HashMap;
use std::hash::BuildHasher;

/// Keys are key ids: foldhash with a random seed, cheaper per request than SipHash.
type RandomState = foldhash::fast::RandomState;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opgate_store::{KeyStore, KeyUsage};

const SHARDS: usize = 16;

/// Pending key usage, waiting for the next flush.
pub struct UsageRecorder {
    shards: [Mutex<HashMap<String, KeyUsage, RandomState>>; SHARDS],
    hasher: RandomState,
    store: Arc<dyn KeyStore>,
}

impl UsageRecorder {
    /// A recorder flushing into `store`.
    pub fn new(store: Arc<dyn KeyStore>) -> Self {
        UsageRecorder {
            shards: Default::default(),
            hasher: RandomState::default(),
            store,
        }
    }

    /// Notes a use of a key; the newest use of each key wins.
    pub fn record(&self, usage: KeyUsage) {
        let shard = self.hasher.hash_one(&usage.key_id) as usize % SHARDS;
        let mut pending = self.shards[shard].lock().expect("usage shard lock");
        match pending.get_mut(&usage.key_id) {
            Some(seen) if seen.at > usage.at => {}
            Some(seen) => *seen = usage,
            None => {
                pending.insert(usage.key_id.clone(), usage);
            }
        }
    }

    /// Writes every pending use in one batch; uses recorded meanwhile wait for the next flush. On a storage
    /// failure the batch is put back, so no use is lost to a transient error.
    pub async fn flush(&self) {
        let mut batch = Vec::new();
        for shard in &self.shards {
            batch.extend(
                std::mem::take(&mut *shard.lock().expect("usage shard lock")).into_values(),
            );
        }
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_usage(batch.clone()).await {
            tracing::warn!(error = %e, keys = batch.len(), "flushing key usage failed; will retry");
            for usage in batch {
                self.record(usage);
            }
        }
    }

    /// Flushes every `interval` until the returned handle is aborted or the recorder is dropped elsewhere.
    pub fn spawn_flusher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let recorder = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(recorder) = recorder.upgrade() else {
                    break;
                };
                recorder.flush().await;
            }
        })
    }
}
