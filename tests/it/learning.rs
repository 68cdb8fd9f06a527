//! Learning mode: traffic from a class in monitor mode, then `egress-milter
//! senders show NAME` prints exactly the addresses seen, after a restart
//! too; a class in enforce mode records nothing.

use crate::common;
use common::process::Running;
use indymilter::{Actions, MacroStage};
use indymilter_test::{Status, TestConnection};
use std::{net::SocketAddr, path::Path};

fn senders(config: &Path, args: &[&str]) -> (bool, String) {
    let out = common::cli::with_config(config, &[&["senders"], args].concat());
    (out.ok(), out.text())
}

/// One whole message from `ip`.
async fn send(addr: SocketAddr, ip: &str, from: &str, header_from: &str) {
    let mut conn = TestConnection::configure()
        .available_actions(Actions::all())
        .open_tcp(addr)
        .await
        .unwrap();
    let client: SocketAddr = format!("{ip}:1").parse().unwrap();
    conn.connect("app", client).await.unwrap();
    conn.macros(MacroStage::Mail, [("i", "Q1")]).await.unwrap();
    assert_eq!(conn.mail([from]).await.unwrap(), Status::Continue);
    assert_eq!(
        conn.rcpt(["<r@example.net>"]).await.unwrap(),
        Status::Continue
    );
    conn.header("From", header_from).await.unwrap();
    conn.header("Subject", "hi").await.unwrap();
    conn.eoh().await.unwrap();
    conn.body(&b"hello\r\n"[..]).await.unwrap();
    let (_, eom) = conn.eom().await.unwrap();
    assert!(matches!(eom, Status::Continue | Status::Accept), "{eom:?}");
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_seen_in_monitor_mode() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let port = common::free_port();
    let path = dir.path().join("milter.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:{port}
local_domains: [example.com, example.org]
admin: {{ listen: \"unix:{}\" }}
incidents: {{ state_dir: {} }}
classes:
  - {{ name: crm, clients: [10.1.0.0/16], mode: monitor, sender_addresses: [noreply@example.com] }}
  - {{ name: billing, clients: [10.2.0.0/16] }}
",
            dir.path().join("admin.sock").display(),
            state.display()
        ),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut d = Running::start(&path);
    d.wait_for("egress-milter started");
    // Monitor mode lets the unlisted senders through, and learns them.
    send(
        addr,
        "10.1.0.1",
        "<noreply@example.com>",
        "CRM <noreply@example.com>",
    )
    .await;
    send(
        addr,
        "10.1.0.1",
        "<\"noreply\"@EXAMPLE.com>",
        "CRM <noreply@example.com>",
    )
    .await;
    send(
        addr,
        "10.1.0.2",
        "<bounces@example.org>",
        "news@example.org",
    )
    .await;
    send(addr, "10.1.0.3", "<>", "Mailer <mailer-daemon@example.com>").await;
    // Enforced: nothing learned.
    send(
        addr,
        "10.2.0.1",
        "<invoices@example.com>",
        "invoices@example.com",
    )
    .await;

    let (ok, out) = senders(&path, &["show", "crm", "--format", "file"]);
    assert!(ok, "{out}");
    // The older spelling says the same.
    assert_eq!(
        senders(&path, &["--class", "crm", "--format", "file"]),
        (ok, out.clone())
    );
    let listed: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["bounces@example.org", "noreply@example.com"],
        "{out}"
    );
    assert!(out.contains("noreply@example.com  # 2 message(s)"), "{out}");
    let (ok, out) = senders(&path, &["show", "crm"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("sender_addresses:\n  - \"bounces@example.org\""),
        "{out}"
    );
    assert!(out.contains("#   mailer-daemon@example.com"), "{out}");
    assert!(
        out.contains(
            "from_domains:\n  - example.com  # 3 message(s)\n  - example.org  # 1 message(s)"
        ),
        "{out}"
    );
    let (ok, out) = senders(&path, &["show", "billing", "--format", "file"]);
    assert!(ok && out.starts_with("# nothing seen"), "{out}");
    let (ok, out) = senders(&path, &["show", "nosuch"]);
    assert!(!ok && out.contains("no class named \"nosuch\""), "{out}");

    // Kept across a restart.
    d.signal("-TERM");
    assert!(d.wait().success());
    let d = Running::start(&path);
    d.wait_for("egress-milter started");
    let (ok, out) = senders(&path, &["--class", "crm", "--format", "file"]);
    assert!(
        ok && out.contains("noreply@example.com  # 2 message(s)"),
        "{out}"
    );
    assert!(out.contains("bounces@example.org"), "{out}");
}
