//! Rate and connection limits over the milter protocol, local backend.

use crate::common;
use common::{mail, reply};
use std::time::Duration;

/// One message's MAIL FROM on a fresh connection from `ip`; returns the
/// reply, and closes.
async fn one_mail(d: &common::Daemon, ip: &str, sender: &str) -> String {
    let mut conn = d.client(ip).await;
    let r = reply(&mail(&mut conn, sender, None).await);
    conn.close().await.unwrap();
    r
}

#[tokio::test]
async fn the_sender_over_its_rate_is_tempfailed_with_a_retry_hint() {
    let d = common::start("rate.yaml").await;
    let mut conn = d.client("10.7.0.1").await;
    for _ in 0..2 {
        assert_eq!(
            reply(&mail(&mut conn, "<jim@xyz.com>", None).await),
            "continue"
        );
        conn.abort().await.unwrap();
    }
    assert_eq!(
        reply(&mail(&mut conn, "<jim@xyz.com>", None).await),
        "451 4.7.1 Rate limit messages_per_sender exceeded for jim@xyz.com, retry in 30s"
    );
    conn.abort().await.unwrap();
    // Another sender from the same client still passes: 3/h by default.
    for _ in 0..3 {
        assert_eq!(
            reply(&mail(&mut conn, "<ann@xyz.com>", None).await),
            "continue"
        );
        conn.abort().await.unwrap();
    }
    let r = reply(&mail(&mut conn, "<ann@xyz.com>", None).await);
    assert!(
        r.starts_with(
            "451 4.7.1 Rate limit messages_per_sender exceeded for ann@xyz.com, retry in 12"
        ),
        "{r}"
    );
    conn.close().await.unwrap();
    d.stop().await;
}

#[tokio::test]
async fn refused_attempts_consume_no_quota() {
    let d = common::start("rate.yaml").await;
    let mut conn = d.client("10.7.0.2").await;
    // Refused by sender policy: 20 times, none counted against the client.
    for _ in 0..20 {
        let r = reply(&mail(&mut conn, "<x@evil.com>", None).await);
        assert!(r.starts_with("550 5.7.1"), "{r}");
        conn.abort().await.unwrap();
    }
    // Refused by the sender's own limit: not counted against the client.
    for i in 0..12 {
        let r = reply(&mail(&mut conn, "<jim@xyz.com>", None).await);
        assert_eq!(r.starts_with("451"), i >= 2, "{i}: {r}");
        conn.abort().await.unwrap();
    }
    // The client's 10/h: 2 used by jim, so 8 more senders pass (at 3/h each
    // is no obstacle: one message each).
    for i in 0..8 {
        assert_eq!(
            reply(&mail(&mut conn, &format!("<s{i}@xyz.com>"), None).await),
            "continue",
            "{i}"
        );
        conn.abort().await.unwrap();
    }
    let r = reply(&mail(&mut conn, "<s9@xyz.com>", None).await);
    assert!(
        r.starts_with("451 4.7.1 Rate limit messages_per_client exceeded for 10.7.0.2"),
        "{r}"
    );
    conn.close().await.unwrap();
    d.stop().await;
}

#[tokio::test]
async fn recipient_limits_count_each_accepted_recipient() {
    let d = common::start("rate.yaml").await;
    let mut conn = d.client("10.7.0.3").await;
    assert_eq!(
        reply(&mail(&mut conn, "<ann@example.com>", None).await),
        "continue"
    );
    // messages_per_recipient 2/h: the same recipient twice, then refused.
    assert_eq!(
        reply(&conn.rcpt(["<r@gmail.com>"]).await.unwrap()),
        "continue"
    );
    assert_eq!(
        reply(&conn.rcpt(["<r@gmail.com>"]).await.unwrap()),
        "continue"
    );
    let r = reply(&conn.rcpt(["<r@gmail.com>"]).await.unwrap());
    assert!(
        r.starts_with(
            "451 4.7.1 Rate limit messages_per_recipient exceeded for r@gmail.com, retry in"
        ),
        "{r}"
    );
    // recipients_per_sender 5/h: 2 used, 3 more, then refused.
    for i in 0..3 {
        assert_eq!(
            reply(&conn.rcpt([format!("<o{i}@gmail.com>")]).await.unwrap()),
            "continue"
        );
    }
    let r = reply(&conn.rcpt(["<o9@gmail.com>"]).await.unwrap());
    assert!(
        r.starts_with("451 4.7.1 Rate limit recipients_per_sender exceeded for ann@example.com"),
        "{r}"
    );
    conn.close().await.unwrap();
    d.stop().await;
}

#[tokio::test]
async fn concurrent_connections_are_released_on_close_abort_and_drop() {
    let d = common::start("rate.yaml").await;
    let a = d.client("10.1.1.1").await;
    let mut b = d.client("10.1.1.1").await;
    let mut c = d.open().await;
    let addr: std::net::SocketAddr = "10.1.1.1:1".parse().unwrap();
    assert_eq!(
        reply(&c.connect("x", addr).await.unwrap()),
        "421 4.7.0 Too many connections from 10.1.1.1"
    );
    // Another client is not affected.
    let other = d.client("10.1.1.2").await;
    other.close().await.unwrap();
    // A clean close gives the place back.
    a.close().await.unwrap();
    drop(c);
    // The connection rate (4/m) is spent by now; a trusted newsletter host
    // is unlimited by its override.
    let mut n = Vec::new();
    for _ in 0..5 {
        n.push(d.client("10.9.9.9").await);
    }
    // An abrupt drop (the MTA's process died) gives the place back too,
    // once the daemon has seen the socket close.
    assert_eq!(
        reply(&mail(&mut b, "<ann@xyz.com>", None).await),
        "continue"
    );
    drop(b);
    // (Read as `limits show` reads it, not with a connection, which would
    // spend the client's connection rate.) Bounded: 2 s at most.
    let mut freed = false;
    for _ in 0..200 {
        if common::open_connections(&d.shared, "10.1.1.1").await == 0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(freed, "the dropped connection still counts");
    for conn in n {
        conn.close().await.unwrap();
    }
    d.stop().await;
}

#[tokio::test]
async fn the_connection_rate_answers_421_at_connect() {
    let d = common::start("rate.yaml").await;
    for _ in 0..4 {
        let c = d.client("10.2.2.2").await;
        c.close().await.unwrap();
    }
    let mut c = d.open().await;
    let addr: std::net::SocketAddr = "10.2.2.2:1".parse().unwrap();
    assert_eq!(
        reply(&c.connect("x", addr).await.unwrap()),
        "421 4.7.0 Too many connections from 10.2.2.2"
    );
    drop(c);
    d.stop().await;
}

#[tokio::test]
async fn monitor_mode_counts_rate_refusals_without_refusing() {
    let mut config =
        egress_milter::config::Config::load(&common::config_path("rate.yaml")).unwrap();
    config.mode = egress_milter::config::Mode::Monitor;
    let d = common::start_with(config).await;
    for _ in 0..5 {
        assert_eq!(one_mail(&d, "10.7.0.9", "<jim@xyz.com>").await, "continue");
    }
    let m = d.metrics();
    assert_eq!(common::decisions(&m, "would_tempfail"), 3);
    assert_eq!(common::decisions(&m, "tempfail"), 0);
    d.stop().await;
}

#[tokio::test]
async fn reload_keeps_the_counters_of_unchanged_limits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milter.yaml");
    let original = std::fs::read_to_string(common::config_path("rate.yaml")).unwrap();
    std::fs::write(&path, &original).unwrap();
    let config = egress_milter::config::Config::load(&path).unwrap();
    let d = common::start_with(config).await;
    let jim = "<jim@xyz.com>";
    assert_eq!(one_mail(&d, "10.7.1.1", jim).await, "continue");
    assert_eq!(one_mail(&d, "10.7.1.1", jim).await, "continue");
    assert!(one_mail(&d, "10.7.1.1", jim).await.starts_with("451 4.7.1"));
    // Another limit changes: jim's 2/m keeps its count.
    std::fs::write(
        &path,
        original.replace("messages_per_client: 10/h", "messages_per_client: 20/h"),
    )
    .unwrap();
    d.shared.reload().unwrap();
    assert!(one_mail(&d, "10.7.1.1", jim)
        .await
        .starts_with("451 4.7.1 Rate limit messages_per_sender"));
    // jim's own rate changes: it starts afresh under the new one.
    std::fs::write(
        &path,
        original.replace("messages_per_sender: 2/m", "messages_per_sender: 5/m"),
    )
    .unwrap();
    d.shared.reload().unwrap();
    assert_eq!(one_mail(&d, "10.7.1.1", jim).await, "continue");
    d.stop().await;
}

/// `"jim"@xyz.com` is `jim@xyz.com` (RFC 5322 §3.2.4), and receivers fold
/// the case of a local part: no spelling of an address buys a fresh budget
/// of any limit keyed by it, nor escapes an override that names it.
#[tokio::test]
async fn respelling_an_address_buys_no_budget() {
    let d = common::start("rate.yaml").await;
    // messages_per_sender, jim's override: 2/m.
    let mut conn = d.client("10.7.0.20").await;
    for sender in ["<jim@xyz.com>", "<\"jim\"@xyz.com>"] {
        assert_eq!(reply(&mail(&mut conn, sender, None).await), "continue");
        conn.abort().await.unwrap();
    }
    for sender in [
        "<\"j\\im\"@XYZ.com.>",
        "<JIM@xyz.com>",
        "<@relay.test:\"Jim\"@xyz.com>",
        "<jim+promo@xyz.com>",
        "<Jim+a+b@xyz.com>",
    ] {
        let r = reply(&mail(&mut conn, sender, None).await);
        assert!(
            r.starts_with(
                "451 4.7.1 Rate limit messages_per_sender exceeded for jim@xyz.com, retry in "
            ),
            "{sender}: {r}"
        );
        conn.abort().await.unwrap();
    }
    conn.close().await.unwrap();

    // recipients_per_sender: 5/h, counted across three spellings of bob.
    let mut conn = d.client("10.7.0.21").await;
    let mut n = 0;
    for sender in ["<\"bob\"@xyz.com>", "<bob+news@xyz.com>", "<BOB@xyz.com>"] {
        assert_eq!(reply(&mail(&mut conn, sender, None).await), "continue");
        for _ in 0..2 {
            n += 1;
            let r = reply(&conn.rcpt([format!("<r{n}@example.net>")]).await.unwrap());
            if n <= 5 {
                assert_eq!(r, "continue", "recipient {n}");
            } else {
                assert!(
                    r.starts_with(
                        "451 4.7.1 Rate limit recipients_per_sender exceeded for bob@xyz.com"
                    ),
                    "recipient {n}: {r}"
                );
            }
        }
        conn.abort().await.unwrap();
    }
    conn.close().await.unwrap();

    // messages_per_recipient: 2/h for one victim, however it is spelt.
    let mut conn = d.client("10.7.0.22").await;
    let spellings = [
        "<victim@example.com>",
        "<\"victim\"@example.com>",
        "<Victim+x@EXAMPLE.com>",
        "<\"vic\\tim\"@example.com.>",
    ];
    for (i, rcpt) in spellings.iter().enumerate() {
        assert_eq!(
            reply(&mail(&mut conn, &format!("<s{i}@xyz.com>"), None).await),
            "continue"
        );
        let r = reply(&conn.rcpt([*rcpt]).await.unwrap());
        if i < 2 {
            assert_eq!(r, "continue", "{rcpt}");
        } else {
            assert!(
                r.starts_with(
                    "451 4.7.1 Rate limit messages_per_recipient exceeded for victim@example.com"
                ),
                "{rcpt}: {r}"
            );
        }
        conn.abort().await.unwrap();
    }
    conn.close().await.unwrap();
    d.stop().await;
}

/// Logins fold case too; and `rate_limits.keys` turned off makes each
/// spelling a budget of its own.
#[tokio::test]
async fn key_forms_follow_rate_limits_keys() {
    let config = |keys: &str| {
        egress_milter::config::Config::parse(
            std::path::Path::new("keys.yaml"),
            &format!(
                "listen: inet:127.0.0.1:0
local_domains: [example.com]
classes:
  - {{ name: staff, auth: any, sender_domains: [example.com] }}
rate_limits:
{keys}  messages_per_user: 2/h
  messages_per_sender: 2/h
"
            ),
        )
        .expect("config")
    };
    // Defaults: GINA, gina and Gina are one login; w1@, W1@, w1+x@ one sender.
    let d = common::start_with(config("")).await;
    let mut conn = d.client("192.0.2.7").await;
    for (i, login) in ["gina", "GINA"].iter().enumerate() {
        let sender = format!("<u{i}@example.com>");
        assert_eq!(
            reply(&mail(&mut conn, &sender, Some(login)).await),
            "continue"
        );
        conn.abort().await.unwrap();
    }
    let r = reply(&mail(&mut conn, "<u9@example.com>", Some("Gina")).await);
    assert!(
        r.starts_with("451 4.7.1 Rate limit messages_per_user exceeded for gina, retry in "),
        "{r}"
    );
    conn.abort().await.unwrap();
    for (i, sender) in ["<w1@example.com>", "<W1+news@example.com>"]
        .iter()
        .enumerate()
    {
        let login = format!("user{i}");
        assert_eq!(
            reply(&mail(&mut conn, sender, Some(&login)).await),
            "continue"
        );
        conn.abort().await.unwrap();
    }
    let r = reply(&mail(&mut conn, "<w1+x@example.com>", Some("user9")).await);
    assert!(
        r.starts_with(
            "451 4.7.1 Rate limit messages_per_sender exceeded for w1@example.com, retry in "
        ),
        "{r}"
    );
    conn.close().await.unwrap();
    d.stop().await;

    // Off: every spelling counts on its own.
    let d = common::start_with(config("  keys: { fold_case: false, delimiter: \"\" }\n")).await;
    let mut conn = d.client("192.0.2.8").await;
    for (login, sender) in [
        ("gina", "<w1@example.com>"),
        ("GINA", "<W1@example.com>"),
        ("Gina", "<w1+x@example.com>"),
        ("gina", "<w1+y@example.com>"),
    ] {
        assert_eq!(
            reply(&mail(&mut conn, sender, Some(login)).await),
            "continue",
            "{login} {sender}"
        );
        conn.abort().await.unwrap();
    }
    let r = reply(&mail(&mut conn, "<w1@example.com>", Some("gina")).await);
    assert!(
        r.starts_with("451 4.7.1 Rate limit messages_per_user exceeded for gina, retry in "),
        "{r}"
    );
    conn.close().await.unwrap();
    d.stop().await;
}

/// The connection limits at connect are judged under the mode of the class
/// the client IP alone matches, not the global mode, both ways round.
#[tokio::test]
async fn a_class_mode_holds_at_connect() {
    let config = |global: &str, class: &str| {
        egress_milter::config::Config::parse(
            std::path::Path::new("connect-mode.yaml"),
            &format!(
                "listen: inet:127.0.0.1:0
mode: {global}
local_domains: [example.com]
classes:
  - {{ name: trial, clients: [10.8.0.0/16], mode: {class} }}
rate_limits:
  concurrent_per_client: 1
  connections_per_client: 2/m
"
            ),
        )
        .unwrap()
    };
    let addr: std::net::SocketAddr = "10.8.0.1:1".parse().unwrap();
    let other: std::net::SocketAddr = "10.9.0.1:1".parse().unwrap();

    // Global enforce, the class in monitor: its connections over both
    // limits go through; a client in no class is still refused.
    let d = common::start_with(config("enforce", "monitor")).await;
    let mut held = Vec::new();
    for i in 0..3 {
        let mut c = d.open().await;
        assert_eq!(
            reply(&c.connect("x", addr).await.unwrap()),
            "continue",
            "{i}"
        );
        held.push(c);
    }
    let _first = {
        let mut c = d.open().await;
        assert_eq!(reply(&c.connect("x", other).await.unwrap()), "continue");
        c
    };
    let mut c = d.open().await;
    assert_eq!(
        reply(&c.connect("x", other).await.unwrap()),
        "421 4.7.0 Too many connections from 10.9.0.1"
    );
    drop(held);
    d.stop().await;

    // Global monitor, the class enforcing: its second connection is
    // refused, while a client in no class is let through.
    let d = common::start_with(config("monitor", "enforce")).await;
    let mut first = d.open().await;
    assert_eq!(reply(&first.connect("x", addr).await.unwrap()), "continue");
    let mut c = d.open().await;
    assert_eq!(
        reply(&c.connect("x", addr).await.unwrap()),
        "421 4.7.0 Too many connections from 10.8.0.1"
    );
    let mut held = Vec::new();
    for i in 0..3 {
        let mut c = d.open().await;
        assert_eq!(
            reply(&c.connect("x", other).await.unwrap()),
            "continue",
            "{i}"
        );
        held.push(c);
    }
    drop((first, held));
    d.stop().await;
}

fn custom_config(custom: &str) -> egress_milter::config::Config {
    egress_milter::config::Config::parse(
        std::path::Path::new("custom.yaml"),
        &format!(
            "listen: inet:127.0.0.1:0
local_domains: [example.com, tenant.example, other.example]
classes:
  - name: app
    clients: [10.0.0.0/8]
    sender_domains: [tenant.example, other.example]
    allow_null_sender: true
rate_limits:
  messages_per_sender: 100/h
  custom:
{custom}"
        ),
    )
    .expect("config")
}

/// A tenant's budget, shared by every sender of its domain.
#[tokio::test]
async fn a_tenant_budget_is_shared_by_its_senders() {
    let d = common::start_with(custom_config(
        "    - { name: tenant_msgs, key: sender_domain, count: messages, rate: 3/h }\n",
    ))
    .await;
    let mut conn = d.client("10.8.0.1").await;
    for sender in [
        "<a@tenant.example>",
        "<b@tenant.example>",
        "<A+x@TENANT.example>",
    ] {
        assert_eq!(
            reply(&mail(&mut conn, sender, None).await),
            "continue",
            "{sender}"
        );
        conn.abort().await.unwrap();
    }
    let r = reply(&mail(&mut conn, "<c@tenant.example>", None).await);
    assert!(
        r.starts_with("451 4.7.1 Rate limit tenant_msgs exceeded for tenant.example, retry in 12"),
        "{r}"
    );
    conn.abort().await.unwrap();
    // Another tenant has its own budget.
    assert_eq!(
        reply(&mail(&mut conn, "<a@other.example>", None).await),
        "continue"
    );
    conn.close().await.unwrap();
    d.stop().await;
}

/// Bounces counted on their own: a null sender spends the bounce budget,
/// other mail does not.
#[tokio::test]
async fn bounces_have_a_budget_of_their_own() {
    let d = common::start_with(custom_config(
        "    - { name: bounces, key: client, count: bounces, rate: 2/h }\n",
    ))
    .await;
    let mut conn = d.client("10.8.0.2").await;
    for _ in 0..2 {
        assert_eq!(reply(&mail(&mut conn, "<>", None).await), "continue");
        conn.abort().await.unwrap();
        assert_eq!(
            reply(&mail(&mut conn, "<a@tenant.example>", None).await),
            "continue"
        );
        conn.abort().await.unwrap();
    }
    let r = reply(&mail(&mut conn, "<>", None).await);
    assert!(
        r.starts_with("451 4.7.1 Rate limit bounces exceeded for 10.8.0.2, retry in "),
        "{r}"
    );
    conn.abort().await.unwrap();
    assert_eq!(
        reply(&mail(&mut conn, "<a@tenant.example>", None).await),
        "continue"
    );
    conn.close().await.unwrap();
    d.stop().await;
}

/// Messages per recipient domain: a message to three gmail.com recipients
/// counts once; the override is gentler with one receiver.
#[tokio::test]
async fn messages_per_recipient_domain_count_each_message_once() {
    let d = common::start_with(custom_config(
        "    - name: per_domain
      key: recipient_domain
      count: messages
      rate: 10/h
      overrides: [{ match: \"@gmail.example\", rate: 2/h }]
",
    ))
    .await;
    let mut conn = d.client("10.8.0.3").await;
    for i in 0..2 {
        assert_eq!(
            reply(&mail(&mut conn, "<a@tenant.example>", None).await),
            "continue"
        );
        for j in 0..3 {
            let r = reply(
                &conn
                    .rcpt([format!("<u{i}{j}@GMAIL.example>")])
                    .await
                    .unwrap(),
            );
            assert_eq!(r, "continue", "message {i}, recipient {j}");
        }
        conn.abort().await.unwrap();
    }
    assert_eq!(
        reply(&mail(&mut conn, "<a@tenant.example>", None).await),
        "continue"
    );
    let r = reply(&conn.rcpt(["<x@gmail.example>"]).await.unwrap());
    assert!(
        r.starts_with("451 4.7.1 Rate limit per_domain exceeded for gmail.example, retry in "),
        "{r}"
    );
    // Other receivers: the default 10/h.
    let r = reply(&conn.rcpt(["<x@yahoo.example>"]).await.unwrap());
    assert_eq!(r, "continue");
    conn.close().await.unwrap();
    d.stop().await;
}

/// Headers, a body of `size` bytes, end of message: the reply at end of
/// message.
async fn whole_message(conn: &mut indymilter_test::TestConnection, size: usize) -> String {
    conn.header("From", "<a@tenant.example>").await.unwrap();
    assert_eq!(conn.eoh().await.unwrap(), indymilter_test::Status::Continue);
    for chunk in vec![b'x'; size].chunks(60_000) {
        conn.body(chunk.to_vec()).await.unwrap();
    }
    let (_, eom) = conn.eom().await.unwrap();
    reply(&eom)
}

/// Bytes are charged at end of message, when the size is known: a tenant's
/// 100 KB a day is spent by two 40 KB messages; the third waits; a
/// message larger than the whole budget is refused for good.
#[tokio::test]
async fn bytes_are_charged_at_end_of_message() {
    let d = common::start_with(custom_config(
        "    - { name: tenant_bytes, key: sender_domain, count: bytes, rate: 100KB/d }\n",
    ))
    .await;
    let mut conn = d.client("10.8.0.4").await;
    for _ in 0..2 {
        common::envelope(&mut conn, "<a@tenant.example>", "<x@gmail.example>").await;
        assert_eq!(whole_message(&mut conn, 40_000).await, "continue");
    }
    common::envelope(&mut conn, "<b@tenant.example>", "<x@gmail.example>").await;
    let r = whole_message(&mut conn, 40_000).await;
    assert!(
        r.starts_with("451 4.7.1 Rate limit tenant_bytes exceeded for tenant.example, retry in "),
        "{r}"
    );
    // A small one still fits what is left.
    common::envelope(&mut conn, "<b@tenant.example>", "<x@gmail.example>").await;
    assert_eq!(whole_message(&mut conn, 5_000).await, "continue");
    // Larger than the whole budget: never.
    common::envelope(&mut conn, "<a@other.example>", "<x@gmail.example>").await;
    let r = whole_message(&mut conn, 150_000).await;
    assert_eq!(
        r,
        "552 5.3.4 Message size exceeds rate limit tenant_bytes for other.example"
    );
    conn.close().await.unwrap();
    d.stop().await;
}

/// A shadow limit (`mode: monitor`) next to an enforcing one: the shadow
/// one is counted and logged `would_tempfail`, never refuses; the
/// enforcing one refuses.
#[tokio::test]
async fn a_shadow_limit_counts_while_another_enforces() {
    let d = common::start_with(custom_config(
        "    - { name: shadow_tenant, key: sender_domain, count: messages, rate: 2/h, mode: monitor }
    - { name: tenant, key: sender_domain, count: messages, rate: 4/h }
",
    ))
    .await;
    let mut conn = d.client("10.8.0.5").await;
    for i in 0..4 {
        assert_eq!(
            reply(&mail(&mut conn, "<a@tenant.example>", None).await),
            "continue",
            "message {i}"
        );
        conn.abort().await.unwrap();
    }
    let r = reply(&mail(&mut conn, "<a@tenant.example>", None).await);
    assert!(
        r.starts_with("451 4.7.1 Rate limit tenant exceeded for tenant.example"),
        "{r}"
    );
    conn.close().await.unwrap();
    // Messages 3 and 4 went through the shadow limit's refusal.
    let m = d.metrics();
    let would = common::counted(
        &m,
        "egress_decisions_total",
        &[("rule", "shadow_tenant"), ("verdict", "would_tempfail")],
    );
    assert_eq!(would, 2, "{m}");
    let refused = common::counted(
        &m,
        "egress_decisions_total",
        &[("rule", "tenant"), ("verdict", "tempfail")],
    );
    assert_eq!(refused, 1, "{m}");
    d.stop().await;
}

/// `warn_at`: a key past the warning level is counted once per window,
/// before any refusal; a custom limit's own level wins over the global one.
#[tokio::test]
async fn warn_at_counts_once_per_window() {
    let d = common::start_with(custom_config(
        "    - { name: tenant, key: sender_domain, count: messages, rate: 10/h, warn_at: 50% }
  warn_at: 80%
  messages_per_client: 5/h
",
    ))
    .await;
    let warnings = |d: &common::Daemon, limit: &str| {
        common::counted(
            &d.metrics(),
            "egress_limit_warnings_total",
            &[("limit", limit)],
        )
    };
    let mut conn = d.client("10.8.0.6").await;
    for i in 1..=5 {
        assert_eq!(
            reply(&mail(&mut conn, "<a@tenant.example>", None).await),
            "continue",
            "message {i}"
        );
        conn.abort().await.unwrap();
        // messages_per_client (5/h) warns at its 4th message (80%); the
        // tenant (10/h) at its 5th (50%); each once.
        assert_eq!(
            warnings(&d, "messages_per_client"),
            u64::from(i >= 4),
            "message {i}"
        );
        assert_eq!(warnings(&d, "tenant"), u64::from(i >= 5), "message {i}");
    }
    let r = reply(&mail(&mut conn, "<a@tenant.example>", None).await);
    assert!(
        r.starts_with("451 4.7.1 Rate limit messages_per_client"),
        "{r}"
    );
    assert_eq!(warnings(&d, "messages_per_client"), 1);
    conn.close().await.unwrap();
    d.stop().await;
}

#[test]
fn a_bad_warn_at_names_its_key() {
    for (text, key) in [
        ("  warn_at: 120%\n", "rate_limits.warn_at"),
        ("  warn_at: 0.8\n", "rate_limits.warn_at"),
        (
            "  custom:\n    - { name: t, key: client, count: messages, rate: 1/h, warn_at: lots }\n",
            "rate_limits.custom[0].warn_at",
        ),
        ("  warn_notify: true\n", "rate_limits.warn_notify"),
    ] {
        let e = egress_milter::config::Config::parse(
            std::path::Path::new("w.yaml"),
            &format!("listen: inet:127.0.0.1:0\nlocal_domains: [example.com]\nrate_limits:\n{text}"),
        )
        .unwrap_err()
        .to_string();
        let why = if key.ends_with("warn_notify") {
            "sets no webhook and no mail"
        } else {
            "expected a percentage"
        };
        assert!(
            (e.contains("w.yaml:4") || e.contains("w.yaml:5")) && e.contains(key) && e.contains(why),
            "{e}"
        );
    }
}

/// Distinct recipients per sender: a recipient counts once in the window,
/// however often (and however spelt) it is written to.
#[tokio::test]
async fn distinct_recipients_count_each_recipient_once() {
    let d = common::start_with(custom_config(
        "    - { name: spread, key: sender, count: distinct_recipients, rate: 3/h }\n",
    ))
    .await;
    let mut conn = d.client("10.8.0.7").await;
    let rcpt = async |conn: &mut indymilter_test::TestConnection, r: &str| {
        reply(&conn.rcpt([r]).await.unwrap())
    };
    assert_eq!(
        reply(&mail(&mut conn, "<s@tenant.example>", None).await),
        "continue"
    );
    for r in [
        "<a@x.example>",
        "<b@x.example>",
        "<A+news@x.example>",
        "<c@x.example>",
    ] {
        assert_eq!(rcpt(&mut conn, r).await, "continue", "{r}");
    }
    let r = rcpt(&mut conn, "<d@x.example>").await;
    assert!(
        r.starts_with("451 4.7.1 Rate limit spread exceeded for s@tenant.example, retry in "),
        "{r}"
    );
    conn.abort().await.unwrap();
    // A later message to one already counted still goes.
    assert_eq!(
        reply(&mail(&mut conn, "<s@tenant.example>", None).await),
        "continue"
    );
    assert_eq!(rcpt(&mut conn, "<b@x.example>").await, "continue");
    conn.close().await.unwrap();
    d.stop().await;
}

/// `warn_notify`: a warning goes out once by the incidents' webhook, with
/// the limit, the key and how much is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_is_notified_once_by_webhook() {
    let mut hook = common::webhook::Webhook::start(200).await;
    let d = common::start_with(custom_config(&format!(
        "    - {{ name: tenant, key: sender_domain, count: messages, rate: 4/h, warn_at: 50% }}
  warn_notify: true
incidents:
  notify: {{ webhook: {{ url: \"{}\" }} }}
",
        hook.url()
    )))
    .await;
    let mut conn = d.client("10.8.0.8").await;
    for _ in 0..3 {
        assert_eq!(
            reply(&mail(&mut conn, "<a@tenant.example>", None).await),
            "continue"
        );
        conn.abort().await.unwrap();
    }
    conn.close().await.unwrap();
    let doc = hook.next(10).await.expect("a notice");
    assert_eq!(doc["event"], "limit_warning", "{doc}");
    assert_eq!(doc["limit"], "tenant", "{doc}");
    assert_eq!(doc["key"], "tenant.example", "{doc}");
    assert_eq!(doc["used_pct"], 50, "{doc}");
    assert_eq!(doc["warn_at_pct"], 50, "{doc}");
    assert_eq!(doc["rate"], "4/h", "{doc}");
    // Once per window: the third message (75%) sends nothing more.
    assert!(hook.next(2).await.is_none());
    d.stop().await;
}
