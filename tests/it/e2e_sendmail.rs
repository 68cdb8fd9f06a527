//! End to end through Sendmail: swaks -> a real Sendmail (INPUT_MAIL_FILTER,
//! the shipped snippet) -> egress-milter -> a sink. A forged From: is
//! refused with the milter's reply; a good message leaves signed, and
//! python3-dkim verifies the signature as delivered.

use crate::common;
use common::{postfix::swaks, sendmail::Sendmail, sink::Sink};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendmail_with_the_milter() {
    let keydir = tempfile::tempdir().unwrap();
    let (pem, record) = egress_milter::dkim::generate("rsa", 2048).unwrap();
    let key = keydir.path().join("s1.pem");
    std::fs::write(&key, pem).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // Sendmail relays for its own host only: the application is 127.0.0.1.
    let text = format!(
        "listen: inet:127.0.0.1:0
local_domains: [example.com]
classes:
  - {{ name: crm-app, clients: [127.0.0.1], sender_addresses: [noreply@example.com] }}
internal_networks: [10.0.0.0/8]
headers: {{ strip_internal_received: true, remove: [X-Originating-IP] }}
dkim:
  keys:
    - {{ domain: example.com, selector: s1, file: {} }}
",
        key.display()
    );
    let config =
        egress_milter::config::Config::parse(std::path::Path::new("sendmail.yaml"), &text).unwrap();
    let d = common::start_with(config).await;
    let mut sink = Sink::start().await;
    let sm = Sendmail::start(d.addr.port(), sink.port);
    let port = sm.smtp_port;
    let run = |from: &'static str, hfrom: &'static str, subject: &'static str| {
        tokio::task::spawn_blocking(move || {
            swaks(
                port,
                "127.0.0.1",
                from,
                "someone@gmail.test",
                hfrom,
                subject,
            )
        })
    };

    // A forged From: is refused after DATA with the milter's reply.
    let t = run(
        "noreply@example.com",
        "\"PayPal\" <service@paypal.test>",
        "spoofed",
    )
    .await
    .unwrap();
    assert!(
        t.lines()
            .any(|l| l == "<** 550 5.7.1 From: domain paypal.test not authorised"),
        "{t}"
    );
    // A forged envelope sender, at MAIL FROM (Sendmail puts the address
    // before the milter's text).
    let t = run("ceo@example.com", "ceo@example.com", "forged sender")
        .await
        .unwrap();
    assert!(
        t.lines().any(|l| l.starts_with("<** 550 5.7.1 ")
            && l.ends_with("Sender <ceo@example.com> not authorised for crm-app")),
        "{t}"
    );

    // A good message is accepted, leaves signed and scrubbed.
    let t = run("noreply@example.com", "Shop <noreply@example.com>", "good")
        .await
        .unwrap();
    assert!(
        t.lines()
            .any(|l| l.starts_with("<-  250 2.0.0") && l.contains("Message accepted")),
        "{t}"
    );
    let m = sink.next(60).await.expect("the good message at the sink");
    assert_eq!(m.mail_from, "<noreply@example.com>");
    assert!(m.data.contains("Subject: good"), "{}", m.data);
    assert!(m.data.contains("DKIM-Signature: "), "{}", m.data);
    let head = m.data.split("\r\n\r\n").next().unwrap_or("");
    for leak in ["10.9.8.7", "10.9.8.3", "10.20.30.40", "X-Originating-IP"] {
        assert!(!head.contains(leak), "{leak} leaked:\n{head}");
    }
    // Sendmail puts its own Received: above the milter's signature: the
    // verifier looks at the signed headers only.
    common::assert_signed_s1(&m.data, &record);
    // The refused messages never left.
    assert!(sink.messages.try_recv().is_err());
    drop(sm);
    d.stop().await;
}

/// Over TCP, Sendmail (which, like Postfix, leaves Nagle on for its milter
/// socket) must not wait for a delayed ACK of ours: the summary line's
/// `elapsed_ms`, from MAIL FROM to end of message, would show ~40 ms on
/// every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_waits_for_a_delayed_ack_over_tcp() {
    let (d, port, _dir) = common::delayed_ack::daemon();
    let sink = Sink::start().await;
    let sm = Sendmail::start(port, sink.port);
    common::delayed_ack::send(sm.smtp_port, 100).await;
    common::delayed_ack::assert_no_stall(&d, 100);
    drop(sm);
}
