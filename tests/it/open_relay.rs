//! A Postfix deliberately left open (its mynetworks covers every loopback
//! client, and it relays anywhere for them): egress-milter alone must stop
//! every relay trick. nmap's smtp-open-relay script (16 tricks) must find no
//! open relay, and the tricks by name, sent with swaks from an unknown
//! client, are all refused and nothing reaches the next hop.

use crate::common;
use common::{postfix::Postfix, sink::Sink};
use std::process::Command;

fn swaks_to(port: u16, source_ip: &str, from: &str, to: &str) -> String {
    swaks_with(port, source_ip, from, to, "x@outside.example")
}

fn swaks_with(port: u16, source_ip: &str, from: &str, to: &str, header_from: &str) -> String {
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--local-interface", source_ip])
        .args(["--from", from, "--to", to])
        .args([
            "--header",
            &format!("From: {header_from}"),
            "--timeout",
            "30",
        ])
        .output()
        .expect("swaks is not installed: run scripts/test.sh, which installs it");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_postfix_is_no_open_relay() {
    let d = common::start("e2e.yaml").await;
    let mut sink = Sink::start().await;
    let pf = Postfix::start("open-relay", &format!("inet:{}", d.addr), sink.port);
    let port = pf.smtp_port;

    // nmap's 16 relay tests, from 127.0.0.1 (an unknown client).
    let nmap = tokio::task::spawn_blocking(move || {
        Command::new("nmap")
            .args([
                "-sV",
                "-v",
                "-p",
                &port.to_string(),
                "--script",
                "smtp-open-relay",
            ])
            .arg("127.0.0.1")
            .output()
            .expect("nmap is not installed: run scripts/test.sh, which installs it")
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&nmap.stdout).into_owned();
    assert!(nmap.status.success(), "{report}");
    assert!(
        report
            .contains("smtp-open-relay: Server doesn't seem to be an open relay, all tests failed"),
        "{report}\n{}",
        pf.log()
    );

    // The tricks by name, from an unknown client, to the outside world.
    let tricks = [
        ("plain", "victim@gmail.test"),
        ("percent hack", "victim%gmail.test@example.com"),
        ("bang path", "gmail.test!victim@example.com"),
        ("quoted local part", "\"victim@gmail.test\"@example.com"),
        (
            "quoted local part with percent",
            "\"victim%gmail.test\"@example.com",
        ),
        ("source route", "@example.com:victim@gmail.test"),
        ("address literal", "victim@[192.0.2.1]"),
        ("our domain as a prefix", "victim@example.com.gmail.test"),
        (
            "percent hack to a literal",
            "victim%[192.0.2.1]@example.com",
        ),
    ];
    for (name, rcpt) in tricks {
        let t = tokio::task::spawn_blocking(move || {
            swaks_to(port, "127.0.0.9", "x@outside.example", rcpt)
        })
        .await
        .unwrap();
        let refused = t
            .lines()
            .any(|l| l.starts_with("<** 554 5.7.1") && l.contains("Relay access denied"));
        assert!(refused, "{name}: {rcpt} was not refused:\n{t}");
    }
    // A local recipient is still reachable for the unknown client (with a
    // From: in our domain: strict relay holds for everyone).
    let t = tokio::task::spawn_blocking(move || {
        swaks_with(
            port,
            "127.0.0.9",
            "x@outside.example",
            "postmaster@example.com",
            "x@example.com",
        )
    })
    .await
    .unwrap();
    assert!(t.contains("queued as"), "{t}");
    let m = sink.next(60).await.expect("the local message at the sink");
    assert_eq!(m.rcpt_to, vec!["<postmaster@example.com>".to_string()]);
    // Nothing else got through: not one of nmap's tests, not one trick.
    assert!(sink.next(3).await.is_none());
    drop(pf);
    d.stop().await;
}
