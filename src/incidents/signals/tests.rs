//! Each signal at its crossing, and the usual figures it is judged against.

use super::*;
use std::time::Duration;

const H: u64 = 3_600_000;
const T0: u64 = 500 * H;

fn signal(count: Count, key: KeyKind, above: u64) -> Signal {
    Signal {
        name: format!("s_{}", count.as_str()),
        key,
        count,
        threshold: Threshold::Above(crate::rate::Rate {
            count: above,
            period: Duration::from_secs(3600),
        }),
    }
}

fn keys() -> Keys<'static> {
    Keys {
        client: Some("10.0.0.5"),
        user: Some("alice"),
        sender: Some("alice@example.com"),
        class: Some("staff"),
    }
}

fn accepted<'a>(q: &'a str, rcpts: &'a [String]) -> Event<'a> {
    Event::Accepted {
        queue_id: Some(q),
        recipients: rcpts,
    }
}

/// Feeds events one a minute; returns the 1-based index of the event
/// that first crossed, and the crossing.
fn first_crossing(s: Signal, events: &[Event<'_>]) -> Option<(usize, Crossing)> {
    let signals = Signals::new(&[s], 1000);
    events.iter().enumerate().find_map(|(i, e)| {
        let now = T0 + i as u64 * 60_000;
        signals
            .observe(now, &keys(), e)
            .into_iter()
            .next()
            .map(|c| (i + 1, c))
    })
}

#[test]
fn messages_and_recipients() {
    let one = vec!["a@x.test".to_string()];
    let events: Vec<Event<'_>> = (0..10).map(|_| accepted("Q", &one)).collect();
    let (n, c) = first_crossing(signal(Count::Messages, KeyKind::User, 5), &events).unwrap();
    assert_eq!(n, 6);
    assert_eq!((c.kind, c.key.as_str()), (KeyKind::User, "alice"));
    assert_eq!(c.figures, "6 messages in 1h (threshold 5/h)");
    let three: Vec<String> = (0..3).map(|i| format!("r{i}@x.test")).collect();
    let events: Vec<Event<'_>> = (0..10).map(|_| accepted("Q", &three)).collect();
    let (n, _) = first_crossing(signal(Count::Recipients, KeyKind::Client, 10), &events).unwrap();
    assert_eq!(n, 4);
}

#[test]
fn distinct_recipients_and_domains() {
    // The same 5 recipients over and over: never 6 distinct.
    let same: Vec<Vec<String>> = (0..40)
        .map(|i| vec![format!("r{}@x.test", i % 5)])
        .collect();
    let events: Vec<Event<'_>> = same.iter().map(|r| accepted("Q", r)).collect();
    assert!(first_crossing(
        signal(Count::DistinctRecipients, KeyKind::Sender, 5),
        &events
    )
    .is_none());
    // A spray: a new domain each message.
    let spray: Vec<Vec<String>> = (0..40).map(|i| vec![format!("x@d{i}.test")]).collect();
    let events: Vec<Event<'_>> = spray.iter().map(|r| accepted("Q", r)).collect();
    let (n, c) = first_crossing(
        signal(Count::DistinctRecipientDomains, KeyKind::User, 20),
        &events,
    )
    .unwrap();
    assert_eq!(n, 21);
    assert!(
        c.figures.starts_with("21 distinct_recipient_domains in 1h"),
        "{}",
        c.figures
    );
    // Many addresses at one domain are one domain.
    let one_domain: Vec<Vec<String>> = (0..40).map(|i| vec![format!("u{i}@big.test")]).collect();
    let events: Vec<Event<'_>> = one_domain.iter().map(|r| accepted("Q", r)).collect();
    assert!(first_crossing(
        signal(Count::DistinctRecipientDomains, KeyKind::User, 20),
        &events
    )
    .is_none());
    let (n, _) = first_crossing(
        signal(Count::DistinctRecipients, KeyKind::User, 20),
        &events,
    )
    .unwrap();
    assert_eq!(n, 21);
}

#[test]
fn refusals_and_mta_rejections() {
    let events = vec![Event::Refused; 8];
    let (n, _) = first_crossing(signal(Count::Refusals, KeyKind::User, 5), &events).unwrap();
    assert_eq!(n, 6);
    // Accepted mail does not count as refusals.
    let one = vec!["a@x.test".to_string()];
    let events: Vec<Event<'_>> = (0..20).map(|_| accepted("Q", &one)).collect();
    assert!(first_crossing(signal(Count::Refusals, KeyKind::User, 5), &events).is_none());
    let events = vec![Event::MtaRejected; 30];
    let (n, _) = first_crossing(
        signal(Count::MtaRejectedRecipients, KeyKind::Client, 20),
        &events,
    )
    .unwrap();
    assert_eq!(n, 21);
}

#[test]
fn the_window_slides_and_names_earlier_messages() {
    let signals = Signals::new(&[signal(Count::Messages, KeyKind::User, 3)], 1000);
    let one = vec!["a@x.test".to_string()];
    // Three an hour, every 23 minutes: never four in an hour and a
    // tenth (the window and the slice its start falls in).
    for i in 0..30u64 {
        let q = format!("Q{i}");
        let now = T0 + i * 23 * 60_000 + 1;
        assert!(
            signals
                .observe(now, &keys(), &accepted(&q, &one))
                .is_empty(),
            "{i}"
        );
    }
    // A fourth within the hour crosses; the earlier ones of the window
    // are named.
    let now = T0 + 30 * 23 * 60_000;
    let mut crossed = Vec::new();
    for i in 0..3u64 {
        let q = format!("B{i}");
        crossed = signals.observe(now + i * 1000, &keys(), &accepted(&q, &one));
    }
    let c = crossed.first().expect("a burst crosses");
    assert!(c.earlier.contains(&"B0".to_string()), "{:?}", c.earlier);
    assert!(!c.earlier.contains(&"Q0".to_string()), "{:?}", c.earlier);
}

#[test]
fn keys_are_bounded() {
    let signals = Signals::new(&[signal(Count::Messages, KeyKind::User, 1000)], 100);
    let one = vec!["a@x.test".to_string()];
    for i in 0..10_000u64 {
        let user = format!("u{i}");
        let k = Keys {
            user: Some(&user),
            ..Keys::default()
        };
        signals.observe(T0 + i, &k, &accepted("Q", &one));
    }
    assert_eq!(signals.tracked_keys(), 100);
    assert_eq!(signals.evictions(), (9_900, 0));
}

/// An attacker who sends from many fresh keys does not wash out its
/// own count: the smallest counts go first, and a key past half its
/// threshold is never forgotten.
#[test]
fn fresh_keys_do_not_evict_a_count_near_its_threshold() {
    let signals = Signals::new(&[signal(Count::Messages, KeyKind::User, 10)], 50);
    let one = vec!["a@x.test".to_string()];
    let user = |u: &'static str| Keys {
        user: Some(u),
        ..Keys::default()
    };
    for i in 0..8 {
        assert!(signals
            .observe(T0 + i, &user("mallory"), &accepted("Q", &one))
            .is_empty());
    }
    let fresh: Vec<String> = (0..5_000).map(|i| format!("fresh{i}")).collect();
    for (i, f) in fresh.iter().enumerate() {
        let k = Keys {
            user: Some(f),
            ..Keys::default()
        };
        signals.observe(T0 + 100 + i as u64, &k, &accepted("Q", &one));
    }
    assert_eq!(signals.tracked_keys(), 50);
    // Still counted: the ninth, tenth and eleventh cross at the eleventh.
    let t = T0 + 10_000;
    assert!(signals
        .observe(t, &user("mallory"), &accepted("Q", &one))
        .is_empty());
    assert!(signals
        .observe(t + 1, &user("mallory"), &accepted("Q", &one))
        .is_empty());
    assert_eq!(
        signals
            .observe(t + 2, &user("mallory"), &accepted("Q", &one))
            .len(),
        1
    );
    // When every key is past half its threshold, a new key is not
    // counted (and said so), rather than one of them forgotten.
    let full = Signals::new(&[signal(Count::Messages, KeyKind::User, 2)], 2);
    for u in ["a", "b"] {
        for i in 0..2 {
            full.observe(T0 + i, &user(u), &accepted("Q", &one));
        }
    }
    full.observe(T0 + 5, &user("c"), &accepted("Q", &one));
    assert_eq!((full.tracked_keys(), full.evictions()), (2, (0, 1)));
}
