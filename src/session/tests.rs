//! The session's stage machine, driven directly (no socket): several
//! messages on one connection, aborts, a refusal at each stage ending its
//! message once, monitor mode per class, `on_error`. Each message's end is
//! seen as the operator sees it: the `egress_messages_total` sample of its
//! final verdict.

use super::*;
use crate::config::OnError;
use std::path::Path;

const CONFIG: &str = "
listen: inet:127.0.0.1:1
local_domains: [example.com]
classes:
  - { name: trial, clients: [10.9.0.0/16], mode: monitor }
  - { name: app, clients: [10.0.0.0/8], sender_domains: [example.com] }
";

fn connection(ip: &str, on_error: OnError) -> Connection {
    let mut config = Config::parse(Path::new("t.yaml"), CONFIG).unwrap();
    config.on_error = on_error;
    Connection::new(Shared::new(config), "client".into(), ip.parse().ok())
}

/// How many messages ended with each verdict, from the metrics.
fn ended(c: &Connection) -> Vec<(String, u64)> {
    let text = c
        .shared()
        .metrics
        .render(&c.shared().limiter, &c.shared().incidents);
    text.lines()
        .filter_map(|l| l.strip_prefix("egress_messages_total{verdict=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(v, n)| (v.to_string(), n.parse().unwrap()))
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(v, n)| (v.to_string(), *n)).collect()
}

const CONTINUE: Answer = Answer::Continue;

fn refused(a: &Answer) -> String {
    match a {
        Answer::Continue => "continue".into(),
        Answer::Refuse(r) => r.to_string(),
    }
}

/// A whole message in order; returns the answer at end of message.
async fn whole(c: &mut Connection, sender: &str, from: &str) -> Answer {
    let m = Macros::default();
    assert_eq!(c.mail(sender.as_bytes(), &m).await, CONTINUE);
    assert_eq!(c.rcpt(b"<r@example.net>", &m).await, CONTINUE);
    assert_eq!(c.header(b"From", from.as_bytes()), CONTINUE);
    assert_eq!(c.end_of_headers(&m).await, CONTINUE);
    assert_eq!(c.body(bytes::Bytes::from_static(b"Hello.\r\n")), CONTINUE);
    c.end_of_message(&m).await.0
}

#[tokio::test]
async fn several_messages_and_aborts_on_one_connection() {
    let mut c = connection("10.1.1.1", OnError::Tempfail);
    assert_eq!(c.connect().await, CONTINUE);
    let m = Macros::default();
    for _ in 0..3 {
        assert_eq!(
            whole(&mut c, "<a@example.com>", "a@example.com").await,
            CONTINUE
        );
    }
    // RSET after RCPT, and a new MAIL FROM over a message in progress:
    // each aborted once.
    assert_eq!(c.mail(b"<a@example.com>", &m).await, CONTINUE);
    assert_eq!(c.rcpt(b"<r@example.net>", &m).await, CONTINUE);
    c.abort();
    c.abort();
    assert_eq!(c.mail(b"<a@example.com>", &m).await, CONTINUE);
    assert_eq!(c.mail(b"<a@example.com>", &m).await, CONTINUE);
    c.close();
    assert_eq!(ended(&c), counts(&[("aborted", 3), ("accept", 3)]));
}

#[tokio::test]
async fn a_refusal_at_each_stage_ends_its_message_once() {
    let m = Macros::default();
    // MAIL FROM: the rest of the message is not judged, and not ended again.
    let mut c = connection("10.1.1.1", OnError::Tempfail);
    c.connect().await;
    let a = c.mail(b"<x@evil.test>", &m).await;
    assert_eq!(
        refused(&a),
        "550 5.7.1 Sender <x@evil.test> not authorised for app"
    );
    assert_eq!(c.rcpt(b"<r@example.net>", &m).await, CONTINUE);
    assert_eq!(c.end_of_headers(&m).await, CONTINUE);
    assert_eq!(c.end_of_message(&m).await.0, CONTINUE);
    c.abort();
    c.close();
    assert_eq!(ended(&c), counts(&[("reject", 1)]));

    // RCPT TO: a refused recipient does not end the message; when every
    // recipient was refused, the message ends as refused at RCPT.
    let mut c = connection("192.0.2.7", OnError::Tempfail);
    c.connect().await;
    assert_eq!(c.mail(b"<x@outside.test>", &m).await, CONTINUE);
    let a = c.rcpt(b"<victim@gmail.test>", &m).await;
    assert_eq!(refused(&a), "554 5.7.1 Relay access denied");
    let a = c.rcpt(b"<other@gmail.test>", &m).await;
    assert_eq!(refused(&a), "554 5.7.1 Relay access denied");
    c.abort();
    c.close();
    assert_eq!(ended(&c), counts(&[("reject", 1)]));

    // End of headers: the body and end of message that follow change
    // nothing.
    let mut c = connection("10.1.1.1", OnError::Tempfail);
    c.connect().await;
    assert_eq!(c.mail(b"<a@example.com>", &m).await, CONTINUE);
    assert_eq!(c.rcpt(b"<r@example.net>", &m).await, CONTINUE);
    assert_eq!(c.header(b"From", b"ceo@bank.test"), CONTINUE);
    let a = c.end_of_headers(&m).await;
    assert_eq!(
        refused(&a),
        "550 5.7.1 From: domain bank.test not authorised"
    );
    assert_eq!(c.body(bytes::Bytes::from_static(b"x\r\n")), CONTINUE);
    assert_eq!(c.end_of_message(&m).await.0, CONTINUE);
    c.close();
    assert_eq!(ended(&c), counts(&[("reject", 1)]));

    // The next message on the connection is judged afresh.
    let mut c = connection("10.1.1.1", OnError::Tempfail);
    c.connect().await;
    let a = whole(&mut c, "<a@example.com>", "x@example.com").await;
    assert_eq!(a, CONTINUE);
    assert_eq!(c.mail(b"<a@example.com>", &m).await, CONTINUE);
    assert_eq!(c.rcpt(b"<r@example.net>", &m).await, CONTINUE);
    assert_eq!(c.header(b"From", b"ceo@bank.test"), CONTINUE);
    assert_ne!(c.end_of_headers(&m).await, CONTINUE);
    c.close();
    assert_eq!(ended(&c), counts(&[("accept", 1), ("reject", 1)]));
}

#[tokio::test]
async fn monitor_mode_is_the_class_s() {
    // The monitored class: refused nothing, its message ends as
    // would_reject; the enforced class on the same daemon is refused.
    let mut c = connection("10.9.1.1", OnError::Tempfail);
    c.connect().await;
    assert_eq!(
        whole(&mut c, "<x@evil.test>", "ceo@bank.test").await,
        CONTINUE
    );
    c.close();
    assert_eq!(ended(&c), counts(&[("would_reject", 1)]));
    let mut c = connection("10.1.1.1", OnError::Tempfail);
    c.connect().await;
    let a = c.mail(b"<x@evil.test>", &Macros::default()).await;
    assert!(refused(&a).starts_with("550 5.7.1"));
    c.close();
    assert_eq!(ended(&c), counts(&[("reject", 1)]));
}

#[tokio::test]
async fn on_error_decides_a_failure_mid_message() {
    let m = Macros::default();
    let mut c = connection("10.1.1.1", OnError::Tempfail);
    c.connect().await;
    assert_eq!(c.mail(b"<a@example.com>", &m).await, CONTINUE);
    let a = c.out_of_order("eoh");
    assert_eq!(refused(&a), "451 4.3.0 Temporary policy failure");
    c.close();
    assert_eq!(ended(&c), counts(&[("tempfail", 1)]));

    // With on_error: accept the message goes on, and is accepted.
    let mut c = connection("10.1.1.1", OnError::Accept);
    c.connect().await;
    assert_eq!(c.mail(b"<a@example.com>", &m).await, CONTINUE);
    assert_eq!(c.out_of_order("eoh"), CONTINUE);
    assert_eq!(c.rcpt(b"<r@example.net>", &m).await, CONTINUE);
    assert_eq!(c.header(b"From", b"a@example.com"), CONTINUE);
    assert_eq!(c.end_of_headers(&m).await, CONTINUE);
    assert_eq!(c.end_of_message(&m).await.0, CONTINUE);
    c.close();
    assert_eq!(ended(&c), counts(&[("accept", 1)]));
}

#[tokio::test]
async fn a_failure_at_rcpt_refuses_that_recipient_only() {
    // Redis is down and `on_failure: tempfail`: the recipient that needed a
    // limit is deferred, and the message stays open to judgement, so a
    // later recipient is still checked for relaying.
    let config = format!(
        "{CONFIG}rate_limits:\n  backend: redis\n  redis: {{ url: \"redis://127.0.0.1:1\", on_failure: tempfail, timeout: 200ms }}\n  messages_per_recipient: 10/h\n"
    );
    let config = Config::parse(Path::new("t.yaml"), &config).unwrap();
    let mut c = Connection::new(
        Shared::new(config),
        "client".into(),
        "192.0.2.7".parse().ok(),
    );
    let m = Macros::default();
    assert_eq!(c.connect().await, CONTINUE);
    assert_eq!(c.mail(b"<x@outside.test>", &m).await, CONTINUE);
    let a = c.rcpt(b"<u@example.com>", &m).await;
    assert_eq!(refused(&a), "451 4.3.0 Temporary policy failure");
    let a = c.rcpt(b"<victim@gmail.test>", &m).await;
    assert_eq!(refused(&a), "554 5.7.1 Relay access denied");
    c.abort();
    c.close();
    assert_eq!(ended(&c), counts(&[("reject", 1)]));
}
