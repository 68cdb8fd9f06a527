//! Open incidents, in this process: a small map, written atomically to
//! `incidents.json` under `incidents.state_dir` whenever it changes, so
//! that open incidents survive a restart and a reload.

use crate::config::{IncidentAction, KeyKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Queue ids of held messages kept per incident, at most.
pub const MAX_HELD: usize = 1000;
/// The state file's name under `state_dir`.
pub const STATE_FILE: &str = "incidents.json";
/// The file of the incidents last seen open in Redis, under `state_dir`:
/// enforced while Redis does not answer, also after a restart.
pub const SEEN_FILE: &str = "incidents-seen.json";
/// The most a state file may hold when it is read back.
const MAX_STATE_FILE: u64 = 64 << 20;

/// An incident: a key whose mail is held (or refused) until `until`.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct Incident {
    pub kind: KeyKind,
    pub key: String,
    /// The signal that opened it, or `operator` when opened by hand.
    pub signal: String,
    /// The figures that opened it, in words.
    pub figures: String,
    pub action: IncidentAction,
    /// Opened in monitor mode: logged and notified, nothing held.
    pub monitor: bool,
    /// Unix seconds.
    pub opened: u64,
    pub until: u64,
    /// Messages of the key accepted in the window that opened it, before
    /// the incident: the postmaster may want to hold them too.
    pub earlier: Vec<String>,
    /// Messages from the key since it opened (the one that opened it
    /// included), and the queue ids of those held.
    pub messages: u64,
    pub first_queue_id: Option<String>,
    pub last_queue_id: Option<String>,
    pub held: Vec<String>,
}

impl Incident {
    /// `kind:key`, as the commands and the logs name it.
    pub fn name(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.key)
    }
}

#[derive(Default, Deserialize, Serialize)]
struct State {
    incidents: Vec<Incident>,
}

pub struct LocalStore {
    open: Mutex<BTreeMap<(KeyKind, String), Incident>>,
    file: Option<PathBuf>,
}

impl LocalStore {
    /// The store, with the incidents the state file holds (those still
    /// open at `now`, unix seconds).
    pub fn new(state_dir: Option<&Path>, now: u64) -> Self {
        Self::named(state_dir, STATE_FILE, now)
    }

    /// A store kept in `name` under `state_dir`.
    pub fn named(state_dir: Option<&Path>, name: &str, now: u64) -> Self {
        let file = state_dir.map(|d| d.join(name));
        // Said once, for the main store.
        match state_dir.filter(|_| name == STATE_FILE) {
            // A run from a checkout, or before the package made it: not an
            // error, the incidents are kept in memory.
            Some(d) if !d.exists() => tracing::info!(
                state_dir = %d.display(),
                "incidents.state_dir does not exist: open incidents are kept in memory only (create it to keep them across restarts)"
            ),
            Some(d) if !d.is_dir() => tracing::error!(
                state_dir = %d.display(),
                "incidents.state_dir is not a directory: open incidents will not survive a restart"
            ),
            _ => {}
        }
        let mut open = BTreeMap::new();
        if let Some(f) = &file {
            match crate::files::read_bounded(f, MAX_STATE_FILE) {
                Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                    Ok(state) => {
                        for i in state.incidents.into_iter().filter(|i| i.until > now) {
                            open.insert((i.kind, i.key.clone()), i);
                        }
                        tracing::info!(
                            file = %f.display(),
                            open = open.len(),
                            "open incidents read back"
                        );
                    }
                    Err(e) => tracing::error!(
                        file = %f.display(),
                        "incident state unreadable, starting with none: {e}"
                    ),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::error!(
                    file = %f.display(),
                    "incident state unreadable, starting with none: {e}"
                ),
            }
        }
        Self {
            open: Mutex::new(open),
            file,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(KeyKind, String), Incident>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens an incident; one already open for the key is extended to the
    /// later `until` instead. Returns the incident and whether it is new.
    pub fn open(&self, incident: Incident) -> (Incident, bool) {
        let mut map = self.lock();
        let id = (incident.kind, incident.key.clone());
        let result = match map.get_mut(&id) {
            Some(open) if open.until > incident.opened => {
                open.until = open.until.max(incident.until);
                (open.clone(), false)
            }
            _ => {
                map.insert(id, incident.clone());
                (incident, true)
            }
        };
        self.save(&map);
        result
    }

    /// Keeps a copy of an incident as another store has it (Redis),
    /// replacing the one kept for its key; written only when what it
    /// enforces (action, end) changed.
    pub fn keep(&self, incident: &Incident) {
        let mut map = self.lock();
        let id = (incident.kind, incident.key.clone());
        let same = map
            .get(&id)
            .is_some_and(|i| i.until == incident.until && i.action == incident.action);
        if !same {
            map.insert(id, incident.clone());
            self.save(&map);
        }
    }

    /// Keeps exactly these incidents (all that another store has open).
    pub fn keep_all(&self, incidents: &[Incident]) {
        let mut map = self.lock();
        let same = map.len() == incidents.len()
            && incidents.iter().all(|i| {
                map.get(&(i.kind, i.key.clone()))
                    .is_some_and(|k| k.until == i.until && k.action == i.action)
            });
        if !same {
            *map = incidents
                .iter()
                .map(|i| ((i.kind, i.key.clone()), i.clone()))
                .collect();
            self.save(&map);
        }
    }

    /// Forgets the copies kept for these keys (the other store has none
    /// open for them).
    pub fn forget(&self, keys: &[(KeyKind, &str)]) {
        let mut map = self.lock();
        let before = map.len();
        for (kind, key) in keys {
            map.remove(&(*kind, (*key).to_string()));
        }
        if map.len() != before {
            self.save(&map);
        }
    }

    /// Sets the action of an open incident; returns it changed, or None
    /// when none is open for the key.
    pub fn set_action(&self, kind: KeyKind, key: &str, action: IncidentAction) -> Option<Incident> {
        let mut map = self.lock();
        let i = map.get_mut(&(kind, key.to_string()))?;
        i.action = action;
        let changed = i.clone();
        self.save(&map);
        Some(changed)
    }

    pub fn any_open(&self) -> bool {
        !self.lock().is_empty()
    }

    /// The open incident of the first of these keys that has one.
    pub fn find(&self, now: u64, keys: &[(KeyKind, &str)]) -> Option<Incident> {
        let map = self.lock();
        keys.iter().find_map(|(kind, key)| {
            map.get(&(*kind, (*key).to_string()))
                .filter(|i| i.until > now)
                .cloned()
        })
    }

    /// A message from the key of an open incident: counted, and its queue
    /// id kept when it was held.
    pub fn note(&self, kind: KeyKind, key: &str, queue_id: Option<&str>, held: bool) {
        let mut map = self.lock();
        let Some(i) = map.get_mut(&(kind, key.to_string())) else {
            return;
        };
        i.messages += 1;
        if let Some(q) = queue_id {
            if i.first_queue_id.is_none() {
                i.first_queue_id = Some(q.to_string());
            }
            i.last_queue_id = Some(q.to_string());
            if held && i.held.len() < MAX_HELD && !i.held.iter().any(|h| h == q) {
                i.held.push(q.to_string());
            }
        }
        self.save(&map);
    }

    pub fn close(&self, kind: KeyKind, key: &str) -> Option<Incident> {
        let mut map = self.lock();
        let closed = map.remove(&(kind, key.to_string()));
        if closed.is_some() {
            self.save(&map);
        }
        closed
    }

    /// Closes the incidents whose time is up; returns them.
    pub fn expire(&self, now: u64) -> Vec<Incident> {
        let mut map = self.lock();
        let done: Vec<(KeyKind, String)> = map
            .iter()
            .filter(|(_, i)| i.until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let closed: Vec<Incident> = done.iter().filter_map(|k| map.remove(k)).collect();
        if !closed.is_empty() {
            self.save(&map);
        }
        closed
    }

    pub fn list(&self, now: u64) -> Vec<Incident> {
        self.lock()
            .values()
            .filter(|i| i.until > now)
            .cloned()
            .collect()
    }

    /// Writes the state file: a temporary file in the same directory,
    /// renamed over the old one, so a crash leaves the old or the new.
    fn save(&self, map: &BTreeMap<(KeyKind, String), Incident>) {
        let Some(file) = &self.file else {
            return;
        };
        let state = State {
            incidents: map.values().cloned().collect(),
        };
        let result = (|| -> std::io::Result<()> {
            let dir = file.parent().unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            serde_json::to_writer(&mut tmp, &state)?;
            tmp.as_file().sync_data()?;
            tmp.persist(file).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(file = %file.display(), "cannot write incident state: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(key: &str, until: u64) -> Incident {
        Incident {
            kind: KeyKind::User,
            key: key.into(),
            signal: "spray".into(),
            figures: "60 distinct_recipient_domains in 1h (threshold 50/h)".into(),
            action: IncidentAction::Hold,
            monitor: false,
            opened: 1000,
            until,
            earlier: vec!["Q1".into()],
            messages: 0,
            first_queue_id: None,
            last_queue_id: None,
            held: Vec::new(),
        }
    }

    #[test]
    fn open_incidents_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(Some(dir.path()), 1000);
        let (_, new) = s.open(incident("alice", 5000));
        assert!(new);
        // Opened again while open: extended, not new.
        let (i, new) = s.open(incident("alice", 9000));
        assert!(!new);
        assert_eq!(i.until, 9000);
        s.open(incident("bob", 1500));
        s.note(KeyKind::User, "alice", Some("QH1"), true);
        s.note(KeyKind::User, "alice", Some("QH2"), true);
        drop(s);
        // Read back at 2000: bob's has run out, alice's is open with its
        // held messages.
        let s = LocalStore::new(Some(dir.path()), 2000);
        let open = s.list(2000);
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].held, ["QH1", "QH2"]);
        assert_eq!(open[0].first_queue_id.as_deref(), Some("QH1"));
        assert!(s.find(2000, &[(KeyKind::User, "alice")]).is_some());
        assert!(s.find(2000, &[(KeyKind::Client, "alice")]).is_none());
        assert_eq!(s.expire(9000).len(), 1);
        assert!(s.list(9000).is_empty());
    }

    #[test]
    fn a_damaged_state_file_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let s = LocalStore::new(Some(dir.path()), 0);
        assert!(s.list(0).is_empty());
        s.open(incident("carol", 10));
        assert_eq!(LocalStore::new(Some(dir.path()), 0).list(0).len(), 1);
    }
}
