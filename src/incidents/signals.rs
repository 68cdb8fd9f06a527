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

/// How much of an event a signal counts: a number, or values.
enum Amount<'a> {
    Number(u64),
    Values(Vec<&'a str>),
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
        _ => None,
    }
}

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
    }
}

/// How much of an event a signal counts, for the Redis backend: the
/// number added, and the values (distinct counts).
pub(super) fn amount_of(count: Count, event: &Event<'_>) -> Option<(f64, Vec<String>)> {
    match amount(count, event)? {
        Amount::Number(n) => Some((n as f64, Vec::new())),
        Amount::Values(v) => Some((v.len() as f64, v.into_iter().map(String::from).collect())),
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
    }
}

/// A window as the configuration writes it: 1h, 10m, 1d.
pub fn window_text(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    [(604_800, "w"), (86_400, "d"), (3_600, "h"), (60, "m")]
        .into_iter()
        .find(|(u, _)| secs % u == 0 && secs >= *u)
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
                state.counter = if t.signal.count.distinct() {
                    Counter::Distinct(Distinct::default())
                } else {
                    Counter::Sum(Sum::default())
                };
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
            counter: if s.count.distinct() {
                Counter::Distinct(Distinct::default())
            } else {
                Counter::Sum(Sum::default())
            },
            baseline:
                matches!(s.threshold, Threshold::Baseline { .. }).then(|| Baseline::new(now, len)),
            last_seen: now,
            recent: VecDeque::new(),
        }))
    }
}

/// The count over the window, in whole units (a distinct count is an
/// estimate).
fn figure(state: &mut KeyState, now: u64, len: u64) -> f64 {
    match &mut state.counter {
        Counter::Sum(s) => s.estimate(now, len),
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
        _ => None,
    };
    (judge_counts(s, figure, usual), usual)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const H: u64 = 3_600_000;
    const T0: u64 = 500 * H;

    fn signal(count: Count, key: KeyKind, above: u64) -> Signal {
        Signal {
            name: format!("s_{}", count.as_str()),
            key,
            count,
            threshold: Threshold::Above(crate::rate::Rate {
                count: above,
                period: Duration::from_secs(3600),
            }),
        }
    }

    fn keys() -> Keys<'static> {
        Keys {
            client: Some("10.0.0.5"),
            user: Some("alice"),
            sender: Some("alice@example.com"),
            class: Some("staff"),
        }
    }

    fn accepted<'a>(q: &'a str, rcpts: &'a [String]) -> Event<'a> {
        Event::Accepted {
            queue_id: Some(q),
            recipients: rcpts,
        }
    }

    /// Feeds events one a minute; returns the 1-based index of the event
    /// that first crossed, and the crossing.
    fn first_crossing(s: Signal, events: &[Event<'_>]) -> Option<(usize, Crossing)> {
        let signals = Signals::new(&[s], 1000);
        events.iter().enumerate().find_map(|(i, e)| {
            let now = T0 + i as u64 * 60_000;
            signals
                .observe(now, &keys(), e)
                .into_iter()
                .next()
                .map(|c| (i + 1, c))
        })
    }

    #[test]
    fn messages_and_recipients() {
        let one = vec!["a@x.test".to_string()];
        let events: Vec<Event<'_>> = (0..10).map(|_| accepted("Q", &one)).collect();
        let (n, c) = first_crossing(signal(Count::Messages, KeyKind::User, 5), &events).unwrap();
        assert_eq!(n, 6);
        assert_eq!((c.kind, c.key.as_str()), (KeyKind::User, "alice"));
        assert_eq!(c.figures, "6 messages in 1h (threshold 5/h)");
        let three: Vec<String> = (0..3).map(|i| format!("r{i}@x.test")).collect();
        let events: Vec<Event<'_>> = (0..10).map(|_| accepted("Q", &three)).collect();
        let (n, _) =
            first_crossing(signal(Count::Recipients, KeyKind::Client, 10), &events).unwrap();
        assert_eq!(n, 4);
    }

    #[test]
    fn distinct_recipients_and_domains() {
        // The same 5 recipients over and over: never 6 distinct.
        let same: Vec<Vec<String>> = (0..40)
            .map(|i| vec![format!("r{}@x.test", i % 5)])
            .collect();
        let events: Vec<Event<'_>> = same.iter().map(|r| accepted("Q", r)).collect();
        assert!(first_crossing(
            signal(Count::DistinctRecipients, KeyKind::Sender, 5),
            &events
        )
        .is_none());
        // A spray: a new domain each message.
        let spray: Vec<Vec<String>> = (0..40).map(|i| vec![format!("x@d{i}.test")]).collect();
        let events: Vec<Event<'_>> = spray.iter().map(|r| accepted("Q", r)).collect();
        let (n, c) = first_crossing(
            signal(Count::DistinctRecipientDomains, KeyKind::User, 20),
            &events,
        )
        .unwrap();
        assert_eq!(n, 21);
        assert!(
            c.figures.starts_with("21 distinct_recipient_domains in 1h"),
            "{}",
            c.figures
        );
        // Many addresses at one domain are one domain.
        let one_domain: Vec<Vec<String>> =
            (0..40).map(|i| vec![format!("u{i}@big.test")]).collect();
        let events: Vec<Event<'_>> = one_domain.iter().map(|r| accepted("Q", r)).collect();
        assert!(first_crossing(
            signal(Count::DistinctRecipientDomains, KeyKind::User, 20),
            &events
        )
        .is_none());
        let (n, _) = first_crossing(
            signal(Count::DistinctRecipients, KeyKind::User, 20),
            &events,
        )
        .unwrap();
        assert_eq!(n, 21);
    }

    #[test]
    fn refusals_and_mta_rejections() {
        let events = vec![Event::Refused; 8];
        let (n, _) = first_crossing(signal(Count::Refusals, KeyKind::User, 5), &events).unwrap();
        assert_eq!(n, 6);
        // Accepted mail does not count as refusals.
        let one = vec!["a@x.test".to_string()];
        let events: Vec<Event<'_>> = (0..20).map(|_| accepted("Q", &one)).collect();
        assert!(first_crossing(signal(Count::Refusals, KeyKind::User, 5), &events).is_none());
        let events = vec![Event::MtaRejected; 30];
        let (n, _) = first_crossing(
            signal(Count::MtaRejectedRecipients, KeyKind::Client, 20),
            &events,
        )
        .unwrap();
        assert_eq!(n, 21);
    }

    #[test]
    fn the_window_slides_and_names_earlier_messages() {
        let signals = Signals::new(&[signal(Count::Messages, KeyKind::User, 3)], 1000);
        let one = vec!["a@x.test".to_string()];
        // Three an hour, every 23 minutes: never four in an hour and a
        // tenth (the window and the slice its start falls in).
        for i in 0..30u64 {
            let q = format!("Q{i}");
            let now = T0 + i * 23 * 60_000 + 1;
            assert!(
                signals
                    .observe(now, &keys(), &accepted(&q, &one))
                    .is_empty(),
                "{i}"
            );
        }
        // A fourth within the hour crosses; the earlier ones of the window
        // are named.
        let now = T0 + 30 * 23 * 60_000;
        let mut crossed = Vec::new();
        for i in 0..3u64 {
            let q = format!("B{i}");
            crossed = signals.observe(now + i * 1000, &keys(), &accepted(&q, &one));
        }
        let c = crossed.first().expect("a burst crosses");
        assert!(c.earlier.contains(&"B0".to_string()), "{:?}", c.earlier);
        assert!(!c.earlier.contains(&"Q0".to_string()), "{:?}", c.earlier);
    }

    #[test]
    fn keys_are_bounded() {
        let signals = Signals::new(&[signal(Count::Messages, KeyKind::User, 1000)], 100);
        let one = vec!["a@x.test".to_string()];
        for i in 0..10_000u64 {
            let user = format!("u{i}");
            let k = Keys {
                user: Some(&user),
                ..Keys::default()
            };
            signals.observe(T0 + i, &k, &accepted("Q", &one));
        }
        assert_eq!(signals.tracked_keys(), 100);
        assert_eq!(signals.evictions(), (9_900, 0));
    }

    /// An attacker who sends from many fresh keys does not wash out its
    /// own count: the smallest counts go first, and a key past half its
    /// threshold is never forgotten.
    #[test]
    fn fresh_keys_do_not_evict_a_count_near_its_threshold() {
        let signals = Signals::new(&[signal(Count::Messages, KeyKind::User, 10)], 50);
        let one = vec!["a@x.test".to_string()];
        let user = |u: &'static str| Keys {
            user: Some(u),
            ..Keys::default()
        };
        for i in 0..8 {
            assert!(signals
                .observe(T0 + i, &user("mallory"), &accepted("Q", &one))
                .is_empty());
        }
        let fresh: Vec<String> = (0..5_000).map(|i| format!("fresh{i}")).collect();
        for (i, f) in fresh.iter().enumerate() {
            let k = Keys {
                user: Some(f),
                ..Keys::default()
            };
            signals.observe(T0 + 100 + i as u64, &k, &accepted("Q", &one));
        }
        assert_eq!(signals.tracked_keys(), 50);
        // Still counted: the ninth, tenth and eleventh cross at the eleventh.
        let t = T0 + 10_000;
        assert!(signals
            .observe(t, &user("mallory"), &accepted("Q", &one))
            .is_empty());
        assert!(signals
            .observe(t + 1, &user("mallory"), &accepted("Q", &one))
            .is_empty());
        assert_eq!(
            signals
                .observe(t + 2, &user("mallory"), &accepted("Q", &one))
                .len(),
            1
        );
        // When every key is past half its threshold, a new key is not
        // counted (and said so), rather than one of them forgotten.
        let full = Signals::new(&[signal(Count::Messages, KeyKind::User, 2)], 2);
        for u in ["a", "b"] {
            for i in 0..2 {
                full.observe(T0 + i, &user(u), &accepted("Q", &one));
            }
        }
        full.observe(T0 + 5, &user("c"), &accepted("Q", &one));
        assert_eq!((full.tracked_keys(), full.evictions()), (2, (0, 1)));
    }
}
