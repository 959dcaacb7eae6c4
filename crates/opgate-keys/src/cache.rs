//! The verification cache: a known key is authenticated without touching SQLite. Entries are keyed by the
//! keyed hash, sharded so that no lock is global, and invalidated synchronously by revoke, rotate and update
//! before those operations answer; a per-shard generation keeps a lookup that raced with an invalidation
//! from putting the stale record back. Changes made by another process on the same database reach the cache
//! through the store's change log ([`crate::ApiKeys::follow_changes`]); as the last backstop, an entry is
//! never used for longer than [`TTL`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use opgate_core::Principal;

const SHARDS: usize = 32;
/// Entries per shard at most; a full shard is emptied rather than grown (bounded memory).
const MAX_PER_SHARD: usize = 8_192;
/// The longest an entry is trusted without reading the key again.
pub(crate) const TTL: Duration = Duration::from_secs(60);

/// What authentication needs of a key, ready to use.
pub(crate) struct CachedKey {
    pub principal: Arc<Principal>,
    pub allowed: Vec<IpNet>,
    /// A stored allow-list entry did not parse: the key is refused from every address.
    pub fence_unreadable: bool,
    /// When the key stops working, and why: `expires_at` or the end of a rotation's grace.
    pub ends: Option<(i64, End)>,
    /// When the entry was read from storage.
    pub read_at: Instant,
}

#[derive(Clone, Copy)]
pub(crate) enum End {
    Expiry,
    Grace,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<[u8; 32], Arc<CachedKey>>,
    generation: u64,
}

pub(crate) struct KeyCache {
    shards: Vec<RwLock<Shard>>,
}

impl KeyCache {
    pub(crate) fn new() -> Self {
        KeyCache {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }

    fn shard(&self, hash: &[u8; 32]) -> &RwLock<Shard> {
        // The hash is an HMAC output: its bytes are already uniformly distributed.
        &self.shards[hash[0] as usize % SHARDS]
    }

    /// The cached key and the shard generation seen; pass the generation to [`KeyCache::insert`].
    pub(crate) fn get(&self, hash: &[u8; 32]) -> (Option<Arc<CachedKey>>, u64) {
        let shard = self.shard(hash).read().expect("key cache lock");
        let fresh = shard
            .entries
            .get(hash)
            .filter(|k| k.read_at.elapsed() < TTL)
            .cloned();
        (fresh, shard.generation)
    }

    /// Caches `key` unless the shard was invalidated since `generation` was read.
    pub(crate) fn insert(&self, hash: [u8; 32], generation: u64, key: Arc<CachedKey>) {
        let mut shard = self.shard(&hash).write().expect("key cache lock");
        if shard.generation != generation {
            return;
        }
        if shard.entries.len() >= MAX_PER_SHARD {
            shard.entries.clear();
        }
        shard.entries.insert(hash, key);
    }

    /// Drops the key with this hash; lookups already in flight will not re-insert it.
    pub(crate) fn forget(&self, hash: &[u8]) {
        let Ok(hash) = <[u8; 32]>::try_from(hash) else {
            return;
        };
        let mut shard = self.shard(&hash).write().expect("key cache lock");
        shard.entries.remove(&hash);
        shard.generation += 1;
    }
}
