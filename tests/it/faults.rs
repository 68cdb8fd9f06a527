//! Faults end to end: a private Postfix (milter_default_action = tempfail)
//! with egress-milter killed (SIGKILL) in the middle of a load and started
//! again. Every message sent gets a definite answer: queued (and then at
//! the sink), refused, or deferred with a 4xx (the client keeps it and
//! retries). None is lost and none passes without the policy: a forged
//! message is never queued, whether the milter is up or down.

use crate::common;
use common::{postfix::Postfix, process::Running, sink::Sink};
use std::{process::Command, time::Duration};

#[derive(Debug, PartialEq)]
enum Outcome {
    Queued,
    Refused,
    Deferred,
}

fn send(port: u16, n: usize, forged: bool) -> (String, Outcome, String) {
    let subject = format!("{}-{n}", if forged { "forged" } else { "good" });
    let header_from = if forged {
        "Bank <service@bank.example>"
    } else {
        "Shop <noreply@example.com>"
    };
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--local-interface", "127.0.0.2"])
        .args([
            "--from",
            "noreply@example.com",
            "--to",
            "someone@gmail.test",
        ])
        .args(["--header", &format!("From: {header_from}")])
        .args(["--header", &format!("Subject: {subject}")])
        .args(["--timeout", "30"])
        .output()
        .expect("swaks is not installed: run scripts/test.sh, which installs it");
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    let outcome = if t
        .lines()
        .any(|l| l.starts_with("<-  250") && l.contains("queued as"))
    {
        Outcome::Queued
    } else if t.lines().any(|l| l.starts_with("<** 5")) {
        Outcome::Refused
    } else if t.lines().any(|l| l.starts_with("<** 4")) {
        Outcome::Deferred
    } else {
        panic!("{subject}: no definite answer:\n{t}");
    };
    (subject, outcome, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn milter_killed_mid_load_loses_nothing_and_lets_nothing_through() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milter.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:{port}\nlocal_domains: [example.com]\n\
             classes: [{{ name: crm-app, clients: [127.0.0.2], sender_addresses: [noreply@example.com] }}]\n"
        ),
    )
    .unwrap();
    let d = Running::start(&path);
    d.wait_for("egress-milter started");
    let mut sink = Sink::start().await;
    let pf = Postfix::start("faults", &format!("inet:127.0.0.1:{port}"), sink.port);
    let smtp = pf.smtp_port;

    // Four clients, 30 messages each, every other one forged.
    let workers: Vec<_> = (0..4)
        .map(|w| {
            tokio::task::spawn_blocking(move || {
                (0..30)
                    .map(|i| {
                        let n = w * 100 + i;
                        let r = send(smtp, n, i % 2 == 1);
                        std::thread::sleep(Duration::from_millis(30));
                        r
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // Mid-load: the milter dies without a word, and comes back 2 s later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    d.signal("-KILL");
    drop(d);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = Running::start(&path);
    d.wait_for("egress-milter started");

    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await.unwrap());
    }
    let count = |forged: bool, o: Outcome| {
        results
            .iter()
            .filter(|(s, r, _)| s.starts_with(if forged { "forged" } else { "good" }) && *r == o)
            .count()
    };
    // Nothing forged was ever queued: refused by the milter, or deferred
    // while it was down.
    assert_eq!(count(true, Outcome::Queued), 0);
    assert!(count(true, Outcome::Refused) > 0);
    // The outage was seen (deferred, to be retried), and mail flowed again
    // after the restart.
    let deferred = count(false, Outcome::Deferred) + count(true, Outcome::Deferred);
    assert!(deferred > 0, "the milter's death went unnoticed");
    for (s, r, t) in &results {
        if *r == Outcome::Deferred {
            assert!(t.contains("<** 451 4.7.1"), "{s}: {t}");
        }
    }
    let queued: Vec<&String> = results
        .iter()
        .filter(|(_, r, _)| *r == Outcome::Queued)
        .map(|(s, _, _)| s)
        .collect();
    assert!(!queued.is_empty());
    // Every queued message reaches the sink, and nothing else does.
    let mut delivered = Vec::new();
    while delivered.len() < queued.len() {
        let m = sink.next(60).await.unwrap_or_else(|| {
            panic!(
                "{} of {} delivered: {}",
                delivered.len(),
                queued.len(),
                pf.log()
            )
        });
        let subject = m.subject();
        assert!(subject.starts_with("good-"), "{subject} was delivered");
        delivered.push(subject);
    }
    delivered.sort();
    let mut want: Vec<String> = queued.into_iter().cloned().collect();
    want.sort();
    assert_eq!(delivered, want);
    assert!(sink.next(3).await.is_none());
    drop(pf);
    drop(d);
}
