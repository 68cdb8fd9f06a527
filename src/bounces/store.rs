//! The suppressed recipients, by address in canonical form (as limits key
//! it: `A+x@Example.COM` and `a@example.com` are one recipient): each
//! with its hard failures, the last status, and until when it is refused.
//! Kept under `incidents.state_dir` when set (`suppressions.json`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One recipient's record.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
pub struct Entry {
    /// Hard failures of its mailbox counted so far.
    pub hard: u32,
    /// The status of the last one (`5.1.1`), or `by hand`.
    pub status: String,
    /// When the first and the last were seen (unix seconds).
    pub first: u64,
    pub last: u64,
    /// Refused until then (unix seconds); 0: not (yet) suppressed.
    pub until: u64,
}

const FILE: &str = "suppressions.json";

#[derive(Default)]
pub struct Suppressions {
    entries: Mutex<BTreeMap<String, Entry>>,
    file: Mutex<Option<PathBuf>>,
    /// The version of the Redis list the copy was last read at.
    pub version: std::sync::atomic::AtomicU64,
}

impl Suppressions {
    /// The list kept under `state_dir`, if set.
    pub fn load(state_dir: Option<&Path>) -> Self {
        let s = Suppressions::default();
        if let Some(dir) = state_dir {
            let path = dir.join(FILE);
            match std::fs::read(&path) {
                Ok(b) => match serde_json::from_slice(&b) {
                    Ok(e) => *s.entries.lock().unwrap_or_else(|p| p.into_inner()) = e,
                    Err(e) => tracing::warn!(
                        "suppressions: {} is not readable, starting afresh: {e}",
                        path.display()
                    ),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("suppressions: cannot read {}: {e}", path.display()),
            }
            *s.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
        }
        s
    }

    /// The record of a recipient refused at `now`, if it is.
    pub fn refused(&self, address: &str, now: u64) -> Option<Entry> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(address).filter(|e| e.until > now).cloned()
    }

    /// A hard failure of a recipient's mailbox: counted, and the recipient
    /// suppressed for `for_secs` once it has `after` of them. Returns the
    /// record.
    pub fn hard_failure(
        &self,
        address: &str,
        status: &str,
        now: u64,
        after: u32,
        for_secs: u64,
    ) -> Entry {
        let entry = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let e = entries.entry(address.to_string()).or_insert_with(|| Entry {
                first: now,
                ..Entry::default()
            });
            // A suppression that ran out starts the count again.
            if e.until != 0 && e.until <= now {
                *e = Entry {
                    first: now,
                    ..Entry::default()
                };
            }
            e.hard += 1;
            e.status = status.to_string();
            e.last = now;
            if e.hard >= after {
                e.until = now + for_secs;
            }
            e.clone()
        };
        self.save();
        entry
    }

    /// Refuses a recipient by hand until `until`.
    pub fn add(&self, address: &str, now: u64, until: u64) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                address.to_string(),
                Entry {
                    hard: 0,
                    status: "by hand".into(),
                    first: now,
                    last: now,
                    until,
                },
            );
        self.save();
    }

    /// Takes a record made elsewhere (Redis).
    pub fn put(&self, address: &str, entry: Entry) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address.to_string(), entry);
        self.save();
    }

    /// Takes the whole list as Redis holds it.
    pub fn replace(&self, entries: BTreeMap<String, Entry>) {
        *self.entries.lock().unwrap_or_else(|p| p.into_inner()) = entries;
        self.save();
    }

    /// Forgets a recipient; whether it was known.
    pub fn remove(&self, address: &str) -> bool {
        let known = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(address)
            .is_some();
        self.save();
        known
    }

    /// Every record, as kept.
    pub fn all(&self) -> BTreeMap<String, Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn get(&self, address: &str) -> Option<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(address)
            .cloned()
    }

    /// Every recipient refused at `now`, and the records past their time
    /// forgotten.
    pub fn list(&self, now: u64) -> Vec<(String, Entry)> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // Counts that never reached a suppression fade after a year.
        entries.retain(|_, e| e.until > now || (e.until == 0 && now - e.last < 365 * 86_400));
        entries
            .iter()
            .filter(|(_, e)| e.until > now)
            .map(|(a, e)| (a.clone(), e.clone()))
            .collect()
    }

    fn save(&self) {
        let Some(path) = self.file.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            return;
        };
        let text = {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            serde_json::to_vec_pretty(&*entries)
        };
        let tmp = path.with_extension("json.tmp");
        let written = text
            .map_err(std::io::Error::other)
            .and_then(|t| std::fs::write(&tmp, t))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::error!("suppressions: cannot write {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppressed_after_enough_hard_failures_then_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let s = Suppressions::load(Some(dir.path()));
        let day = 86_400;
        assert_eq!(
            s.hard_failure("a@example.org", "5.1.1", 100, 2, 30 * day)
                .until,
            0
        );
        assert_eq!(s.refused("a@example.org", 101), None);
        let e = s.hard_failure("a@example.org", "5.1.1", 200, 2, 30 * day);
        assert_eq!((e.hard, e.until), (2, 200 + 30 * day));
        assert!(s.refused("a@example.org", 201).is_some());
        // Kept across a restart.
        let again = Suppressions::load(Some(dir.path()));
        assert!(again.refused("a@example.org", 201).is_some());
        assert_eq!(again.list(201).len(), 1);
        // Past its time it is refused no more, and a new failure counts
        // from one again.
        assert_eq!(again.refused("a@example.org", 200 + 30 * day), None);
        assert_eq!(
            again
                .hard_failure("a@example.org", "5.1.1", 200 + 31 * day, 2, day)
                .hard,
            1
        );
        assert!(again.remove("a@example.org"));
        assert!(!again.remove("a@example.org"));
    }
}
