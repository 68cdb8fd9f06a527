//! `warn_at`: a key whose budget is used past the warning level is logged
//! and counted once per window (the limit's period), before any refusal.

use super::{Check, LimitId};
use moka::sync::Cache;
use std::time::{Duration, Instant};

/// The (limit, key) pairs warned about, each until its window ends.
pub struct Warnings {
    warned: Cache<(LimitId, String), Instant>,
}

struct UntilValue;

impl moka::Expiry<(LimitId, String), Instant> for UntilValue {
    fn expire_after_create(
        &self,
        _: &(LimitId, String),
        until: &Instant,
        now: Instant,
    ) -> Option<Duration> {
        Some(until.saturating_duration_since(now))
    }
}

impl Warnings {
    pub fn new(max_keys: usize) -> Self {
        Self {
            warned: Cache::builder()
                .max_capacity(max_keys as u64)
                .expire_after(UntilValue)
                .build(),
        }
    }

    /// The checks whose bucket is at least `level(check)` thousandths full
    /// and not yet warned about in this window; each is remembered until
    /// its window ends.
    pub fn crossed<'a>(
        &self,
        checks: &'a [Check],
        fill: &[u16],
        level: impl Fn(&Check) -> Option<u16>,
    ) -> Vec<(&'a Check, u16)> {
        let mut out = Vec::new();
        for (c, &f) in checks.iter().zip(fill) {
            let Some(at) = level(c) else { continue };
            if f < at {
                continue;
            }
            let key = (c.name, c.key.clone());
            if self.warned.contains_key(&key) {
                continue;
            }
            self.warned.insert(key, Instant::now() + c.rate.period);
            out.push((c, f));
        }
        out
    }
}
