//! The verification cache: a known key is authenticated without touching SQLite. Entries are keyed by the
//! keyed hash, sharded so that no lock is global, and invalidated synchronously by revoke, rotate and update
//! before those operations answer; a per-shard generation keeps a lookup that raced with an invalidation
//! from putting the stale record back. Changes made by another process on the same database reach the cache
//! through the store's change log ([`crate::ApiKeys::follow_changes`]); while that follower is not caught up
//! (the database does not answer), the cache is not used at all, so a change committed elsewhere cannot be
//! missed; as the last backstop, an entry is never used for longer than [`TTL`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    entries: HashMap<[u8; 32], Arc<CachedKey>, KeyedHashes>,
    generation: u64,
}

/// Hashes a map key that is already a keyed hash (an HMAC under the server secret) by taking its bytes as they
/// are: they are uniformly distributed and no client can choose them, so SipHash's work (and its defence
/// against chosen collisions) buys nothing on the authentication path.
#[derive(Default, Clone, Copy)]
struct KeyedHashes;

impl std::hash::BuildHasher for KeyedHashes {
    type Hasher = Folded;
    fn build_hasher(&self) -> Folded {
        Folded(0)
    }
}

/// The bytes written, folded eight at a time.
struct Folded(u64);

impl std::hash::Hasher for Folded {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(17) ^ u64::from_le_bytes(word);
        }
    }
}

pub(crate) struct KeyCache {
    shards: Vec<RwLock<Shard>>,
    /// Whether a follower of the change log vouches for the entries (then they are used only until
    /// `trusted_until`).
    followed: AtomicBool,
    /// Milliseconds after `base` until which the follower last vouched for the entries.
    trusted_until: AtomicU64,
    base: Instant,
}

impl KeyCache {
    pub(crate) fn new() -> Self {
        KeyCache {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            followed: AtomicBool::new(false),
            trusted_until: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    /// Notes that the change log was read up to its end just now: entries may be used for `window` more.
    /// The first call makes the cache depend on these calls.
    pub(crate) fn caught_up(&self, window: Duration) {
        let until = (self.base.elapsed() + window).as_millis() as u64;
        self.trusted_until.fetch_max(until, Ordering::SeqCst);
        self.followed.store(true, Ordering::SeqCst);
    }

    /// Whether entries may be used now: always without a follower (one process, changes arrive through the
    /// commit listeners), else only while the follower is caught up.
    fn trusted(&self) -> bool {
        !self.followed.load(Ordering::Relaxed)
            || (self.base.elapsed().as_millis() as u64) < self.trusted_until.load(Ordering::Relaxed)
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
            .filter(|k| k.read_at.elapsed() < TTL && self.trusted())
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
