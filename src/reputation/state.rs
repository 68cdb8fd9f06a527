//! What the watch knows: each target's state on each list, each watched
//! record as last answered, and the last changes. An error changes
//! nothing here: a listing stays until a list says clean, a record keeps
//! its last answered state.

use super::lists::Answer;
use crate::selfcheck::{Row, Status};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Changes kept for `egress-milter reputation`.
const CHANGES_KEPT: usize = 50;

/// One target on one list.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
pub struct Listing {
    pub target: String,
    pub list: String,
    /// None until the list has answered once.
    pub listed: Option<bool>,
    /// Since when (unix seconds) in that state.
    pub since: u64,
    /// The return codes of a listing.
    #[serde(default)]
    pub codes: Vec<String>,
    /// When the list last answered.
    pub checked: u64,
    /// The last error, cleared by an answer.
    #[serde(default)]
    pub error: Option<String>,
}

/// One watched record (a self-check row): fine or not, and what it said.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct Record {
    pub check: String,
    pub subject: String,
    pub ok: bool,
    pub detail: String,
    pub since: u64,
}

/// A change, as noticed, logged and kept.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct Change {
    /// Unix seconds.
    pub at: u64,
    /// `listed`, `delisted` or `record_changed`.
    pub change: String,
    /// The address or domain; for a record, what it is about.
    pub target: String,
    /// The list; for a record, the check (`spf`, `dkim`, `dmarc`, `mx`, `rdns`...).
    pub list: String,
    /// The state before, and now.
    pub was: String,
    pub now: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
pub struct State {
    /// By `TARGET on LIST`.
    pub listings: BTreeMap<String, Listing>,
    /// By `CHECK SUBJECT`.
    pub records: BTreeMap<String, Record>,
    pub changes: VecDeque<Change>,
    /// When the last round ended (unix seconds; 0: none yet).
    pub last_round: u64,
}

pub fn listing_key(target: &str, list: &str) -> String {
    format!("{target} on {list}")
}

impl State {
    fn keep(&mut self, c: &Change) {
        self.changes.push_back(c.clone());
        while self.changes.len() > CHANGES_KEPT {
            self.changes.pop_front();
        }
    }

    /// Takes a list's answer; the change it makes, if any.
    pub fn answer(
        &mut self,
        target: &str,
        list: &str,
        answer: &Answer,
        now: u64,
    ) -> Option<Change> {
        let l = self
            .listings
            .entry(listing_key(target, list))
            .or_insert_with(|| Listing {
                target: target.into(),
                list: list.into(),
                since: now,
                ..Listing::default()
            });
        let listed = match answer {
            Answer::Error(e) => {
                l.error = Some(e.clone());
                return None;
            }
            Answer::Clean => false,
            Answer::Listed(_) => true,
        };
        l.error = None;
        l.checked = now;
        let codes: Vec<String> = match answer {
            Answer::Listed(c) => c.iter().map(|c| c.to_string()).collect(),
            _ => Vec::new(),
        };
        let was = l.listed;
        l.codes = codes.clone();
        if was == Some(listed) {
            return None;
        }
        l.listed = Some(listed);
        l.since = now;
        // Clean at the first answer is no news.
        if was.is_none() && !listed {
            return None;
        }
        let change = Change {
            at: now,
            change: if listed { "listed" } else { "delisted" }.into(),
            target: target.into(),
            list: list.into(),
            was: match was {
                Some(true) => "listed".into(),
                Some(false) => "not listed".into(),
                None => "unknown".into(),
            },
            now: if listed {
                format!("listed ({})", codes.join(" "))
            } else {
                "not listed".into()
            },
        };
        self.keep(&change);
        Some(change)
    }

    /// Takes a round of record checks: a row DNS did not answer keeps the
    /// record's last state; a record that differs from its last state, or
    /// is wrong when first seen, is a change.
    pub fn records(&mut self, rows: &[Row], now: u64) -> Vec<Change> {
        let mut next = BTreeMap::new();
        let mut changes = Vec::new();
        for row in rows {
            let key = format!("{} {}", row.check, row.subject);
            let before = self.records.get(&key);
            if row.unanswered {
                if let Some(b) = before {
                    next.insert(key, b.clone());
                }
                continue;
            }
            let ok = row.status == Status::Ok;
            let same = before.is_some_and(|b| b.ok == ok && b.detail == row.detail);
            let since = match before {
                Some(b) if same => b.since,
                _ => now,
            };
            if !same && (before.is_some() || !ok) {
                changes.push(Change {
                    at: now,
                    change: "record_changed".into(),
                    target: row.subject.clone(),
                    list: row.check.into(),
                    was: before.map_or_else(|| "not checked yet".into(), |b| b.detail.clone()),
                    now: if row.fix.is_empty() {
                        row.detail.clone()
                    } else {
                        format!("{} (fix: {})", row.detail, row.fix)
                    },
                });
            }
            next.insert(
                key,
                Record {
                    check: row.check.into(),
                    subject: row.subject.clone(),
                    ok,
                    detail: row.detail.clone(),
                    since,
                },
            );
        }
        self.records = next;
        for c in &changes {
            self.keep(c);
        }
        changes
    }

    /// Forgets the listings of targets and lists no longer watched.
    pub fn retain(&mut self, watched: &[String]) {
        self.listings.retain(|k, _| watched.contains(k));
    }

    /// The first listing in force, if any: (target, list).
    pub fn first_listed(&self) -> Option<(String, String)> {
        self.listings
            .values()
            .find(|l| l.listed == Some(true))
            .map(|l| (l.target.clone(), l.list.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_change_a_listing() {
        let mut s = State::default();
        let listed = Answer::Listed(vec!["127.0.0.2".parse().unwrap()]);
        let err = Answer::Error("timeout".into());
        assert_eq!(s.answer("192.0.2.1", "zen", &Answer::Clean, 1), None);
        assert_eq!(s.answer("192.0.2.1", "zen", &err, 2), None);
        let c = s.answer("192.0.2.1", "zen", &listed, 3).expect("a change");
        assert_eq!(c.change, "listed");
        assert_eq!(s.first_listed(), Some(("192.0.2.1".into(), "zen".into())));
        // An error while listed keeps the listing.
        assert_eq!(s.answer("192.0.2.1", "zen", &err, 4), None);
        assert_eq!(s.answer("192.0.2.1", "zen", &listed, 5), None);
        assert!(s.first_listed().is_some());
        let c = s
            .answer("192.0.2.1", "zen", &Answer::Clean, 6)
            .expect("a change");
        assert_eq!(c.change, "delisted");
        assert_eq!(s.first_listed(), None);
        assert_eq!(s.changes.len(), 2);
        // Listed at the first answer is news.
        assert!(s.answer("192.0.2.2", "zen", &listed, 7).is_some());
    }
}
