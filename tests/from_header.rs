//! End of headers over the milter protocol: From: strict relay, with headers
//! as the MTA sends them (folded, 8-bit, several, none).

mod common;
use common::{mail, message, reply};

async fn judge(d: &common::Daemon, ip: &str, headers: &[(&str, &str)]) -> String {
    let mut conn = d.client(ip).await;
    let sender = if ip.starts_with("10.1.2.") {
        "<noreply@example.com>"
    } else {
        "<alice@example.com>"
    };
    let login = (!ip.starts_with("10.1.2.")).then_some("alice");
    assert_eq!(reply(&mail(&mut conn, sender, login).await), "continue");
    assert_eq!(
        reply(&conn.rcpt(["<r@gmail.com>"]).await.unwrap()),
        "continue"
    );
    let got = message(&mut conn, headers).await;
    conn.close().await.unwrap();
    got
}

/// Client IP, headers, expected reply.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn from_header_decisions() {
    let d = common::start("policy.yaml").await;
    let staff = "192.0.2.80";
    let crm = "10.1.2.5";
    let cases: &[Case] = &[
        (staff, &[("From", "Alice <alice@example.com>")], "continue"),
        (
            staff,
            &[("FROM", "Alice\r\n\t<alice@sub.example.org>")],
            "continue",
        ),
        (
            staff,
            &[("From", "\"J\u{fc}rgen\" <j@example.com>")],
            "continue",
        ),
        (
            staff,
            &[("From", "\"alice@example.com\" <ceo@evil.com>")],
            "550 5.7.1 From: domain evil.com not authorised",
        ),
        (
            staff,
            &[("From", "=?utf-8?q?ceo=40example.com?= <ceo@evil.com>")],
            "550 5.7.1 From: domain evil.com not authorised",
        ),
        (
            staff,
            &[("Subject", "no from")],
            "550 5.6.0 Message has no From: header",
        ),
        (
            staff,
            &[("From", "a@example.com"), ("from", "b@example.com")],
            "550 5.7.1 Message has 2 From: headers, one is allowed",
        ),
        (
            staff,
            &[("From", "a@example.com, b@example.com")],
            "550 5.7.1 From: header holds 2 mailboxes, one is allowed",
        ),
        (
            staff,
            &[("From", "undisclosed:;")],
            "550 5.7.1 From: header holds a group, not one mailbox",
        ),
        (
            staff,
            &[("From", "Alice <alice@example.com")],
            "550 5.6.0 Malformed From: header (unexpected end of header)",
        ),
        // The class narrows From: to example.com only.
        (crm, &[("From", "<noreply@example.com>")], "continue"),
        (
            crm,
            &[("From", "<noreply@sub.example.org>")],
            "550 5.7.1 From: domain sub.example.org not authorised",
        ),
    ];
    for (ip, headers, want) in cases {
        assert_eq!(&judge(&d, ip, headers).await, want, "{headers:?}");
    }
    d.stop().await;
}
