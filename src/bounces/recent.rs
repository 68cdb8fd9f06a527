//! Who recently sent as each of our senders: the login, the client and
//! the class of its last accepted message, so that a bounce that comes
//! back to the sender days later counts against them too. Bounded: past
//! [`MAX`] senders the oldest is forgotten; a week on, any is.

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

#[derive(Default)]
pub struct Recent {
    inner: Mutex<Inner>,
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
}
