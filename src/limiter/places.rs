//! The places under `concurrent_per_client` that this gateway holds in
//! Redis: one member of the client's sorted set per place, scored by when
//! its lease ends and renewed every third of the lease while held, so that
//! when a gateway dies its places stop counting after `redis.lease`.
//!
//! A place given back is kept for the same client's next connection for
//! up to [`KEEP`]: a client that connects again at once takes it without a
//! round trip, and the count in Redis never moves. A kept place still
//! counts for every gateway, so together they never pass the cap; only a
//! place taken under a cap at most today's is reused (after a reload that
//! lowers it, the next connection is judged in Redis). A place not reused
//! in time is removed by the next connection's call, or by the places'
//! task shortly after.

use super::target::Target;
use crate::config::RedisSettings;
use redis::{aio::ConnectionManager, Script};
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use tokio::sync::Notify;

/// How long a place given back is kept for the client's next connection.
pub const KEEP: Duration = Duration::from_millis(100);

/// A place given back, kept for a while.
struct Kept {
    member: String,
    /// The cap it was taken under.
    cap: u32,
    since: Instant,
}

#[derive(Default)]
struct Pool {
    /// Every place held in Redis, open or kept: member → key.
    live: HashMap<String, String>,
    /// The places kept, by key, the newest last.
    kept: HashMap<String, Vec<Kept>>,
    /// Places to remove from Redis: (key, member).
    gone: Vec<(String, String)>,
    /// The task has been woken for the places kept and not yet swept.
    sweeping: bool,
}

impl Pool {
    /// Moves the places of `key` kept too long, or taken under a cap above
    /// `cap`, to the ones to remove.
    fn expire(&mut self, key: &str, cap: Option<u32>, now: Instant) {
        let Some(kept) = self.kept.get_mut(key) else {
            return;
        };
        let (stay, go): (Vec<Kept>, Vec<Kept>) = std::mem::take(kept)
            .into_iter()
            .partition(|k| now < k.since + KEEP && cap.is_none_or(|c| k.cap <= c));
        for k in go {
            self.live.remove(&k.member);
            self.gone.push((key.to_string(), k.member));
        }
        if stay.is_empty() {
            self.kept.remove(key);
        } else if let Some(kept) = self.kept.get_mut(key) {
            *kept = stay;
        }
    }
}

/// This gateway's places in Redis.
pub struct Places {
    pool: Mutex<Pool>,
    wake: Notify,
    /// Identifies this gateway's members.
    gateway: String,
    next_member: AtomicU64,
}

impl Places {
    pub fn new(gateway: String) -> Self {
        Self {
            pool: Mutex::default(),
            wake: Notify::new(),
            gateway,
            next_member: AtomicU64::new(1),
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This gateway's name in Redis.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// A member for a new place.
    pub fn new_member(&self) -> String {
        format!(
            "{}:{}",
            self.gateway,
            self.next_member.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A place of `key` kept for reuse, taken under a cap at most `cap`.
    pub fn reuse(&self, key: &str, cap: u32) -> Option<String> {
        let mut pool = self.pool();
        pool.expire(key, Some(cap), Instant::now());
        let kept = pool.kept.get_mut(key)?;
        let member = kept.pop().map(|k| k.member);
        if kept.is_empty() {
            pool.kept.remove(key);
        }
        member
    }

    /// A new place taken in Redis.
    pub fn taken(&self, key: &str, member: &str) {
        self.pool().live.insert(member.to_string(), key.to_string());
    }

    /// A place given back: kept for the client's next connection.
    pub fn keep(&self, key: String, member: String, cap: u32) {
        let wake = {
            let mut pool = self.pool();
            pool.kept.entry(key).or_default().push(Kept {
                member,
                cap,
                since: Instant::now(),
            });
            !std::mem::replace(&mut pool.sweeping, true)
        };
        if wake {
            self.wake.notify_one();
        }
    }

    /// The places to remove, for a call to Redis to carry.
    pub fn take_gone(&self) -> Vec<(String, String)> {
        std::mem::take(&mut self.pool().gone)
    }

    /// Places a failed call did not remove: removed later (or they expire
    /// with their lease).
    pub fn return_gone(&self, gone: Vec<(String, String)>) {
        self.pool().gone.extend(gone);
    }

    /// Every place kept too long moved to the ones to remove; when the
    /// next of the others is due, if any.
    fn sweep(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut pool = self.pool();
        let keys: Vec<String> = pool.kept.keys().cloned().collect();
        for key in keys {
            pool.expire(&key, None, now);
        }
        let next = pool.kept.values().flatten().map(|k| k.since + KEEP).min();
        pool.sweeping = next.is_some();
        next
    }

    /// Every place held, (key, member), for renewal.
    fn live(&self) -> Vec<(String, String)> {
        let pool = self.pool();
        pool.live
            .iter()
            .map(|(m, k)| (k.clone(), m.clone()))
            .collect()
    }
}

/// The places' task: renews every place held every third of the lease, and
/// removes the places kept too long.
pub async fn manage(
    places: Arc<Places>,
    target: Arc<Target>,
    renew: Script,
    settings: RedisSettings,
) {
    let mut conn: Option<ConnectionManager> = None;
    let mut tick = tokio::time::interval(settings.lease / 3);
    let lease_us = settings.lease.as_micros() as u64;
    let mut sweep_at: Option<tokio::time::Instant> = None;
    loop {
        let sweep = async {
            match sweep_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = places.wake.notified() => {
                sweep_at.get_or_insert_with(|| tokio::time::Instant::now() + KEEP);
            }
            () = sweep => {
                sweep_at = places.sweep().map(|t| {
                    tokio::time::Instant::from_std(t + Duration::from_millis(1))
                });
                let gone = places.take_gone();
                if gone.is_empty() {
                    continue;
                }
                let mut pipe = redis::pipe();
                for (key, member) in &gone {
                    pipe.zrem(key, member).ignore();
                }
                if !run(&target, &mut conn, &settings, async |mut c| pipe.query_async::<()>(&mut c).await).await {
                    // They expire by themselves after the lease.
                    tracing::debug!("could not release {} connections in redis", gone.len());
                }
            }
            _ = tick.tick() => {
                let live = places.live();
                if live.is_empty() {
                    continue;
                }
                let mut inv = renew.prepare_invoke();
                inv.arg(lease_us);
                for (key, member) in &live {
                    inv.key(key);
                    inv.arg(member);
                }
                if !run(&target, &mut conn, &settings, async |mut c| inv.invoke_async::<i64>(&mut c).await).await {
                    tracing::debug!("could not renew connection leases in redis");
                }
            }
        }
    }
}

/// Runs one call of the places' task under the timeout; false (and the
/// connection dropped) when it fails.
async fn run<T>(
    target: &Target,
    conn: &mut Option<ConnectionManager>,
    settings: &RedisSettings,
    call: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>,
) -> bool {
    let Ok(c) = target.kept(conn, settings).await else {
        return false;
    };
    let ok = matches!(
        tokio::time::timeout(settings.timeout, call(c)).await,
        Ok(Ok(_))
    );
    if !ok {
        *conn = None;
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_given_back_is_reused_only_in_time_and_under_a_cap_not_lowered() {
        let p = Places::new("g".into());
        let m = p.new_member();
        p.taken("k", &m);
        p.keep("k".into(), m.clone(), 10);
        // Another client's key has nothing kept.
        assert_eq!(p.reuse("other", 10), None);
        // A cap lowered since: not reused, and removed from Redis.
        assert_eq!(p.reuse("k", 5), None);
        assert_eq!(p.take_gone(), vec![("k".to_string(), m.clone())]);
        assert!(p.live().is_empty());

        let m2 = p.new_member();
        assert_ne!(m, m2);
        p.taken("k", &m2);
        p.keep("k".into(), m2.clone(), 10);
        assert_eq!(p.reuse("k", 20).as_deref(), Some(m2.as_str()));
        assert_eq!(p.reuse("k", 20), None);
        assert_eq!(p.live(), vec![("k".to_string(), m2.clone())]);

        // Kept too long: swept, removed, and nothing left to sweep.
        p.keep("k".into(), m2.clone(), 10);
        std::thread::sleep(KEEP + Duration::from_millis(5));
        assert_eq!(p.sweep(), None);
        assert_eq!(p.reuse("k", 10), None);
        assert_eq!(p.take_gone(), vec![("k".to_string(), m2)]);
        assert!(p.live().is_empty());
    }
}
