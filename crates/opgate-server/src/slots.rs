//! Counted slots per key (a client address, a principal): at most `max` held at once per key, given back when
//! the [`Slot`] drops. Sharded so that no lock is global.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// Keys here are principals and client addresses: foldhash with a random seed per table, far cheaper per
/// request than SipHash and still unpredictable to a client.
type RandomState = foldhash::fast::RandomState;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

/// Slots per key, at most `max` each.
pub(crate) struct Slots<K> {
    shards: Vec<Mutex<HashMap<K, u32, RandomState>>>,
    hasher: RandomState,
    max: u32,
}

/// One held slot of a key.
pub(crate) struct Slot<K: Hash + Eq> {
    table: Arc<Slots<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Slots<K> {
    /// A table allowing `max` slots per key (at least one).
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Slots {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::default(),
            max: u32::try_from(max.max(1)).unwrap_or(u32::MAX),
        })
    }

    fn shard(&self, key: &K) -> &Mutex<HashMap<K, u32, RandomState>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// One more slot for `key`, or `None` when it holds the maximum already.
    pub(crate) fn claim(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut held = self.shard(&key).lock().expect("slots lock");
        let n = held.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        drop(held);
        Some(Slot {
            table: Arc::clone(self),
            key,
        })
    }

    /// The maximum per key.
    pub(crate) fn max(&self) -> u32 {
        self.max
    }
}

impl<K: Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        let shard = &self.table.shards[self.table.hasher.hash_one(&self.key) as usize % SHARDS];
        let mut held = shard.lock().expect("slots lock");
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_key_and_given_back() {
        let slots = Slots::new(2);
        let a1 = slots.claim("a").unwrap();
        let _a2 = slots.claim("a").unwrap();
        assert!(slots.claim("a").is_none(), "a third slot for `a`");
        let _b = slots.claim("b").expect("another key is unaffected");
        drop(a1);
        assert!(
            slots.claim("a").is_some(),
            "a slot given back is free again"
        );
    }
}
