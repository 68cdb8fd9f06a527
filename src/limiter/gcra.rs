//! The Generic Cell Rate Algorithm, as governor computes it, on a stored
//! theoretical arrival time (TAT). Written out here so that a check can be
//! evaluated without being committed (several limits judge one message, and
//! a refused attempt must consume none of them) and so that the local and the
//! Redis backend (whose Lua script does the same arithmetic) agree. The
//! tests compare it with governor's own limiter, step by step.

use crate::rate::Rate;

/// The result of one GCRA step at time `now` (nanoseconds).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Step {
    /// Allowed; store this new TAT.
    Allow { tat: u64 },
    /// Refused; the earliest time (ns from now) at which it would pass.
    Deny { wait_ns: u64 },
}

/// One GCRA step for `n` cells against the stored TAT (None: never seen,
/// i.e. a full bucket).
pub fn step(rate: &Rate, tat: Option<u64>, now: u64, n: u64) -> Step {
    let t = rate.emission_ns();
    // tau + T: the whole bucket, `burst` cells.
    let capacity = t.saturating_mul(rate.burst());
    let cost = t.saturating_mul(n);
    if cost > capacity {
        // More cells than the bucket holds can never pass.
        return Step::Deny { wait_ns: u64::MAX };
    }
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(cost);
    let allow_at = new_tat.saturating_sub(capacity);
    if allow_at > now {
        Step::Deny {
            wait_ns: allow_at - now,
        }
    } else {
        Step::Allow { tat: new_tat }
    }
}

/// What a stored TAT means at `now`: cells left, and nanoseconds until the
/// bucket is full again.
pub fn remaining(rate: &Rate, tat: Option<u64>, now: u64) -> (u64, u64) {
    let t = rate.emission_ns();
    let capacity = t.saturating_mul(rate.burst());
    let used = tat.map_or(0, |tat| tat.saturating_sub(now)).min(capacity);
    ((capacity - used) / t, used)
}

/// How full a bucket is with this TAT at `now`, in thousandths of its
/// burst, rounded to the nearest (1000: nothing left). Rounded, not cut:
/// the microseconds between two messages must not hide the 4th cell of 5
/// from an 80% warning.
pub fn fill(rate: &Rate, tat: u64, now: u64) -> u16 {
    let capacity = u128::from(rate.emission_ns().saturating_mul(rate.burst()).max(1));
    let used = u128::from(tat.saturating_sub(now)).min(capacity);
    u16::try_from((used * 1000 + capacity / 2) / capacity).unwrap_or(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::{
        clock::{Clock, FakeRelativeClock, Reference},
        Quota, RateLimiter,
    };
    use std::{num::NonZeroU32, time::Duration};

    fn rate(count: u64, secs: u64) -> Rate {
        Rate {
            count,
            period: Duration::from_secs(secs),
        }
    }

    #[test]
    fn burst_then_one_per_interval() {
        let r = rate(100, 3600);
        let mut tat = None;
        let mut now = 0;
        for _ in 0..100 {
            match step(&r, tat, now, 1) {
                Step::Allow { tat: t } => tat = Some(t),
                Step::Deny { .. } => panic!("burst refused"),
            }
        }
        assert_eq!(
            step(&r, tat, now, 1),
            Step::Deny {
                wait_ns: 36_000_000_000
            }
        );
        now += 36_000_000_000;
        assert!(matches!(step(&r, tat, now, 1), Step::Allow { .. }));
        assert_eq!(remaining(&r, tat, now), (1, 3_564_000_000_000));
        assert_eq!(step(&r, None, 0, 101), Step::Deny { wait_ns: u64::MAX });
    }

    /// Against governor's keyed limiter with its fake clock: the same
    /// decisions and the same waits over a deterministic pseudo-random
    /// sequence of arrivals and rates.
    #[test]
    fn agrees_with_governor() {
        let mut seed: u64 = 42;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        for _ in 0..50 {
            let r = rate(next(20) + 1, next(120) + 1);
            let quota = Quota::with_period(r.period / r.count as u32)
                .unwrap()
                .allow_burst(NonZeroU32::new(r.count as u32).unwrap());
            let clock = FakeRelativeClock::default();
            let gov = RateLimiter::direct_with_clock(quota, clock.clone());
            let start = clock.now();
            let mut tat = None;
            for _ in 0..200 {
                clock.advance(Duration::from_millis(next(10_000)));
                let now = clock.now().duration_since(start).as_u64();
                let ours = step(&r, tat, now, 1);
                let theirs = gov.check();
                match (ours, theirs) {
                    (Step::Allow { tat: t }, Ok(())) => tat = Some(t),
                    (Step::Deny { wait_ns }, Err(not_until)) => {
                        let gov_wait = not_until.wait_time_from(clock.now()).as_nanos() as u64;
                        assert_eq!(wait_ns, gov_wait, "{r:?}");
                    }
                    (o, t) => panic!("{r:?} at {now}: ours {o:?}, governor {t:?}"),
                }
            }
        }
    }
}
