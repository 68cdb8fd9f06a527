//! End of headers over the milter protocol: From: strict relay, with headers
//! as the MTA sends them (folded, 8-bit, several, none).

use crate::common;
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

/// `inbound_own_domain: reject` under `mode: monitor`: the spoof of our own
/// domain from outside is let through, logged as `would_reject` and
/// counted, as an operator sees it in the log and on the metrics endpoint.
#[tokio::test]
async fn inbound_own_domain_is_logged_and_counted_in_monitor_mode() {
    use indymilter_test::Status;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let metrics = common::free_port();
    let config = dir.path().join("milter.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: inet:127.0.0.1:{port}
mode: monitor
local_domains: [example.com]
classes:
  - {{ name: crm-app, clients: [10.1.2.0/24] }}
from_header: {{ inbound_own_domain: reject }}
metrics: {{ listen: \"127.0.0.1:{metrics}\" }}
"
        ),
    )
    .unwrap();
    let d = common::process::Running::start(&config);
    d.wait_for("metrics endpoint listening");
    let mut conn = indymilter_test::TestConnection::configure()
        .available_actions(indymilter::Actions::all())
        .open_tcp(("127.0.0.1", port))
        .await
        .unwrap();
    let stranger: std::net::SocketAddr = "192.0.2.9:40000".parse().unwrap();
    assert_eq!(
        conn.connect("mx.outside.test", stranger).await.unwrap(),
        Status::Continue
    );
    conn.helo("mx.outside.test").await.unwrap();
    assert_eq!(
        reply(&mail(&mut conn, "<x@outside.test>", None).await),
        "continue"
    );
    assert_eq!(
        reply(&conn.rcpt(["<user@example.com>"]).await.unwrap()),
        "continue"
    );
    assert_eq!(
        message(&mut conn, &[("From", "\"The CEO\" <ceo@example.com>")]).await,
        "continue"
    );
    conn.close().await.unwrap();
    let line = d.wait_for("egress_milter::decision");
    assert!(
        line.contains("verdict=\"would_reject\"")
            && line.contains("rule=\"inbound_own_domain\"")
            && line.contains("550 5.7.1 From: domain example.com may not be used from outside"),
        "{line}"
    );
    let summary = d.wait_for("egress_milter::summary");
    assert!(summary.contains("verdict=\"would_reject\""), "{summary}");
    let scraped = common::scrape(metrics);
    assert!(
        scraped.lines().any(|l| l
            == "egress_decisions_total{stage=\"eoh\",rule=\"inbound_own_domain\",class=\"-\",verdict=\"would_reject\"} 1"),
        "{scraped}"
    );
}
