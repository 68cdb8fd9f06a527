//! A key's usual volume, learnt as it runs: an exponentially weighted mean
//! of its count per period (the window of the signal), so that a jump to
//! ten times the usual stands out while slow growth moves the mean along.

/// Weight of the newest period in the mean: about a day of hourly periods
/// carries most of it.
const ALPHA: f64 = 2.0 / 25.0;

#[derive(Clone, Debug)]
pub struct Baseline {
    /// When the key was first seen, in milliseconds since the epoch.
    first_seen: u64,
    /// The index of the current period.
    period: u64,
    /// The count so far in the current period.
    count: f64,
    /// The mean count per period, over the periods before the current one.
    mean: f64,
}

impl Baseline {
    pub fn new(now: u64, len: u64) -> Self {
        Self {
            first_seen: now,
            period: now / len.max(1),
            count: 0.0,
            mean: 0.0,
        }
    }

    fn roll(&mut self, now: u64, len: u64) {
        let period = now / len.max(1);
        if period <= self.period {
            return;
        }
        self.mean = ALPHA * self.count + (1.0 - ALPHA) * self.mean;
        // Periods with nothing at all since.
        let empty = (period - self.period - 1).min(10_000) as i32;
        self.mean *= (1.0 - ALPHA).powi(empty);
        self.count = 0.0;
        self.period = period;
    }

    pub fn add(&mut self, now: u64, len: u64, n: f64) {
        self.roll(now, len);
        self.count += n;
    }

    /// The usual count per period, once the key has been seen for `learn`
    /// milliseconds; None while it is still being learnt.
    pub fn usual(&mut self, now: u64, len: u64, learn: u64) -> Option<f64> {
        self.roll(now, len);
        (now.saturating_sub(self.first_seen) >= learn).then_some(self.mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    /// Drives a key hour by hour, `per_hour(h)` messages in hour h spread
    /// over it; returns the first hour whose count went above 10x the
    /// usual (and above `min`), judged as each message arrives.
    fn first_alarm(hours: u64, per_hour: impl Fn(u64) -> u64, min: f64) -> Option<u64> {
        let t0 = 1_000 * H;
        let mut b = Baseline::new(t0, H);
        let mut window = super::super::window::Sum::default();
        for h in 0..hours {
            let n = per_hour(h);
            for i in 0..n {
                let now = t0 + h * H + i * (H / n.max(1));
                b.add(now, H, 1.0);
                window.add(now, H, 1);
                let current = window.estimate(now, H);
                if let Some(usual) = b.usual(now, H, 24 * H) {
                    if current > min && current > 10.0 * usual {
                        return Some(h);
                    }
                }
            }
        }
        None
    }

    #[test]
    fn learns_then_flags_a_tenfold_jump() {
        // 20 an hour for two days, then 400 an hour from hour 48.
        let hour = first_alarm(60, |h| if h < 48 { 20 } else { 400 }, 50.0);
        assert_eq!(hour, Some(48));
    }

    #[test]
    fn slow_growth_is_not_flagged() {
        // 20 an hour growing 5% an hour for three days: 20 -> ~660.
        let hour = first_alarm(72, |h| (20.0 * 1.05f64.powi(h as i32)) as u64, 50.0);
        assert_eq!(hour, None);
    }

    #[test]
    fn nothing_is_judged_while_learning_and_the_floor_holds() {
        // A new key sending 400 an hour from the start: not judged in its
        // first day (the fixed thresholds are for that).
        assert_eq!(first_alarm(20, |_| 400, 50.0), None);
        // A key that usually sends 1 an hour sending 30: ten times, but
        // under the floor of 50.
        assert_eq!(first_alarm(60, |h| if h < 48 { 1 } else { 30 }, 50.0), None);
    }
}
