//! What the console shows of the recent past: the last decisions (one per
//! message, as its summary line says), and why each held message was
//! held. Kept only when a console is configured; the held notes are kept
//! across restarts under `incidents.state_dir`.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One message's decision, as its summary line gives it.
#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
pub struct DecisionLine {
    /// Seconds since the epoch.
    pub at: u64,
    pub queue_id: String,
    pub client_ip: String,
    pub class: String,
    pub sender: String,
    pub auth: String,
    pub rcpt_count: usize,
    pub stage: String,
    pub verdict: String,
    pub rule: String,
    pub reply: String,
    pub incident: String,
}

impl DecisionLine {
    /// Whether every word of `filter` is in one of its fields (case
    /// ignored).
    pub fn matches(&self, filter: &str) -> bool {
        let fields = [
            &self.queue_id,
            &self.client_ip,
            &self.class,
            &self.sender,
            &self.auth,
            &self.stage,
            &self.verdict,
            &self.rule,
            &self.reply,
            &self.incident,
        ];
        filter.split_whitespace().all(|word| {
            let word = word.to_lowercase();
            fields.iter().any(|f| f.to_lowercase().contains(&word))
        })
    }
}

/// Why a message was held, noted when it was.
#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
pub struct HeldNote {
    pub queue_id: String,
    pub at: u64,
    pub client_ip: String,
    pub class: String,
    pub auth: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub rule: String,
    /// The open incident, `kind:key`, or "-".
    pub incident: String,
    pub reason: String,
}

/// The most held notes kept (the oldest go first).
const MAX_HELD_NOTES: usize = 10_000;
/// The file under the state directory.
const HELD_FILE: &str = "console-held.jsonl";

/// The recent decisions and the held notes.
#[derive(Default)]
pub struct History {
    capacity: usize,
    decisions: Mutex<VecDeque<DecisionLine>>,
    held: Mutex<VecDeque<HeldNote>>,
    held_file: Option<PathBuf>,
}

impl History {
    /// Keeps `capacity` decisions (0: none, and no held notes either),
    /// the held notes under `state_dir` when given.
    pub fn new(capacity: usize, state_dir: Option<&Path>) -> Self {
        if capacity == 0 {
            return Self::default();
        }
        let held_file = state_dir.map(|d| d.join(HELD_FILE));
        let mut held: VecDeque<HeldNote> = held_file
            .as_deref()
            .map(crate::files::read_json_lines)
            .unwrap_or_default()
            .into();
        let dropped = held.len().saturating_sub(MAX_HELD_NOTES);
        if dropped > 0 {
            held.drain(..dropped);
            // Written again without what was dropped.
            if let Some(path) = &held_file {
                let mut out = String::new();
                for line in held.iter().filter_map(|n| serde_json::to_string(n).ok()) {
                    out.push_str(&line);
                    out.push('\n');
                }
                let _ = std::fs::write(path, out);
            }
        }
        Self {
            capacity,
            decisions: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            held: Mutex::new(held),
            held_file,
        }
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub fn decision(&self, line: DecisionLine) {
        if !self.enabled() {
            return;
        }
        let mut d = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        if d.len() >= self.capacity {
            d.pop_front();
        }
        d.push_back(line);
    }

    /// The last decisions that match `filter`, newest first, at most
    /// `limit`.
    pub fn decisions(&self, filter: &str, limit: usize) -> Vec<DecisionLine> {
        let d = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        d.iter()
            .rev()
            .filter(|l| l.matches(filter))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Notes why a message is held (and keeps it under the state
    /// directory).
    pub fn held(&self, note: HeldNote) {
        if !self.enabled() {
            return;
        }
        if let Some(path) = &self.held_file {
            if let Err(e) = crate::files::append_json_line(path, &note) {
                tracing::warn!(target: "egress_milter::console", "cannot keep the held note of {} in {}: {e}", note.queue_id, path.display());
            }
        }
        let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() >= MAX_HELD_NOTES {
            h.pop_front();
        }
        h.push_back(note);
    }

    /// The messages noted as held for the incident `kind:key`.
    pub fn held_for(&self, incident: &str) -> Vec<String> {
        let h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        h.iter()
            .filter(|n| n.incident == incident)
            .map(|n| n.queue_id.clone())
            .collect()
    }

    /// Why the message `queue_id` was held, if it was noted.
    pub fn held_note(&self, queue_id: &str) -> Option<HeldNote> {
        let h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        h.iter().rev().find(|n| n.queue_id == queue_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sender: &str, verdict: &str) -> DecisionLine {
        DecisionLine {
            at: 1,
            queue_id: "Q1".into(),
            client_ip: "192.0.2.1".into(),
            class: "apps".into(),
            sender: sender.into(),
            auth: "-".into(),
            rcpt_count: 1,
            stage: "eom".into(),
            verdict: verdict.into(),
            rule: "-".into(),
            reply: "-".into(),
            incident: "-".into(),
        }
    }

    #[test]
    fn keeps_the_last_decisions_and_filters_them_by_every_word() {
        let h = History::new(2, None);
        h.decision(line("a@x.test", "accept"));
        h.decision(line("b@x.test", "reject"));
        h.decision(line("c@x.test", "reject"));
        let all = h.decisions("", 10);
        assert_eq!(
            all.iter().map(|l| l.sender.as_str()).collect::<Vec<_>>(),
            ["c@x.test", "b@x.test"]
        );
        assert_eq!(h.decisions("REJECT c@", 10).len(), 1);
        assert!(h.decisions("reject a@", 10).is_empty());
    }

    #[test]
    fn held_notes_outlive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let note = HeldNote {
            queue_id: "QH1".into(),
            at: 5,
            client_ip: "192.0.2.1".into(),
            class: "apps".into(),
            auth: "-".into(),
            sender: "a@x.test".into(),
            recipients: vec!["r@y.test".into()],
            rule: "incident".into(),
            incident: "sender:a@x.test".into(),
            reason: "incident sender:a@x.test".into(),
        };
        History::new(10, Some(dir.path())).held(note.clone());
        let again = History::new(10, Some(dir.path()));
        assert_eq!(again.held_note("QH1"), Some(note));
        assert_eq!(again.held_note("QH2"), None);
        // Without a console nothing is kept.
        let off = History::new(0, Some(dir.path()));
        assert_eq!(off.held_note("QH1"), None);
    }
}
