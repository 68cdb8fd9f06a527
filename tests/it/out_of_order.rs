//! A confused or hostile MTA sends milter commands out of order. Every
//! command the MTA awaits an answer to gets one (`on_error`'s: here
//! `451 4.3.0`), quickly, and the connection serves the next message.

use crate::common;
use common::{mail, reply};
use indymilter::{Actions, ProtoOpts};
use indymilter_test::{Status, TestConnection};
use std::{net::SocketAddr, time::Duration};

const TEMPFAIL: &str = "451 4.3.0 Temporary policy failure";

/// A connection that fails a read after 5 s instead of the library's 30:
/// an unanswered command fails the test quickly.
async fn open(d: &common::Daemon, opts: Option<ProtoOpts>) -> TestConnection {
    let mut b = TestConnection::configure()
        .available_actions(Actions::all())
        .read_timeout(Duration::from_secs(5));
    if let Some(o) = opts {
        b = b.available_opts(o);
    }
    let mut conn = b.open_tcp(d.addr).await.expect("milter connection");
    let socket: SocketAddr = "10.1.2.5:40000".parse().unwrap();
    assert_eq!(
        conn.connect("client.test", socket).await.unwrap(),
        Status::Continue
    );
    conn
}

async fn helo(conn: &mut TestConnection) {
    let s = conn.helo("client.test").await.unwrap();
    assert!(matches!(s, Status::Noreply | Status::Continue), "{s:?}");
}

async fn envelope(conn: &mut TestConnection) {
    assert_eq!(
        reply(&mail(conn, "<noreply@example.com>", None).await),
        "continue"
    );
    assert_eq!(
        reply(&conn.rcpt(["<a@example.net>"]).await.unwrap()),
        "continue"
    );
}

async fn headers(conn: &mut TestConnection) {
    for (n, v) in [("From", "<noreply@example.com>"), ("Subject", "hi")] {
        let s = conn.header(n, v).await.unwrap();
        assert!(matches!(s, Status::Noreply | Status::Continue), "{s:?}");
    }
}

/// After the disorder, a whole message in order is judged and accepted.
async fn serves_the_next_message(conn: &mut TestConnection) {
    envelope(conn).await;
    headers(conn).await;
    assert_eq!(conn.eoh().await.unwrap(), Status::Continue);
    assert_eq!(conn.body("Hello.\r\n").await.unwrap(), Status::Continue);
    let (_, eom) = conn.eom().await.unwrap();
    assert_eq!(eom, Status::Continue);
}

#[tokio::test]
async fn every_command_out_of_order_is_answered() {
    let d = common::start("policy.yaml").await;

    // A header after a body chunk: the message is over (taken without an
    // answer when the MTA agreed, answered when it did not), and end of
    // message, with no message left, is answered.
    let mut conn = open(&d, None).await;
    helo(&mut conn).await;
    envelope(&mut conn).await;
    headers(&mut conn).await;
    assert_eq!(conn.eoh().await.unwrap(), Status::Continue);
    assert_eq!(conn.body("part one\r\n").await.unwrap(), Status::Continue);
    assert_eq!(conn.header("X-Late", "1").await.unwrap(), Status::Noreply);
    let (_, eom) = conn.eom().await.unwrap();
    assert_eq!(reply(&eom), TEMPFAIL);
    serves_the_next_message(&mut conn).await;

    // End of headers after the body, then more body.
    envelope(&mut conn).await;
    headers(&mut conn).await;
    assert_eq!(conn.eoh().await.unwrap(), Status::Continue);
    assert_eq!(conn.body("x\r\n").await.unwrap(), Status::Continue);
    assert_eq!(reply(&conn.eoh().await.unwrap()), TEMPFAIL);
    assert_eq!(reply(&conn.body("y\r\n").await.unwrap()), TEMPFAIL);
    serves_the_next_message(&mut conn).await;

    // RCPT TO, headers, body and end of message with no MAIL FROM.
    assert_eq!(
        reply(&conn.rcpt(["<a@example.net>"]).await.unwrap()),
        TEMPFAIL
    );
    assert_eq!(reply(&conn.eoh().await.unwrap()), TEMPFAIL);
    assert_eq!(reply(&conn.body("x\r\n").await.unwrap()), TEMPFAIL);
    let (_, eom) = conn.eom().await.unwrap();
    assert_eq!(reply(&eom), TEMPFAIL);
    serves_the_next_message(&mut conn).await;

    // End of headers straight after MAIL FROM (no recipient).
    assert_eq!(
        reply(&mail(&mut conn, "<noreply@example.com>", None).await),
        "continue"
    );
    assert_eq!(reply(&conn.eoh().await.unwrap()), TEMPFAIL);
    serves_the_next_message(&mut conn).await;

    // A second connect on a connection already in use.
    let socket: SocketAddr = "10.1.2.5:40001".parse().unwrap();
    assert_eq!(
        reply(&conn.connect("again.test", socket).await.unwrap()),
        TEMPFAIL
    );
    serves_the_next_message(&mut conn).await;

    // A new MAIL FROM in the middle of a body is a new message (the old
    // one aborted), judged as usual.
    envelope(&mut conn).await;
    headers(&mut conn).await;
    assert_eq!(conn.eoh().await.unwrap(), Status::Continue);
    assert_eq!(conn.body("x\r\n").await.unwrap(), Status::Continue);
    assert_eq!(
        reply(&mail(&mut conn, "<x@evil.com>", None).await),
        "550 5.7.1 Sender <x@evil.com> not authorised for crm-app"
    );
    serves_the_next_message(&mut conn).await;
    conn.close().await.unwrap();

    // An MTA that wants an answer to each header gets one for a header
    // out of order.
    let mut conn = open(&d, Some(ProtoOpts::all() - ProtoOpts::NOREPLY_HEADER)).await;
    helo(&mut conn).await;
    envelope(&mut conn).await;
    headers(&mut conn).await;
    assert_eq!(conn.eoh().await.unwrap(), Status::Continue);
    assert_eq!(conn.body("x\r\n").await.unwrap(), Status::Continue);
    assert_eq!(reply(&conn.header("X-Late", "1").await.unwrap()), TEMPFAIL);
    let (_, eom) = conn.eom().await.unwrap();
    assert_eq!(reply(&eom), TEMPFAIL);
    serves_the_next_message(&mut conn).await;
    conn.close().await.unwrap();
    d.stop().await;
}

#[tokio::test]
async fn on_error_accept_answers_continue() {
    let text = std::fs::read_to_string(common::config_path("policy.yaml"))
        .unwrap()
        .replace("on_error: tempfail", "on_error: accept");
    let config =
        egress_milter::config::Config::parse(std::path::Path::new("policy.yaml"), &text).unwrap();
    let d = common::start_with(config).await;
    let mut conn = open(&d, None).await;
    helo(&mut conn).await;
    assert_eq!(
        conn.rcpt(["<a@example.net>"]).await.unwrap(),
        Status::Continue
    );
    let (_, eom) = conn.eom().await.unwrap();
    assert_eq!(eom, Status::Continue);
    serves_the_next_message(&mut conn).await;
    conn.close().await.unwrap();
    d.stop().await;
}
