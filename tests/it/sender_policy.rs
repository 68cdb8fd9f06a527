//! MAIL FROM over the milter protocol: classes, sender rules, login match,
//! null sender, per-class monitor mode.

use crate::common;
use common::{mail, reply};

#[tokio::test]
async fn sender_rules_by_class() {
    let d = common::start("policy.yaml").await;
    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        ("10.1.2.5", "<noreply@example.com>", None, "continue"),
        ("10.1.3.7", "<noreply@example.com>", None, "continue"),
        (
            "10.1.2.5",
            "<ceo@example.com>",
            None,
            "550 5.7.1 Sender <ceo@example.com> not authorised for crm-app",
        ),
        (
            "10.1.2.5",
            "<noreply@evil.com>",
            None,
            "550 5.7.1 Sender <noreply@evil.com> not authorised for crm-app",
        ),
        (
            "10.1.2.5",
            "<>",
            None,
            "550 5.7.1 Null sender not allowed for crm-app",
        ),
        ("10.1.4.9", "<>", None, "continue"),
        ("10.1.4.9", "<billing@x.example.org>", None, "continue"),
        (
            "10.1.4.9",
            "<billing@gmail.com>",
            None,
            "550 5.7.1 Sender <billing@gmail.com> not authorised for bounce-app",
        ),
        (
            "192.0.2.50",
            "<alice@example.com>",
            Some("alice"),
            "continue",
        ),
        (
            "192.0.2.50",
            "<bob@example.com>",
            Some("alice"),
            "553 5.7.1 Sender <bob@example.com> not owned by user alice",
        ),
        (
            "192.0.2.50",
            "<alice@evil.com>",
            Some("alice"),
            "550 5.7.1 Sender <alice@evil.com> not authorised for staff",
        ),
        // Unknown and unauthenticated: MAIL FROM passes, RCPT TO is held to local domains.
        ("192.0.2.50", "<anyone@evil.com>", None, "continue"),
    ];
    for (ip, sender, login, want) in cases {
        let mut conn = d.client(ip).await;
        let got = reply(&mail(&mut conn, sender, *login).await);
        assert_eq!(&got, want, "{ip} {sender} {login:?}");
        conn.close().await.unwrap();
    }
    d.stop().await;
}

#[tokio::test]
async fn several_messages_on_one_connection_are_judged_apart() {
    let d = common::start("policy.yaml").await;
    let mut conn = d.client("10.1.2.5").await;
    assert_eq!(
        reply(&mail(&mut conn, "<ceo@example.com>", None).await),
        "550 5.7.1 Sender <ceo@example.com> not authorised for crm-app"
    );
    conn.abort().await.unwrap();
    common::envelope(&mut conn, "<noreply@example.com>", "<a@gmail.com>").await;
    let headers = [("From", "News <noreply@example.com>"), ("Subject", "one")];
    assert_eq!(common::message(&mut conn, &headers).await, "continue");
    // Second message on the same connection, after the first ended.
    common::envelope(&mut conn, "<noreply@example.com>", "<b@gmail.com>").await;
    let headers = [("From", "<noreply@evil.com>")];
    assert_eq!(
        common::message(&mut conn, &headers).await,
        "550 5.7.1 From: domain evil.com not authorised"
    );
    conn.close().await.unwrap();
    d.stop().await;
}

#[tokio::test]
async fn class_in_monitor_mode_refuses_nothing_and_counts() {
    let d = common::start("policy.yaml").await;
    let mut conn = d.client("10.1.5.1").await;
    common::envelope(&mut conn, "<x@evil.com>", "<a@gmail.com>").await;
    let headers = [("From", "<x@evil.com>")];
    assert_eq!(common::message(&mut conn, &headers).await, "continue");
    conn.close().await.unwrap();
    let m = d.metrics();
    assert_eq!(
        common::decisions(&m, "would_reject"),
        2,
        "MAIL FROM and From: would be refused"
    );
    assert_eq!(common::decisions(&m, "reject"), 0);
    assert_eq!(
        common::counted(&m, "egress_messages_total", &[("verdict", "would_reject")]),
        1,
        "the message went through"
    );
    d.stop().await;
}

#[tokio::test]
async fn global_monitor_mode_lets_everything_through() {
    let mut config =
        egress_milter::config::Config::load(&common::config_path("policy.yaml")).unwrap();
    config.mode = egress_milter::config::Mode::Monitor;
    // A class's own mode still wins: make crm-app follow the global one.
    config.classes.edit(|c| c.mode = None);
    let d = common::start_with(config).await;
    let mut conn = d.client("198.51.100.7").await;
    assert_eq!(
        reply(&mail(&mut conn, "<x@outside.net>", None).await),
        "continue"
    );
    for i in 0..5 {
        let r = conn.rcpt([format!("<victim{i}@gmail.com>")]).await.unwrap();
        assert_eq!(
            reply(&r),
            "continue",
            "relay and recipient limit are only logged"
        );
    }
    assert_eq!(
        common::message(&mut conn, &[("From", "<x@outside.net>")]).await,
        "continue"
    );
    conn.close().await.unwrap();
    let m = d.metrics();
    // 5 relay attempts; the 452s never come since the relay refusal is met
    // first. The From: of an unknown client's mail is not judged by strict
    // relay (inbound mail), so it adds none.
    assert_eq!(common::decisions(&m, "would_reject"), 5);
    assert_eq!(
        common::decisions(&m, "reject") + common::decisions(&m, "tempfail"),
        0
    );
    d.stop().await;
}

#[tokio::test]
async fn requests_the_macros_it_needs() {
    use indymilter::MacroStage;
    let d = common::start("policy.yaml").await;
    let conn = d.open().await;
    let macros = conn.requested_macros();
    let at = |stage| {
        macros
            .get(&stage)
            .map(|m| m.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mail = at(MacroStage::Mail);
    for name in ["i", "{auth_authen}", "{auth_type}"] {
        assert!(
            mail.split(' ').any(|m| m == name),
            "{name} not requested at MAIL: {mail}"
        );
    }
    for stage in [MacroStage::Rcpt, MacroStage::Eoh, MacroStage::Eom] {
        assert!(
            at(stage).split(' ').any(|m| m == "i"),
            "queue id not requested at {stage:?}"
        );
    }
    assert!(at(MacroStage::Connect).contains("{daemon_addr}"));
    conn.close().await.unwrap();
    d.stop().await;
}
