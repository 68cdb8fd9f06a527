//! Compromised accounts and hosts: signals counted per key (client IP,
//! login, sender, class), incidents opened when one crosses its threshold,
//! the key's mail held (or refused) while an incident is open, and the
//! postmaster told once when it opens and once when it closes.
//!
//! - `window.rs`: sliding-window sums and distinct counts, bounded;
//! - `baseline.rs`: a key's usual volume, learnt as it runs;
//! - `signals.rs`: the configured signals over those counters;
//! - `store.rs`: the open incidents, kept across restarts;
//! - `by_hand.rs`: incidents opened, changed and closed by an operator;
//! - `redis.rs`: signals and incidents shared through Redis;
//! - `notify.rs`: the webhook and the mail.
//!
//! With the Redis backend every gateway counts into the same windows and
//! sees the same incidents; while Redis fails, each gateway falls back to
//! its own counts and incidents (as `on_failure: local` does for limits),
//! and keeps enforcing every incident it last saw open in Redis (kept in
//! process and under `state_dir`): an outage never lifts a hold. Incidents
//! opened during the outage go to Redis when it answers again.

mod baseline;
mod by_hand;
pub(crate) mod notify;
mod redis;
mod signals;
mod store;
mod window;

pub use notify::{rfc3339, Change, DkimNotice, Document, Linker, Notice, Prepared, WarningNotice};
pub use signals::{window_text, Event, Keys, Reading};
pub use store::Incident;

use crate::config::{IncidentAction, IncidentSettings, KeyKind, Signal};
use crate::limiter::{LimiterError, RedisLimiter};
use arc_swap::ArcSwap;
use signals::Signals;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The incidents last seen open in Redis, enforced while it fails.
    seen: LocalStore,
    scripts: redis::Scripts,
    pub notifier: notify::Notifier,
    /// Incidents opened, by signal and key kind.
    opened: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Messages held (quarantined) because of an open incident.
    pub held: AtomicU64,
    /// Incidents open, as last counted (every second).
    open_now: AtomicU64,
    /// Redis failed: said once until it answers again.
    redis_down: AtomicBool,
    /// The incidents this gateway closed lately, when and why (the
    /// console shows them).
    recently_closed: Mutex<std::collections::VecDeque<(Incident, u64, &'static str)>>,
}

/// How many closed incidents are remembered.
const RECENTLY_CLOSED: usize = 50;

/// One key of one kind, as the incidents' keys.
pub fn keys_of(kind: KeyKind, key: &str) -> Keys<'_> {
    let mut keys = Keys::default();
    match kind {
        KeyKind::Client => keys.client = Some(key),
        KeyKind::User => keys.user = Some(key),
        KeyKind::Sender => keys.sender = Some(key),
        KeyKind::Class => keys.class = Some(key),
    }
    keys
}

/// The keys of a message as (kind, value) pairs, in kind order.
fn pairs<'a>(keys: &Keys<'a>) -> Vec<(KeyKind, &'a str)> {
    KeyKind::ALL
        .into_iter()
        .filter_map(|k| keys.get(k).map(|v| (k, v)))
        .collect()
}

impl Incidents {
    pub fn new(settings: &IncidentSettings) -> Self {
        let store = LocalStore::new(settings.state_dir.as_deref(), now_ms() / 1000);
        let seen = LocalStore::named(
            settings.state_dir.as_deref(),
            store::SEEN_FILE,
            now_ms() / 1000,
        );
        let open_now = AtomicU64::new(store.list(now_ms() / 1000).len() as u64);
        Self {
            signals: ArcSwap::from_pointee(Self::build(settings)),
            store,
            seen,
            scripts: redis::Scripts::default(),
            notifier: notify::Notifier::default(),
            opened: Mutex::new(BTreeMap::new()),
            held: AtomicU64::new(0),
            open_now,
            redis_down: AtomicBool::new(false),
            recently_closed: Mutex::default(),
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
        !self.signals.load().0.is_empty()
    }

    /// Whether an incident may be open: any in this process, or, with
    /// Redis, any on any gateway.
    pub fn may_be_open(&self, redis: Option<&RedisLimiter>) -> bool {
        match redis {
            // With signals, any gateway may have opened one a moment ago:
            // ask. Without, only one opened by hand can be, and the
            // per-second count (`expire`) sees it: Redis is not asked per
            // message for a feature that is not in use.
            Some(_) => self.counting() || self.open_now() > 0 || self.seen.any_open(),
            None => self.store.any_open(),
        }
    }

    /// Redis failed: this gateway goes on with its own counts and
    /// incidents until it answers.
    fn fell_back(&self, e: &LimiterError) {
        if !self.redis_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "incidents: redis failed, this gateway counts and holds on its own meanwhile: {e}"
            );
        }
    }

    fn redis_ok(&self) {
        if self.redis_down.swap(false, Ordering::Relaxed) {
            tracing::info!("incidents: redis answers again, signals and incidents shared again");
        }
    }

    /// The open incident of the first of the keys that has one.
    pub async fn find(
        &self,
        redis: Option<&RedisLimiter>,
        now_ms: u64,
        keys: &Keys<'_>,
    ) -> Option<Incident> {
        let keys = pairs(keys);
        if let Some(r) = redis {
            match self.scripts.find(r, now_ms / 1000, &keys).await {
                Ok(found) => {
                    self.redis_ok();
                    self.found_in_redis(&found, &keys);
                    return found;
                }
                Err(e) => self.fell_back(&e),
            }
            return self.find_without_redis(now_ms / 1000, &keys);
        }
        self.store.find(now_ms / 1000, &keys)
    }

    /// What Redis answered for the keys, kept to be enforced while it
    /// fails.
    fn found_in_redis(&self, found: &Option<Incident>, keys: &[(KeyKind, &str)]) {
        match found {
            Some(i) => self.seen.keep(i),
            None => self.seen.forget(keys),
        }
    }

    /// Redis does not answer: what was open there stays enforced, with
    /// what this gateway opened meanwhile.
    fn find_without_redis(&self, now: u64, keys: &[(KeyKind, &str)]) -> Option<Incident> {
        self.store
            .find(now, keys)
            .or_else(|| self.seen.find(now, keys))
    }

    /// Counts an event; opens (or extends) an incident for every signal it
    /// made cross, and returns those. With `find`, also the open incident
    /// of the first of the keys that has one once the event is counted, as
    /// [`find`](Self::find) (with Redis, in the same round trip).
    #[allow(clippy::too_many_arguments)]
    pub async fn observe(
        &self,
        redis: Option<&RedisLimiter>,
        now_ms: u64,
        keys: &Keys<'_>,
        event: &Event<'_>,
        settings: &IncidentSettings,
        monitor: bool,
        find: bool,
    ) -> (Vec<Incident>, Option<Incident>) {
        let signals = self.signals.load();
        let wanted = if find { pairs(keys) } else { Vec::new() };
        let (crossings, found) = match redis {
            Some(r) => match self
                .scripts
                .observe(r, &signals.0, now_ms, keys, event, &wanted)
                .await
            {
                Ok((c, found)) => {
                    self.redis_ok();
                    if find {
                        self.found_in_redis(&found, &wanted);
                    }
                    (c, found)
                }
                Err(e) => {
                    self.fell_back(&e);
                    let found = if find {
                        self.find_without_redis(now_ms / 1000, &wanted)
                    } else {
                        None
                    };
                    (signals.2.observe(now_ms, keys, event), found)
                }
            },
            None => (
                signals.2.observe(now_ms, keys, event),
                if find {
                    self.store.find(now_ms / 1000, &wanted)
                } else {
                    None
                },
            ),
        };
        let mut out = Vec::new();
        for c in crossings {
            let incident = self.incident(c, now_ms / 1000, settings, monitor);
            out.push(self.open(redis, incident, settings).await);
        }
        (out, found)
    }

    /// [`observe`](Self::observe) without Redis nor `find`, for the stages that
    /// cannot wait.
    pub fn observe_local(
        &self,
        now_ms: u64,
        keys: &Keys<'_>,
        event: &Event<'_>,
        settings: &IncidentSettings,
        monitor: bool,
    ) -> Vec<Incident> {
        let crossings = self.signals.load().2.observe(now_ms, keys, event);
        crossings
            .into_iter()
            .map(|c| {
                let incident = self.incident(c, now_ms / 1000, settings, monitor);
                let (incident, new) = self.store.open(incident);
                if new {
                    self.announce(&incident, settings);
                }
                incident
            })
            .collect()
    }

    fn incident(
        &self,
        c: signals::Crossing,
        now: u64,
        settings: &IncidentSettings,
        monitor: bool,
    ) -> Incident {
        Incident {
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
        }
    }

    /// Opens an incident (or extends the one open for the key), in Redis
    /// when it is used; announces it when it is new.
    async fn open(
        &self,
        redis: Option<&RedisLimiter>,
        incident: Incident,
        settings: &IncidentSettings,
    ) -> Incident {
        let (incident, new) = match redis {
            Some(r) => match self.scripts.open(r, &incident).await {
                Ok(done) => done,
                Err(e) => {
                    self.fell_back(&e);
                    self.store.open(incident)
                }
            },
            None => self.store.open(incident),
        };
        if new {
            self.open_now.fetch_add(1, Ordering::Relaxed);
            self.announce(&incident, settings);
        }
        incident
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
                links: Vec::new(),
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
        {
            let mut recent = self
                .recently_closed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if recent.len() >= RECENTLY_CLOSED {
                recent.pop_front();
            }
            recent.push_back((incident.clone(), now_ms() / 1000, reason));
        }
        self.notifier.send(
            Notice {
                change: Change::Closed,
                at: now_ms() / 1000,
                incident,
                reason: Some(reason),
                links: Vec::new(),
            },
            &settings.notify,
        );
    }

    /// A message from the key of an open incident.
    pub async fn note(
        &self,
        redis: Option<&RedisLimiter>,
        incident: &Incident,
        queue_id: Option<&str>,
        held: bool,
    ) {
        if held {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(r) = redis {
            match self.scripts.note(r, incident, queue_id, held).await {
                Ok(()) => return,
                Err(e) => self.fell_back(&e),
            }
        }
        self.store
            .note(incident.kind, &incident.key, queue_id, held);
    }

    /// Closes the incidents whose time is up (each announced once, by the
    /// gateway that closes it), and counts those still open.
    pub async fn expire(
        &self,
        redis: Option<&RedisLimiter>,
        now_ms: u64,
        settings: &IncidentSettings,
    ) {
        let now = now_ms / 1000;
        for i in self.store.expire(now) {
            self.closed(i, "expired", settings);
        }
        let mut open = self.store.list(now).len() as u64;
        if let Some(r) = redis {
            match self.scripts.all(r).await {
                Ok(all) => {
                    self.redis_ok();
                    let mut still = Vec::new();
                    for i in all {
                        if i.until > now {
                            still.push(i);
                        } else if let Ok(Some(i)) = self.scripts.close(r, i.kind, &i.key).await {
                            self.closed(i, "expired", settings);
                        }
                    }
                    // Incidents opened here while Redis failed go to Redis
                    // now, for every gateway to enforce.
                    for i in self.store.list(now) {
                        if !still.iter().any(|s| s.kind == i.kind && s.key == i.key) {
                            match self.scripts.open(r, &i).await {
                                Ok((shared, _)) => {
                                    self.store.close(i.kind, &i.key);
                                    still.push(shared);
                                }
                                Err(e) => self.fell_back(&e),
                            }
                        }
                    }
                    open = still.len() as u64;
                    self.seen.keep_all(&still);
                }
                Err(e) => {
                    self.fell_back(&e);
                    open = self.list_local(now).len() as u64;
                }
            }
        }
        self.open_now.store(open, Ordering::Relaxed);
    }

    /// The incidents closed lately (newest first), when and why.
    pub fn recently_closed(&self) -> Vec<(Incident, u64, &'static str)> {
        let recent = self
            .recently_closed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        recent.iter().rev().cloned().collect()
    }

    pub async fn list(&self, redis: Option<&RedisLimiter>, now_ms: u64) -> Vec<Incident> {
        let now = now_ms / 1000;
        if let Some(r) = redis {
            match self.scripts.all(r).await {
                Ok(all) => return all.into_iter().filter(|i| i.until > now).collect(),
                Err(e) => self.fell_back(&e),
            }
            return self.list_local(now);
        }
        self.store.list(now)
    }

    /// What this gateway enforces while Redis fails: the incidents opened
    /// here and those last seen open in Redis.
    fn list_local(&self, now: u64) -> Vec<Incident> {
        let mut out = self.store.list(now);
        for i in self.seen.list(now) {
            if !out.iter().any(|o| o.kind == i.kind && o.key == i.key) {
                out.push(i);
            }
        }
        out
    }

    /// Every signal's figure for the keys, for `explain`.
    pub async fn read(
        &self,
        redis: Option<&RedisLimiter>,
        now_ms: u64,
        keys: &Keys<'_>,
    ) -> Vec<Reading> {
        let signals = self.signals.load();
        if let Some(r) = redis {
            match self.scripts.read(r, &signals.0, now_ms, keys).await {
                Ok(v) => return v,
                Err(e) => self.fell_back(&e),
            }
        }
        signals.2.read(now_ms, keys)
    }

    /// Incidents opened so far, by signal and key kind.
    pub fn opened(&self) -> Vec<((String, &'static str), u64)> {
        self.opened
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// Incidents open, as last counted.
    pub fn open_now(&self) -> u64 {
        self.open_now.load(Ordering::Relaxed)
    }

    /// Keys the signals track in this process.
    pub fn tracked_keys(&self) -> usize {
        self.signals.load().2.tracked_keys()
    }

    /// Keys forgotten to make room, and events of new keys left uncounted
    /// (every sampled key was past half its threshold).
    pub fn evictions(&self) -> (u64, u64) {
        self.signals.load().2.evictions()
    }
}
