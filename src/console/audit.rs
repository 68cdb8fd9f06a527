//! The audit log: every action taken in the console or through a link,
//! who took it, when, on what, and how it ended. A JSON line each in
//! `console-audit.log` under `incidents.state_dir` (kept), and a log line.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Seconds since the epoch.
    pub at: u64,
    /// The user, or `link` for a one-click link.
    pub user: String,
    pub action: String,
    pub target: String,
    /// `ok`, or why it failed.
    pub result: String,
}

/// The file under the state directory.
const AUDIT_FILE: &str = "console-audit.log";
/// The entries the console shows (the file keeps all).
const SHOWN: usize = 1000;

#[derive(Default)]
pub struct Audit {
    recent: Mutex<VecDeque<Entry>>,
    file: Option<PathBuf>,
}

impl Audit {
    pub fn load(state_dir: Option<&Path>) -> Self {
        let file = state_dir.map(|d| d.join(AUDIT_FILE));
        let recent: VecDeque<Entry> = file
            .as_deref()
            .map(|f| crate::files::read_json_tail(f, SHOWN))
            .unwrap_or_default();
        Self {
            recent: Mutex::new(recent),
            file,
        }
    }

    pub fn record(&self, entry: Entry) {
        tracing::info!(
            target: "egress_milter::console",
            user = %entry.user,
            action = %entry.action,
            target_key = %entry.target,
            result = %entry.result,
            "console action"
        );
        if let Some(path) = &self.file {
            if let Err(e) = crate::files::append_json_line(path, &entry) {
                tracing::error!(target: "egress_milter::console", "cannot write the audit log {}: {e}", path.display());
            }
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == SHOWN {
            recent.pop_front();
        }
        recent.push_back(entry);
    }

    /// The last entries, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Entry> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().rev().take(limit).cloned().collect()
    }
}
