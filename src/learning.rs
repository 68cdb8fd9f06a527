//! Learning mode: while a class runs in `mode: monitor`, the envelope
//! senders and From: addresses its messages use are recorded (with counts
//! and first and last seen), so that its `sender_addresses` can be written
//! from what it really sends before the class is enforced.
//! `egress-milter senders --class NAME` prints them.
//!
//! Bounded: at most [`MAX_PER_CLASS`] addresses of each kind per class; a
//! new address past that is counted, not kept. Kept across restarts in
//! `senders.json` under the state directory (`incidents.state_dir`),
//! written at most every [`SAVE_INTERVAL`] and at shutdown.

use crate::address::Address;
use crate::incidents::notify::rfc3339;
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::Duration,
};

pub const MAX_PER_CLASS: usize = 10_000;
pub const SAVE_INTERVAL: Duration = Duration::from_secs(10);
const STATE_FILE: &str = "senders.json";
/// The largest state file read back.
const MAX_STATE_SIZE: u64 = 64 << 20;

#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub struct Seen {
    pub messages: u64,
    /// Unix seconds.
    pub first: u64,
    pub last: u64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct ClassSeen {
    #[serde(default)]
    envelope: BTreeMap<String, Seen>,
    #[serde(default)]
    from: BTreeMap<String, Seen>,
    /// Addresses not kept because the class had MAX_PER_CLASS already.
    #[serde(default)]
    dropped: u64,
}

#[derive(Default, Deserialize, Serialize)]
struct State {
    classes: BTreeMap<String, ClassSeen>,
}

pub struct Learned {
    file: Option<PathBuf>,
    state: Mutex<State>,
    dirty: AtomicBool,
}

/// How `senders` prints what was seen.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// YAML to paste into the class: `sender_addresses:` and
    /// `from_domains:`.
    Yaml,
    /// One envelope sender a line, for a file source.
    File,
}

fn note(map: &mut BTreeMap<String, Seen>, dropped: &mut u64, address: &Address, now: u64) {
    let key = address.to_string();
    if let Some(s) = map.get_mut(&key) {
        s.messages += 1;
        s.last = now;
    } else if map.len() < MAX_PER_CLASS {
        map.insert(
            key,
            Seen {
                messages: 1,
                first: now,
                last: now,
            },
        );
    } else {
        *dropped += 1;
    }
}

impl Learned {
    /// Reads back what an earlier run saw (a missing file is a first run;
    /// an unreadable one is logged and started afresh).
    pub fn new(state_dir: Option<&Path>) -> Self {
        let file = state_dir.filter(|d| d.is_dir()).map(|d| d.join(STATE_FILE));
        let state = file
            .as_ref()
            .filter(|f| f.exists())
            .and_then(|f| {
                let read = crate::files::read_bounded(f, MAX_STATE_SIZE)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<State>(&b).map_err(|e| e.to_string()));
                match read {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::error!(file = %f.display(), "cannot read learned senders, starting afresh: {e}");
                        None
                    }
                }
            })
            .unwrap_or_default();
        Self {
            file,
            state: Mutex::new(state),
            dirty: AtomicBool::new(false),
        }
    }

    /// One message of a class in monitor mode, with its envelope sender
    /// and its From: mailbox, when they are addresses.
    pub fn record(
        &self,
        class: &str,
        envelope: Option<&Address>,
        from: Option<&Address>,
        now: u64,
    ) {
        if envelope.is_none() && from.is_none() {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let c = state.classes.entry(class.to_string()).or_default();
        if let Some(a) = envelope {
            note(&mut c.envelope, &mut c.dropped, a, now);
        }
        if let Some(a) = from {
            note(&mut c.from, &mut c.dropped, a, now);
        }
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Writes the state file if something changed: a temporary file renamed
    /// over the old one.
    pub fn save(&self) {
        let Some(file) = &self.file else { return };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let json = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            serde_json::to_vec(&*state)
        };
        let result = (|| -> std::io::Result<()> {
            let dir = file.parent().unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, &json?)?;
            tmp.as_file().sync_data()?;
            tmp.persist(file).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = result {
            self.dirty.store(true, Ordering::Relaxed);
            tracing::error!(file = %file.display(), "cannot write learned senders: {e}");
        }
    }

    /// Saves every [`SAVE_INTERVAL`], until aborted.
    pub fn run_saver(self: std::sync::Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAVE_INTERVAL);
            loop {
                tick.tick().await;
                let me = self.clone();
                if tokio::task::spawn_blocking(move || me.save())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    }

    /// What a class was seen sending, as `format` says.
    pub fn report(&self, class: &str, format: Format) -> String {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = state.classes.get(class) else {
            return format!(
                "# nothing seen for class {class}: senders are recorded while a class runs in mode: monitor\n"
            );
        };
        let seen = |s: &Seen| {
            format!(
                "{} message(s), {} .. {}",
                s.messages,
                rfc3339(s.first),
                rfc3339(s.last)
            )
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# class {class}: {} envelope sender(s), {} From: address(es) seen in monitor mode",
            c.envelope.len(),
            c.from.len()
        );
        if c.dropped > 0 {
            let _ = writeln!(
                out,
                "# {} more not kept: at most {MAX_PER_CLASS} addresses of each kind are",
                c.dropped
            );
        }
        match format {
            Format::File => {
                for (a, s) in &c.envelope {
                    let _ = writeln!(out, "{a}  # {}", seen(s));
                }
            }
            Format::Yaml => {
                let _ = writeln!(out, "sender_addresses:");
                for (a, s) in &c.envelope {
                    let _ = writeln!(
                        out,
                        "  - \"{}\"  # {}",
                        a.replace('\\', "\\\\").replace('"', "\\\""),
                        seen(s)
                    );
                }
                let mut domains: BTreeMap<String, u64> = BTreeMap::new();
                let _ = writeln!(out, "# From: addresses:");
                for (a, s) in &c.from {
                    let _ = writeln!(out, "#   {a}  # {}", seen(s));
                    if let Some((_, d)) = a.rsplit_once('@') {
                        *domains.entry(d.to_string()).or_default() += s.messages;
                    }
                }
                let _ = writeln!(out, "from_domains:");
                for (d, n) in &domains {
                    let _ = writeln!(out, "  - {d}  # {n} message(s)");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn counts_bounds_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let l = Learned::new(Some(dir.path()));
        l.record(
            "crm",
            Some(&a("noreply@example.com")),
            Some(&a("billing@example.com")),
            100,
        );
        l.record("crm", Some(&a("\"noreply\"@Example.COM")), None, 200);
        for i in 0..MAX_PER_CLASS + 5 {
            l.record("bulk", Some(&a(&format!("u{i}@example.com"))), None, 1);
        }
        l.save();
        let again = Learned::new(Some(dir.path()));
        let r = again.report("crm", Format::Yaml);
        assert!(r.contains("- \"noreply@example.com\"  # 2 message(s), 1970-01-01T00:01:40Z .. 1970-01-01T00:03:20Z"), "{r}");
        assert!(r.contains("#   billing@example.com"), "{r}");
        assert!(
            r.contains("from_domains:\n  - example.com  # 1 message(s)"),
            "{r}"
        );
        let f = again.report("crm", Format::File);
        assert_eq!(f.lines().filter(|l| !l.starts_with('#')).count(), 1, "{f}");
        let b = again.report("bulk", Format::File);
        assert!(b.contains("# 5 more not kept"), "{b}");
        assert_eq!(
            b.lines().filter(|l| !l.starts_with('#')).count(),
            MAX_PER_CLASS
        );
        assert!(again
            .report("none", Format::Yaml)
            .starts_with("# nothing seen"));
    }
}
