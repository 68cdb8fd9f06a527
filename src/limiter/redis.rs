//! The Redis backend: the same GCRA as the local one, run atomically in
//! Redis by a Lua script (one round trip for a whole batch, all or
//! nothing), so that every gateway using the same Redis shares one budget.
//! Open connections are counted in a sorted set per client, one member per
//! connection, each with an expiry that its gateway renews: when a gateway
//! dies, its connections stop counting after `redis.lease`.
//!
//! Times are Redis's own clock (`TIME`), in microseconds, so gateways with
//! skewed clocks still agree; Lua numbers are doubles, exact to 2^53 µs.
//!
//! Redis is one address (`url`), or the master that Sentinel names: asked
//! of every sentinel at once whenever a connection is made, which is after
//! every failure, so a promoted replica is found without a restart
//! (`target.rs`). A busy key spends cells taken ahead (`credit.rs`); a
//! place given back rides on the next connection's call.

use super::target::Target;
use super::{Check, LimiterError, Outcome};
use crate::config::RedisSettings;
use redis::{aio::ConnectionManager, AsyncCommands, Script};
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// The script in `gcra.lua`: the GCRA of `gcra_fn.lua` over its keys and
/// arguments (described there).
const GCRA_LUA: &str = concat!(include_str!("gcra_fn.lua"), include_str!("gcra.lua"));

/// The script in `connect.lua`, with the GCRA of `gcra_fn.lua`.
const CONNECT_LUA: &str = concat!(include_str!("gcra_fn.lua"), include_str!("connect.lua"));

/// The script in `renew.lua` (its keys and arguments are described there).
const RENEW_LUA: &str = include_str!("renew.lua");

/// The answer of `gcra.lua` (or `connect.lua`): 0 (or -1 for the cap, as
/// `usize::MAX`) or the index of the refusing check, the fills or the
/// wait, and the cells granted ahead.
fn gcra_reply(v: Vec<redis::Value>) -> Result<(usize, String, String), LimiterError> {
    let bad = |e: redis::ParsingError| LimiterError::Redis(e.to_string());
    let mut it = v.into_iter();
    let index: i64 = match it.next() {
        Some(v) => redis::from_redis_value(v).map_err(bad)?,
        None => {
            return Err(LimiterError::Redis(
                "empty reply from the limits script".into(),
            ))
        }
    };
    let text = |v: Option<redis::Value>| -> Result<String, LimiterError> {
        v.map_or(Ok(String::new()), |v| {
            redis::from_redis_value(v).map_err(bad)
        })
    };
    let figures = text(it.next())?;
    let granted = text(it.next())?;
    Ok((
        usize::try_from(index).unwrap_or(usize::MAX),
        figures,
        granted,
    ))
}

/// After a failure, Redis is not asked again for this long: every check in
/// between goes straight to `on_failure`, so a dead Redis costs the MTA one
/// timeout per interval, not one per message.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

pub struct RedisLimiter {
    target: Arc<Target>,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    settings: RedisSettings,
    gcra: Script,
    connect: Script,
    renew: Script,
    /// Identifies this gateway's connection members.
    gateway: String,
    next_member: AtomicU64,
    leases: OnceLock<mpsc::UnboundedSender<LeaseEvent>>,
    /// Places given back and not yet removed in Redis: (key, member). The
    /// next connection's call removes them, or the lease task shortly
    /// after when none comes.
    released: Arc<Mutex<Vec<(String, String)>>>,
    down_until: Mutex<Option<Instant>>,
    healthy: AtomicBool,
    /// Calls that failed (timeout, refused, error reply).
    pub failures: AtomicU64,
    /// Cells taken ahead (`reserve`), spent here.
    credit: super::credit::Credit,
}

enum LeaseEvent {
    Taken { key: String, member: String },
    Released { member: String },
}

/// An open connection counted in Redis; dropping it gives the place back.
pub struct RedisLease {
    tx: mpsc::UnboundedSender<LeaseEvent>,
    released: Arc<Mutex<Vec<(String, String)>>>,
    key: String,
    member: String,
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        let member = std::mem::take(&mut self.member);
        self.released
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((std::mem::take(&mut self.key), member.clone()));
        let _ = self.tx.send(LeaseEvent::Released { member });
    }
}

/// How long a place given back may wait for the next connection's call
/// before the lease task removes it itself.
const RELEASE_DELAY: Duration = Duration::from_millis(50);

impl RedisLimiter {
    pub fn new(settings: &RedisSettings) -> Result<Self, LimiterError> {
        let target = Target::new(settings).map_err(|e| LimiterError::Redis(e.to_string()))?;
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let gateway = format!(
            "{host}:{}:{:x}",
            std::process::id(),
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8)
        );
        Ok(Self {
            target: Arc::new(target),
            conn: tokio::sync::Mutex::new(None),
            settings: settings.clone(),
            gcra: Script::new(GCRA_LUA),
            connect: Script::new(CONNECT_LUA),
            renew: Script::new(RENEW_LUA),
            gateway,
            next_member: AtomicU64::new(1),
            leases: OnceLock::new(),
            released: Arc::new(Mutex::new(Vec::new())),
            down_until: Mutex::new(None),
            healthy: AtomicBool::new(true),
            failures: AtomicU64::new(0),
            credit: super::credit::Credit::default(),
        })
    }

    /// This gateway's name in Redis: host, process and a random part.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    pub(crate) fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}{}", self.settings.key_prefix, parts)
    }

    fn rate_key(&self, c: &Check) -> String {
        self.key(format_args!(
            "{}:{}/{}:{}",
            c.name,
            c.rate.count,
            c.rate.period.as_secs(),
            c.key
        ))
    }

    /// True while Redis is left alone after a failure.
    fn resting(&self) -> bool {
        let until = *self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    async fn connection(&self) -> Result<ConnectionManager, LimiterError> {
        let mut slot = self.conn.lock().await;
        self.target.kept(&mut slot, &self.settings).await
    }

    /// Runs one Redis call under the timeout, noting success or failure.
    /// For `RETRY_INTERVAL` after a failure, Redis is not asked at all.
    pub(crate) async fn call<T>(
        &self,
        f: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, LimiterError> {
        if self.resting() {
            return Err(LimiterError::Redis("unavailable, retrying later".into()));
        }
        let result = match self.connection().await {
            Ok(conn) => match tokio::time::timeout(self.settings.timeout, f(conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(LimiterError::Redis(e.to_string())),
                Err(_) => Err(LimiterError::Timeout(self.settings.timeout)),
            },
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    info!("redis is reachable again: rate limits shared across gateways again");
                }
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                // Start afresh next time: a manager whose reconnection
                // failed while Redis was down does not recover by itself.
                *self.conn.lock().await = None;
                *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Instant::now() + RETRY_INTERVAL);
                if self.healthy.swap(false, Ordering::Relaxed) {
                    warn!(
                        on_failure = ?self.settings.on_failure,
                        "redis failed, rate limits follow on_failure until it answers: {e}"
                    );
                }
            }
        }
        result
    }

    /// A batch of checks, all or nothing. A key holding cells taken ahead
    /// spends them; the others go to Redis in one call of `gcra.lua`
    /// (which also takes cells ahead for the keys that allow it), and when
    /// it refuses, the cells spent here are given back.
    pub async fn check(&self, checks: &[Check]) -> Result<(Outcome, Vec<u16>), LimiterError> {
        if checks.is_empty() {
            return Ok((Outcome::Allowed, Vec::new()));
        }
        let keys: Vec<String> = checks.iter().map(|c| self.rate_key(c)).collect();
        // The fill of each check whose cells were held here.
        let held: Vec<Option<u16>> = checks
            .iter()
            .zip(&keys)
            .map(|(c, k)| match c.member {
                None => self.credit.take(k, c.n),
                Some(_) => None,
            })
            .collect();
        if held.iter().all(Option::is_some) {
            return Ok((Outcome::Allowed, held.into_iter().flatten().collect()));
        }
        let refund = || {
            for ((c, k), h) in checks.iter().zip(&keys).zip(&held) {
                if h.is_some() {
                    self.credit.refund(k, c.n);
                }
            }
        };
        let mut invocation = self.gcra.prepare_invoke();
        for ((c, key), h) in checks.iter().zip(&keys).zip(&held) {
            // A check paid from what is held is judged at no cost.
            let (cells, ahead) = match h {
                Some(_) => (0, 0),
                None => (c.n, self.credit.ahead(c, self.settings.reserve)),
            };
            invocation
                .key(key)
                .arg((c.rate.emission_ns() / 1000).max(1))
                .arg(c.rate.burst())
                .arg(cells)
                .arg(c.member.as_deref().unwrap_or(""))
                .arg(ahead);
        }
        let got = self
            .call(async |mut conn| invocation.invoke_async(&mut conn).await)
            .await
            .and_then(gcra_reply);
        let (index, figures, granted) = match got {
            Ok(got) => got,
            Err(e) => {
                refund();
                return Err(e);
            }
        };
        if index == 0 {
            let fill: Vec<u16> = figures
                .split(',')
                .zip(&held)
                .map(|(f, h)| h.unwrap_or_else(|| f.parse::<u16>().unwrap_or(0).min(1000)))
                .collect();
            for ((key, cells), f) in keys.into_iter().zip(granted.split(',')).zip(&fill) {
                self.credit.keep(key, cells.parse().unwrap_or(0), *f);
            }
            return Ok((Outcome::Allowed, fill));
        }
        refund();
        let wait_us: u64 = figures.parse().unwrap_or(u64::MAX / 1000);
        Ok((
            Outcome::Denied {
                index: index - 1,
                retry_after: Duration::from_micros(wait_us),
            },
            Vec::new(),
        ))
    }

    /// A new connection from `ip` in one round trip: a place among at most
    /// `max` open connections (when capped), then the connection rate
    /// `checks`, all or nothing; the places given back since the last
    /// call are removed first, in the same call. `None`: the cap is
    /// reached; else the rates' outcome, and the place when capped and
    /// allowed.
    pub async fn connect(
        &self,
        ip: IpAddr,
        max: Option<u32>,
        checks: &[Check],
    ) -> Result<Option<(Outcome, Option<RedisLease>)>, LimiterError> {
        let tx = self.lease_manager().clone();
        let key = self.key(format_args!("concurrent_per_client:{ip}"));
        let member = format!(
            "{}:{}",
            self.gateway,
            self.next_member.fetch_add(1, Ordering::Relaxed)
        );
        let released =
            std::mem::take(&mut *self.released.lock().unwrap_or_else(|p| p.into_inner()));
        let mut invocation = self.connect.prepare_invoke();
        invocation
            .key(&key)
            .arg(max.unwrap_or(0))
            .arg(&member)
            .arg(self.settings.lease.as_micros() as u64)
            .arg(released.len());
        for (k, m) in &released {
            invocation.key(k).arg(m);
        }
        for c in checks {
            invocation
                .key(self.rate_key(c))
                .arg((c.rate.emission_ns() / 1000).max(1))
                .arg(c.rate.burst())
                .arg(c.n)
                .arg(c.member.as_deref().unwrap_or(""))
                .arg(0);
        }
        let got: Result<Vec<redis::Value>, _> = self
            .call(async |mut conn| invocation.invoke_async(&mut conn).await)
            .await;
        let (index, wait_us) = match got.and_then(gcra_reply) {
            Ok((index, wait_us, _)) => (index as i64, wait_us),
            Err(e) => {
                // Given back to the lease task (else they expire with
                // their lease).
                self.released
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(released);
                return Err(e);
            }
        };
        match usize::try_from(index) {
            Err(_) => Ok(None),
            Ok(0) => {
                let lease = max.map(|_| {
                    let _ = tx.send(LeaseEvent::Taken {
                        key: key.clone(),
                        member: member.clone(),
                    });
                    RedisLease {
                        tx,
                        released: self.released.clone(),
                        key,
                        member,
                    }
                });
                Ok(Some((Outcome::Allowed, lease)))
            }
            Ok(index) => Ok(Some((
                Outcome::Denied {
                    index: index - 1,
                    retry_after: Duration::from_micros(wait_us.parse().unwrap_or(u64::MAX / 1000)),
                },
                None,
            ))),
        }
    }

    /// Open connections counted for `ip` across all gateways.
    pub async fn open_connections(&self, ip: IpAddr) -> Result<u64, LimiterError> {
        let key = self.key(format_args!("concurrent_per_client:{ip}"));
        self.call(async |mut conn| {
            let t: (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
            let now = t.0 * 1_000_000 + t.1;
            conn.zcount(&key, now, "+inf").await
        })
        .await
    }

    /// Forgets a key's counters under the given rate-limit checks (and
    /// the cells this gateway holds ahead for them).
    pub async fn reset(&self, checks: &[Check]) -> Result<(), LimiterError> {
        let keys: Vec<String> = checks.iter().map(|c| self.rate_key(c)).collect();
        self.credit.forget(&keys);
        self.call(async |mut conn| conn.del::<_, ()>(&keys).await)
            .await
    }

    /// The cells this gateway holds ahead for a check's key (`reserve`).
    pub fn held(&self, check: &Check) -> u64 {
        self.credit.cells(&self.rate_key(check))
    }

    /// The stored TAT (µs, Redis clock) and Redis's now, for `limits show`.
    pub async fn tat(&self, check: &Check) -> Result<(Option<u64>, u64), LimiterError> {
        let key = self.rate_key(check);
        self.call(async |mut conn| {
            let t: (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
            let tat: Option<String> = conn.get(&key).await?;
            Ok((tat.and_then(|v| v.parse().ok()), t.0 * 1_000_000 + t.1))
        })
        .await
    }

    /// The task that renews this gateway's connection leases and removes
    /// the ones given back; started with the first lease.
    fn lease_manager(&self) -> &mpsc::UnboundedSender<LeaseEvent> {
        self.leases.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let target = self.target.clone();
            let renew = self.renew.clone();
            let settings = self.settings.clone();
            let released = self.released.clone();
            tokio::spawn(manage_leases(target, renew, settings, released, rx));
            tx
        })
    }
}

async fn manage_leases(
    target: Arc<Target>,
    renew: Script,
    settings: RedisSettings,
    released: Arc<Mutex<Vec<(String, String)>>>,
    mut rx: mpsc::UnboundedReceiver<LeaseEvent>,
) {
    let mut live: HashMap<String, String> = HashMap::new();
    let mut conn: Option<ConnectionManager> = None;
    let mut tick = tokio::time::interval(settings.lease / 3);
    let lease_us = settings.lease.as_micros() as u64;
    // When the places given back are removed, unless a connection's call
    // has taken them by then.
    let mut flush_at: Option<tokio::time::Instant> = None;
    loop {
        let flush = async {
            match flush_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = rx.recv() => match event {
                None => return,
                Some(LeaseEvent::Taken { key, member }) => { live.insert(member, key); }
                Some(LeaseEvent::Released { member }) => {
                    live.remove(&member);
                    flush_at.get_or_insert_with(|| tokio::time::Instant::now() + RELEASE_DELAY);
                }
            },
            _ = flush => {
                flush_at = None;
                let gone = std::mem::take(&mut *released.lock().unwrap_or_else(|p| p.into_inner()));
                if gone.is_empty() { continue; }
                if let Ok(mut c) = target.kept(&mut conn, &settings).await {
                    let mut pipe = redis::pipe();
                    for (key, member) in &gone {
                        pipe.zrem(key, member).ignore();
                    }
                    let r = tokio::time::timeout(settings.timeout, pipe.query_async::<()>(&mut c)).await;
                    if !matches!(r, Ok(Ok(()))) {
                        // They expire by themselves after the lease.
                        tracing::debug!("could not release {} connections in redis", gone.len());
                        conn = None;
                    }
                }
            },
            _ = tick.tick() => {
                if live.is_empty() { continue; }
                if let Ok(mut c) = target.kept(&mut conn, &settings).await {
                    let mut inv = renew.prepare_invoke();
                    inv.arg(lease_us);
                    for (member, key) in &live {
                        inv.key(key);
                        inv.arg(member);
                    }
                    let r = tokio::time::timeout(settings.timeout, inv.invoke_async::<i64>(&mut c)).await;
                    if !matches!(r, Ok(Ok(_))) {
                        tracing::debug!("could not renew connection leases in redis");
                        conn = None;
                    }
                }
            }
        }
    }
}
