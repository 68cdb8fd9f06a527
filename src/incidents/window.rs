//! Counts over a sliding window, in bounded memory: two fixed buckets of
//! the window's length, the current one and the one before, the older
//! weighted by how much of it the sliding window still covers (the
//! estimate rspamd's and Cloudflare's rate limiters use). Times are
//! milliseconds since the epoch, passed in, so tests drive the clock.

use cardinality_estimator::CardinalityEstimator;

/// A sum over the window.
#[derive(Clone, Debug, Default)]
pub struct Sum {
    start: u64,
    current: u64,
    previous: u64,
}

/// Where `now` falls: the start of its bucket, and the weight of the
/// bucket before.
fn bucket(now: u64, len: u64) -> (u64, f64) {
    let len = len.max(1);
    let start = now - now % len;
    let weight = 1.0 - (now - start) as f64 / len as f64;
    (start, weight)
}

impl Sum {
    fn roll(&mut self, now: u64, len: u64) {
        let (start, _) = bucket(now, len);
        if start == self.start {
            return;
        }
        self.previous = if start == self.start + len {
            self.current
        } else {
            0
        };
        self.current = 0;
        self.start = start;
    }

    pub fn add(&mut self, now: u64, len: u64, n: u64) {
        self.roll(now, len);
        self.current = self.current.saturating_add(n);
    }

    pub fn estimate(&mut self, now: u64, len: u64) -> f64 {
        self.roll(now, len);
        let (_, weight) = bucket(now, len);
        self.current as f64 + self.previous as f64 * weight
    }
}

/// Memory per sketch: at most 2^12 HyperLogLog registers
/// of 6 bits (about 3 KB), about 1.6% error; small sets are held exactly in
/// a few bytes.
type Sketch = CardinalityEstimator<str, wyhash::WyHash, 12, 6>;

/// A count of distinct values over the window.
#[derive(Clone, Debug, Default)]
pub struct Distinct {
    start: u64,
    current: Sketch,
    previous: Sketch,
}

impl Distinct {
    fn roll(&mut self, now: u64, len: u64) {
        let (start, _) = bucket(now, len);
        if start == self.start {
            return;
        }
        self.previous = if start == self.start + len {
            std::mem::take(&mut self.current)
        } else {
            Sketch::new()
        };
        self.current = Sketch::new();
        self.start = start;
    }

    pub fn add(&mut self, now: u64, len: u64, value: &str) {
        self.roll(now, len);
        self.current.insert(value);
    }

    /// The values of this bucket, and those of the bucket before that this
    /// one has not seen, weighted.
    pub fn estimate(&mut self, now: u64, len: u64) -> f64 {
        self.roll(now, len);
        let (_, weight) = bucket(now, len);
        let current = self.current.estimate() as f64;
        if weight <= 0.0 || self.previous.estimate() == 0 {
            return current;
        }
        let mut union = self.previous.clone();
        union.merge(&self.current);
        let older_only = (union.estimate() as f64 - current).max(0.0);
        current + older_only * weight
    }

    /// Heap bytes held.
    #[cfg(test)]
    pub fn size_of(&self) -> usize {
        self.current.size_of() + self.previous.size_of()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    #[test]
    fn a_sum_slides() {
        let mut s = Sum::default();
        let t0 = 100 * H;
        for i in 0..60 {
            s.add(t0 + i * 60_000, H, 1);
        }
        assert_eq!(s.estimate(t0 + H - 1, H).round(), 60.0);
        // Half an hour into the next bucket: half of the older one counts.
        assert!((s.estimate(t0 + H + H / 2, H) - 30.0).abs() < 0.01);
        // Two windows later: nothing.
        assert_eq!(s.estimate(t0 + 3 * H, H), 0.0);
    }

    #[test]
    fn distinct_values_are_counted_once() {
        let mut d = Distinct::default();
        let t0 = 100 * H;
        for i in 0..500 {
            d.add(t0 + i, H, &format!("user{}@example.net", i % 20));
        }
        assert_eq!(d.estimate(t0 + 1000, H), 20.0);
        // The same 20 an hour later count 20, not 40.
        for i in 0..20 {
            d.add(t0 + H + 10, H, &format!("user{i}@example.net"));
        }
        assert_eq!(d.estimate(t0 + H + 20, H).round(), 20.0);
        // 10,000 different ones: within 5%.
        let mut d = Distinct::default();
        for i in 0..10_000 {
            d.add(t0, H, &format!("r{i}@spray.example"));
        }
        let e = d.estimate(t0 + 1, H);
        assert!((e - 10_000.0).abs() < 500.0, "{e}");
        assert!(d.size_of() < 8192, "{}", d.size_of());
    }
}
