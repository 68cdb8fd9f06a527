//! Compromised accounts and hosts: signals counted per key (client IP,
//! login, sender, class), incidents opened when one crosses its threshold,
//! the key's mail held (or refused) while an incident is open, and the
//! postmaster told once when it opens and once when it closes.
//!
//! - `window.rs`: sliding-window sums and distinct counts, bounded;
//! - `baseline.rs`: a key's usual volume, learnt as it runs;
//! - `signals.rs`: the configured signals over those counters;
//! - `store.rs`: the open incidents, kept across restarts;
//! - `notify.rs`: the webhook and the mail.

mod baseline;
mod notify;
mod signals;
mod store;
mod window;

pub use notify::{rfc3339, Change, Document, Notice};
pub use signals::{window_text, Event, Keys, Reading};
pub use store::Incident;

use crate::config::{IncidentAction, IncidentSettings, KeyKind, Signal};
use arc_swap::ArcSwap;
use signals::Signals;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::LocalStore;

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The command that releases quarantined messages in Sendmail's queue
/// (they leave at the next queue run).
pub fn sendmail_release(ids: &[String]) -> String {
    let mut out = "sendmail -Q -qQ".to_string();
    for id in ids {
        out.push_str(" -qI");
        out.push_str(id);
    }
    out
}

pub struct Incidents {
    /// The signals and the configuration they were built from; rebuilt by
    /// a reload that changes them (their counts start again).
    signals: ArcSwap<(Vec<Signal>, usize, Signals)>,
    store: LocalStore,
    pub notifier: notify::Notifier,
    /// Incidents opened, by signal and key kind.
    opened: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Messages held (quarantined) because of an open incident.
    pub held: AtomicU64,
}

impl Incidents {
    pub fn new(settings: &IncidentSettings) -> Self {
        Self {
            signals: ArcSwap::from_pointee(Self::build(settings)),
            store: LocalStore::new(settings.state_dir.as_deref(), now_ms() / 1000),
            notifier: notify::Notifier::default(),
            opened: Mutex::new(BTreeMap::new()),
            held: AtomicU64::new(0),
        }
    }

    fn build(settings: &IncidentSettings) -> (Vec<Signal>, usize, Signals) {
        (
            settings.signals.clone(),
            settings.max_keys,
            Signals::new(&settings.signals, settings.max_keys),
        )
    }

    /// Takes a reloaded configuration: signals that changed start counting
    /// afresh; open incidents stay open.
    pub fn reconfigure(&self, settings: &IncidentSettings) {
        let current = self.signals.load();
        if current.0 != settings.signals || current.1 != settings.max_keys {
            self.signals.store(Arc::new(Self::build(settings)));
        }
    }

    /// Whether anything is counted at all.
    pub fn counting(&self) -> bool {
        !self.signals.load().2.is_empty()
    }

    /// Whether any incident is open (opened by hand, or read back).
    pub fn any_open(&self) -> bool {
        self.store.any_open()
    }

    /// The open incident of the first of the keys that has one.
    pub fn find(&self, now_ms: u64, keys: &Keys<'_>) -> Option<Incident> {
        let keys: Vec<(KeyKind, &str)> = KeyKind::ALL
            .into_iter()
            .filter_map(|k| keys.get(k).map(|v| (k, v)))
            .collect();
        self.store.find(now_ms / 1000, &keys)
    }

    /// Counts an event; opens (or extends) an incident for every signal it
    /// made cross. Returns the incidents it opened or extended.
    pub fn observe(
        &self,
        now_ms: u64,
        keys: &Keys<'_>,
        event: &Event<'_>,
        settings: &IncidentSettings,
        monitor: bool,
    ) -> Vec<Incident> {
        let crossings = self.signals.load().2.observe(now_ms, keys, event);
        let now = now_ms / 1000;
        let mut out = Vec::new();
        for c in crossings {
            let incident = Incident {
                kind: c.kind,
                key: c.key,
                signal: c.signal,
                figures: c.figures,
                action: settings.action,
                monitor,
                opened: now,
                until: now + settings.block_for.as_secs(),
                earlier: c.earlier,
                messages: 0,
                first_queue_id: None,
                last_queue_id: None,
                held: Vec::new(),
            };
            let (incident, new) = self.store.open(incident);
            if new {
                self.announce(&incident, settings);
            }
            out.push(incident);
        }
        out
    }

    fn announce(&self, incident: &Incident, settings: &IncidentSettings) {
        if let Ok(mut m) = self.opened.lock() {
            *m.entry((incident.signal.clone(), incident.kind.as_str()))
                .or_default() += 1;
        }
        tracing::warn!(
            target: "egress_milter::incident",
            incident = incident.name(),
            signal = incident.signal,
            figures = incident.figures,
            action = incident.action.as_str(),
            monitor = incident.monitor,
            until = rfc3339(incident.until),
            earlier = incident.earlier.join(" "),
            "incident opened"
        );
        self.notifier.send(
            Notice {
                change: Change::Opened,
                incident: incident.clone(),
                at: incident.opened,
                reason: None,
            },
            &settings.notify,
        );
    }

    fn closed(&self, incident: Incident, reason: &'static str, settings: &IncidentSettings) {
        tracing::warn!(
            target: "egress_milter::incident",
            incident = incident.name(),
            signal = incident.signal,
            messages = incident.messages,
            held = incident.held.join(" "),
            reason,
            "incident closed"
        );
        self.notifier.send(
            Notice {
                change: Change::Closed,
                at: now_ms() / 1000,
                incident,
                reason: Some(reason),
            },
            &settings.notify,
        );
    }

    /// A message from the key of an open incident.
    pub fn note(&self, incident: &Incident, queue_id: Option<&str>, held: bool) {
        if held {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
        self.store
            .note(incident.kind, &incident.key, queue_id, held);
    }

    /// Opens an incident by hand (`incidents open`).
    pub fn open_by_hand(
        &self,
        kind: KeyKind,
        key: &str,
        duration: Duration,
        action: IncidentAction,
        settings: &IncidentSettings,
    ) -> (Incident, bool) {
        let now = now_ms() / 1000;
        let incident = Incident {
            kind,
            key: key.to_string(),
            signal: "operator".into(),
            figures: "opened by hand".into(),
            action,
            monitor: false,
            opened: now,
            until: now + duration.as_secs(),
            earlier: Vec::new(),
            messages: 0,
            first_queue_id: None,
            last_queue_id: None,
            held: Vec::new(),
        };
        let (incident, new) = self.store.open(incident);
        if new {
            self.announce(&incident, settings);
        }
        (incident, new)
    }

    /// Closes an incident by hand (`incidents close`).
    pub fn close(&self, kind: KeyKind, key: &str, settings: &IncidentSettings) -> Option<Incident> {
        let closed = self.store.close(kind, key)?;
        self.closed(closed.clone(), "closed by hand", settings);
        Some(closed)
    }

    /// Closes the incidents whose time is up.
    pub fn expire(&self, now_ms: u64, settings: &IncidentSettings) {
        for i in self.store.expire(now_ms / 1000) {
            self.closed(i, "expired", settings);
        }
    }

    pub fn list(&self, now_ms: u64) -> Vec<Incident> {
        self.store.list(now_ms / 1000)
    }

    /// Every signal's figure for the keys, for `explain`.
    pub fn read(&self, now_ms: u64, keys: &Keys<'_>) -> Vec<Reading> {
        self.signals.load().2.read(now_ms, keys)
    }

    /// Incidents opened so far, by signal and key kind.
    pub fn opened(&self) -> Vec<((String, &'static str), u64)> {
        self.opened
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// Keys the signals track in this process.
    pub fn tracked_keys(&self) -> usize {
        self.signals.load().2.tracked_keys()
    }

    /// The background work: delivering notices, and closing incidents
    /// whose time is up (every second).
    pub async fn run(
        self: Arc<Self>,
        gateway: String,
        settings: impl Fn() -> Arc<crate::config::Config>,
    ) {
        let notifier = self.clone();
        let deliver = tokio::spawn(async move { notifier.notifier.run(gateway).await });
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            self.expire(now_ms(), &settings().incidents);
            if deliver.is_finished() {
                break;
            }
        }
    }
}
