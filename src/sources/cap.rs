//! `verify_callouts.rate`: one budget for every callout of this gateway
//! (GCRA, governor's: `60/m` is a burst of 60, then one a second). A
//! reload that changes the rate starts it afresh; one that keeps it keeps
//! what was spent.

use crate::rate::Rate;
use governor::{DefaultDirectRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::Mutex;

#[derive(Default)]
pub struct CalloutCap {
    limiter: Mutex<Option<(Rate, DefaultDirectRateLimiter)>>,
}

impl CalloutCap {
    pub fn new(rate: Option<Rate>) -> Self {
        let cap = CalloutCap::default();
        cap.set(rate);
        cap
    }

    /// Takes the configured rate (None: unlimited).
    pub fn set(&self, rate: Option<Rate>) {
        let mut slot = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().map(|(r, _)| *r) == rate {
            return;
        }
        *slot = rate.and_then(|r| {
            let burst = NonZeroU32::new(u32::try_from(r.count).unwrap_or(u32::MAX))?;
            let quota = Quota::with_period(r.period / burst.get())?.allow_burst(burst);
            Some((r, DefaultDirectRateLimiter::direct(quota)))
        });
    }

    /// Whether one more callout may be made now (and counts it).
    pub fn take(&self) -> bool {
        let slot = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().is_none_or(|(_, l)| l.check().is_ok())
    }

    /// The cap, in callouts per minute (None: unlimited).
    pub fn per_minute(&self) -> Option<f64> {
        let slot = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .map(|(r, _)| r.count as f64 * 60.0 / r.period.as_secs_f64().max(f64::MIN_POSITIVE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_none() {
        let cap = CalloutCap::new(Some(Rate {
            count: 3,
            period: Duration::from_secs(3600),
        }));
        assert!((0..3).all(|_| cap.take()));
        assert!(!cap.take());
        assert_eq!(cap.per_minute(), Some(0.05));
        // The same rate again keeps what was spent; unlimited lifts it.
        cap.set(Some(Rate {
            count: 3,
            period: Duration::from_secs(3600),
        }));
        assert!(!cap.take());
        cap.set(None);
        assert!(cap.take());
        assert_eq!(cap.per_minute(), None);
    }
}
