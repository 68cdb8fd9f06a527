//! rspamd as the spam engine, against a real rspamd on loopback: GTUBE is
//! refused, a normal message passes, rspamd gone follows on_error.

use crate::common;
use common::{reply, rspamd::Rspamd};
use egress_milter::config::Config;
use indymilter_test::Status;
use std::{
    path::Path,
    time::{Duration, Instant},
};

async fn send(d: &common::Daemon, body: &str) -> String {
    let mut conn = d.client("10.0.0.1").await;
    common::envelope(&mut conn, "<app@example.com>", "<r@gmail.com>").await;
    for (n, v) in [
        ("From", "App <app@example.com>"),
        ("To", "r@gmail.com"),
        ("Subject", "Your order"),
        ("Date", "Mon, 23 Nov 2026 01:00:00 +0000"),
        ("Message-ID", "<1@example.com>"),
    ] {
        conn.header(n, v).await.unwrap();
    }
    assert_eq!(conn.eoh().await.unwrap(), Status::Continue);
    conn.body(body.as_bytes().to_vec()).await.unwrap();
    let (_, status) = conn.eom().await.unwrap();
    conn.close().await.unwrap();
    reply(&status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gtube_refused_normal_passes_and_a_dead_rspamd_follows_on_error() {
    let mut rspamd = tokio::task::spawn_blocking(Rspamd::start).await.unwrap();
    let text = format!(
        "listen: inet:127.0.0.1:0\nlocal_domains: [example.com]\nclasses: [{{ name: app, clients: [10.0.0.0/8] }}]\n\
         content: {{ rspamd: {{ url: \"{}\", timeout: 2s }} }}\n",
        rspamd.url
    );
    let d = common::start_with(Config::parse(Path::new("t.yaml"), &text).unwrap()).await;
    assert_eq!(
        send(&d, "Your order has shipped.\r\nThank you.\r\n").await,
        "continue"
    );
    let gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n";
    let r = send(&d, gtube).await;
    assert!(
        r.starts_with("550 5.7.1 Message rejected as spam (score "),
        "{r}"
    );

    tokio::task::spawn_blocking(move || {
        rspamd.stop();
        rspamd
    })
    .await
    .unwrap();
    let started = Instant::now();
    assert_eq!(
        send(&d, "Hello again.\r\n").await,
        "451 4.3.0 Temporary policy failure"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    d.stop().await;
}
