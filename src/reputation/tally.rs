//! Who sent how much in the last hours: the recipients of accepted
//! outbound mail, counted by login, client and sender in hourly buckets,
//! so that a listing notice names the top senders of the six hours
//! before. Bounded: past [`MAX_KEYS`] keys in an hour, new keys of that
//! hour are counted together as `(others)`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The keys a message is counted under.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum Kind {
    Login,
    Client,
    Sender,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Login, Kind::Client, Kind::Sender]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Client => "client",
            Self::Sender => "sender",
        }
    }
}

/// Keys kept per hour.
const MAX_KEYS: usize = 50_000;
/// Hours kept: the six a notice names, and the one under way.
pub const HOURS: u64 = 7;
pub const HOUR_MS: u64 = 3_600_000;

/// One hour's counts.
type Hour = (u64, HashMap<(Kind, String), u64>);

#[derive(Default)]
pub struct Tally {
    hours: Mutex<VecDeque<Hour>>,
    /// Counted since last taken for Redis (several gateways): by hour,
    /// kind and key.
    pending: Mutex<HashMap<(u64, Kind, String), u64>>,
}

/// Counts as they go to Redis: (hour, kind, key, recipients).
pub type Counts = Vec<(u64, Kind, String, u64)>;

impl Tally {
    /// Counts `n` recipients under each key, at `now` (ms).
    pub fn add(&self, now: u64, keys: &[(Kind, &str)], n: u64) {
        let hour = now / HOUR_MS;
        let mut hours = self.hours.lock().unwrap_or_else(|p| p.into_inner());
        if hours.back().is_none_or(|(h, _)| *h < hour) {
            hours.push_back((hour, HashMap::new()));
        }
        while hours.front().is_some_and(|(h, _)| *h + HOURS <= hour) {
            hours.pop_front();
        }
        let Some((_, counts)) = hours.back_mut() else {
            return;
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (kind, key) in keys {
            let full = pending.len() >= MAX_KEYS;
            match pending.get_mut(&(hour, *kind, key.to_string())) {
                Some(c) => *c += n,
                None if full => {}
                None => {
                    pending.insert((hour, *kind, key.to_string()), n);
                }
            }
        }
        for (kind, key) in keys {
            let full = counts.len() >= MAX_KEYS;
            match counts.get_mut(&(*kind, key.to_string())) {
                Some(c) => *c += n,
                None if full => *counts.entry((*kind, "(others)".into())).or_default() += n,
                None => {
                    counts.insert((*kind, key.to_string()), n);
                }
            }
        }
    }

    /// The counts since last taken, for Redis.
    pub fn take_pending(&self) -> Counts {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .drain()
            .map(|((h, kind, key), n)| (h, kind, key, n))
            .collect()
    }

    /// The `n` biggest senders of each kind over the `hours` before `now`
    /// (ms), biggest first.
    pub fn top(&self, now: u64, hours_back: u64, n: usize) -> Vec<(Kind, String, u64)> {
        let from = (now / HOUR_MS).saturating_sub(hours_back);
        let hours = self.hours.lock().unwrap_or_else(|p| p.into_inner());
        let mut sum: HashMap<(Kind, &str), u64> = HashMap::new();
        for (_, counts) in hours.iter().filter(|(h, _)| *h >= from) {
            for ((kind, key), c) in counts {
                *sum.entry((*kind, key.as_str())).or_default() += c;
            }
        }
        ranked(
            sum.into_iter()
                .map(|((k, key), c)| (k, key.to_string(), c))
                .collect(),
            n,
        )
    }
}

/// The `n` biggest of each kind, biggest first.
pub fn ranked(mut all: Vec<(Kind, String, u64)>, n: usize) -> Vec<(Kind, String, u64)> {
    all.sort_by(|a, b| a.0.cmp(&b.0).then(b.2.cmp(&a.2)).then(a.1.cmp(&b.1)));
    let mut out = Vec::new();
    for kind in [Kind::Login, Kind::Client, Kind::Sender] {
        out.extend(all.iter().filter(|e| e.0 == kind).take(n).cloned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_senders_of_the_hours_before() {
        let t = Tally::default();
        let h = 1_000 * HOUR_MS;
        t.add(
            h,
            &[(Kind::Login, "bulk"), (Kind::Sender, "news@example.com")],
            40,
        );
        t.add(h + 10, &[(Kind::Login, "alice")], 3);
        let now = h + 2 * HOUR_MS;
        assert_eq!(
            t.top(now, 6, 5),
            vec![
                (Kind::Login, "bulk".into(), 40),
                (Kind::Login, "alice".into(), 3),
                (Kind::Sender, "news@example.com".into(), 40),
            ]
        );
        // Seven hours on, the first hour is out of a six-hour look back.
        t.add(h + 7 * HOUR_MS, &[(Kind::Login, "alice")], 5);
        assert_eq!(
            t.top(h + 7 * HOUR_MS, 6, 1),
            vec![(Kind::Login, "alice".into(), 5)]
        );
    }
}
