//! Rate and connection limits. A stage asks for a batch of checks (all the
//! limits that apply to one message or one recipient); the batch is judged
//! all or nothing, so an attempt that one limit refuses consumes the budget
//! of none. Backends: `local` (in process) and `redis` (shared by gateways).

pub mod credit;
pub mod gcra;
pub mod lease;
pub mod local;
mod places;
pub mod redis;
pub mod store;
mod target;
pub mod warnings;

pub use crate::rate::{intern, parse_limit, Limit, LimitId, LimitName, Rate};
pub use local::{Lease, LocalLimiter};
pub use redis::RedisLimiter;

use crate::config::{Backend, OnFailure, RateLimits};

use std::{net::IpAddr, sync::Arc, time::Duration};

/// One rate check: `n` cells of `rate` for `key` under limit `name`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Check {
    pub name: LimitId,
    pub key: String,
    pub rate: Rate,
    pub n: u64,
    /// Counted once per window for each member (`distinct_recipients`:
    /// the recipient): a member seen in the window costs nothing.
    pub member: Option<String>,
}

/// The decision on a batch of checks.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Outcome {
    /// Every check passed; each consumed its cells.
    Allowed,
    /// At least one check failed; none consumed anything. `index` is the
    /// check that must wait longest, `retry_after` how long.
    Denied { index: usize, retry_after: Duration },
}

/// One limit's state for a key, for `limits show`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Budget {
    pub name: LimitId,
    pub rate: Rate,
    pub remaining: u64,
    pub full_in: Duration,
}

/// A failure of the limiter itself (a backend unreachable).
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// The limiter a daemon uses: the local backend, and Redis when configured
/// (with the local one as its fallback under `on_failure: local`).
pub struct Limiter {
    pub(crate) local: Arc<LocalLimiter>,
    /// `warn_at`: who was warned about, per window.
    pub warnings: warnings::Warnings,
    pub(crate) redis: Option<RedisLimiter>,
    on_failure: OnFailure,
    /// Decisions taken by `on_failure` because Redis failed.
    pub(crate) fallbacks: std::sync::atomic::AtomicU64,
}

/// An open connection counted against `concurrent_per_client`; dropping it
/// closes it.
pub enum ConnectionLease {
    Local(Lease),
    Redis(redis::RedisLease),
    /// Redis failed and `on_failure: accept` let the connection in uncounted.
    Unlimited,
}

impl Limiter {
    pub fn new(config: &RateLimits) -> Self {
        let redis = match config.backend {
            Backend::Local => None,
            Backend::Redis => match RedisLimiter::new(&config.redis) {
                Ok(r) => Some(r),
                Err(e) => {
                    // The URL was validated with the configuration; if the
                    // client still cannot be built, limits stay local.
                    tracing::error!("redis backend unusable, limits are local: {e}");
                    None
                }
            },
        };
        Self {
            local: Arc::new(LocalLimiter::new(config.max_keys)),
            warnings: warnings::Warnings::new(config.max_keys),
            redis,
            on_failure: config.redis.on_failure,
            fallbacks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn fallback(&self) -> OnFailure {
        self.fallbacks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.on_failure
    }

    /// Judges a batch of checks all or nothing.
    pub async fn check(&self, checks: &[Check]) -> Result<Outcome, LimiterError> {
        self.check_fill(checks).await.map(|(o, _)| o)
    }

    /// [`check`](Self::check), with how full each check's bucket is once
    /// allowed, in thousandths of its burst (empty when denied, or when
    /// `on_failure: accept` let the batch through uncounted).
    pub async fn check_fill(&self, checks: &[Check]) -> Result<(Outcome, Vec<u16>), LimiterError> {
        let Some(redis) = &self.redis else {
            return Ok(self.local.check_fill(checks));
        };
        match redis.check(checks).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => match self.fallback() {
                OnFailure::Local => Ok(self.local.check_fill(checks)),
                OnFailure::Accept => Ok((Outcome::Allowed, Vec::new())),
                OnFailure::Tempfail => Err(e),
            },
        }
    }

    /// A new connection from `ip`: a place among at most `max` open
    /// connections (when capped), then the connection rate `checks`, all or
    /// nothing (one round trip with Redis). `None`: the cap is reached;
    /// else the rates' outcome, and the place when capped and allowed.
    pub async fn connect(
        &self,
        ip: IpAddr,
        max: Option<u32>,
        checks: &[Check],
    ) -> Result<Option<(Outcome, Option<ConnectionLease>)>, LimiterError> {
        let ip = crate::address::canonical_ip(ip);
        let local = || {
            let lease = match max {
                Some(max) => match self.local.open_connection(ip, max) {
                    Some(lease) => Some(ConnectionLease::Local(lease)),
                    None => return None,
                },
                None => None,
            };
            let (outcome, _) = self.local.check_fill(checks);
            // A refused connection holds no place.
            let lease = lease.filter(|_| outcome == Outcome::Allowed);
            Some((outcome, lease))
        };
        let Some(redis) = &self.redis else {
            return Ok(local());
        };
        if max.is_none() && checks.is_empty() {
            // Nothing to count: Redis is not asked.
            return Ok(Some((Outcome::Allowed, None)));
        }
        match redis.connect(ip, max, checks).await {
            Ok(got) => Ok(got.map(|(o, lease)| (o, lease.map(ConnectionLease::Redis)))),
            Err(e) => match self.fallback() {
                OnFailure::Local => Ok(local()),
                OnFailure::Accept => Ok(Some((
                    Outcome::Allowed,
                    max.map(|_| ConnectionLease::Unlimited),
                ))),
                OnFailure::Tempfail => Err(e),
            },
        }
    }
}

impl Limiter {
    /// The budget left for `key` under each (limit, rate), from the backend
    /// in use (Redis, or local when Redis is not configured).
    pub async fn show(
        &self,
        limits: &[(LimitId, Rate)],
        key: &str,
    ) -> Result<Vec<Budget>, LimiterError> {
        let Some(redis) = &self.redis else {
            return Ok(self.local.show(limits, key));
        };
        let mut out = Vec::with_capacity(limits.len());
        for (name, rate) in limits {
            let check = Check {
                name: *name,
                key: key.to_string(),
                rate: *rate,
                n: 1,
                member: None,
            };
            let (tat_us, now_us) = redis.tat(&check).await?;
            let (remaining, full_ns) = gcra::remaining(
                rate,
                tat_us.map(|t| t.saturating_mul(1000)),
                now_us.saturating_mul(1000),
            );
            out.push(Budget {
                name: *name,
                rate: *rate,
                // The cells this gateway took ahead are still its to spend.
                remaining: (remaining + redis.held(&check)).min(rate.burst()),
                full_in: Duration::from_nanos(full_ns),
            });
        }
        Ok(out)
    }

    /// Gives `key` a full budget again under each (limit, rate), in the
    /// local counters and in Redis when configured.
    pub async fn reset(&self, limits: &[(LimitId, Rate)], key: &str) -> Result<(), LimiterError> {
        self.local.reset(limits, key);
        if let Some(redis) = &self.redis {
            let checks: Vec<Check> = limits
                .iter()
                .map(|(name, rate)| Check {
                    name: *name,
                    key: key.to_string(),
                    rate: *rate,
                    n: 1,
                    member: None,
                })
                .collect();
            redis.reset(&checks).await?;
        }
        Ok(())
    }

    /// Redis calls that failed or timed out (0 without Redis).
    pub fn redis_failures(&self) -> u64 {
        self.redis
            .as_ref()
            .map_or(0, |r| r.failures.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Open connections counted for `ip` (across gateways with Redis).
    pub async fn open_connections(&self, ip: IpAddr) -> Result<u64, LimiterError> {
        let ip = crate::address::canonical_ip(ip);
        match &self.redis {
            Some(r) => r.open_connections(ip).await,
            None => Ok(u64::from(self.local.open_connections(ip))),
        }
    }
}
