//! The in-process limiter state: one TAT per (limit, rate, key), held as a
//! 64-bit keyed hash of the three and a 64-bit TAT, in a fixed number of
//! shards. Memory is bounded by `max_keys`:
//!
//! - a key whose bucket is full again (TAT in the past) carries no
//!   information, so a periodic sweep drops it: forgetting it changes no
//!   decision;
//! - when a shard is at its share of `max_keys`, a new key evicts, among a
//!   few tracked keys sampled at random, the one nearest to a full bucket
//!   (smallest TAT), as Redis's approximated LRU does. The evicted key's next
//!   message meets a full bucket: under a flood, limits err towards letting
//!   mail through rather than refusing it, and the flood itself is still
//!   held by the per-client limits, which have few keys.

use indexmap::IndexMap;
use std::{
    hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, MutexGuard,
    },
};

/// Keys are already keyed hashes: hash them no further.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = IndexMap<u64, u64, BuildHasherDefault<IdentityHasher>>;

/// 64 shards: contention stays low with hundreds of concurrent milter
/// connections, and each shard's share of `max_keys` stays large.
const SHARDS: usize = 64;
/// Tracked keys sampled for eviction at the cap.
const EVICTION_SAMPLE: usize = 8;

pub struct Store {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    /// Each shard's share of `max_keys`: the shares add up to it exactly.
    base: usize,
    /// The first `extra` shards hold one key more.
    extra: usize,
    rng: AtomicU64,
    pub evictions: AtomicU64,
}

impl Store {
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            base: max_keys / SHARDS,
            extra: max_keys % SHARDS,
            rng: AtomicU64::new(0x2545_f491_4f6c_dd1d),
            evictions: AtomicU64::new(0),
        }
    }

    /// The stored key for a (limit, rate, key) triple. The hash is keyed
    /// with a per-process random key, so colliding keys cannot be chosen.
    pub fn key(&self, parts: impl std::hash::Hash) -> u64 {
        self.hasher.hash_one(parts)
    }

    /// How many keys shard `i` may hold (at least one).
    fn cap(&self, i: usize) -> usize {
        (self.base + usize::from(i < self.extra)).max(1)
    }

    fn shard_of(key: u64) -> usize {
        // The high bits: the low ones index inside the shard's table.
        (key >> 58) as usize % SHARDS
    }

    /// Locks the shards holding `keys`, in shard order (so two callers never
    /// wait on each other crosswise), and runs `f` over them.
    pub fn with_keys<T>(&self, keys: &[u64], f: impl FnOnce(&mut Locked<'_>) -> T) -> T {
        let mut ids: Vec<usize> = keys.iter().map(|&k| Self::shard_of(k)).collect();
        ids.sort_unstable();
        ids.dedup();
        let guards = ids
            .iter()
            .map(|&i| (i, self.shards[i].lock().unwrap_or_else(|p| p.into_inner())))
            .collect();
        f(&mut Locked {
            store: self,
            guards,
        })
    }

    /// Drops every key whose TAT is at or before `now` (a full bucket).
    /// Returns how many were dropped.
    pub fn sweep(&self, now: u64) -> usize {
        let mut dropped = 0;
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = s.len();
            s.retain(|_, tat| *tat > now);
            dropped += before - s.len();
        }
        dropped
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn random(&self) -> u64 {
        // xorshift: sampling needs spread, not secrecy.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        x
    }
}

/// Shards locked for one all-or-nothing decision.
pub struct Locked<'a> {
    store: &'a Store,
    guards: Vec<(usize, MutexGuard<'a, Shard>)>,
}

impl Locked<'_> {
    fn shard(&mut self, key: u64) -> &mut Shard {
        let id = Store::shard_of(key);
        let pos = self
            .guards
            .iter()
            .position(|(i, _)| *i == id)
            .expect("the shard of every key passed to with_keys is locked");
        &mut self.guards[pos].1
    }

    pub fn get(&mut self, key: u64) -> Option<u64> {
        self.shard(key).get(&key).copied()
    }

    pub fn remove(&mut self, key: u64) {
        self.shard(key).swap_remove(&key);
    }

    pub fn put(&mut self, key: u64, tat: u64) {
        let per_shard = self.store.cap(Store::shard_of(key));
        let r = self.store.random();
        let shard = self.shard(key);
        if let Some(v) = shard.get_mut(&key) {
            *v = tat;
            return;
        }
        if shard.len() >= per_shard {
            let len = shard.len();
            let victim = (0..EVICTION_SAMPLE)
                .map(|i| (r.rotate_left(i as u32 * 8) as usize) % len)
                .min_by_key(|&i| shard.get_index(i).map_or(u64::MAX, |(_, t)| *t));
            if let Some(i) = victim {
                shard.swap_remove_index(i);
                self.store.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.shard(key).insert(key, tat);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_evicts_nearest_to_full() {
        let store = Store::new(640);
        for i in 0..10_000u64 {
            let k = store.key(("messages_per_sender", i));
            store.with_keys(&[k], |l| l.put(k, 1_000 + i));
        }
        assert!(store.len() <= 640, "{}", store.len());
        assert_eq!(
            store.evictions.load(Ordering::Relaxed),
            10_000 - store.len() as u64
        );
        // The newest keys (largest TAT) survive more than the oldest.
        let survivors_recent = (9_000..10_000u64)
            .filter(|i| {
                let k = store.key(("messages_per_sender", *i));
                store.with_keys(&[k], |l| l.get(k)).is_some()
            })
            .count();
        assert!(survivors_recent > 64, "{survivors_recent}");
        // A cap that is no multiple of the shard count holds exactly.
        let store = Store::new(1_000);
        for i in 0..20_000u64 {
            let k = store.key(("messages_per_sender", i));
            store.with_keys(&[k], |l| l.put(k, 1_000 + i));
        }
        assert!(store.len() <= 1_000 && store.len() > 900, "{}", store.len());
    }

    #[test]
    fn sweep_drops_full_buckets_only() {
        let store = Store::new(1000);
        let (a, b) = (store.key("a"), store.key("b"));
        store.with_keys(&[a, b], |l| {
            l.put(a, 10);
            l.put(b, 30);
        });
        assert_eq!(store.sweep(20), 1);
        assert_eq!(
            store.with_keys(&[a, b], |l| (l.get(a), l.get(b))),
            (None, Some(30))
        );
    }
}
