//! Counts over a sliding window, in bounded memory: a ring of
//! [`SLICES`] slices of a tenth of the window each. A count is the sum (or,
//! for distinct values, the union) of every slice that overlaps the window
//! ending now, the oldest one whole: so `above: N/period` holds for every
//! window of that length (a burst is never split across two halves that
//! each stay under it), and an event is counted for at most a period and a
//! tenth. Times are milliseconds since the epoch, passed in, so tests drive
//! the clock.

use cardinality_estimator::CardinalityEstimator;
use std::collections::VecDeque;

/// Slices per window: the count may include events up to a tenth of the
/// window older than the window (never fewer than it holds).
pub const SLICES: u64 = 10;

/// A slice's length for a window's.
pub fn slice_len(len: u64) -> u64 {
    len.max(1).div_ceil(SLICES).max(1)
}

/// The start of the slice `now` falls in.
fn slice_start(now: u64, len: u64) -> u64 {
    let sub = slice_len(len);
    now - now % sub
}

/// The starts of the slices that overlap the window ending at `now`, newest
/// first (at most `SLICES + 1`).
pub fn slice_starts(now: u64, len: u64) -> Vec<u64> {
    let sub = slice_len(len);
    let newest = slice_start(now, len);
    (0..=SLICES)
        .filter_map(|i| newest.checked_sub(i * sub))
        .filter(|start| start + sub > now.saturating_sub(len))
        .collect()
}

/// Slices older than the window are dropped.
fn prune<T>(ring: &mut VecDeque<(u64, T)>, now: u64, len: u64) {
    let sub = slice_len(len);
    let from = now.saturating_sub(len);
    while ring.front().is_some_and(|(start, _)| start + sub <= from) {
        ring.pop_front();
    }
}

/// The slice for `now`, made when it is new.
fn slice<T: Default>(ring: &mut VecDeque<(u64, T)>, now: u64, len: u64) -> &mut T {
    let start = slice_start(now, len);
    if ring.back().is_none_or(|(s, _)| *s != start) {
        ring.push_back((start, T::default()));
    }
    prune(ring, now, len);
    &mut ring.back_mut().expect("pushed above").1
}

/// A sum over the window.
#[derive(Clone, Debug, Default)]
pub struct Sum {
    slices: VecDeque<(u64, u64)>,
}

impl Sum {
    pub fn add(&mut self, now: u64, len: u64, n: u64) {
        let c = slice(&mut self.slices, now, len);
        *c = c.saturating_add(n);
    }

    pub fn estimate(&mut self, now: u64, len: u64) -> f64 {
        prune(&mut self.slices, now, len);
        self.slices
            .iter()
            .fold(0u64, |a, (_, n)| a.saturating_add(*n)) as f64
    }
}

/// Memory per sketch: at most 2^12 HyperLogLog registers
/// of 6 bits (about 3 KB), about 1.6% error; small sets are held exactly in
/// a few bytes.
type Sketch = CardinalityEstimator<str, wyhash::WyHash, 12, 6>;

/// A count of distinct values over the window.
#[derive(Clone, Debug, Default)]
pub struct Distinct {
    slices: VecDeque<(u64, Sketch)>,
}

impl Distinct {
    pub fn add(&mut self, now: u64, len: u64, value: &str) {
        slice(&mut self.slices, now, len).insert(value);
    }

    /// The values of every slice that overlaps the window, each once.
    pub fn estimate(&mut self, now: u64, len: u64) -> f64 {
        prune(&mut self.slices, now, len);
        let mut slices = self.slices.iter().map(|(_, s)| s);
        let Some(first) = slices.next() else {
            return 0.0;
        };
        let mut union = first.clone();
        for s in slices {
            union.merge(s);
        }
        union.estimate() as f64
    }

    /// Heap bytes held.
    #[cfg(test)]
    pub fn size_of(&self) -> usize {
        self.slices.iter().map(|(_, s)| s.size_of()).sum()
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
        assert_eq!(s.estimate(t0 + H - 1, H), 60.0);
        // Half an hour on: the 30 of the last half hour, and those of the
        // slice the window's start falls in (up to six minutes more).
        let half = s.estimate(t0 + H + H / 2, H);
        assert!((30.0..=36.0).contains(&half), "{half}");
        // Two windows later: nothing.
        assert_eq!(s.estimate(t0 + 3 * H, H), 0.0);
    }

    /// A burst split at any point, the two halves each under the threshold,
    /// is counted whole within any window that holds both: the estimate
    /// never falls below what a window of the period really holds.
    #[test]
    fn a_burst_at_every_slice_edge_is_counted_whole() {
        let t0 = 100 * H;
        let sub = slice_len(H);
        for edge in 0..=SLICES {
            for offset in [0, 1, sub / 2, sub - 1] {
                let mut s = Sum::default();
                let first = t0 + edge * sub + offset;
                s.add(first, H, 49);
                // The second half just inside the window that opens at the
                // first, and at every point between.
                for later in [first + 1, first + H / 2, first + H - 1] {
                    let mut s = s.clone();
                    s.add(later, H, 49);
                    assert_eq!(
                        s.estimate(later, H),
                        98.0,
                        "edge {edge}, offset {offset}, {} ms later",
                        later - first
                    );
                }
                // Past a period and a slice, the first half is gone.
                assert_eq!(s.estimate(first + H + sub, H), 0.0);
            }
        }
    }

    #[test]
    fn distinct_values_are_counted_once() {
        let mut d = Distinct::default();
        let t0 = 100 * H;
        for i in 0..500 {
            d.add(t0 + i, H, &format!("user{}@example.net", i % 20));
        }
        assert_eq!(d.estimate(t0 + 1000, H), 20.0);
        // The same 20 later in the window count 20, not 40.
        for i in 0..20 {
            d.add(t0 + H / 2, H, &format!("user{i}@example.net"));
        }
        assert_eq!(d.estimate(t0 + H / 2 + 20, H).round(), 20.0);
        // A distinct burst split across slices: counted whole.
        let mut d = Distinct::default();
        for i in 0..30 {
            d.add(t0 + H - 1, H, &format!("a{i}@x.example"));
            d.add(t0 + 2 * H - 2, H, &format!("b{i}@x.example"));
        }
        assert_eq!(d.estimate(t0 + 2 * H - 2, H), 60.0);
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
