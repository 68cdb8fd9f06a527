//! DKIM keys that rotate themselves (`dkim.rotation`), never ahead of DNS:
//!
//! - `ring.rs`: the keys and the schedule that moves them;
//! - `store.rs`: the keys on disk, under `key_dir`;
//! - `dns.rs`: whether DNS serves a key as made;
//! - `publish.rs`: the records sent to the primary (`publish: rfc2136`);
//! - `shared/`: the state in Redis for several gateways, one driving;
//! - `seal.rs`: the private keys sealed while in Redis;
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
pub mod seal;
pub mod shared;
pub mod store;

use crate::config::{DnsSettings, RotationSettings};
use crate::dkim::DkimKey;
use crate::limiter::RedisLimiter;
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

/// One step of the schedule at `now` (seconds), on the state in
/// `key_dir` or, shared, in Redis (`redis`); None when another gateway
/// drives the shared state.
pub async fn advance(
    settings: &RotationSettings,
    dns: &DnsSettings,
    redis: Option<&RedisLimiter>,
    now: u64,
) -> Result<Option<Stepped>, String> {
    let stepped = match (settings.shared, redis) {
        (false, _) => advance_local(settings, dns, now).await?,
        (true, Some(r)) => match advance_shared(settings, dns, r, now).await? {
            Some(s) => s,
            None => return Ok(None),
        },
        (true, None) => return Err("the keys are shared through Redis, which is unusable".into()),
    };
    let mut stepped = stepped;
    if let (crate::config::Publish::Rfc2136, Some(r)) = (settings.publish, &settings.rfc2136) {
        let errors = publish::publish(r, dns.timeout, &stepped.changes, &stepped.ring).await;
        stepped.errors.extend(errors);
    }
    Ok(Some(stepped))
}

/// The pending keys looked up in DNS.
async fn lookup(settings: &RotationSettings, dns: &DnsSettings, ring: &Ring) -> Served {
    let mut served = Served::new();
    for k in ring.pending() {
        served.insert(
            (k.domain.clone(), k.selector.clone()),
            dns::served(dns, settings.dns_port, k).await,
        );
    }
    served
}

/// A step of `ring` with DNS's answers (keys made, so off the runtime's
/// threads): the ring moved, the changes, the keys made, the errors.
fn step_ring(
    ring: &mut Ring,
    settings: &RotationSettings,
    now: u64,
    served: &Served,
) -> (Vec<Change>, Vec<(ring::Key, String)>, Vec<String>) {
    ring.step(
        now,
        settings,
        &|k| {
            served
                .get(&(k.domain.clone(), k.selector.clone()))
                .cloned()
                .unwrap_or_else(|| Err("not looked up in DNS yet".into()))
        },
        &mut |a| crate::dkim::generate(a.as_str(), a.bits()),
    )
}

async fn advance_local(
    settings: &RotationSettings,
    dns: &DnsSettings,
    now: u64,
) -> Result<Stepped, String> {
    let store = Store::open(&settings.key_dir)
        .map_err(|e| format!("{}: {e}", settings.key_dir.display()))?;
    let before = store.load().map_err(|e| e.to_string())?;
    let served = lookup(settings, dns, &before).await;
    // Under the lock, off the runtime's threads: the lock may be waited
    // for, and making an RSA key takes a while.
    let locked = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || step_locked(&store, &settings, now, &served))
    };
    let (changes, errors, ring) = locked.await.map_err(|e| e.to_string())??;
    Ok(Stepped {
        changes,
        errors,
        ring,
    })
}

/// A step of the shared state, when this gateway holds the lease: read,
/// stepped, and saved only if nothing changed it meanwhile (else read
/// and stepped again).
async fn advance_shared(
    settings: &RotationSettings,
    dns: &DnsSettings,
    r: &RedisLimiter,
    now: u64,
) -> Result<Option<Stepped>, String> {
    let seal = settings
        .seal
        .as_ref()
        .ok_or("dkim.rotation.secret_file is not set")?;
    if !shared::lease(r, settings).await? {
        return Ok(None);
    }
    let store = Store::at(&settings.key_dir);
    for _ in 0..3 {
        let (ring, version) = shared::load(r).await?;
        let served = lookup(settings, dns, &ring).await;
        let stepped = {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || {
                let mut ring = ring;
                let (changes, made, errors) = step_ring(&mut ring, &settings, now, &served);
                (ring, changes, made, errors)
            })
        };
        let (mut ring, mut changes, made, mut errors) = stepped.await.map_err(|e| e.to_string())?;
        reveal_revoked(settings, &store, &mut ring, &mut changes, &mut errors);
        let mut sealed = Vec::new();
        for (k, pem) in &made {
            match seal::seal(seal, &shared::key_name(k), pem) {
                Ok(s) => sealed.push((k.clone(), s)),
                Err(e) => {
                    errors.push(format!("{}: {e}", k.name()));
                    drop_key(k, &mut ring, &mut changes);
                }
            }
        }
        let gone: Vec<&ring::Key> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Revoked(k) => Some(k),
                _ => None,
            })
            .collect();
        match shared::save(r, Some(r.gateway()), version, &ring, &sealed, &gone).await? {
            shared::Saved::Done => {
                return Ok(Some(Stepped {
                    changes,
                    errors,
                    ring,
                }))
            }
            shared::Saved::Changed => continue,
            shared::Saved::NotDriver => return Ok(None),
        }
    }
    Err(
        "the shared state kept changing while being stepped; stepped again at the next check"
            .into(),
    )
}

/// A key made but not kept (its private key could not be stored): out
/// of the ring, and its making not reported.
fn drop_key(key: &ring::Key, ring: &mut Ring, changes: &mut Vec<Change>) {
    let same = |k: &ring::Key| k.selector == key.selector && k.domain == key.domain;
    ring.keys.retain(|k| !same(k));
    changes.retain(|c| !same(c.key()));
}

/// With `reveal`: each key revoked by this step has its private key
/// written where the web server publishes it; one that cannot be is not
/// noted as revealed in its record.
fn reveal_revoked(
    settings: &RotationSettings,
    store: &Store,
    ring: &mut Ring,
    changes: &mut [Change],
    errors: &mut Vec<String>,
) {
    let Some(reveal) = &settings.reveal else {
        return;
    };
    for c in changes.iter_mut() {
        let Change::Revoked(k) = c else { continue };
        if let Err(e) = store.reveal(k, &reveal.dir) {
            errors.push(format!("cannot reveal {}: {e}", k.name()));
            k.revealed = None;
            if let Some(r) = ring
                .keys
                .iter_mut()
                .find(|r| r.domain == k.domain && r.selector == k.selector)
            {
                r.revealed = None;
            }
        }
    }
}

/// DNS's answer for each pending key, by (domain, selector).
type Served = HashMap<(String, String), Result<(), String>>;

/// The part of a step done under the lock: the ring moved, new private
/// keys written (a key whose file cannot be written is dropped, and its
/// making not reported), revoked ones revealed or deleted, the state
/// saved.
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
    let (mut changes, made, mut errors) = step_ring(&mut ring, settings, now, served);
    for (key, pem) in &made {
        if let Err(e) = store.write_key(key, pem) {
            errors.push(format!("{}: {e}", store.key_path(key).display()));
            drop_key(key, &mut ring, &mut changes);
        }
    }
    reveal_revoked(settings, store, &mut ring, &mut changes, &mut errors);
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

/// The rotated keys that sign, laid out ahead: each step (and each
/// moment the ring records for a switch) loads the keys of now and of
/// the next few switches, and every message takes the ones in effect at
/// its own moment, so a switch does not wait on a task being woken.
#[derive(Default)]
pub struct Rotated {
    /// From which second (ascending) which keys sign.
    timeline: ArcSwap<Vec<(u64, Keys)>>,
    /// The ring last set, and where its private keys are.
    ring: std::sync::Mutex<Option<(Ring, std::path::PathBuf)>>,
}

/// The keys that sign at one moment.
type Keys = Arc<Vec<Arc<DkimKey>>>;

/// How many switches ahead the keys are loaded.
const SWITCHES_AHEAD: usize = 4;

impl Rotated {
    /// The keys that sign as saved under `key_dir` (at start: a restart
    /// signs with the active key at once), and what could not be loaded.
    pub fn load(settings: Option<&RotationSettings>) -> (Self, Vec<String>) {
        let rotated = Rotated::default();
        let Some(s) = settings else {
            return (rotated, Vec::new());
        };
        let store = Store::at(&s.key_dir);
        let errors = match store.load() {
            Ok(ring) => rotated.set(&store, ring, crate::incidents::now_ms() / 1000),
            Err(e) => vec![e.to_string()],
        };
        (rotated, errors)
    }

    /// Takes a ring: the keys that sign at `now` and at its next
    /// switches; what could not be loaded for `now` is returned.
    pub fn set(&self, store: &Store, ring: Ring, now: u64) -> Vec<String> {
        let (keys, errors) = store.signing_keys(&ring, now);
        let mut timeline = vec![(0, Arc::new(keys))];
        let mut t = now;
        while let Some(next) = ring.next_switch(t) {
            if timeline.len() > SWITCHES_AHEAD {
                break;
            }
            // A key that cannot be loaded yet is said at its moment,
            // when the rotation task sets the ring again.
            timeline.push((next, Arc::new(store.signing_keys(&ring, next).0)));
            t = next;
        }
        self.timeline.store(Arc::new(timeline));
        *self.ring.lock().unwrap_or_else(|p| p.into_inner()) = Some((ring, store.dir().into()));
        errors
    }

    /// The next moment after `now` at which the keys that sign change.
    pub fn next_switch(&self, now: u64) -> Option<u64> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.as_ref().and_then(|(r, _)| r.next_switch(now))
    }

    /// Sets the ring last set again at `now`: the keys loaded for the
    /// switches after it, and what cannot sign now said.
    pub fn switch(&self, now: u64) -> Vec<String> {
        let last = self.ring.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match last {
            Some((ring, dir)) => self.set(&Store::at(&dir), ring, now),
            None => Vec::new(),
        }
    }

    /// The keys that sign now.
    pub fn keys(&self) -> Keys {
        self.keys_at(crate::incidents::now_ms() / 1000)
    }

    /// The keys that sign at `now`.
    pub fn keys_at(&self, now: u64) -> Keys {
        let timeline = self.timeline.load();
        timeline
            .iter()
            .rev()
            .find(|(from, _)| *from <= now)
            .map(|(_, keys)| keys.clone())
            .unwrap_or_default()
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
        State::Active if k.since > now => format!(
            "signs from {} (every gateway switches then)",
            crate::incidents::rfc3339(k.since)
        ),
        State::Active => format!("replaced from {}", at(k.created, settings.every)),
        State::Retiring if k.since > now => format!(
            "signs until {}, then revoked at {}",
            crate::incidents::rfc3339(k.since),
            at(k.since, settings.retire_after)
        ),
        State::Retiring => format!("revoked at {}", at(k.since, settings.retire_after)),
        State::Revoked if now < k.since + settings.revoke_after.as_secs() => {
            format!("record removed at {}", at(k.since, settings.revoke_after))
        }
        State::Revoked => "record removed at the next step".into(),
    }
}

#[cfg(test)]
mod tests;
