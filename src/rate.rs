//! The vocabulary of rate limits, shared by the configuration and the
//! limiter: the limits' names, and rates as written in the configuration:
//! `N/s|m|h|d|w`, `N/10m` (a period of several units), case-insensitive
//! units; `unlimited` or a negative N turns a limit off.

use std::{
    collections::HashSet,
    fmt,
    sync::{Mutex, OnceLock},
    time::Duration,
};

/// The limits, by the names the configuration and the replies use.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum LimitName {
    ConnectionsPerClient,
    ConcurrentPerClient,
    MessagesPerClient,
    MessagesPerSender,
    MessagesPerUser,
    MessagesPerRecipient,
    RecipientsPerSender,
}

impl LimitName {
    pub const ALL: [LimitName; 7] = [
        Self::ConnectionsPerClient,
        Self::ConcurrentPerClient,
        Self::MessagesPerClient,
        Self::MessagesPerSender,
        Self::MessagesPerUser,
        Self::MessagesPerRecipient,
        Self::RecipientsPerSender,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionsPerClient => "connections_per_client",
            Self::ConcurrentPerClient => "concurrent_per_client",
            Self::MessagesPerClient => "messages_per_client",
            Self::MessagesPerSender => "messages_per_sender",
            Self::MessagesPerUser => "messages_per_user",
            Self::MessagesPerRecipient => "messages_per_recipient",
            Self::RecipientsPerSender => "recipients_per_sender",
        }
    }
}

impl fmt::Display for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A limit as the limiter, the replies and `limits show` name it: one of
/// the seven, or a custom limit's name (`rate_limits.custom`).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum LimitId {
    Named(LimitName),
    /// Interned by [`intern`].
    Custom(&'static str),
}

impl LimitId {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Named(n) => n.as_str(),
            Self::Custom(c) => c,
        }
    }
}

/// A custom limit's name, kept for the life of the process: replies, log
/// lines and metrics label refusals by `&'static str`. Each distinct name
/// is stored once, however often the configuration is reloaded.
pub fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.get(name) {
        return n;
    }
    let n: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(n);
    n
}

impl From<LimitName> for LimitId {
    fn from(n: LimitName) -> Self {
        Self::Named(n)
    }
}

impl PartialEq<LimitName> for LimitId {
    fn eq(&self, other: &LimitName) -> bool {
        *self == Self::Named(*other)
    }
}

impl fmt::Display for LimitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A GCRA rate: `count` cells per `period`, with a burst of `count` (the
/// governor model: `100/h` allows 100 at once, then one every 36 s).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Rate {
    pub count: u64,
    pub period: Duration,
}

/// A limit: a rate, or none.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Limit {
    Unlimited,
    Rate(Rate),
}

impl Rate {
    /// The emission interval T: one cell every `period / count`, in
    /// nanoseconds (at least 1).
    pub fn emission_ns(&self) -> u64 {
        let ns = self.period.as_nanos() / u128::from(self.count.max(1));
        u64::try_from(ns).unwrap_or(u64::MAX).max(1)
    }

    /// The burst: how many cells a full bucket holds.
    pub fn burst(&self) -> u64 {
        self.count
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.period.as_secs();
        let (n, unit) = [
            (604_800, "w"),
            (86_400, "d"),
            (3_600, "h"),
            (60, "m"),
            (1, "s"),
        ]
        .into_iter()
        .find(|(u, _)| secs.is_multiple_of(*u) && secs >= *u)
        .map_or((secs, "s"), |(u, name)| (secs / u, name));
        if n == 1 {
            write!(f, "{}/{unit}", self.count)
        } else {
            write!(f, "{}/{n}{unit}", self.count)
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unlimited => f.write_str("unlimited"),
            Self::Rate(r) => write!(f, "{r}"),
        }
    }
}

#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[error("invalid rate \"{0}\" (expected N/UNIT or N/COUNT UNIT, a whole N of at least 1, UNIT one of s, m, h, d, w or their words: 50/h, 50/hour, 50/hours, 5/10m, or unlimited)")]
pub struct RateError(pub String);

/// The units a rate's period is written in, each as a letter, an
/// abbreviation, or a word in the singular or the plural: one grammar for
/// every rate in the configuration.
pub const UNITS: &[(&[&str], u64)] = &[
    (&["s", "sec", "secs", "second", "seconds"], 1),
    (&["m", "min", "mins", "minute", "minutes"], 60),
    (&["h", "hr", "hrs", "hour", "hours"], 3_600),
    (&["d", "day", "days"], 86_400),
    (&["w", "wk", "wks", "week", "weeks"], 604_800),
];

/// A unit's length in seconds (lower case).
fn unit_seconds(unit: &str) -> Option<u64> {
    UNITS
        .iter()
        .find(|(names, _)| names.contains(&unit))
        .map(|(_, secs)| *secs)
}

/// Parses a limit. Zero is refused: a rate that allows nothing is a sender
/// rule, not a limit.
pub fn parse_limit(input: &str) -> Result<Limit, RateError> {
    let err = || RateError(input.to_string());
    let s = input.trim();
    if s.eq_ignore_ascii_case("unlimited") {
        return Ok(Limit::Unlimited);
    }
    let (n, per) = s.split_once('/').ok_or_else(err)?;
    let n: i64 = n.trim().parse().map_err(|_| err())?;
    let per = per.trim().to_ascii_lowercase();
    let digits = per.len() - per.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (mult, unit) = per.split_at(digits);
    let mult: u64 = if mult.is_empty() {
        1
    } else {
        mult.parse().map_err(|_| err())?
    };
    let unit_secs = unit_seconds(unit.trim()).ok_or_else(err)?;
    if n < 0 {
        return Ok(Limit::Unlimited);
    }
    if n == 0 || mult == 0 {
        return Err(err());
    }
    let secs = mult.checked_mul(unit_secs).ok_or_else(err)?;
    Ok(Limit::Rate(Rate {
        count: n as u64,
        period: Duration::from_secs(secs),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u64, secs: u64) -> Limit {
        Limit::Rate(Rate {
            count,
            period: Duration::from_secs(secs),
        })
    }

    #[test]
    fn syntax() {
        assert_eq!(parse_limit("100/h"), Ok(rate(100, 3600)));
        assert_eq!(parse_limit("60/M"), Ok(rate(60, 60)));
        assert_eq!(parse_limit("5/10m"), Ok(rate(5, 600)));
        assert_eq!(parse_limit("500/d"), Ok(rate(500, 86_400)));
        assert_eq!(parse_limit("1/W"), Ok(rate(1, 604_800)));
        assert_eq!(parse_limit(" 2 / s "), Ok(rate(2, 1)));
        assert_eq!(parse_limit("unlimited"), Ok(Limit::Unlimited));
        assert_eq!(parse_limit("UNLIMITED"), Ok(Limit::Unlimited));
        assert_eq!(parse_limit("-1/h"), Ok(Limit::Unlimited));
        // Every spelling of every unit, singular and plural, any case.
        for (names, secs) in UNITS {
            for name in *names {
                for n in [name.to_string(), name.to_uppercase()] {
                    assert_eq!(parse_limit(&format!("50/{n}")), Ok(rate(50, *secs)), "{n}");
                    assert_eq!(
                        parse_limit(&format!("50/2 {n}")),
                        Ok(rate(50, 2 * secs)),
                        "{n}"
                    );
                }
            }
        }
        for bad in [
            "", "100", "100/", "/h", "0/h", "1/0m", "x/h", "1/y", "1/h/2", "1.5/h", "1/hourly",
            "1/ms", "1/mo",
        ] {
            assert!(parse_limit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn governor_model() {
        let Limit::Rate(r) = parse_limit("100/h").unwrap() else {
            panic!()
        };
        assert_eq!(r.emission_ns(), 36_000_000_000);
        assert_eq!(r.burst(), 100);
        assert_eq!(r.to_string(), "100/h");
        let Limit::Rate(r) = parse_limit("5/10m").unwrap() else {
            panic!()
        };
        assert_eq!(r.to_string(), "5/10m");
    }
}
