use super::*;
use crate::address::Domain;
use std::collections::HashSet;
use std::time::Duration;

const DAY: u64 = 86_400;
/// 2026-12-04T00:00:00Z.
const T0: u64 = 1_796_342_400;

fn settings() -> RotationSettings {
    RotationSettings {
        domains: vec![Domain::parse("example.com").unwrap()],
        every: Duration::from_secs(180 * DAY),
        retire_after: Duration::from_secs(7 * DAY),
        revoke_after: Duration::from_secs(30 * DAY),
        ..RotationSettings::default()
    }
}

/// A step where DNS serves exactly the selectors in `served`.
fn step(ring: &mut Ring, now: u64, served: &HashSet<String>) -> Vec<Change> {
    let mut n = 0;
    let (changes, made, errors) = ring.step(
        now,
        &settings(),
        &|k| {
            if served.contains(&k.selector) {
                Ok(())
            } else {
                Err(format!("{} not served", k.name()))
            }
        },
        &mut |a| {
            n += 1;
            Ok((
                format!("PEM {n}"),
                format!("v=DKIM1; k={}; p=KEY{n}", a.as_str()),
            ))
        },
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        made.len(),
        changes
            .iter()
            .filter(|c| matches!(c, Change::Made(_)))
            .count()
    );
    changes
}

fn states(ring: &Ring, a: Algorithm) -> Vec<(String, State)> {
    ring.keys
        .iter()
        .filter(|k| k.algorithm == a)
        .map(|k| (k.selector.clone(), k.state))
        .collect()
}

#[test]
fn a_key_signs_only_once_served_and_the_old_one_is_retired_revoked_and_removed() {
    let mut ring = Ring::default();
    let mut served = HashSet::new();
    let c = step(&mut ring, T0, &served);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(
        states(&ring, Algorithm::Rsa),
        [("rsa20261204".to_string(), State::Pending)]
    );
    assert_eq!(
        states(&ring, Algorithm::Ed25519),
        [("ed2551920261204".to_string(), State::Pending)]
    );
    assert!(ring.active("example.com", Algorithm::Rsa).is_none());
    // Not served: it waits, says why, and is reported once after a day.
    assert!(step(&mut ring, T0 + 600, &served).is_empty());
    assert_eq!(
        ring.keys[0].waiting.as_deref(),
        Some("rsa20261204._domainkey.example.com not served")
    );
    let c = step(&mut ring, T0 + DAY, &served);
    assert_eq!(
        c.iter().map(Change::verb).collect::<Vec<_>>(),
        ["late", "late"]
    );
    assert!(step(&mut ring, T0 + DAY + 600, &served).is_empty());
    // Served: it signs.
    served.insert("rsa20261204".to_string());
    let c = step(&mut ring, T0 + 2 * DAY, &served);
    assert_eq!(
        c.iter().map(Change::verb).collect::<Vec<_>>(),
        ["activated"]
    );
    assert_eq!(
        ring.active("example.com", Algorithm::Rsa)
            .map(|k| k.record.as_str()),
        Some("v=DKIM1; k=rsa; p=KEY1")
    );
    assert!(ring.active("example.com", Algorithm::Ed25519).is_none());
    // 180 days after it was made: a new key, the old one signing on while
    // the new one is not served.
    let due = T0 + 180 * DAY;
    assert!(step(&mut ring, due - 1, &served).is_empty());
    let c = step(&mut ring, due, &served);
    assert_eq!(c.iter().map(Change::verb).collect::<Vec<_>>(), ["made"]);
    assert_eq!(
        states(&ring, Algorithm::Rsa),
        [
            ("rsa20261204".to_string(), State::Active),
            ("rsa20270602".to_string(), State::Pending)
        ]
    );
    served.insert("rsa20270602".to_string());
    let c = step(&mut ring, due + 600, &served);
    assert_eq!(
        c.iter().map(Change::verb).collect::<Vec<_>>(),
        ["retired", "activated"]
    );
    assert_eq!(
        ring.active("example.com", Algorithm::Rsa)
            .map(|k| k.selector.as_str()),
        Some("rsa20270602")
    );
    // Published, no longer signing, for retire_after; then p= for
    // revoke_after; then gone.
    assert!(step(&mut ring, due + 600 + 7 * DAY - 1, &served).is_empty());
    let c = step(&mut ring, due + 600 + 7 * DAY, &served);
    assert_eq!(c.iter().map(Change::verb).collect::<Vec<_>>(), ["revoked"]);
    let old = &ring.keys[0];
    assert_eq!(old.published(), "v=DKIM1; p=");
    let c = step(&mut ring, due + 600 + 37 * DAY, &served);
    assert_eq!(c.iter().map(Change::verb).collect::<Vec<_>>(), ["removed"]);
    assert_eq!(
        states(&ring, Algorithm::Rsa),
        [("rsa20270602".to_string(), State::Active)]
    );
}

#[test]
fn an_emergency_rotation_revokes_the_old_key_as_soon_as_the_new_one_signs() {
    let mut ring = Ring::default();
    let mut served: HashSet<String> = ["rsa20261204", "ed2551920261204"]
        .into_iter()
        .map(String::from)
        .collect();
    step(&mut ring, T0, &served);
    step(&mut ring, T0 + 60, &served);
    assert!(ring.active("example.com", Algorithm::Rsa).is_some());
    ring.requests.push(Request {
        domain: Some("example.com".into()),
        now: true,
    });
    let c = step(&mut ring, T0 + 120, &served);
    assert_eq!(
        c.iter().map(Change::verb).collect::<Vec<_>>(),
        ["made", "made"]
    );
    // A second key of the day.
    assert_eq!(ring.keys[2].selector, "rsa20261204-2");
    // Not served yet: the old key signs on.
    assert!(step(&mut ring, T0 + 180, &served).is_empty());
    assert_eq!(
        ring.active("example.com", Algorithm::Rsa)
            .map(|k| k.selector.as_str()),
        Some("rsa20261204")
    );
    served.insert("rsa20261204-2".into());
    let c = step(&mut ring, T0 + 240, &served);
    assert_eq!(
        c.iter().map(Change::verb).collect::<Vec<_>>(),
        ["retired", "activated", "revoked"]
    );
    assert!(ring.urgent.iter().all(|(_, a, _)| *a != Algorithm::Rsa));
    // The Ed25519 key waits for its own record, its old one signing.
    assert_eq!(
        ring.active("example.com", Algorithm::Ed25519)
            .map(|k| k.selector.as_str()),
        Some("ed2551920261204")
    );
}

#[test]
fn a_plain_rotation_keeps_the_old_record_for_retire_after() {
    let mut ring = Ring::default();
    let all =
        |ring: &Ring| -> HashSet<String> { ring.keys.iter().map(|k| k.selector.clone()).collect() };
    step(&mut ring, T0, &HashSet::new());
    let served = all(&ring);
    step(&mut ring, T0 + 60, &served);
    ring.requests.push(Request::default());
    step(&mut ring, T0 + 120, &HashSet::new());
    let served = all(&ring);
    let c = step(&mut ring, T0 + 180, &served);
    assert_eq!(
        c.iter().map(Change::verb).collect::<Vec<_>>(),
        ["retired", "activated", "retired", "activated"]
    );
    assert_eq!(
        ring.keys
            .iter()
            .filter(|k| k.state == State::Retiring)
            .count(),
        2
    );
}

#[test]
fn selectors_follow_the_template_and_never_repeat() {
    assert_eq!(
        selector("{algorithm}-{date}", Algorithm::Ed25519, T0, &[]),
        "ed25519-20261204"
    );
    assert_eq!(
        selector("k{date}", Algorithm::Rsa, T0, &["k20261204", "k20261204-2"]),
        "k20261204-3"
    );
}

#[test]
fn shared_keys_switch_at_the_recorded_moment_and_an_emergency_waits_for_it() {
    let mut s = settings();
    s.switch_delay = Duration::from_secs(120);
    let mut ring = Ring::default();
    let mut n = 0;
    let mut go = |ring: &mut Ring, now: u64, served: &HashSet<String>| {
        let (c, _, e) = ring.step(
            now,
            &s,
            &|k| {
                if served.contains(&k.selector) {
                    Ok(())
                } else {
                    Err("not served".into())
                }
            },
            &mut |a| {
                n += 1;
                Ok((String::new(), format!("v=DKIM1; k={}; p=K{n}", a.as_str())))
            },
        );
        assert!(e.is_empty());
        c.iter().map(|c| c.verb()).collect::<Vec<_>>().join(",")
    };
    let all: HashSet<String> = ["rsa20261204", "ed2551920261204", "rsa20261204-2"]
        .into_iter()
        .map(String::from)
        .collect();
    go(&mut ring, T0, &all);
    assert_eq!(go(&mut ring, T0 + 60, &all), "activated,activated");
    // Active from T0 + 180: nothing signs before (no key replaced).
    assert!(ring
        .signer("example.com", Algorithm::Rsa, T0 + 179)
        .is_none());
    assert_eq!(ring.next_switch(T0 + 60), Some(T0 + 180));
    let first = |ring: &Ring, t| {
        ring.signer("example.com", Algorithm::Rsa, t)
            .map(|k| k.selector.clone())
    };
    assert_eq!(first(&ring, T0 + 180).as_deref(), Some("rsa20261204"));
    ring.requests.push(Request {
        domain: None,
        now: true,
    });
    assert_eq!(go(&mut ring, T0 + 240, &all), "made,made");
    assert_eq!(
        go(&mut ring, T0 + 300, &all),
        "retired,activated",
        "the old key is not revoked before the new one signs"
    );
    assert_eq!(first(&ring, T0 + 419).as_deref(), Some("rsa20261204"));
    assert_eq!(first(&ring, T0 + 420).as_deref(), Some("rsa20261204-2"));
    assert_eq!(ring.next_switch(T0 + 300), Some(T0 + 420));
    assert!(go(&mut ring, T0 + 360, &all).is_empty());
    assert_eq!(go(&mut ring, T0 + 420, &all), "revoked");
}

#[test]
fn a_revealed_key_says_where_in_its_record() {
    let mut k = Key {
        domain: "example.com".into(),
        algorithm: Algorithm::Rsa,
        selector: "rsa1".into(),
        state: State::Revoked,
        created: T0,
        since: T0,
        record: "v=DKIM1; k=rsa; p=AAAA".into(),
        waiting: None,
        late: false,
        revealed: Some("https://example.com/old/?a=b".into()),
    };
    assert_eq!(
        k.published(),
        "v=DKIM1; n=revoked, private key published at https://example.com/old/?a=3Db; p="
    );
    k.revealed = None;
    assert_eq!(k.published(), "v=DKIM1; p=");
}
