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
        self.crossed_at(Instant::now(), checks, fill, level)
    }

    /// The (limit, key) pairs past their warning level in the current
    /// window, each with the time left in its window.
    pub fn current(&self) -> Vec<(LimitId, String, Duration)> {
        let now = Instant::now();
        let mut out: Vec<_> = self
            .warned
            .iter()
            .filter(|(_, until)| *until > now)
            .map(|(k, until)| (k.0, k.1.clone(), until - now))
            .collect();
        out.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        out
    }

    /// [`Self::crossed`] at the time `now`.
    fn crossed_at<'a>(
        &self,
        now: Instant,
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
            // The cache forgets a window once it is over; the time is
            // compared as well, so that the window is `now`'s.
            if self.warned.get(&key).is_some_and(|until| until > now) {
                continue;
            }
            self.warned.insert(key, now + c.rate.period);
            out.push((c, f));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::{LimitName, Rate};

    fn check(name: LimitId, key: &str, period_s: u64) -> Check {
        Check {
            name,
            key: key.into(),
            rate: Rate {
                count: 100,
                period: Duration::from_secs(period_s),
            },
            n: 1,
            member: None,
        }
    }

    #[test]
    fn once_per_key_and_window() {
        let w = Warnings::new(1000);
        let t0 = Instant::now();
        let sender = LimitId::from(LimitName::MessagesPerSender);
        let tenant = LimitId::Custom("tenant_bytes");
        let checks = [
            check(sender, "a@x.example", 3600),
            check(sender, "b@x.example", 3600),
            check(tenant, "x.example", 60),
        ];
        let at = |c: &Check| {
            if c.name == tenant {
                Some(500)
            } else {
                Some(800)
            }
        };
        let names = |v: Vec<(&Check, u16)>| -> Vec<String> {
            v.into_iter()
                .map(|(c, f)| format!("{}={f}", c.key))
                .collect()
        };
        // Below the level: nothing; at or past it: once.
        assert!(w.crossed_at(t0, &checks, &[799, 0, 499], at).is_empty());
        assert_eq!(
            names(w.crossed_at(t0, &checks, &[800, 0, 500], at)),
            ["a@x.example=800", "x.example=500"]
        );
        let later = t0 + Duration::from_secs(59);
        assert_eq!(
            names(w.crossed_at(later, &checks, &[900, 950, 600], at)),
            ["b@x.example=950"]
        );
        // Each key's window is its limit's period: the tenant's minute is
        // over, the senders' hour is not.
        let next_minute = t0 + Duration::from_secs(61);
        assert_eq!(
            names(w.crossed_at(next_minute, &checks, &[1000, 1000, 700], at)),
            ["x.example=700"]
        );
        let next_hour = t0 + Duration::from_secs(3601);
        assert_eq!(
            names(w.crossed_at(next_hour, &checks, &[850, 0, 0], at)),
            ["a@x.example=850"]
        );
        // No level for a limit: never warned.
        assert!(w
            .crossed_at(
                next_hour + Duration::from_secs(7200),
                &checks,
                &[1000; 3],
                |_| None
            )
            .is_empty());
    }
}
