//! Cells taken ahead from Redis (`rate_limits.redis.reserve`): for a key
//! whose bucket stays at most half full, a gateway charges a few cells
//! more than the message needs in the same call, and spends them in
//! process for up to a second. A busy key then costs one round trip per
//! few messages; the cells are charged in Redis before they are spent, so
//! the gateways together never pass a limit, and reach it early by at
//! most the cells one of them holds.

use super::Check;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long cells taken ahead may be spent.
pub const LIFETIME: Duration = Duration::from_secs(1);

/// The most cells taken ahead for one key at a time.
pub const MOST: u64 = 64;

/// The most keys holding cells at once.
const MAX_KEYS: usize = 4096;

struct Held {
    cells: u64,
    until: Instant,
    /// The bucket's fill (thousandths) when they were taken.
    fill: u16,
}

/// The cells this gateway holds ahead, by Redis key.
#[derive(Default)]
pub struct Credit {
    held: Mutex<HashMap<String, Held>>,
}

impl Credit {
    /// The cells to ask ahead for a check of a limit with this burst,
    /// `reserve` thousandths of it (at most [`MOST`]); 0 for a check with
    /// a member (each is judged in Redis) or when the store is full.
    pub fn ahead(&self, check: &Check, reserve: u16) -> u64 {
        if check.member.is_some() || reserve == 0 {
            return 0;
        }
        let n = (check.rate.burst() * u64::from(reserve) / 1000).min(MOST);
        if n < 2 {
            return 0;
        }
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() >= MAX_KEYS {
            return 0;
        }
        n
    }

    /// Takes `n` cells held for `key`, with the bucket's fill as last
    /// read; None (nothing taken) when it holds fewer.
    pub fn take(&self, key: &str, n: u64) -> Option<u16> {
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let h = held
            .get_mut(key)
            .filter(|h| h.until > now && h.cells >= n)?;
        h.cells -= n;
        Some(h.fill)
    }

    /// Gives back cells taken for a batch that was refused.
    pub fn refund(&self, key: &str, n: u64) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = held.get_mut(key) {
            h.cells += n;
        }
    }

    /// Keeps the cells taken ahead for a key (added to those it holds).
    pub fn keep(&self, key: String, cells: u64, fill: u16) {
        if cells == 0 {
            return;
        }
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() >= MAX_KEYS {
            held.retain(|_, h| h.until > now && h.cells > 0);
        }
        let h = held.entry(key).or_insert(Held {
            cells: 0,
            until: now,
            fill,
        });
        if h.until <= now {
            h.cells = 0;
        }
        h.cells += cells;
        h.until = now + LIFETIME;
        h.fill = fill;
    }

    /// Forgets the cells held for keys (`limits reset`).
    pub fn forget(&self, keys: &[String]) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            held.remove(k);
        }
    }

    /// The cells held now for a key (`limits show` counts them as left).
    pub fn cells(&self, key: &str) -> u64 {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(key)
            .filter(|h| h.until > Instant::now())
            .map_or(0, |h| h.cells)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::{LimitName, Rate};

    fn check(count: u64, member: Option<&str>) -> Check {
        Check {
            name: LimitName::MessagesPerSender.into(),
            key: "a@example.com".into(),
            rate: Rate {
                count,
                period: Duration::from_secs(3600),
            },
            n: 1,
            member: member.map(String::from),
        }
    }

    #[test]
    fn ahead_is_a_share_of_the_burst_bounded_and_never_for_members() {
        let c = Credit::default();
        assert_eq!(c.ahead(&check(1000, None), 10), 10);
        assert_eq!(c.ahead(&check(1_000_000, None), 10), MOST);
        // 1% of 100 is one cell: nothing is gained, nothing is taken.
        assert_eq!(c.ahead(&check(100, None), 10), 0);
        assert_eq!(c.ahead(&check(1000, Some("r@x.test")), 10), 0);
        assert_eq!(c.ahead(&check(1000, None), 0), 0);
    }

    #[test]
    fn cells_are_taken_only_when_held_and_given_back_on_refusal() {
        let c = Credit::default();
        c.keep("k1".into(), 2, 5);
        assert_eq!(c.take("k1", 1), Some(5));
        assert_eq!(c.take("k1", 2), None);
        assert_eq!(c.cells("k1"), 1);
        c.refund("k1", 1);
        assert_eq!(c.take("k1", 2), Some(5));
        assert_eq!(c.take("k2", 1), None);
        // More taken ahead adds to what is held, with the newer fill.
        c.keep("k1".into(), 3, 9);
        assert_eq!(c.take("k1", 3), Some(9));
        c.keep("k3".into(), 3, 0);
        c.forget(&["k3".to_string()]);
        assert_eq!(c.cells("k3"), 0);
    }
}
