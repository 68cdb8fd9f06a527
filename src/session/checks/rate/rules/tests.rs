use super::*;
use crate::address::canonical_ip;
use crate::config::{Config, LimitKeys, Matcher};
use std::path::Path;

fn limits() -> RateLimits {
    Config::parse(
            Path::new("t.yaml"),
            r#"
listen: inet:127.0.0.1:1
local_domains: [example.com]
rate_limits:
  messages_per_client: 100/h
  messages_per_sender: 50/h
  messages_per_recipient: 30/h
  recipients_per_sender: 500/d
  concurrent_per_client: 20
  overrides:
    - { match: 192.168.123.10, messages_per_client: 500/h }
    - { match: jim@xyz.com, messages_per_sender: 2/m }
    - { match: "@bulk.example.com", messages_per_sender: unlimited, recipients_per_sender: unlimited }
    - { match: 10.0.0.0/8, messages_per_sender: 10/h, concurrent_per_client: unlimited }
    - { match: crm-app, messages_per_client: 1000/h }
    - { match: "@example.net", messages_per_recipient: 5/h }
"#,
        )
        .unwrap()
        .rate_limits
}

fn rate_of(checks: &[Check], name: LimitName) -> Option<String> {
    checks
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.rate.to_string())
}

#[test]
fn first_matching_override_that_sets_the_limit_wins() {
    let l = limits();
    let jim = Address::parse("jim@xyz.com").unwrap();
    let bulk = Address::parse("news@bulk.example.com").unwrap();
    let ann = Address::parse("ann@xyz.com").unwrap();
    let f = |ip: &str, class, sender| Facts {
        ip: ip.parse().ok(),
        class,
        sender,
        ..Facts::default()
    };
    let c = message(&l, &f("192.168.123.10", None, Some(&jim)));
    assert_eq!(
        rate_of(&c, LimitName::MessagesPerClient).as_deref(),
        Some("500/h")
    );
    assert_eq!(
        rate_of(&c, LimitName::MessagesPerSender).as_deref(),
        Some("2/m")
    );
    // jim's own override comes before the 10/8 one.
    let c = message(&l, &f("10.1.1.1", None, Some(&jim)));
    assert_eq!(
        rate_of(&c, LimitName::MessagesPerSender).as_deref(),
        Some("2/m")
    );
    let c = message(&l, &f("10.1.1.1", None, Some(&ann)));
    assert_eq!(
        rate_of(&c, LimitName::MessagesPerSender).as_deref(),
        Some("10/h")
    );
    // unlimited: no check at all.
    let c = message(&l, &f("192.0.2.1", None, Some(&bulk)));
    assert_eq!(rate_of(&c, LimitName::MessagesPerSender), None);
    assert_eq!(
        rate_of(&c, LimitName::MessagesPerClient).as_deref(),
        Some("100/h")
    );
    // A trusted class is limited too, by its own override.
    let c = message(&l, &f("192.0.2.1", Some("crm-app"), Some(&ann)));
    assert_eq!(
        rate_of(&c, LimitName::MessagesPerClient).as_deref(),
        Some("1000/h")
    );
    // A null sender has no sender key.
    let c = message(&l, &f("192.0.2.1", None, None));
    assert_eq!(rate_of(&c, LimitName::MessagesPerSender), None);
}

#[test]
fn recipient_limits_match_the_recipient() {
    let l = limits();
    let ann = Address::parse("ann@xyz.com").unwrap();
    let r1 = Address::parse("x@example.net").unwrap();
    let r2 = Address::parse("x@gmail.com").unwrap();
    let facts = |rcpt| Facts {
        ip: "192.0.2.1".parse().ok(),
        sender: Some(&ann),
        rcpt,
        ..Facts::default()
    };
    let c = recipient(&l, &facts(Some(&r1)), &[]);
    assert_eq!(
        rate_of(&c, LimitName::MessagesPerRecipient).as_deref(),
        Some("5/h")
    );
    assert_eq!(c[0].key, "x@example.net");
    let c = recipient(&l, &facts(Some(&r2)), &[]);
    assert_eq!(
        rate_of(&c, LimitName::MessagesPerRecipient).as_deref(),
        Some("30/h")
    );
    assert_eq!(
        rate_of(&c, LimitName::RecipientsPerSender).as_deref(),
        Some("500/d")
    );
}

fn keyed(extra: &str) -> RateLimits {
    Config::parse(
        Path::new("t.yaml"),
        &format!(
            "listen: inet:127.0.0.1:1
local_domains: [example.com]
rate_limits:
  messages_per_sender: 50/h
  messages_per_user: 50/h
  messages_per_recipient: 30/h
{extra}  overrides:
    - {{ match: Jim@XYZ.com, messages_per_sender: 2/m }}
    - {{ match: GINA, messages_per_user: 3/m }}
"
        ),
    )
    .unwrap()
    .rate_limits
}

fn keys_of(l: &RateLimits, sender: &str, login: &str, rcpt: &str) -> Vec<(String, String)> {
    let sender = Address::parse(sender).unwrap();
    let rcpt = Address::parse(rcpt).unwrap();
    let facts = Facts {
        ip: "192.0.2.1".parse().ok(),
        login: Some(login),
        sender: Some(&sender),
        rcpt: Some(&rcpt),
        ..Facts::default()
    };
    message(l, &facts)
        .into_iter()
        .chain(recipient(l, &facts, &[]))
        .map(|c| (c.key, c.rate.to_string()))
        .collect()
}

#[test]
fn one_person_one_key_by_default() {
    let l = keyed("");
    // Case and subaddress folded, for senders, logins and recipients.
    let want = vec![
        ("w1@example.com".to_string(), "50/h".to_string()),
        ("gina".into(), "3/m".into()),
        ("w2@gmail.com".into(), "30/h".into()),
    ];
    for (sender, login, rcpt) in [
        ("w1@example.com", "gina", "w2@gmail.com"),
        ("W1@Example.COM", "GINA", "W2@gmail.com"),
        ("w1+news@example.com", "Gina", "w2+a+b@GMAIL.com"),
        ("\"W1+x\"@example.com", "gInA", "w2+@gmail.com"),
    ] {
        assert_eq!(
            keys_of(&l, sender, login, rcpt),
            want,
            "{sender} {login} {rcpt}"
        );
    }
    // Overrides match every spelling.
    let k = keys_of(&l, "jim+promo@xyz.com", "x", "a@b.example");
    assert_eq!(k[0], ("jim@xyz.com".into(), "2/m".into()));
    // A local part that starts with the delimiter stays whole.
    let k = keys_of(&l, "+tag@example.com", "x", "a@b.example");
    assert_eq!(k[0].0, "+tag@example.com");
}

#[test]
fn key_forms_can_be_turned_off_or_widened() {
    let l = keyed("  keys: { fold_case: false, delimiter: \"\" }\n");
    let k = keys_of(&l, "W1+news@example.com", "GINA", "W2+x@gmail.com");
    assert_eq!(
        k,
        vec![
            ("W1+news@example.com".to_string(), "50/h".to_string()),
            ("GINA".into(), "3/m".into()),
            ("W2+x@gmail.com".into(), "30/h".into()),
        ]
    );
    // The override is spelt Jim@; jim@ is another sender now, and gina
    // another login.
    let k = keys_of(&l, "jim@xyz.com", "gina", "a@b.example");
    assert_eq!(k[0].1, "50/h");
    assert_eq!(k[1].1, "50/h");
    let l = keyed("  keys: { delimiter: \"+-\" }\n");
    let k = keys_of(&l, "w1-news@example.com", "x", "owner-list@example.org");
    assert_eq!(k[0].0, "w1@example.com");
    assert_eq!(k[2].0, "owner@example.org");
}

/// Gmail-style dots: off by default; on for the listed domains only.
#[test]
fn dots_are_ignored_only_where_asked() {
    let l = keyed("");
    let k = keys_of(&l, "a@example.com", "x", "J.Ohn+x@gmail.com");
    assert_eq!(k[2].0, "j.ohn@gmail.com");
    let l = keyed("  keys: { ignore_dots_for: [gmail.com, GoogleMail.com.] }\n");
    for (rcpt, want) in [
        ("J.Ohn+x@gmail.com", "john@gmail.com"),
        ("j.o.h.n@googlemail.com", "john@googlemail.com"),
        ("j.ohn@example.org", "j.ohn@example.org"),
    ] {
        let k = keys_of(&l, "a@example.com", "x", rcpt);
        assert_eq!(k[2].0, want, "{rcpt}");
    }
    let e = Config::parse(
            Path::new("t.yaml"),
            "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\nrate_limits:\n  keys:\n    ignore_dots_for: [\"bad domain\"]\n",
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t.yaml:5: rate_limits.keys.ignore_dots_for[0]"),
        "{e}"
    );
}

/// IPv6 clients are one key per /64 by default, per the prefix given,
/// and per address at 128; IPv4 clients per address.
#[test]
fn ipv6_clients_are_keyed_by_prefix() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let l = keyed("");
    assert_eq!(l.keys.client(ip("2001:db8:1:2:3::9")), "2001:db8:1:2::/64");
    assert_eq!(l.keys.client(ip("::ffff:192.0.2.7")), "192.0.2.7");
    let l = keyed("  keys: { ipv6_prefix: 48 }\n");
    assert_eq!(l.keys.client(ip("2001:db8:1:2:3::9")), "2001:db8:1::/48");
    let l = keyed("  keys: { ipv6_prefix: 128 }\n");
    assert_eq!(l.keys.client(ip("2001:db8:1:2:3::9")), "2001:db8:1:2:3::9");
    let e = Config::parse(
        Path::new("t.yaml"),
        "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\nincidents:\n  ipv6_prefix: 129\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("t.yaml:4: incidents.ipv6_prefix"), "{e}");
}

#[test]
fn a_bad_delimiter_names_its_key() {
    for bad in ["a", "+ ", "@", "\\\\"] {
        let text = format!(
                "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\nrate_limits:\n  keys: {{ delimiter: \"{bad}\" }}\n"
            );
        let e = Config::parse(Path::new("t.yaml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.yaml:4") && e.contains("rate_limits.keys.delimiter"),
            "{bad}: {e}"
        );
    }
}

fn custom(text: &str) -> Result<RateLimits, String> {
    Config::parse(
            Path::new("t.yaml"),
            &format!("listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\nrate_limits:\n  custom:\n{text}"),
        )
        .map(|c| c.rate_limits)
        .map_err(|e| e.to_string())
}

fn customs(checks: &[Check]) -> Vec<(String, String, String)> {
    checks
        .iter()
        .filter(|c| matches!(c.name, crate::limiter::LimitId::Custom(_)))
        .map(|c| (c.name.to_string(), c.key.clone(), c.rate.to_string()))
        .collect()
}

#[test]
fn custom_limits_key_count_and_stage() {
    let l = custom(
            r#"    - { name: tenant, key: sender_domain, count: messages, rate: 1000/h }
    - { name: net, key: client_network, count: messages, rate: 50/m }
    - { name: bounces, key: client, count: bounces, rate: 10/h }
    - { name: to_domain, key: recipient_domain, count: messages, rate: 300/m, overrides: [{ match: "@gmail.com", rate: 100/m }] }
    - { name: pairs, key: user+recipient_domain, count: recipients, rate: 20/h }
    - { name: per_class, key: class, count: recipients, rate: unlimited, overrides: [{ match: crm-app, rate: 5000/d }] }
"#,
        )
        .unwrap();
    let ann = Address::parse("Ann+x@Example.COM").unwrap();
    let gmail = Address::parse("Bob@GMAIL.com").unwrap();
    let other = Address::parse("c@other.example").unwrap();
    let mail = |sender: Option<&Address>, ip: &str| {
        customs(&message(
            &l,
            &Facts {
                ip: ip.parse().ok(),
                sender,
                bounce: sender.is_none(),
                login: Some("Gina"),
                class: Some("crm-app"),
                ..Facts::default()
            },
        ))
    };
    assert_eq!(
        mail(Some(&ann), "192.0.2.77"),
        vec![
            ("tenant".into(), "example.com".into(), "1000/h".into()),
            ("net".into(), "192.0.2.0/24".into(), "50/m".into()),
        ]
    );
    // A bounce: no sender domain; the bounce counter counts.
    assert_eq!(
        mail(None, "2001:db8:1:2:3::9"),
        vec![
            ("net".into(), "2001:db8:1:2::/64".into(), "50/m".into()),
            // A client keyed by its /64 (rate_limits.keys.ipv6_prefix).
            ("bounces".into(), "2001:db8:1:2::/64".into(), "10/h".into()),
        ]
    );
    let rcpt = |r: &Address, charged: &[(&'static str, String)]| {
        customs(&recipient(
            &l,
            &Facts {
                ip: "192.0.2.77".parse().ok(),
                sender: Some(&ann),
                rcpt: Some(r),
                login: Some("Gina"),
                class: Some("crm-app"),
                ..Facts::default()
            },
            charged,
        ))
    };
    let first = rcpt(&gmail, &[]);
    assert_eq!(
        first,
        vec![
            ("to_domain".into(), "gmail.com".into(), "100/m".into()),
            ("pairs".into(), "gina+gmail.com".into(), "20/h".into()),
            ("per_class".into(), "crm-app".into(), "5000/d".into()),
        ]
    );
    // The message has paid for gmail.com once: the next gmail.com
    // recipient pays recipients only.
    let paid = charged_once(
        &l,
        &recipient(
            &l,
            &Facts {
                sender: Some(&ann),
                rcpt: Some(&gmail),
                login: Some("Gina"),
                ..Facts::default()
            },
            &[],
        ),
    );
    assert_eq!(paid, vec![("to_domain", "gmail.com".to_string())]);
    let second = rcpt(&gmail, &paid);
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(second.iter().all(|(n, _, _)| n != "to_domain"));
    assert_eq!(rcpt(&other, &paid)[0].2, "300/m");
}

#[test]
fn byte_rates_are_sizes_per_period() {
    let l = custom(
            "    - { name: b, key: sender_domain, count: bytes, rate: 500MB/d, mode: monitor }\n    - { name: c, key: client, count: bytes, rate: 2GiB/w }\n",
        )
        .unwrap();
    assert_eq!(
        l.custom[0].rate.map(|r| r.to_string()).as_deref(),
        Some("500000000/d")
    );
    assert!(l.custom[0].monitor && !l.custom[1].monitor);
    assert_eq!(
        l.custom[1].rate.map(|r| r.count),
        Some(2 * 1024 * 1024 * 1024)
    );
    let ann = Address::parse("ann@example.com").unwrap();
    let r1 = Address::parse("a@x.example").unwrap();
    let facts = Facts {
        ip: "192.0.2.1".parse().ok(),
        sender: Some(&ann),
        ..Facts::default()
    };
    let checks = end_of_message(&l, &facts, &[r1], 12_345);
    assert_eq!(checks.len(), 2);
    assert!(checks.iter().all(|c| c.n == 12_345));
    let (enforce, shadow) = split_shadow(&l, &checks);
    assert_eq!((enforce.len(), shadow.len()), (1, 1));
    assert_eq!(shadow[0].key, "example.com");
}

#[test]
fn custom_limit_errors_name_their_key() {
    for (text, key, why) in [
            ("    - { name: messages_per_client, key: client, count: messages, rate: 1/h }\n", "rate_limits.custom[0].name", "already a limit's name"),
            ("    - { name: Tenant, key: client, count: messages, rate: 1/h }\n", "rate_limits.custom[0].name", "lower-case"),
            ("    - { name: t, key: tenant, count: messages, rate: 1/h }\n", "rate_limits.custom[0].key", "expected one of client"),
            ("    - { name: t, key: user+class+client, count: messages, rate: 1/h }\n", "rate_limits.custom[0].key", "at most a pair"),
            ("    - { name: t, key: client, count: parcels, rate: 1/h }\n", "rate_limits.custom[0].count", "expected one of messages"),
            ("    - { name: t, key: sender_domain, count: bounces, rate: 1/h }\n", "rate_limits.custom[0].key", "a bounce has no sender"),
            ("    - { name: t, key: client, count: messages, rate: 1/y }\n", "rate_limits.custom[0].rate", "invalid rate"),
            ("    - { name: t, key: client, count: messages, rate: 1/h, overrides: [{ match: \"10.0.0.1/8\", rate: 2/h }] }\n", "rate_limits.custom[0].overrides[0].match", "invalid network"),
            ("    - { name: t, key: client, count: messages, rate: 1/h }\n    - { name: t, key: user, count: messages, rate: 1/h }\n", "rate_limits.custom[1].name", "already a limit's name"),
            ("    - { name: t, key: client, count: bytes, rate: 5 parsecs/d }\n", "rate_limits.custom[0].rate", "invalid byte rate"),
            ("    - { name: t, key: recipient_domain, count: distinct_recipients, rate: 5/h }\n", "rate_limits.custom[0].key", "distinct recipients are counted per sender"),
            ("    - { name: t, key: client, count: messages, rate: 1/h, mode: shadow }\n", "rate_limits.custom", "unknown variant"),
        ] {
            let e = custom(text).unwrap_err();
            assert!(e.contains("t.yaml:5") || e.contains("t.yaml:6"), "{e}");
            assert!(e.contains(key) && e.contains(why), "{text}: {e}");
        }
}

#[test]
fn concurrent_cap() {
    let l = limits();
    let f = |ip: &str| Facts {
        ip: ip.parse().ok(),
        ..Facts::default()
    };
    assert_eq!(connection(&l, &f("192.0.2.1")).1, Some(20));
    assert_eq!(connection(&l, &f("10.2.3.4")).1, None);
    assert_eq!(connection(&l, &Facts::default()).1, None);
}

/// What an override matched before the index: every override read in order
/// (the reference the index must agree with).
fn scanned(m: &Matcher, keys: &LimitKeys, name: LimitName, f: &Facts<'_>) -> bool {
    let address = if name == LimitName::MessagesPerRecipient {
        f.rcpt
    } else {
        f.sender
    };
    match m {
        Matcher::Network(n) => f.ip.is_some_and(|ip| n.contains(&canonical_ip(ip))),
        Matcher::Word(w) => {
            f.class == Some(w.as_str()) || f.login.is_some_and(|l| keys.same_login(l, w))
        }
        Matcher::Domain(p) => address
            .and_then(|a| a.domain.name())
            .is_some_and(|d| p.matches(d)),
        Matcher::Address(a) => address.is_some_and(|x| keys.same_address(x, a)),
    }
}

/// Overlapping networks, a class and a login of one word, a domain and an
/// address in it, wildcard and exact domains, every spelling of a person:
/// the indexed overrides pick what reading them in order picked, for every
/// limit, with the first match winning.
#[test]
fn indexed_overrides_pick_what_reading_them_in_order_picks() {
    let l = Config::parse(
        Path::new("t.yaml"),
        r#"
listen: inet:127.0.0.1:1
local_domains: [example.com]
rate_limits:
  messages_per_client: 100/h
  messages_per_sender: 50/h
  messages_per_user: 40/h
  messages_per_recipient: 30/h
  recipients_per_sender: 500/d
  custom:
    - name: per_domain
      key: sender_domain
      count: messages
      rate: 1000/h
      overrides:
        - { match: "@*.example.org", rate: 1/h }
        - { match: "@b.example.org", rate: 2/h }
        - { match: 10.1.0.0/16, rate: 3/h }
    - name: per_rcpt
      key: recipient_domain
      count: messages
      rate: 1000/h
      overrides:
        - { match: "@gmail.com", rate: 4/h }
        - { match: Bob+x@Gmail.com, rate: 5/h }
  overrides:
    - { match: 10.1.2.0/24, messages_per_client: 1/h }
    - { match: 10.1.0.0/16, messages_per_client: 2/h, messages_per_sender: 2/h }
    - { match: "::ffff:10.9.0.0/112", messages_per_client: 3/h }
    - { match: app, messages_per_sender: 3/h }
    - { match: Gina, messages_per_user: 4/h, messages_per_client: 4/h }
    - { match: "@*.example.org", messages_per_sender: 5/h, messages_per_recipient: 5/h }
    - { match: "@b.example.org", messages_per_sender: 6/h }
    - { match: jim@b.example.org, messages_per_sender: 7/h, recipients_per_sender: 7/d }
    - { match: "@example.org", messages_per_sender: 8/h }
    - { match: Bob@Gmail.com, messages_per_recipient: 9/h }
    - { match: "2001:db8::/32", messages_per_client: 10/h }
    - { match: 10.1.2.3, messages_per_sender: 11/h }
"#,
    )
    .unwrap()
    .rate_limits;
    let ips = [
        None,
        Some("10.1.2.3"),
        Some("10.1.9.9"),
        Some("::ffff:10.1.2.3"),
        Some("10.9.0.1"),
        Some("2001:db8::1"),
        Some("192.0.2.1"),
    ];
    let addresses = [
        None,
        Some("jim@b.example.org"),
        Some("JIM+news@B.Example.ORG"),
        Some("ann@b.example.org"),
        Some("x@a.b.example.org"),
        Some("x@example.org"),
        Some("bob@gmail.com"),
        Some("Bob+y@gmail.com"),
        Some("z@elsewhere.test"),
    ];
    let parsed: Vec<Option<Address>> = addresses
        .iter()
        .map(|a| a.map(|a| Address::parse(a).unwrap()))
        .collect();
    let names = [
        LimitName::MessagesPerClient,
        LimitName::MessagesPerSender,
        LimitName::MessagesPerUser,
        LimitName::MessagesPerRecipient,
        LimitName::RecipientsPerSender,
    ];
    let mut compared = 0;
    for ip in ips {
        for class in [None, Some("app"), Some("gina"), Some("other")] {
            for login in [None, Some("gina"), Some("GINA"), Some("app"), Some("bob")] {
                for sender in &parsed {
                    for rcpt in &parsed {
                        let f = Facts {
                            ip: ip.map(|i| i.parse().unwrap()),
                            class,
                            login,
                            sender: sender.as_ref(),
                            rcpt: rcpt.as_ref(),
                            bounce: false,
                        };
                        for name in names {
                            let want = l
                                .overrides
                                .iter()
                                .filter(|o| scanned(&o.matcher, &l.keys, name, &f))
                                .find_map(|o| o.limits.get(name))
                                .or_else(|| l.defaults.get(name));
                            assert_eq!(setting(&l, name, &f), want, "{name:?} {f:?}");
                            compared += 1;
                        }
                        for c in &l.custom {
                            let name = if c.key.iter().any(|k| k.per_recipient()) {
                                LimitName::MessagesPerRecipient
                            } else {
                                LimitName::MessagesPerSender
                            };
                            let want = c
                                .overrides
                                .iter()
                                .find(|(m, _)| scanned(m, &l.keys, name, &f))
                                .map_or(c.rate, |(_, r)| *r);
                            assert_eq!(custom_rate(&l, c, &f), want, "{} {f:?}", c.name);
                        }
                    }
                }
            }
        }
    }
    assert!(compared > 10_000, "{compared}");
}
