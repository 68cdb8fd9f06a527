//! RCPT TO over the milter protocol: open-relay prevention for unknown
//! clients, and the per-message recipient limit.

use crate::common;
use common::{mail, reply};

#[tokio::test]
async fn unknown_clients_may_only_reach_local_domains() {
    let d = common::start("policy.yaml").await;
    let mut conn = d.client("198.51.100.7").await;
    let cases = [
        ("<postmaster@example.com>", "continue"),
        ("<a@deep.sub.example.org>", "continue"),
        ("<a@EXAMPLE.COM.>", "continue"),
        ("<victim@gmail.com>", "554 5.7.1 Relay access denied"),
        ("<a@example.org>", "554 5.7.1 Relay access denied"),
        (
            "<\"victim@gmail.com\"@example.com>",
            "554 5.7.1 Relay access denied",
        ),
        (
            "<victim%gmail.com@example.com>",
            "554 5.7.1 Relay access denied",
        ),
        (
            "<gmail.com!victim@example.com>",
            "554 5.7.1 Relay access denied",
        ),
        (
            "<\"a@example.com\"@gmail.com>",
            "554 5.7.1 Relay access denied",
        ),
        (
            "<@example.com:victim@gmail.com>",
            "554 5.7.1 Relay access denied",
        ),
        ("<victim@[192.0.2.1]>", "554 5.7.1 Relay access denied"),
        (
            "<victim@example.com.gmail.com>",
            "554 5.7.1 Relay access denied",
        ),
    ];
    for (rcpt, want) in cases {
        // One message per recipient, so the recipient limit stays out of it.
        assert_eq!(
            reply(&mail(&mut conn, "<someone@outside.net>", None).await),
            "continue"
        );
        assert_eq!(reply(&conn.rcpt([rcpt]).await.unwrap()), want, "{rcpt}");
        conn.abort().await.unwrap();
    }
    conn.close().await.unwrap();
    d.stop().await;
}

#[tokio::test]
async fn authenticated_login_in_no_class_is_unknown() {
    let mut config =
        egress_milter::config::Config::load(&common::config_path("policy.yaml")).unwrap();
    // Without the `auth: any` class, a login matches nothing.
    config.classes.retain(|c| c.name != "staff");
    let d = common::start_with(config).await;
    let mut conn = d.client("198.51.100.7").await;
    assert_eq!(
        reply(&mail(&mut conn, "<bob@example.com>", Some("bob")).await),
        "continue"
    );
    assert_eq!(
        reply(&conn.rcpt(["<x@gmail.com>"]).await.unwrap()),
        "554 5.7.1 Relay access denied"
    );
    conn.close().await.unwrap();
    d.stop().await;
}

#[tokio::test]
async fn recipients_over_the_limit_get_452_and_the_first_pass() {
    let d = common::start("policy.yaml").await;
    let mut conn = d.client("10.1.2.5").await;
    assert_eq!(
        reply(&mail(&mut conn, "<noreply@example.com>", None).await),
        "continue"
    );
    for i in 0..3 {
        assert_eq!(
            reply(&conn.rcpt([format!("<r{i}@gmail.com>")]).await.unwrap()),
            "continue"
        );
    }
    for i in 3..5 {
        assert_eq!(
            reply(&conn.rcpt([format!("<r{i}@gmail.com>")]).await.unwrap()),
            "452 4.5.3 Too many recipients"
        );
    }
    let headers = [("From", "<noreply@example.com>")];
    assert_eq!(common::message(&mut conn, &headers).await, "continue");
    // The count starts again with the next message.
    common::envelope(&mut conn, "<noreply@example.com>", "<again@gmail.com>").await;
    conn.close().await.unwrap();
    d.stop().await;
}

#[tokio::test]
async fn unknown_clients_reject_refuses_them_at_mail_from() {
    let mut config =
        egress_milter::config::Config::load(&common::config_path("policy.yaml")).unwrap();
    config.unknown_clients = egress_milter::config::UnknownClients::Reject;
    let d = common::start_with(config).await;
    let mut conn = d.client("198.51.100.7").await;
    assert_eq!(
        reply(&mail(&mut conn, "<x@example.com>", None).await),
        "550 5.7.1 Client 198.51.100.7 not authorised to send mail"
    );
    conn.close().await.unwrap();
    let mut conn = d.client("10.1.2.5").await;
    assert_eq!(
        reply(&mail(&mut conn, "<noreply@example.com>", None).await),
        "continue"
    );
    conn.close().await.unwrap();
    d.stop().await;
}
