//! DKIM keys that rotate themselves (`dkim.rotation`), never ahead of DNS:
//!
//! - `ring.rs`: the keys and the schedule that moves them;
//! - `store.rs`: the keys on disk, under `key_dir`;
//! - `dns.rs`: whether DNS serves a key as made;
//! - `publish.rs`: the records sent to the primary (`publish: rfc2136`);
//! - `driver.rs`: one step as the daemon takes it;
//! - `command.rs`: `egress-milter dkim status | rotate | records`.
//!
//! Keys in `dkim.keys` stay: for a rotated domain they sign until the
//! rotation has an active key of the same algorithm.

pub mod command;
pub mod dns;
pub mod driver;
pub mod publish;
pub mod ring;
pub mod store;

use crate::config::{DnsSettings, RotationSettings};
use crate::dkim::DkimKey;
use arc_swap::ArcSwap;
use ring::{Change, Ring, State};
use std::collections::HashMap;
use std::sync::Arc;
use store::Store;

/// What one step did.
pub struct Stepped {
    pub changes: Vec<Change>,
    /// What could not be done (a key not made, a file not written).
    pub errors: Vec<String>,
    pub ring: Ring,
}

/// One step of the schedule at `now` (seconds): the pending keys looked up
/// in DNS, then, under the lock, the ring moved, new private keys written,
/// revoked ones deleted, and the state saved.
pub async fn advance(
    settings: &RotationSettings,
    dns: &DnsSettings,
    now: u64,
) -> Result<Stepped, String> {
    let store = Store::open(&settings.key_dir)
        .map_err(|e| format!("{}: {e}", settings.key_dir.display()))?;
    let before = store.load().map_err(|e| e.to_string())?;
    let mut served = Served::new();
    for k in before.pending() {
        served.insert(
            (k.domain.clone(), k.selector.clone()),
            dns::served(dns, settings.dns_port, k).await,
        );
    }
    // Under the lock, off the runtime's threads: the lock may be waited
    // for, and making an RSA key takes a while.
    let locked = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || step_locked(&store, &settings, now, &served))
    };
    let (changes, mut errors, ring) = locked.await.map_err(|e| e.to_string())??;
    if let (crate::config::Publish::Rfc2136, Some(r)) = (settings.publish, &settings.rfc2136) {
        errors.extend(publish::publish(r, dns.timeout, &changes, &ring).await);
    }
    Ok(Stepped {
        changes,
        errors,
        ring,
    })
}

/// DNS's answer for each pending key, by (domain, selector).
type Served = HashMap<(String, String), Result<(), String>>;

/// The part of a step done under the lock: the ring moved, new private
/// keys written (a key whose file cannot be written is dropped, and its
/// making not reported), revoked ones deleted, the state saved.
fn step_locked(
    store: &Store,
    settings: &RotationSettings,
    now: u64,
    served: &Served,
) -> Result<(Vec<Change>, Vec<String>, Ring), String> {
    let lock = store
        .lock()
        .map_err(|e| format!("{}: {e}", store.dir().display()))?;
    let mut ring = store.load().map_err(|e| e.to_string())?;
    let (mut changes, made, mut errors) = ring.step(
        now,
        settings,
        &|k| {
            served
                .get(&(k.domain.clone(), k.selector.clone()))
                .cloned()
                .unwrap_or_else(|| Err("not looked up in DNS yet".into()))
        },
        &mut |a| crate::dkim::generate(a.as_str(), a.bits()),
    );
    for (key, pem) in &made {
        if let Err(e) = store.write_key(key, pem) {
            errors.push(format!("{}: {e}", store.key_path(key).display()));
            let same = |k: &ring::Key| k.selector == key.selector && k.domain == key.domain;
            ring.keys.retain(|k| !same(k));
            changes.retain(|c| !same(c.key()));
        }
    }
    for c in &changes {
        if let Change::Revoked(k) = c {
            if let Err(e) = store.delete_key(k) {
                errors.push(format!("{}: {e}", store.key_path(k).display()));
            }
        }
    }
    store
        .save(&ring, &lock)
        .map_err(|e| format!("{}: {e}", store.dir().display()))?;
    Ok((changes, errors, ring))
}

/// The rotated keys that sign now, swapped by each step.
#[derive(Default)]
pub struct Rotated {
    keys: ArcSwap<Vec<Arc<DkimKey>>>,
}

impl Rotated {
    /// The active keys as saved under `key_dir` (at start: a restart signs
    /// with the active key at once), and what could not be loaded.
    pub fn load(settings: Option<&RotationSettings>) -> (Self, Vec<String>) {
        let rotated = Rotated::default();
        let Some(s) = settings else {
            return (rotated, Vec::new());
        };
        let store = Store::at(&s.key_dir);
        let errors = match store.load() {
            Ok(ring) => rotated.set(&store, &ring),
            Err(e) => vec![e.to_string()],
        };
        (rotated, errors)
    }

    /// Takes the active keys of a ring.
    pub fn set(&self, store: &Store, ring: &Ring) -> Vec<String> {
        let (keys, errors) = store.signing_keys(ring);
        self.keys.store(Arc::new(keys));
        errors
    }

    pub fn keys(&self) -> Arc<Vec<Arc<DkimKey>>> {
        self.keys.load_full()
    }
}

/// The keys to choose from: the rotated ones, and the hand-made ones of
/// every domain and algorithm that has no rotated key yet.
pub fn with_hand_keys(hand: &[Arc<DkimKey>], rotated: &[Arc<DkimKey>]) -> Vec<Arc<DkimKey>> {
    let mut out: Vec<Arc<DkimKey>> = rotated.to_vec();
    out.extend(
        hand.iter()
            .filter(|h| {
                !rotated
                    .iter()
                    .any(|r| r.domain == h.domain && r.algorithm() == h.algorithm())
            })
            .cloned(),
    );
    out
}

/// A key's state as `dkim status` shows it, with what it waits for.
pub fn next_step(k: &ring::Key, settings: &RotationSettings, now: u64) -> String {
    let at = |since: u64, d: std::time::Duration| crate::incidents::rfc3339(since + d.as_secs());
    match k.state {
        State::Pending => format!(
            "waits for its record: {}",
            k.waiting.as_deref().unwrap_or("not looked up yet")
        ),
        State::Active => format!("replaced from {}", at(k.created, settings.every)),
        State::Retiring => format!("revoked at {}", at(k.since, settings.retire_after)),
        State::Revoked if now < k.since + settings.revoke_after.as_secs() => {
            format!("record removed at {}", at(k.since, settings.revoke_after))
        }
        State::Revoked => "record removed at the next step".into(),
    }
}
