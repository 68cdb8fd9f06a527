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
//! place given back is kept a while for the client's next connection
//! (`places.rs`).

use super::places::Places;
use super::target::Target;
use super::{Check, LimiterError, Outcome};
use crate::config::RedisSettings;
use redis::{aio::ConnectionManager, AsyncCommands, Script};
use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};
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

/// A refusal of `gcra.lua` or `connect.lua`: the 1-based index of the
/// check that must wait longest, and the wait in µs.
fn denied(index: usize, wait_us: &str) -> Outcome {
    Outcome::Denied {
        index: index.saturating_sub(1),
        retry_after: Duration::from_micros(wait_us.parse().unwrap_or(u64::MAX / 1000)),
    }
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
    /// This gateway's places under `concurrent_per_client`.
    places: Arc<Places>,
    /// The places' task, started with the first connection, stopped with
    /// the limiter.
    places_task: OnceLock<tokio::task::AbortHandle>,
    down_until: Mutex<Option<Instant>>,
    healthy: AtomicBool,
    /// Calls that failed (timeout, refused, error reply).
    pub failures: AtomicU64,
    /// Cells taken ahead (`reserve`), spent here.
    credit: super::credit::Credit,
}

/// An open connection counted in Redis; dropping it gives the place back
/// (kept a while for the client's next connection).
pub struct RedisLease {
    places: Arc<Places>,
    key: String,
    member: String,
    cap: u32,
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        self.places.keep(
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.member),
            self.cap,
        );
    }
}

impl Drop for RedisLimiter {
    fn drop(&mut self) {
        if let Some(task) = self.places_task.get() {
            task.abort();
        }
    }
}

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
            places: Arc::new(Places::new(gateway)),
            places_task: OnceLock::new(),
            down_until: Mutex::new(None),
            healthy: AtomicBool::new(true),
            failures: AtomicU64::new(0),
            credit: super::credit::Credit::default(),
        })
    }

    /// This gateway's name in Redis: host, process and a random part.
    pub fn gateway(&self) -> &str {
        self.places.gateway()
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

    /// The cells held ahead for each check that has enough of them (taken
    /// now), with the fill last read; None for the others.
    fn take_held(&self, checks: &[Check], keys: &[String]) -> Vec<Option<u16>> {
        checks
            .iter()
            .zip(keys)
            .map(|(c, k)| match c.member {
                None => self.credit.take(k, c.n),
                Some(_) => None,
            })
            .collect()
    }

    /// Gives back the cells taken by [`take_held`](Self::take_held) for a
    /// batch refused or not judged.
    fn refund(&self, checks: &[Check], keys: &[String], held: &[Option<u16>]) {
        for ((c, k), h) in checks.iter().zip(keys).zip(held) {
            if h.is_some() {
                self.credit.refund(k, c.n);
            }
        }
    }

    /// The rate checks' keys and arguments, as `gcra_fn.lua` takes them: a
    /// check paid from cells held is judged at no cost, the others ask for
    /// cells ahead.
    fn push_rates(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        checks: &[Check],
        keys: &[String],
        held: &[Option<u16>],
    ) {
        for ((c, key), h) in checks.iter().zip(keys).zip(held) {
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
    }

    /// An allowed batch's fills (the held fill for a check paid here), and
    /// the cells Redis granted ahead kept.
    fn settle(
        &self,
        keys: Vec<String>,
        held: &[Option<u16>],
        figures: &str,
        granted: &str,
    ) -> Vec<u16> {
        let fill: Vec<u16> = figures
            .split(',')
            .zip(held)
            .map(|(f, h)| h.unwrap_or_else(|| f.parse::<u16>().unwrap_or(0).min(1000)))
            .collect();
        for ((key, cells), f) in keys.into_iter().zip(granted.split(',')).zip(&fill) {
            self.credit.keep(key, cells.parse().unwrap_or(0), *f);
        }
        fill
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
        let held = self.take_held(checks, &keys);
        if held.iter().all(Option::is_some) {
            return Ok((Outcome::Allowed, held.into_iter().flatten().collect()));
        }
        let mut invocation = self.gcra.prepare_invoke();
        self.push_rates(&mut invocation, checks, &keys, &held);
        let got = self
            .call(async |mut conn| invocation.invoke_async(&mut conn).await)
            .await
            .and_then(gcra_reply);
        match got {
            Ok((0, figures, granted)) => {
                let fill = self.settle(keys, &held, &figures, &granted);
                Ok((Outcome::Allowed, fill))
            }
            Ok((index, wait, _)) => {
                self.refund(checks, &keys, &held);
                Ok((denied(index, &wait), Vec::new()))
            }
            Err(e) => {
                self.refund(checks, &keys, &held);
                Err(e)
            }
        }
    }

    /// A new connection from `ip`: a place among at most `max` open
    /// connections (when capped), then the connection rate `checks`, all
    /// or nothing. A place this gateway kept from the client's last
    /// connection and cells held ahead for the rates decide it without
    /// Redis; else one call of `connect.lua`, which also removes the places
    /// given back since the last call. `None`: the cap is reached; else
    /// the rates' outcome, and the place when capped and allowed.
    pub async fn connect(
        &self,
        ip: IpAddr,
        max: Option<u32>,
        checks: &[Check],
    ) -> Result<Option<(Outcome, Option<RedisLease>)>, LimiterError> {
        self.places_task.get_or_init(|| {
            tokio::spawn(super::places::manage(
                self.places.clone(),
                self.target.clone(),
                self.renew.clone(),
                self.settings.clone(),
            ))
            .abort_handle()
        });
        let key = self.key(format_args!("concurrent_per_client:{ip}"));
        let keys: Vec<String> = checks.iter().map(|c| self.rate_key(c)).collect();
        let kept = max.and_then(|cap| self.places.reuse(&key, cap));
        let held = self.take_held(checks, &keys);
        let lease = |key: String, member: String| {
            max.map(|cap| RedisLease {
                places: self.places.clone(),
                key,
                member,
                cap,
            })
        };
        if (max.is_none() || kept.is_some()) && held.iter().all(Option::is_some) {
            let member = kept.unwrap_or_default();
            return Ok(Some((Outcome::Allowed, lease(key, member))));
        }
        // A place kept is already counted: Redis judges the rates alone.
        let cap = if kept.is_some() { 0 } else { max.unwrap_or(0) };
        let member = kept.clone().unwrap_or_else(|| self.places.new_member());
        let gone = self.places.take_gone();
        let mut invocation = self.connect.prepare_invoke();
        invocation
            .key(&key)
            .arg(cap)
            .arg(&member)
            .arg(self.settings.lease.as_micros() as u64)
            .arg(gone.len());
        for (k, m) in &gone {
            invocation.key(k).arg(m);
        }
        self.push_rates(&mut invocation, checks, &keys, &held);
        let got = self
            .call(async |mut conn| invocation.invoke_async(&mut conn).await)
            .await
            .and_then(gcra_reply);
        let give_back = |member: String| {
            if let (Some(cap), Some(_)) = (max, &kept) {
                self.places.keep(key.clone(), member, cap);
            }
        };
        match got {
            Ok((0, figures, granted)) => {
                self.settle(keys, &held, &figures, &granted);
                if kept.is_none() && max.is_some() {
                    self.places.taken(&key, &member);
                }
                Ok(Some((Outcome::Allowed, lease(key, member))))
            }
            Ok((usize::MAX, _, _)) => {
                self.refund(checks, &keys, &held);
                Ok(None)
            }
            Ok((index, wait, _)) => {
                self.refund(checks, &keys, &held);
                give_back(member);
                Ok(Some((denied(index, &wait), None)))
            }
            Err(e) => {
                self.refund(checks, &keys, &held);
                give_back(member);
                self.places.return_gone(gone);
                Err(e)
            }
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
}
