//! The keys of every rotated domain and algorithm, and the schedule that
//! moves them: `pending` (made, its record to publish, not signing) →
//! `active` (signs) → `retiring` (still published, no longer signing) →
//! `revoked` (record `p=`, private key gone) → removed. Pure: the caller
//! says what DNS serves and makes the keys; times are seconds since the
//! epoch, given.

use crate::config::RotationSettings;
use serde::{Deserialize, Serialize};

/// A day: a pending key still not served after it is reported.
pub const LATE_AFTER: u64 = 86_400;

#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    pub const ALL: [Algorithm; 2] = [Algorithm::Rsa, Algorithm::Ed25519];

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// The key size made: RSA-2048 (M3AAWG), Ed25519's fixed 256.
    pub fn bits(self) -> usize {
        match self {
            Algorithm::Rsa => 2048,
            Algorithm::Ed25519 => 256,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Active,
    Retiring,
    Revoked,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Active => "active",
            State::Retiring => "retiring",
            State::Revoked => "revoked",
        }
    }

    /// The value of `egress_dkim_key_state`.
    pub fn number(self) -> u8 {
        match self {
            State::Pending => 0,
            State::Active => 1,
            State::Retiring => 2,
            State::Revoked => 3,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub struct Key {
    pub domain: String,
    pub algorithm: Algorithm,
    pub selector: String,
    pub state: State,
    /// When it was made.
    pub created: u64,
    /// When it entered its state. A key made active (and the key it
    /// replaces) takes its new state at this moment, which may be ahead
    /// (every gateway switches at the same recorded moment).
    pub since: u64,
    /// Its TXT record value while published with its key.
    pub record: String,
    /// Why it is still pending, as last found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Reported as late (pending a day) already.
    #[serde(default)]
    pub late: bool,
    /// Once revoked with `reveal`: where its private key is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revealed: Option<String>,
}

impl Key {
    /// The record name, `SELECTOR._domainkey.DOMAIN`.
    pub fn name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT value to publish now: the key's own, or `v=DKIM1; p=` once
    /// revoked (with a note, `n=`, of where its private key is revealed).
    pub fn published(&self) -> String {
        match (self.state, &self.revealed) {
            (State::Revoked, Some(url)) => format!(
                "v=DKIM1; n=revoked, private key published at {}; p=",
                url.replace('=', "=3D")
            ),
            (State::Revoked, None) => "v=DKIM1; p=".to_string(),
            _ => self.record.clone(),
        }
    }

    /// Its state in effect at `t`: a key made active from a moment still
    /// ahead is pending until then, and the key it replaces active.
    pub fn state_at(&self, t: u64) -> State {
        match self.state {
            State::Active if self.since > t => State::Pending,
            State::Retiring if self.since > t => State::Active,
            s => s,
        }
    }

    /// The file name of its revealed private key.
    pub fn revealed_file(&self) -> String {
        format!("{}.pem", self.name())
    }
}

/// An operator's request (`dkim rotate`), kept until the next step.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
pub struct Request {
    /// One domain, or every rotated one.
    pub domain: Option<String>,
    /// Emergency: the replaced key is revoked as soon as the new one is
    /// active, not kept for `retire_after`.
    pub now: bool,
}

#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
pub struct Ring {
    pub keys: Vec<Key>,
    #[serde(default)]
    pub requests: Vec<Request>,
    /// (domain, algorithm, when asked) whose key is to be revoked as soon
    /// as a key made since is active (`rotate --now`).
    #[serde(default)]
    pub urgent: Vec<(String, Algorithm, u64)>,
}

/// What a step changed, for the log, the notice and the caller's work
/// (a new key to write, a private key to delete).
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Change {
    Made(Key),
    Activated(Key),
    Retired(Key),
    Revoked(Key),
    Removed(Key),
    /// Pending for a day and still not served.
    Late(Key),
}

impl Change {
    pub fn key(&self) -> &Key {
        match self {
            Change::Made(k)
            | Change::Activated(k)
            | Change::Retired(k)
            | Change::Revoked(k)
            | Change::Removed(k)
            | Change::Late(k) => k,
        }
    }

    pub fn verb(&self) -> &'static str {
        match self {
            Change::Made(_) => "made",
            Change::Activated(_) => "activated",
            Change::Retired(_) => "retired",
            Change::Revoked(_) => "revoked",
            Change::Removed(_) => "removed",
            Change::Late(_) => "late",
        }
    }
}

/// The selector of a new key from the template, made unique among `taken`
/// with `-2`, `-3`... when a day makes more than one.
pub fn selector(template: &str, algorithm: Algorithm, now: u64, taken: &[&str]) -> String {
    let date = crate::incidents::rfc3339(now)
        .get(..10)
        .unwrap_or("19700101")
        .replace('-', "");
    let base = template
        .replace("{algorithm}", algorithm.as_str())
        .replace("{date}", &date);
    let mut candidate = base.clone();
    let mut n = 2;
    while taken.contains(&candidate.as_str()) {
        candidate = format!("{base}-{n}");
        n += 1;
    }
    candidate
}

impl Ring {
    /// The active key of a domain and algorithm (which may sign only
    /// from a moment ahead: see [`Ring::signer`]).
    pub fn active(&self, domain: &str, algorithm: Algorithm) -> Option<&Key> {
        self.keys
            .iter()
            .filter(|k| k.domain == domain && k.algorithm == algorithm && k.state == State::Active)
            .max_by_key(|k| k.since)
    }

    /// The key of a domain and algorithm that signs at `t`: the active one
    /// once its moment has come, else the one it replaces (retiring from
    /// a moment still ahead; the earliest, when two switches are ahead).
    pub fn signer(&self, domain: &str, algorithm: Algorithm, t: u64) -> Option<&Key> {
        let mine = |k: &&Key| k.domain == domain && k.algorithm == algorithm;
        if let Some(a) = self.active(domain, algorithm).filter(|a| a.since <= t) {
            return Some(a);
        }
        self.keys
            .iter()
            .filter(mine)
            .filter(|k| k.state == State::Retiring && k.since > t)
            .min_by_key(|k| k.since)
    }

    /// The next moment after `t` at which a key starts or stops signing.
    pub fn next_switch(&self, t: u64) -> Option<u64> {
        self.keys
            .iter()
            .filter(|k| matches!(k.state, State::Active | State::Retiring) && k.since > t)
            .map(|k| k.since)
            .min()
    }

    /// The pending keys, to look up in DNS.
    pub fn pending(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter().filter(|k| k.state == State::Pending)
    }

    /// One step at `now`. `served(key)`: whether DNS serves a pending key's
    /// record as it should (else why not); `make(algorithm)`: a new key
    /// pair, its PEM and its record value (the PEM is the caller's to
    /// keep, under the selector the change names). A key served is made
    /// active from `now + settings.switch_delay`.
    pub fn step(
        &mut self,
        now: u64,
        settings: &RotationSettings,
        served: &dyn Fn(&Key) -> Result<(), String>,
        make: &mut dyn FnMut(Algorithm) -> Result<(String, String), String>,
    ) -> (Vec<Change>, Vec<(Key, String)>, Vec<String>) {
        let mut changes = Vec::new();
        let mut made = Vec::new();
        let mut errors = Vec::new();
        let requests = std::mem::take(&mut self.requests);
        for domain in &settings.domains {
            let domain = domain.as_str();
            for algorithm in Algorithm::ALL {
                let forced: Vec<&Request> = requests
                    .iter()
                    .filter(|r| r.domain.as_deref().is_none_or(|d| d == domain))
                    .collect();
                if forced.iter().any(|r| r.now) {
                    self.urgent
                        .retain(|(d, a, _)| !(d == domain && *a == algorithm));
                    self.urgent.push((domain.into(), algorithm, now));
                }
                self.step_one(now, settings, domain, algorithm, served, &mut changes);
                let has_pending = self.keys.iter().any(|k| {
                    k.domain == domain && k.algorithm == algorithm && k.state == State::Pending
                });
                let due = match self.active(domain, algorithm) {
                    None => true,
                    Some(a) => now.saturating_sub(a.created) >= settings.every.as_secs(),
                };
                if has_pending || (!due && forced.is_empty()) {
                    continue;
                }
                match make(algorithm) {
                    Ok((pem, record)) => {
                        let taken: Vec<&str> =
                            self.keys.iter().map(|k| k.selector.as_str()).collect();
                        let key = Key {
                            domain: domain.to_string(),
                            algorithm,
                            selector: selector(&settings.selector, algorithm, now, &taken),
                            state: State::Pending,
                            created: now,
                            since: now,
                            record,
                            waiting: Some("not looked up in DNS yet".into()),
                            late: false,
                            revealed: None,
                        };
                        self.keys.push(key.clone());
                        changes.push(Change::Made(key.clone()));
                        made.push((key, pem));
                    }
                    Err(e) => errors.push(format!(
                        "cannot make a {} key for {domain}: {e}",
                        algorithm.as_str()
                    )),
                }
            }
        }
        (changes, made, errors)
    }

    /// The schedule of one domain and algorithm, made keys aside.
    fn step_one(
        &mut self,
        now: u64,
        settings: &RotationSettings,
        domain: &str,
        algorithm: Algorithm,
        served: &dyn Fn(&Key) -> Result<(), String>,
        changes: &mut Vec<Change>,
    ) {
        let urgent = self
            .urgent
            .iter()
            .find(|(d, a, _)| d == domain && *a == algorithm)
            .map(|(_, _, asked)| *asked);
        let mine = |k: &Key| k.domain == domain && k.algorithm == algorithm;
        // Revoked records go after revoke_after.
        let mut kept = Vec::with_capacity(self.keys.len());
        for k in std::mem::take(&mut self.keys) {
            if mine(&k)
                && k.state == State::Revoked
                && now.saturating_sub(k.since) >= settings.revoke_after.as_secs()
            {
                changes.push(Change::Removed(k));
            } else {
                kept.push(k);
            }
        }
        self.keys = kept;
        // A pending key served as it should becomes the one that signs.
        let pending = self
            .keys
            .iter()
            .position(|k| mine(k) && k.state == State::Pending);
        if let Some(i) = pending {
            match served(&self.keys[i]) {
                Ok(()) => {
                    let at = now + settings.switch_delay.as_secs();
                    for k in self
                        .keys
                        .iter_mut()
                        .filter(|k| mine(k) && k.state == State::Active)
                    {
                        k.state = State::Retiring;
                        k.since = at;
                        changes.push(Change::Retired(k.clone()));
                    }
                    let k = &mut self.keys[i];
                    k.state = State::Active;
                    k.since = at;
                    k.waiting = None;
                    changes.push(Change::Activated(k.clone()));
                }
                Err(why) => {
                    let k = &mut self.keys[i];
                    k.waiting = Some(why);
                    if !k.late && now.saturating_sub(k.created) >= LATE_AFTER {
                        k.late = true;
                        changes.push(Change::Late(k.clone()));
                    }
                }
            }
        }
        // Retiring keys are revoked after retire_after (at once after an
        // emergency rotation, once the new key signs).
        let replaced = urgent.is_some_and(|asked| {
            self.keys.iter().any(|k| {
                mine(k) && k.state == State::Active && k.created >= asked && k.since <= now
            })
        });
        for k in self
            .keys
            .iter_mut()
            .filter(|k| mine(k) && k.state == State::Retiring)
        {
            let due = now.saturating_sub(k.since) >= settings.retire_after.as_secs();
            if k.since <= now && (due || replaced) {
                k.state = State::Revoked;
                k.since = now;
                k.revealed = settings
                    .reveal
                    .as_ref()
                    .map(|r| format!("{}{}", r.url, k.revealed_file()));
                changes.push(Change::Revoked(k.clone()));
            }
        }
        if replaced {
            self.urgent
                .retain(|(d, a, _)| !(d == domain && *a == algorithm));
        }
    }
}

#[cfg(test)]
mod tests;
