//! The watch of our own reputation (`reputation`): every egress address
//! and domain asked of every blocklist once per period, the queries spread
//! over it, and the records receivers judge us by (SPF, DKIM, DMARC, MX,
//! reverse DNS: the self-check's rows) compared with their last state. A
//! change is told once (through `incidents.notify`); a listing may pause
//! the mail of some classes (the `reputation` check of the session).
//!
//! - `state.rs`: what is known, and what a new answer changes;
//! - `tally.rs`: who sent how much, for a listing notice;
//! - `notice.rs`: the notices;
//! - `report.rs`: `egress-milter reputation`, and the metrics;
//! - `shared.rs`: one gateway running the rounds for all, through Redis.

mod notice;
mod report;
pub mod shared;
pub mod state;
pub mod tally;

use crate::config::{Config, ReputationSettings};
use crate::dnsbl::{self as lists, Answer, Target};
use crate::incidents::{notify::Notifier, now_ms};
use crate::limiter::RedisLimiter;
use arc_swap::ArcSwapOption;
use mail_auth::MessageAuthenticator;
use state::{Change, State};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The file the state is kept in, under `incidents.state_dir`.
const STATE_FILE: &str = "reputation.json";

#[derive(Default)]
pub struct Watch {
    state: Mutex<State>,
    /// The first listing in force: what pauses mail, read per message.
    listed: ArcSwapOption<(String, String)>,
    /// Errors by list.
    errors: Mutex<BTreeMap<String, u64>>,
    /// When each name was last asked: never twice in a period.
    asked: Mutex<HashMap<String, Instant>>,
    pub tally: tally::Tally,
}

impl Watch {
    /// The watch, with the state kept under `state_dir` if any.
    pub fn load(state_dir: Option<&Path>) -> Self {
        let watch = Watch::default();
        if let Some(path) = state_dir.map(|d| d.join(STATE_FILE)) {
            match std::fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                    Ok(state) => watch.set(state),
                    Err(e) => tracing::warn!(
                        "reputation: {} is not readable, starting afresh: {e}",
                        path.display()
                    ),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("reputation: cannot read {}: {e}", path.display()),
            }
        }
        watch
    }

    /// Takes a state read elsewhere (Redis, the state file).
    pub fn set(&self, state: State) {
        self.listed.store(state.first_listed().map(Arc::new));
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// The listing that pauses mail now, if any: (target, list).
    pub fn listed(&self) -> Option<Arc<(String, String)>> {
        self.listed.load_full()
    }

    pub fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut state);
        self.listed.store(state.first_listed().map(Arc::new));
        out
    }

    fn error(&self, list: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(list.to_string()).or_default() += 1;
    }

    fn save(&self, state_dir: Option<&PathBuf>) {
        let Some(dir) = state_dir else { return };
        let path = dir.join(STATE_FILE);
        let text = match serde_json::to_vec_pretty(&self.state()) {
            Ok(t) => t,
            Err(e) => return tracing::error!("reputation: state not saved: {e}"),
        };
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &path)) {
            tracing::error!("reputation: cannot write {}: {e}", path.display());
        }
    }
}

/// Every (target, list) pair the settings watch, in a stable order.
fn pairs(settings: &ReputationSettings) -> Vec<(Target, crate::address::Domain)> {
    let mut out = Vec::new();
    for ip in &settings.addresses {
        for list in &settings.ip_lists {
            out.push((Target::Address(*ip), list.clone()));
        }
    }
    for d in &settings.domains {
        for list in &settings.domain_lists {
            out.push((Target::Domain(d.clone()), list.clone()));
        }
    }
    out
}

fn now_s() -> u64 {
    now_ms() / 1000
}

/// One round: the records, and beside them every list for every target,
/// spread over `pace` when given (no name asked again before `pace` has
/// passed since it last was); each change told as soon as found. A slow
/// records check (DNS timing out) does not hold the lists back.
pub async fn round(
    watch: &Watch,
    resolver: &MessageAuthenticator,
    notifier: &Notifier,
    redis: Option<&RedisLimiter>,
    config: &Config,
    settings: &ReputationSettings,
    pace: Option<Duration>,
) {
    let teller = Teller {
        watch,
        notifier,
        redis,
        config,
    };
    let records = async {
        let rows = crate::selfcheck::records(resolver, config, &settings.domains).await;
        let changes = watch.update(|s| s.records(&rows, now_s()));
        teller.tell_records(&changes).await;
    };
    tokio::join!(records, ask_lists(&teller, resolver, settings, pace));
    watch.update(|s| s.last_round = now_s());
    teller.keep().await;
}

/// Where changes go: the notice, and the state kept at once (under
/// `state_dir`, and in Redis for the other gateways), so that a successor
/// never tells a change again.
struct Teller<'a> {
    watch: &'a Watch,
    notifier: &'a Notifier,
    redis: Option<&'a RedisLimiter>,
    config: &'a Config,
}

impl Teller<'_> {
    async fn keep(&self) {
        self.watch.save(self.config.incidents.state_dir.as_ref());
        if let Some(r) = self.redis {
            if let Err(e) = shared::save(r, &self.watch.state()).await {
                tracing::warn!(target: "egress_milter::reputation", "reputation: state not shared: {e}");
            }
        }
    }

    /// The records a round found changed: each logged, one notice.
    async fn tell_records(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        for c in changes {
            log(c);
        }
        self.notifier
            .send_prepared(notice::records(changes), &self.config.incidents.notify);
        self.keep().await;
    }

    /// Logs a change, sends its notice and keeps the state.
    async fn tell(&self, change: &Change) {
        log(change);
        let mut top = Vec::new();
        if change.change == "listed" {
            let local = || {
                self.watch
                    .tally
                    .top(now_ms(), notice::TOP_HOURS, notice::TOP_N)
            };
            top = match self.redis {
                Some(r) => {
                    let _ = shared::flush(r, &self.watch.tally).await;
                    shared::top(r, now_ms(), notice::TOP_HOURS, notice::TOP_N)
                        .await
                        .unwrap_or_else(|_| local())
                }
                None => local(),
            };
        }
        self.notifier.send_prepared(
            notice::prepared(change, &top),
            &self.config.incidents.notify,
        );
        self.keep().await;
    }
}

/// Every list for every target, once.
async fn ask_lists(
    teller: &Teller<'_>,
    resolver: &MessageAuthenticator,
    settings: &ReputationSettings,
    pace: Option<Duration>,
) {
    let watch = teller.watch;
    let start = Instant::now();
    let pairs = pairs(settings);
    let keys: Vec<String> = pairs
        .iter()
        .map(|(t, l)| state::listing_key(&t.to_string(), l.as_str()))
        .collect();
    watch.update(|s| s.retain(&keys));
    let step = pace.map(|p| p / pairs.len().max(1) as u32);
    for (i, (target, list)) in pairs.iter().enumerate() {
        let name = lists::query_name(target, list, settings.dqs_key.as_deref());
        if let (Some(step), Some(pace)) = (step, pace) {
            let slot = start + step * i as u32;
            let last = watch
                .asked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .copied();
            tokio::time::sleep_until(last.map_or(slot, |l| slot.max(l + pace))).await;
        }
        watch
            .asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), Instant::now());
        let answer = lists::ask(resolver, &name).await;
        if let Answer::Error(e) = &answer {
            watch.error(list.as_str());
            tracing::warn!(target: "egress_milter::reputation", "reputation: {name}: no answer to go by: {e}");
        }
        let target = target.to_string();
        if let Some(change) = watch.update(|s| s.answer(&target, list.as_str(), &answer, now_s())) {
            teller.tell(&change).await;
        }
    }
}

/// The log line of a change.
fn log(change: &Change) {
    tracing::warn!(
        target: "egress_milter::reputation",
        change = change.change.as_str(),
        target_name = change.target.as_str(),
        list = change.list.as_str(),
        was = change.was.as_str(),
        now = change.now.as_str(),
        "reputation: {} {} on {}",
        change.target,
        change.change,
        change.list
    );
}
