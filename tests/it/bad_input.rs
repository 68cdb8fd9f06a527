//! Hostile and broken peers: malformed milter packets, a client that
//! vanishes mid-message, a 1 MB header. Each must leave the daemon serving.

use crate::common;
use common::{mail, message, reply};
use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The daemon still answers a full, correct transaction.
async fn still_serves(d: &common::Daemon) {
    let mut conn = d.client("10.1.2.5").await;
    assert_eq!(
        reply(&mail(&mut conn, "<noreply@example.com>", None).await),
        "continue"
    );
    assert_eq!(
        reply(&mail(&mut conn, "<x@evil.com>", None).await),
        "550 5.7.1 Sender <x@evil.com> not authorised for crm-app"
    );
    conn.close().await.unwrap();
}

/// Sends raw bytes and waits (bounded) for the daemon to close or answer; a
/// truncated packet gets neither, the daemon waits for the rest of it.
async fn send_raw(d: &common::Daemon, bytes: &[u8]) {
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut buf = [0u8; 512];
    let _ = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await;
}

#[tokio::test]
async fn malformed_packets_close_only_that_connection() {
    let d = common::start("policy.yaml").await;
    let packets: &[&[u8]] = &[
        // A length larger than any milter packet may be (1 MiB).
        &[0xff, 0xff, 0xff, 0xff, b'O'],
        // Zero length.
        &[0, 0, 0, 0],
        // An unknown command byte.
        &[0, 0, 0, 1, b'~'],
        // Negotiation with a truncated body.
        &[0, 0, 0, 13, b'O', 0, 0, 0, 6],
        // MAIL FROM before negotiation, then garbage.
        &[
            0, 0, 0, 8, b'M', b'<', b'a', b'@', b'b', b'>', 0, 0, 0xde, 0xad,
        ],
        // Plain SMTP spoken to the milter port.
        b"EHLO attacker.example\r\nMAIL FROM:<a@b>\r\n",
    ];
    for p in packets {
        send_raw(&d, p).await;
        still_serves(&d).await;
    }
    d.stop().await;
}

#[tokio::test]
async fn client_vanishing_mid_message_loses_nothing_else() {
    let d = common::start("policy.yaml").await;
    for cut in 0..4 {
        let mut conn = d.client("10.1.2.5").await;
        assert_eq!(
            reply(&mail(&mut conn, "<noreply@example.com>", None).await),
            "continue"
        );
        if cut > 0 {
            conn.rcpt(["<r@gmail.com>"]).await.unwrap();
        }
        if cut > 1 {
            conn.header("From", "<noreply@example.com>").await.unwrap();
        }
        if cut > 2 {
            conn.eoh().await.unwrap();
        }
        drop(conn);
        still_serves(&d).await;
    }
    d.stop().await;
}

#[tokio::test]
async fn one_megabyte_headers() {
    let d = common::start("policy.yaml").await;
    let big = "a".repeat(1_000_000);
    // A huge ordinary header is not ours to judge.
    let mut conn = d.client("10.1.2.5").await;
    common::envelope(&mut conn, "<noreply@example.com>", "<r@gmail.com>").await;
    let headers = [("From", "<noreply@example.com>"), ("X-Big", big.as_str())];
    assert_eq!(message(&mut conn, &headers).await, "continue");
    conn.close().await.unwrap();
    // A huge From: is refused, without being kept.
    let mut conn = d.client("10.1.2.5").await;
    common::envelope(&mut conn, "<noreply@example.com>", "<r@gmail.com>").await;
    let from = format!("{big} <noreply@example.com>");
    let headers = [("From", from.as_str())];
    assert_eq!(
        message(&mut conn, &headers).await,
        "550 5.6.0 Malformed From: header (longer than 16384 bytes)"
    );
    conn.close().await.unwrap();
    still_serves(&d).await;
    d.stop().await;
}

#[tokio::test]
async fn non_utf8_envelope_addresses() {
    let d = common::start("policy.yaml").await;
    let mut conn = d.client("10.1.2.5").await;
    let s = conn
        .mail([std::ffi::CString::new(b"<\xff\xfe@example.com>".to_vec()).unwrap()])
        .await
        .unwrap();
    assert_eq!(
        reply(&s),
        "550 5.7.1 Sender <??@example.com> not authorised for crm-app"
    );
    conn.abort().await.unwrap();
    let s = conn
        .mail(["<noreply@example.com>", "SIZE=100", "BODY=8BITMIME"])
        .await
        .unwrap();
    assert_eq!(reply(&s), "continue");
    let s = conn
        .rcpt([std::ffi::CString::new(b"<\x80@gmail.com>".to_vec()).unwrap()])
        .await
        .unwrap();
    assert_eq!(reply(&s), "continue", "known clients may send anywhere");
    conn.close().await.unwrap();
    d.stop().await;
}
