use super::ring::{Algorithm, Key, Ring, State};
use super::store::Store;
use super::Rotated;

/// A key of example.com in `state` since `since`, its private key
/// written under `store`.
fn key(store: &Store, selector: &str, state: State, since: u64) -> Key {
    let (pem, record) = crate::dkim::generate("ed25519", 0).expect("a key");
    let key = Key {
        domain: "example.com".into(),
        algorithm: Algorithm::Ed25519,
        selector: selector.into(),
        state,
        created: 0,
        since,
        record,
        waiting: None,
        late: false,
        revealed: None,
    };
    store.write_key(&key, &pem).expect("written");
    key
}

fn selectors(rotated: &Rotated, t: u64) -> Vec<String> {
    rotated
        .keys_at(t)
        .iter()
        .map(|k| k.selector.to_string())
        .collect()
}

#[test]
fn each_message_takes_the_keys_of_its_own_moment() {
    let dir = tempfile::tempdir().expect("a directory");
    let store = Store::open(dir.path()).expect("a store");
    let now = 1_000_000;
    let ring = Ring {
        keys: vec![
            key(&store, "old", State::Retiring, now + 60),
            key(&store, "new", State::Active, now + 60),
        ],
        ..Ring::default()
    };
    let rotated = Rotated::default();
    assert!(rotated.set(&store, ring, now).is_empty());
    // Loaded ahead: no task needs to wake for the switch to happen.
    assert_eq!(selectors(&rotated, now), ["old"]);
    assert_eq!(selectors(&rotated, now + 59), ["old"]);
    assert_eq!(selectors(&rotated, now + 60), ["new"]);
    assert_eq!(selectors(&rotated, now + 6000), ["new"]);
    assert_eq!(rotated.next_switch(now), Some(now + 60));
    assert_eq!(rotated.next_switch(now + 60), None);
}
