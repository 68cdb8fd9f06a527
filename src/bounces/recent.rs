//! Who recently sent as each of our senders: the login, the client and
//! the class of its last accepted message, so that a bounce that comes
//! back to the sender days later counts against them too. Bounded: past
//! [`MAX`] senders the oldest is forgotten; a week on, any is.
//!
//! And which recipients each sender wrote to: a notice is believed only
//! about a recipient its sender did write to, so that a forged notice
//! cannot suppress a partner's address or open an incident against one of
//! our users. Kept in two generations of at most [`MAX_PAIRS`] each, a
//! generation at most half a week old: from three and a half to seven
//! days.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Who sent as a sender, last.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Sent {
    pub login: Option<String>,
    pub client: Option<String>,
    pub class: Option<String>,
}

const MAX: usize = 100_000;
const KEEP_SECS: u64 = 7 * 86_400;
const MAX_PAIRS: usize = 500_000;

#[derive(Default)]
pub struct Recent {
    inner: Mutex<Inner>,
    pairs: Mutex<Pairs>,
    /// Keyed per process: pairs are hashed, and nobody outside can aim at
    /// a collision.
    hasher: std::collections::hash_map::RandomState,
}

/// (sender, recipient) pairs, hashed, in two generations.
#[derive(Default)]
struct Pairs {
    current: std::collections::HashSet<u64>,
    previous: std::collections::HashSet<u64>,
    started: u64,
}

#[derive(Default)]
struct Inner {
    by_sender: HashMap<String, (u64, Sent)>,
    /// (when, sender): the oldest first, to forget.
    order: BTreeMap<(u64, String), ()>,
}

impl Recent {
    pub fn note(&self, sender: &str, sent: Sent, now: u64) {
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, _)) = i.by_sender.remove(sender) {
            i.order.remove(&(t, sender.to_string()));
        }
        i.by_sender.insert(sender.to_string(), (now, sent));
        i.order.insert((now, sender.to_string()), ());
        while i.by_sender.len() > MAX
            || i.order
                .keys()
                .next()
                .is_some_and(|(t, _)| t + KEEP_SECS < now)
        {
            let Some(((t, s), ())) = i.order.pop_first() else {
                break;
            };
            if i.by_sender.get(&s).is_some_and(|(at, _)| *at == t) {
                i.by_sender.remove(&s);
            }
        }
    }

    fn pair(&self, sender: &str, recipient: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((sender, recipient))
    }

    /// `sender` wrote to `recipient` (both as limits key them).
    pub fn note_pair(&self, sender: &str, recipient: &str, now: u64) {
        let h = self.pair(sender, recipient);
        let mut p = self.pairs.lock().unwrap_or_else(|e| e.into_inner());
        if p.current.len() >= MAX_PAIRS || now.saturating_sub(p.started) > KEEP_SECS / 2 {
            p.previous = std::mem::take(&mut p.current);
            p.started = now;
        }
        p.current.insert(h);
    }

    /// Whether `sender` wrote to `recipient` in the last days.
    pub fn wrote_to(&self, sender: &str, recipient: &str) -> bool {
        let h = self.pair(sender, recipient);
        let p = self.pairs.lock().unwrap_or_else(|e| e.into_inner());
        p.current.contains(&h) || p.previous.contains(&h)
    }

    pub fn get(&self, sender: &str, now: u64) -> Option<Sent> {
        let i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        i.by_sender
            .get(sender)
            .filter(|(t, _)| t + KEEP_SECS >= now)
            .map(|(_, s)| s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_sender_for_a_week() {
        let r = Recent::default();
        let sent = |l: &str| Sent {
            login: Some(l.into()),
            ..Sent::default()
        };
        r.note("app@example.com", sent("a"), 100);
        r.note("app@example.com", sent("b"), 200);
        assert_eq!(r.get("app@example.com", 300), Some(sent("b")));
        assert_eq!(r.get("app@example.com", 200 + KEEP_SECS + 1), None);
        r.note("other@example.com", sent("c"), 200 + KEEP_SECS + 1);
        assert_eq!(r.inner.lock().unwrap().by_sender.len(), 1);
    }

    #[test]
    fn pairs_are_kept_half_a_week_to_a_week() {
        let r = Recent::default();
        r.note_pair("app@example.com", "a@example.org", 0);
        assert!(r.wrote_to("app@example.com", "a@example.org"));
        assert!(!r.wrote_to("app@example.com", "b@example.org"));
        assert!(!r.wrote_to("other@example.com", "a@example.org"));
        // A new generation after half a week: the old pair is still known.
        r.note_pair("app@example.com", "b@example.org", KEEP_SECS / 2 + 1);
        assert!(r.wrote_to("app@example.com", "a@example.org"));
        // Another: it is gone.
        r.note_pair("app@example.com", "c@example.org", KEEP_SECS + 2);
        assert!(!r.wrote_to("app@example.com", "a@example.org"));
        assert!(r.wrote_to("app@example.com", "b@example.org"));
    }
}
