//! Backends that hang rather than fail: an rspamd that accepts the
//! connection and never answers, a DNS server that receives the query and
//! never answers. The milter answers within its timeout, as `on_error`
//! says (tempfail here), logs and counts it, and serves the next message.

use crate::common;
use common::{mail, reply};
use std::time::{Duration, Instant};

fn config(extra: &str) -> egress_milter::config::Config {
    let text = format!(
        "listen: inet:127.0.0.1:0\nlocal_domains: [example.com]\n\
         classes: [{{ name: app, clients: [10.0.0.0/8], sender_domains: [example.com] }}]\n{extra}"
    );
    egress_milter::config::Config::parse(std::path::Path::new("slow.yaml"), &text).unwrap()
}

const HEADERS: &[(&str, &str)] = &[
    ("From", "noreply@example.com"),
    ("Date", "Mon, 23 Nov 2026 01:00:00 +0000"),
    ("Message-ID", "<1@example.com>"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_rspamd_tempfails_within_its_timeout() {
    // Accepts connections, reads, never answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hung.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            held.push(s);
        }
    });
    let d = common::start_with(config(&format!(
        "content: {{ rspamd: {{ url: \"http://127.0.0.1:{port}\", timeout: 1s }} }}\n"
    )))
    .await;
    for _ in 0..2 {
        let mut conn = d.client("10.0.0.1").await;
        common::envelope(&mut conn, "<noreply@example.com>", "<r@example.net>").await;
        let started = Instant::now();
        let got = common::message(&mut conn, HEADERS).await;
        let took = started.elapsed();
        assert_eq!(got, "451 4.3.0 Temporary policy failure");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "{took:?}"
        );
        conn.close().await.unwrap();
    }
    let metrics = d.metrics();
    assert_eq!(
        common::counted(
            &metrics,
            "egress_decisions_total",
            &[("rule", "internal_error")]
        ),
        2,
        "each hang counted"
    );
    assert!(
        metrics.contains("egress_backend_seconds_count{backend=\"rspamd\"} 2"),
        "{metrics}"
    );
    d.stop().await;
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_dns_server_tempfails_within_the_dns_timeout() {
    // Receives queries on UDP and TCP, never answers.
    let (udp, tcp, addr) = common::dns::udp_and_tcp().await;
    let holder = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        let mut held = Vec::new();
        loop {
            tokio::select! {
                r = udp.recv_from(&mut buf) => { if r.is_err() { break; } }
                a = tcp.accept() => match a { Ok((s, _)) => held.push(s), Err(_) => break },
            }
        }
    });
    let d = common::start_with(config(&format!(
        "spf: {{ check_egress: reject }}\negress_ips: [203.0.113.10]\n\
         dns: {{ nameservers: [\"{addr}\"], timeout: 1s }}\n"
    )))
    .await;
    let mut conn = d.client("10.0.0.1").await;
    let started = Instant::now();
    let got = reply(&mail(&mut conn, "<noreply@example.com>", None).await);
    let took = started.elapsed();
    assert_eq!(got, "451 4.3.0 Temporary policy failure");
    assert!(took < Duration::from_secs(5), "{took:?}");
    conn.close().await.unwrap();
    let metrics = d.metrics();
    assert!(
        metrics.contains("egress_dns_failures_total 1\n"),
        "{metrics}"
    );
    d.stop().await;
    holder.abort();
}
