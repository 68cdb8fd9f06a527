//! The signals: for each configured signal, a count per key (client IP,
//! login, sender, class) over the signal's window, and for baseline
//! signals the key's usual volume. Memory is bounded: at most `max_keys`
//! keys per signal; to make room, the smallest count among a few sampled
//! keys is forgotten, never one past half its threshold (an attacker who
//! sends from many fresh keys must not wash out its own count).

use super::baseline::Baseline;
use super::window::{Distinct, Sum};
use crate::config::{Count, KeyKind, Signal, Threshold};
use indexmap::IndexMap;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Queue ids remembered per key, to name the messages already accepted in
/// the window when an incident opens.
const RECENT_QUEUE_IDS: usize = 50;
/// Keys sampled when one must be forgotten.
const EVICTION_SAMPLE: usize = 8;

/// What happened, as the signals count it.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A message accepted for these recipients.
    Accepted {
        queue_id: Option<&'a str>,
        recipients: &'a [String],
    },
    /// One of our permanent refusals.
    Refused,
    /// A recipient the MTA itself rejected.
    MtaRejected,
    /// A recipient of the key's mail that bounced for good.
    HardBounce,
}

/// The keys a message or an event is counted under.
#[derive(Clone, Copy, Debug, Default)]
pub struct Keys<'a> {
    pub client: Option<&'a str>,
    pub user: Option<&'a str>,
    pub sender: Option<&'a str>,
    pub class: Option<&'a str>,
}

impl<'a> Keys<'a> {
    pub fn get(&self, kind: KeyKind) -> Option<&'a str> {
        match kind {
            KeyKind::Client => self.client,
            KeyKind::User => self.user,
            KeyKind::Sender => self.sender,
            KeyKind::Class => self.class,
        }
        .filter(|v| !v.is_empty())
    }
}

/// A signal that crossed its threshold for a key.
#[derive(Clone, Debug, PartialEq)]
pub struct Crossing {
    pub signal: String,
    pub kind: KeyKind,
    pub key: String,
    /// The count, and what it crossed, in words.
    pub figures: String,
    /// Messages of the key accepted in the window, oldest first.
    pub earlier: Vec<String>,
}

/// A signal's figure for a key against its threshold, for `explain`.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub signal: String,
    pub kind: KeyKind,
    pub key: String,
    pub figures: String,
    pub crossed: bool,
}

enum Counter {
    Sum(Sum),
    Distinct(Distinct),
    /// Recipients sent, and hard bounces.
    Ratio(Sum, Sum),
}

struct KeyState {
    counter: Counter,
    baseline: Option<Baseline>,
    last_seen: u64,
    recent: VecDeque<(u64, String)>,
}

struct Tracked {
    signal: Signal,
    keys: Mutex<IndexMap<String, KeyState>>,
}

pub struct Signals {
    tracked: Vec<Tracked>,
    max_keys: usize,
    /// Keys forgotten to make room.
    evicted: std::sync::atomic::AtomicU64,
    /// Events of a new key not counted: the map was full of keys past
    /// half their threshold.
    untracked: std::sync::atomic::AtomicU64,
}

/// How much of an event a signal counts: a number, or values; for a
/// ratio, recipients sent or hard bounces.
enum Amount<'a> {
    Number(u64),
    Values(Vec<&'a str>),
    Sent(u64),
    Bounced(u64),
}

fn amount<'a>(count: Count, event: &Event<'a>) -> Option<Amount<'a>> {
    match (count, event) {
        (Count::Messages, Event::Accepted { .. }) => Some(Amount::Number(1)),
        (Count::Recipients, Event::Accepted { recipients, .. }) => {
            Some(Amount::Number(recipients.len() as u64))
        }
        (Count::DistinctRecipients, Event::Accepted { recipients, .. }) => Some(Amount::Values(
            recipients.iter().map(String::as_str).collect(),
        )),
        (Count::DistinctRecipientDomains, Event::Accepted { recipients, .. }) => {
            Some(Amount::Values(
                recipients
                    .iter()
                    .map(|r| r.rsplit_once('@').map_or(r.as_str(), |(_, d)| d))
                    .collect(),
            ))
        }
        (Count::Refusals, Event::Refused) => Some(Amount::Number(1)),
        (Count::MtaRejectedRecipients, Event::MtaRejected) => Some(Amount::Number(1)),
        (Count::HardBounces, Event::HardBounce) => Some(Amount::Number(1)),
        (Count::BounceRatio, Event::Accepted { recipients, .. }) => {
            Some(Amount::Sent(recipients.len() as u64))
        }
        (Count::BounceRatio, Event::HardBounce) => Some(Amount::Bounced(1)),
        _ => None,
    }
}

/// A figure against its threshold, in words. `usual`: the key's usual
/// volume for a baseline signal; for a ratio, the recipients sent.
pub(super) fn describe(signal: &Signal, figure: f64, usual: Option<f64>) -> String {
    let count = signal.count.as_str();
    let window = window_text(signal.threshold.window());
    match signal.threshold {
        Threshold::Above(rate) => {
            format!("{figure:.0} {count} in {window} (threshold {rate})")
        }
        Threshold::Baseline { factor, min, .. } => format!(
            "{figure:.0} {count} in {window} ({}; threshold {factor}x and {min})",
            match usual {
                Some(u) => format!("usually {u:.1}"),
                None => "usual volume still being learnt".to_string(),
            }
        ),
        Threshold::Ratio { above, min } => {
            let sent = usual.unwrap_or(0.0);
            let pct = if sent > 0.0 {
                100.0 * figure / sent
            } else {
                0.0
            };
            format!(
                "{figure:.0} hard bounces of {sent:.0} recipients in {window} ({pct:.0}%; threshold {:.0}% of at least {min})",
                above * 100.0
            )
        }
    }
}

/// How much of an event a signal counts, for the Redis backend: the
/// number added, and the values (distinct counts); for a ratio, whether
/// it is of the bounces (else of the recipients sent).
pub(super) fn amount_of(count: Count, event: &Event<'_>) -> Option<(f64, Vec<String>, bool)> {
    match amount(count, event)? {
        Amount::Number(n) | Amount::Sent(n) => Some((n as f64, Vec::new(), false)),
        Amount::Bounced(n) => Some((n as f64, Vec::new(), true)),
        Amount::Values(v) => Some((
            v.len() as f64,
            v.into_iter().map(String::from).collect(),
            false,
        )),
    }
}

/// Whether a figure crosses the signal's threshold, given the key's usual
/// volume (None while it is learnt, or for a fixed threshold).
pub(super) fn judge_counts(s: &Signal, figure: f64, usual: Option<f64>) -> bool {
    match s.threshold {
        Threshold::Above(rate) => figure > rate.count as f64,
        Threshold::Baseline { factor, min, .. } => {
            usual.is_some_and(|u| figure > min.count as f64 && figure > factor * u)
        }
        // `usual`: the recipients sent.
        Threshold::Ratio { above, min } => usual
            .is_some_and(|sent| sent >= min.count as f64 && sent > 0.0 && figure > above * sent),
    }
}

/// A window as the configuration writes it: 1h, 10m, 1d.
pub fn window_text(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    [(604_800, "w"), (86_400, "d"), (3_600, "h"), (60, "m")]
        .into_iter()
        .find(|(u, _)| secs.is_multiple_of(*u) && secs >= *u)
        .map_or(format!("{secs}s"), |(u, name)| {
            format!("{}{name}", secs / u)
        })
}

impl Signals {
    pub fn new(signals: &[Signal], max_keys: usize) -> Self {
        Self {
            tracked: signals
                .iter()
                .map(|s| Tracked {
                    signal: s.clone(),
                    keys: Mutex::new(IndexMap::new()),
                })
                .collect(),
            max_keys: max_keys.max(1),
            evicted: Default::default(),
            untracked: Default::default(),
        }
    }

    /// Keys forgotten to make room, and events of new keys left uncounted
    /// because no key could be forgotten.
    pub fn evictions(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.evicted.load(Relaxed), self.untracked.load(Relaxed))
    }

    /// Counts an event under its keys; returns the signals it made cross
    /// their threshold (each judged as the event lands).
    pub fn observe(&self, now: u64, keys: &Keys<'_>, event: &Event<'_>) -> Vec<Crossing> {
        let mut crossed = Vec::new();
        for t in &self.tracked {
            let s = &t.signal;
            let Some(key) = keys.get(s.key) else {
                continue;
            };
            let Some(amount) = amount(s.count, event) else {
                continue;
            };
            let len = s.threshold.window().as_millis() as u64;
            let mut map = t.keys.lock().unwrap_or_else(|e| e.into_inner());
            let Some(state) = self.entry(&mut map, key, s, now, len) else {
                continue;
            };
            state.last_seen = now;
            let added = match (&mut state.counter, &amount) {
                (Counter::Sum(sum), Amount::Number(n)) => {
                    sum.add(now, len, *n);
                    *n as f64
                }
                (Counter::Ratio(sent, _), Amount::Sent(n)) => {
                    sent.add(now, len, *n);
                    0.0
                }
                (Counter::Ratio(_, bounced), Amount::Bounced(n)) => {
                    bounced.add(now, len, *n);
                    *n as f64
                }
                (Counter::Distinct(d), Amount::Values(v)) => {
                    for value in v {
                        d.add(now, len, value);
                    }
                    v.len() as f64
                }
                _ => 0.0,
            };
            if let Event::Accepted {
                queue_id: Some(q), ..
            } = event
            {
                if !q.is_empty() && *q != "-" {
                    state.recent.push_back((now, (*q).to_string()));
                    while state.recent.len() > RECENT_QUEUE_IDS {
                        state.recent.pop_front();
                    }
                }
            }
            let figure = figure(state, now, len);
            let (fires, usual) = judge(s, state, now, len, figure, added);
            if fires {
                let since = now.saturating_sub(len);
                crossed.push(Crossing {
                    signal: s.name.clone(),
                    kind: s.key,
                    key: key.to_string(),
                    figures: describe(s, figure, usual),
                    earlier: state
                        .recent
                        .iter()
                        .filter(|(t, _)| *t >= since)
                        .map(|(_, q)| q.clone())
                        .collect(),
                });
            }
        }
        crossed
    }

    /// Every signal's figure for the keys, without counting anything.
    pub fn read(&self, now: u64, keys: &Keys<'_>) -> Vec<Reading> {
        let mut out = Vec::new();
        for t in &self.tracked {
            let s = &t.signal;
            let Some(key) = keys.get(s.key) else {
                continue;
            };
            let len = s.threshold.window().as_millis() as u64;
            let mut map = t.keys.lock().unwrap_or_else(|e| e.into_inner());
            let (figure, crossed, usual) = match map.get_mut(key) {
                Some(state) => {
                    let f = figure(state, now, len);
                    let (fires, usual) = judge(s, state, now, len, f, 0.0);
                    (f, fires, usual)
                }
                None => (0.0, false, None),
            };
            out.push(Reading {
                signal: s.name.clone(),
                kind: s.key,
                key: key.to_string(),
                figures: describe(s, figure, usual),
                crossed,
            });
        }
        out
    }

    /// Forgets a key's counts (its usual volume stays): closing an
    /// incident by hand starts the key afresh.
    pub fn forget(&self, kind: KeyKind, key: &str) {
        for t in self.tracked.iter().filter(|t| t.signal.key == kind) {
            let mut map = t.keys.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(state) = map.get_mut(key) {
                state.counter = fresh(&t.signal);
                state.recent.clear();
            }
        }
    }

    /// Keys tracked, all signals together.
    pub fn tracked_keys(&self) -> usize {
        self.tracked
            .iter()
            .map(|t| t.keys.lock().map_or(0, |m| m.len()))
            .sum()
    }

    /// The key's state, made when it is new; None when the map is full
    /// and none of the sampled keys may be forgotten.
    fn entry<'m>(
        &self,
        map: &'m mut IndexMap<String, KeyState>,
        key: &str,
        s: &Signal,
        now: u64,
        len: u64,
    ) -> Option<&'m mut KeyState> {
        if !map.contains_key(key) && map.len() >= self.max_keys {
            use std::sync::atomic::Ordering::Relaxed;
            // Among a few sampled keys, forget the one with the smallest
            // count (the one seen longest ago among equals), and never one
            // past half its threshold.
            let n = map.len();
            let step = (n / EVICTION_SAMPLE).max(1);
            let offset = (now as usize) % step;
            let half = s.threshold.floor() as f64 / 2.0;
            let mut best: Option<(f64, u64, usize)> = None;
            for i in (0..EVICTION_SAMPLE).map(|i| (offset + i * step) % n) {
                let Some((_, state)) = map.get_index_mut(i) else {
                    continue;
                };
                let count = figure(state, now, len);
                if count > half {
                    continue;
                }
                let rank = (count, state.last_seen, i);
                if best.is_none_or(|b| (rank.0, rank.1) < (b.0, b.1)) {
                    best = Some(rank);
                }
            }
            match best {
                Some((_, _, i)) => {
                    map.swap_remove_index(i);
                    self.evicted.fetch_add(1, Relaxed);
                }
                None => {
                    self.untracked.fetch_add(1, Relaxed);
                    return None;
                }
            }
        }
        Some(map.entry(key.to_string()).or_insert_with(|| KeyState {
            counter: fresh(s),
            baseline:
                matches!(s.threshold, Threshold::Baseline { .. }).then(|| Baseline::new(now, len)),
            last_seen: now,
            recent: VecDeque::new(),
        }))
    }
}

/// A signal's counter, empty.
fn fresh(s: &Signal) -> Counter {
    if s.count.distinct() {
        Counter::Distinct(Distinct::default())
    } else if matches!(s.threshold, Threshold::Ratio { .. }) {
        Counter::Ratio(Sum::default(), Sum::default())
    } else {
        Counter::Sum(Sum::default())
    }
}

/// The count over the window, in whole units (a distinct count is an
/// estimate).
fn figure(state: &mut KeyState, now: u64, len: u64) -> f64 {
    match &mut state.counter {
        Counter::Sum(s) | Counter::Ratio(_, s) => s.estimate(now, len),
        Counter::Distinct(d) => d.estimate(now, len),
    }
    .floor()
}

/// Whether the figure crosses the signal's threshold; for a baseline
/// signal, the usual volume too (the count just added goes into it after
/// the judgement, so that a jump is judged against the time before).
fn judge(
    s: &Signal,
    state: &mut KeyState,
    now: u64,
    len: u64,
    figure: f64,
    added: f64,
) -> (bool, Option<f64>) {
    let usual = match (s.threshold, state.baseline.as_mut()) {
        (Threshold::Baseline { learn, .. }, Some(b)) => {
            let usual = b.usual(now, len, learn.as_millis() as u64);
            b.add(now, len, added);
            usual
        }
        // A ratio is judged against the recipients sent.
        (Threshold::Ratio { .. }, _) => match &mut state.counter {
            Counter::Ratio(sent, _) => Some(sent.estimate(now, len).floor()),
            _ => None,
        },
        _ => None,
    };
    (judge_counts(s, figure, usual), usual)
}

#[cfg(test)]
mod tests;
