//! Sender and recipient verification by SMTP callout to a real Postfix as
//! the internal mail store (one that knows its users, one catch-all), at
//! the milter and end to end through a gateway Postfix; the catch-all in
//! `selfcheck`.

use crate::common;
use common::{
    dns::DnsServer,
    mail,
    postfix::{swaks, Postfix},
    process::BIN,
    reply,
    sink::Sink,
};
use egress_milter::config::Config;
use indymilter_test::Status;
use std::{path::Path, process::Command};

fn config(store: u16, catch_all: u16, dead: u16, extra: &str) -> Config {
    let text = format!(
        "listen: inet:127.0.0.1:1
local_domains: [example.com]
hostname: gw.example.com
classes:
  - {{ name: app, clients: [10.1.0.0/16, 127.0.0.2], verify_sender: {{ callout: [\"127.0.0.1:{store}\"] }} }}
  - {{ name: failover, clients: [10.2.0.0/16], verify_sender: {{ callout: [\"127.0.0.1:{dead}\", \"127.0.0.1:{store}\"], timeout: 3s }} }}
  - {{ name: down, clients: [10.3.0.0/16], verify_sender: {{ callout: [\"127.0.0.1:{dead}\"], timeout: 2s }} }}
  - {{ name: catch, clients: [10.4.0.0/16], verify_sender: {{ callout: [\"127.0.0.1:{catch_all}\"] }} }}
verify_recipients: {{ callout: [\"127.0.0.1:{store}\"] }}
{extra}"
    );
    Config::parse(Path::new("verify.yaml"), &text).unwrap_or_else(|e| panic!("{e}"))
}

async fn sender(d: &common::Daemon, ip: &str, from: &str) -> String {
    let mut conn = d.client(ip).await;
    let r = reply(&mail(&mut conn, from, None).await);
    conn.close().await.unwrap();
    r
}

async fn recipient(d: &common::Daemon, rcpt: &str) -> String {
    let mut conn = d.client("192.0.2.1").await;
    assert_eq!(
        mail(&mut conn, "<someone@example.net>", None).await,
        Status::Continue
    );
    let r = reply(&conn.rcpt([rcpt]).await.unwrap());
    conn.close().await.unwrap();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callouts_to_the_mail_store() {
    let store = Postfix::start_store("store", &["alice@example.com", "bob@example.com"]);
    let catch_all = Postfix::start_store("catchall", &[]);
    let dead = common::free_port();
    let d = common::start_with(config(store.smtp_port, catch_all.smtp_port, dead, "")).await;

    assert_eq!(
        sender(&d, "10.1.0.1", "<alice@example.com>").await,
        "continue"
    );
    assert_eq!(
        sender(&d, "10.1.0.1", "<ghost@example.com>").await,
        "550 5.1.7 Sender address <ghost@example.com> does not exist"
    );
    // A null sender has nothing to verify (the class decides on it).
    assert_eq!(
        sender(&d, "10.1.0.1", "<>").await,
        "550 5.7.1 Null sender not allowed for app"
    );
    // The first store cannot be reached: the next one answers.
    assert_eq!(
        sender(&d, "10.2.0.1", "<bob@example.com>").await,
        "continue"
    );
    assert_eq!(
        sender(&d, "10.2.0.1", "<nobody@example.com>").await,
        "550 5.1.7 Sender address <nobody@example.com> does not exist"
    );
    // No store answers: 4xx, the client retries. (An address verified
    // before is known whichever class asks: the cache holds addresses.)
    assert_eq!(
        sender(&d, "10.3.0.1", "<carol@example.com>").await,
        "451 4.1.7 Sender address <carol@example.com> could not be verified"
    );
    assert_eq!(
        sender(&d, "10.3.0.1", "<alice@example.com>").await,
        "continue"
    );
    // A catch-all proves nothing: the mail goes, and it is counted apart.
    let named = || {
        common::counted(
            &d.metrics(),
            "egress_source_lookups_total",
            &[("source", "callout"), ("result", "catch_all")],
        )
    };
    assert_eq!(named(), 0);
    assert_eq!(
        sender(&d, "10.4.0.1", "<anything@example.com>").await,
        "continue"
    );
    assert_eq!(named(), 1);

    // Inbound mail (a client in no class): a recipient the store does not
    // have is refused at RCPT TO, not bounced later.
    assert_eq!(recipient(&d, "<bob@example.com>").await, "continue");
    assert_eq!(
        recipient(&d, "<ghost@example.com>").await,
        "550 5.1.1 Recipient <ghost@example.com> does not exist"
    );
    // Not ours at all: the relay check, before any callout.
    assert_eq!(
        recipient(&d, "<ghost@example.net>").await,
        "554 5.7.1 Relay access denied"
    );

    // Answers are cached: with the store gone, known and unknown alike
    // are still answered, in any case of the local part.
    drop(store);
    assert_eq!(
        sender(&d, "10.1.0.1", "<Alice@example.com>").await,
        "continue"
    );
    assert_eq!(
        sender(&d, "10.1.0.1", "<ghost@example.com>").await,
        "550 5.1.7 Sender address <ghost@example.com> does not exist"
    );
    assert_eq!(
        sender(&d, "10.1.0.1", "<carol@example.com>").await,
        "451 4.1.7 Sender address <carol@example.com> could not be verified"
    );
    let m = d.metrics();
    for result in ["found", "not_found", "error", "cache_hit"] {
        assert!(
            common::counted(
                &m,
                "egress_source_lookups_total",
                &[("source", "callout"), ("result", result)]
            ) >= 1,
            "{result}: {m}"
        );
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selfcheck_names_a_catch_all_store() {
    let store = Postfix::start_store("sc-store", &["alice@example.com"]);
    let catch_all = Postfix::start_store("sc-catchall", &[]);
    let dead = common::free_port();
    let dns = DnsServer::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milter.yaml");
    let text = format!(
        "listen: inet:127.0.0.1:1
local_domains: [example.com]
classes:
  - {{ name: app, clients: [10.1.0.0/16], verify_sender: {{ callout: [\"127.0.0.1:{s}\", \"127.0.0.1:{dead}\"], timeout: 2s }} }}
verify_recipients: {{ callout: [\"127.0.0.1:{c}\"] }}
dns: {{ nameservers: [\"{ns}\"], timeout: 1s }}
",
        s = store.smtp_port,
        c = catch_all.smtp_port,
        ns = dns.addr
    );
    std::fs::write(&path, text).unwrap();
    let out = common::cli::output(Command::new(BIN).args(["selfcheck", "--config"]).arg(&path));
    let text = out.stdout.clone() + &out.stderr.clone();
    let line = |host: u16| {
        text.lines()
            .find(|l| l.starts_with("mail store") && l.contains(&format!("127.0.0.1:{host} ")))
            .unwrap_or_else(|| panic!("no row for {host}:\n{text}"))
            .to_string()
    };
    assert!(
        line(store.smtp_port).contains("refuses an unknown address"),
        "{text}"
    );
    assert!(line(catch_all.smtp_port).contains("catch-all"), "{text}");
    assert!(line(dead).contains("cannot be asked"), "{text}");
}

/// The replies a client sees through a real Postfix: the unknown sender of
/// an application, and inbound mail to a user the store does not have;
/// the mail that should pass reaches the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_postfix() {
    let store = Postfix::start_store("e2e-store", &["alice@example.com", "bob@example.com"]);
    let dead = common::free_port();
    let d = common::start_with(config(store.smtp_port, store.smtp_port, dead, "")).await;
    let mut sink = Sink::start().await;
    let pf = Postfix::start("verify", &format!("inet:{}", d.addr), sink.port);
    let port = pf.smtp_port;
    let run = |ip: &'static str, from: &'static str, to: &'static str, hfrom: &'static str| {
        tokio::task::spawn_blocking(move || swaks(port, ip, from, to, hfrom, "verify"))
    };
    let refused = |t: &str, r: &str| {
        t.lines()
            .any(|l| l.starts_with("<** ") && l[4..].starts_with(r))
    };
    let queued = |t: &str| {
        t.lines()
            .any(|l| l.starts_with("<-  250") && l.contains("queued as"))
    };

    // The application (127.0.0.2, class app) with a sender that exists.
    let t = run(
        "127.0.0.2",
        "alice@example.com",
        "someone@example.net",
        "alice@example.com",
    )
    .await
    .unwrap();
    assert!(queued(&t), "{t}");
    let t = run(
        "127.0.0.2",
        "ghost@example.com",
        "someone@example.net",
        "ghost@example.com",
    )
    .await
    .unwrap();
    assert!(
        refused(
            &t,
            "550 5.1.7 Sender address <ghost@example.com> does not exist"
        ),
        "{t}"
    );
    // A stranger (127.0.0.9) writing to our users, From: its own domain.
    let t = run(
        "127.0.0.9",
        "news@example.net",
        "bob@example.com",
        "news@example.net",
    )
    .await
    .unwrap();
    assert!(queued(&t), "{t}");
    let t = run(
        "127.0.0.9",
        "news@example.net",
        "ghost@example.com",
        "news@example.net",
    )
    .await
    .unwrap();
    assert!(
        refused(&t, "550 5.1.1 Recipient <ghost@example.com> does not exist"),
        "{t}"
    );
    let mut rcpts = Vec::new();
    for _ in 0..2 {
        let m = sink.next(30).await.expect("a message at the sink");
        rcpts.extend(m.rcpt_to);
    }
    rcpts.sort();
    assert_eq!(rcpts, ["<bob@example.com>", "<someone@example.net>"]);
    d.stop().await;
}

/// `verify_callouts.rate`: a stranger's 100 RCPTs to addresses nobody
/// asked before make at most the capped number of sessions at the store;
/// the rest are not asked, and follow `on_error` (here: `451 4.1.1`). A
/// reload that lifts the cap lets callouts through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callouts_are_capped_for_the_whole_gateway() {
    let store = Postfix::start_store("capped", &["alice@example.com"]);
    let dead = common::free_port();
    let d = common::start_with(config(
        store.smtp_port,
        store.smtp_port,
        dead,
        "verify_callouts: { rate: 5/h }\n",
    ))
    .await;
    // The sessions that asked (the readiness probe sends no MAIL).
    let sessions = || store.log().matches(" mail=1 ").count();
    let before = sessions();
    let mut conn = d.client("192.0.2.1").await;
    assert_eq!(
        mail(&mut conn, "<someone@example.net>", None).await,
        Status::Continue
    );
    let mut replies = std::collections::BTreeMap::new();
    for i in 0..100 {
        let r = reply(
            &conn
                .rcpt([format!("<ghost{i}@example.com>")])
                .await
                .unwrap(),
        );
        *replies.entry(r).or_insert(0) += 1;
    }
    conn.close().await.unwrap();
    assert_eq!(
        replies.get("451 4.1.1 Recipient <ghost99@example.com> could not be verified"),
        Some(&1),
        "{replies:?}"
    );
    let refused = replies
        .keys()
        .filter(|r| r.starts_with("550 5.1.1"))
        .map(|r| replies[r])
        .sum::<i32>();
    assert_eq!(refused, 5, "{replies:?}");
    let m = d.metrics();
    assert_eq!(
        common::counted(&m, "egress_callouts_total", &[("result", "made")]),
        5
    );
    assert_eq!(
        common::counted(&m, "egress_callouts_total", &[("result", "capped")]),
        95
    );
    assert!(
        m.contains("egress_callouts_allowed_per_minute 0.08333"),
        "{m}"
    );
    // The store saw five sessions, not a hundred (its log written as
    // each ends).
    common::until(
        std::time::Duration::from_secs(10),
        "five sessions logged",
        || {
            let n = sessions() - before;
            (n == 5)
                .then_some(())
                .ok_or(format!("{n}: {}", store.log()))
        },
    )
    .await;
    d.stop().await;
}
