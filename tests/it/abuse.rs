//! Load and abuse against the daemon process: 2,000 concurrent milter
//! connections, clients that dribble one byte a second, 10,000 recipients
//! on one message, a 50 MB message, a flood of distinct senders. Throughout,
//! another client's full transaction keeps being answered at once.

use crate::common;
use common::{process::Running, reply};
use indymilter::Actions;
use indymilter_test::{Status, TestConnection};
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use tokio::io::AsyncWriteExt;

async fn open(addr: SocketAddr, ip: &str) -> TestConnection {
    let mut conn = TestConnection::configure()
        .available_actions(Actions::all())
        .open_tcp(addr)
        .await
        .expect("milter connection");
    let client: SocketAddr = format!("{ip}:40000").parse().unwrap();
    assert_eq!(conn.connect("c", client).await.unwrap(), Status::Continue);
    conn
}

/// A whole good transaction from another client; how long it took.
async fn bystander(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut conn = open(addr, "10.9.9.9").await;
    common::envelope(&mut conn, "<noreply@example.com>", "<r@example.net>").await;
    let got = common::message(
        &mut conn,
        &[
            ("From", "noreply@example.com"),
            ("Date", "Mon, 23 Nov 2026 01:00:00 +0000"),
            ("Message-ID", "<b@example.com>"),
        ],
    )
    .await;
    assert_eq!(got, "continue");
    conn.close().await.unwrap();
    start.elapsed()
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_answering_under_abuse() {
    let (port, metrics) = (common::free_port(), common::free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milter.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:{port}
local_domains: [example.com]
classes: [{{ name: app, clients: [10.0.0.0/8], sender_domains: [example.com] }}]
recipients: {{ max_per_message: 100 }}
content: {{ max_message_size: 25MB }}
rate_limits: {{ max_keys: 5000, messages_per_sender: 1000000/h }}
metrics: {{ listen: 127.0.0.1:{metrics} }}
milter: {{ max_connections: 3000 }}
"
        ),
    )
    .unwrap();
    let d = Running::start(&path);
    d.wait_for("egress-milter started");
    let pid = d.pid();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let base = bystander(addr).await;

    // 2,000 concurrent milter connections, each past connect and MAIL FROM,
    // opened 200 at a time: the test client writes the MAIL FROM macros and
    // command separately, so each of its connections waits once for a
    // delayed ACK (40 ms).
    let mut many = Vec::with_capacity(2000);
    for batch in 0..10 {
        let opened = futures_util::future::join_all((0..200).map(|j| async move {
            let i = batch * 200 + j;
            let mut c = open(addr, &format!("10.1.{}.{}", i / 250, i % 250 + 1)).await;
            assert_eq!(
                reply(&common::mail(&mut c, "<noreply@example.com>", None).await),
                "continue"
            );
            c
        }))
        .await;
        many.extend(opened);
    }
    assert_eq!(many.len(), 2000);
    assert!(
        common::scrape(metrics).contains("\negress_open_connections 2000\n"),
        "the daemon does not count 2,000 open connections"
    );
    let took = bystander(addr).await;
    assert!(
        took < Duration::from_secs(2),
        "with 2,000 open: {took:?} (alone {base:?})"
    );
    // The MTA side goes away; the daemon frees each connection.
    drop(many);
    let mut open_now = String::new();
    for _ in 0..100 {
        open_now = common::metric(metrics, "egress_open_connections").unwrap_or_default();
        if open_now == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open_now, "0", "connections still open after their MTA left");

    // Ten clients dribbling one byte a second (a negotiation that never
    // completes): others are not kept waiting.
    let mut dribblers = Vec::new();
    for _ in 0..10 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        dribblers.push(tokio::spawn(async move {
            for b in [0u8, 0, 0, 13, b'O', 0, 0, 0, 6] {
                if s.write_all(&[b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let took = bystander(addr).await;
        assert!(took < Duration::from_secs(1), "beside dribblers: {took:?}");
    }
    for t in dribblers {
        t.abort();
    }

    // 10,000 recipients on one message: the first 100 accepted, every
    // further one deferred with 452 4.5.3, the daemon's memory flat.
    let before = rss_kb(pid);
    let mut c = open(addr, "10.2.0.1").await;
    assert_eq!(
        reply(&common::mail(&mut c, "<bulk@example.com>", None).await),
        "continue"
    );
    for i in 0..10_000 {
        let got = reply(&c.rcpt([format!("<r{i}@example.net>")]).await.unwrap());
        if i < 100 {
            assert_eq!(got, "continue", "rcpt {i}");
        } else {
            assert!(got.starts_with("452 4.5.3"), "rcpt {i}: {got}");
        }
    }
    c.close().await.unwrap();
    assert!(
        rss_kb(pid) < before + 20_000,
        "{} -> {} kB",
        before,
        rss_kb(pid)
    );

    // A 50 MB message with a 25 MB limit: refused with 552 5.3.4 once past
    // the limit, nothing beyond it held; others answered meanwhile.
    let mut c = open(addr, "10.2.0.2").await;
    common::envelope(&mut c, "<big@example.com>", "<r@example.net>").await;
    c.header("From", "big@example.com").await.unwrap();
    assert_eq!(c.eoh().await.unwrap(), Status::Continue);
    let chunk = vec![b'x'; 65_535];
    let mut refused = None;
    for i in 0..(50 * 1024 * 1024 / 65_535 + 1) {
        let s = c.body(chunk.clone()).await.unwrap();
        if s != Status::Continue {
            refused = Some((i, reply(&s)));
            break;
        }
        if i == 200 {
            let took = bystander(addr).await;
            assert!(
                took < Duration::from_secs(1),
                "beside a big message: {took:?}"
            );
        }
    }
    let (at, got) = refused.expect("the 50 MB message was refused");
    assert!(got.starts_with("552 5.3.4"), "{got}");
    // 25MB is 25,000,000 bytes (plus the headers): refused in the chunk
    // that crosses it.
    assert!(
        (at + 1) * 65_535 > 24_999_000 && at * 65_535 <= 25_000_000,
        "chunk {at}"
    );
    drop(c);

    // A flood of 10,000 distinct senders (the load generator, 8
    // connections): every message accepted, the limiter keeps at most
    // max_keys of them, the daemon's memory stays bounded.
    let before = rss_kb(pid);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_egress-milter-load"))
        .args(["--milter", &format!("inet:{addr}"), "--client", "10.3.0.1"])
        .args(["--connections", "8", "--messages", "10000", "--size", "256"])
        .args(["--vary-sender", "--expect-accept"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shown.contains("(10000 accepted, 0 refused)"), "{shown}");
    assert!(
        rss_kb(pid) < before + 30_000,
        "{} -> {} kB",
        before,
        rss_kb(pid)
    );
    let keys = common::metric(metrics, "egress_limiter_keys")
        .and_then(|v| v.parse::<u64>().ok())
        .expect("egress_limiter_keys");
    assert!((1_000..=5_000).contains(&keys), "{keys} keys tracked");
    let took = bystander(addr).await;
    assert!(took < Duration::from_secs(1), "after the flood: {took:?}");
}
