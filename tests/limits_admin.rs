//! `egress-milter limits show|reset KEY` against a running daemon, with the
//! local and the Redis backend.

mod common;
use common::{mail, process::Running, process::BIN, redis::RedisServer, reply};
use indymilter::Actions;
use indymilter_test::TestConnection;
use std::{net::SocketAddr, path::Path, process::Command};

fn limits(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("limits")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn send(addr: SocketAddr, sender: &str) -> String {
    let mut conn = TestConnection::configure()
        .available_actions(Actions::all())
        .open_tcp(addr)
        .await
        .unwrap();
    let client: SocketAddr = "10.0.0.7:1".parse().unwrap();
    conn.connect("app", client).await.unwrap();
    let r = reply(&mail(&mut conn, sender, None).await);
    conn.close().await.unwrap();
    r
}

async fn show_and_reset(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (common::free_port(), common::free_port());
    let path = dir.path().join("milter.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:{port}
local_domains: [example.com]
classes: [{{ name: app, clients: [10.0.0.0/8], sender_domains: [xyz.com] }}]
rate_limits:
  {backend}
  admin_listen: 127.0.0.1:{admin}
  messages_per_sender: 3/h
  messages_per_client: 100/h
  concurrent_per_client: 5
  overrides:
    - {{ match: jim@xyz.com, messages_per_sender: 2/m }}
"
        ),
    )
    .unwrap();
    let d = Running::start(&path);
    d.wait_for("egress-milter started");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(send(addr, "<jim@xyz.com>").await, "continue");
    assert_eq!(send(addr, "<jim@xyz.com>").await, "continue");
    assert!(send(addr, "<jim@xyz.com>").await.starts_with("451 4.7.1"));

    let (ok, out) = limits(&path, &["show", "jim@xyz.com"]);
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("messages_per_sender"))
        .unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1..3], ["2/m", "0"], "{out}");
    // Full again in a minute or a little less.
    let secs: u64 = cols[3].trim_end_matches('s').parse().unwrap();
    assert!((58..=60).contains(&secs), "{out}");
    // The default 3/h does not apply to jim and holds nothing: not shown.
    assert!(!out.contains("3/h"), "{out}");

    let (ok, out) = limits(&path, &["show", "10.0.0.7"]);
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("messages_per_client"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[1..3],
        ["100/h", "98"],
        "{out}"
    );
    assert!(out.contains("concurrent_per_client"), "{out}");

    let (ok, out) = limits(&path, &["reset", "jim@xyz.com"]);
    assert!(ok, "{out}");
    assert_eq!(send(addr, "<jim@xyz.com>").await, "continue");

    let (ok, out) = limits(&path, &["show", ""]);
    assert!(!ok, "{out}");
    drop(d);
    let (ok, out) = limits(&path, &["show", "jim@xyz.com"]);
    assert!(!ok && out.contains("cannot reach the daemon"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend() {
    show_and_reset("backend: local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend() {
    let redis = RedisServer::start();
    show_and_reset(&format!(
        "backend: redis\n  redis: {{ url: \"{}\" }}",
        redis.url()
    ))
    .await;
}
