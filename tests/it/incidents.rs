//! Incidents over the milter socket: each signal opens an incident at the
//! message that crosses its threshold and not before; that message and the
//! key's next ones are held (the quarantine action at end of message),
//! deferred or refused as configured; monitor mode holds nothing; the
//! postmaster is told once per incident, by webhook and by mail.

use crate::common;
use common::{reply, sink::Sink, webhook::Webhook, Daemon};
use egress_milter::admin::{Incidents, Request};
use egress_milter::config::Config;
use indymilter::MacroStage;
use indymilter_test::{any, Status};
use std::path::Path;

const BASE: &str = "listen: inet:127.0.0.1:1
local_domains: [example.com]
classes:
  - { name: staff, auth: any, sender_domains: [example.com] }
  - { name: app, clients: [10.0.0.0/8], sender_domains: [example.com] }
";

async fn start(extra: &str) -> Daemon {
    let text = format!("{BASE}{extra}");
    let config = Config::parse(Path::new("incidents.yaml"), &text).expect("valid config");
    common::start_with(config).await
}

#[derive(Debug)]
pub(crate) struct Sent {
    /// "continue", or the reply of the stage that refused.
    pub(crate) reply: String,
    /// The quarantine action came with end of message.
    pub(crate) held: bool,
}

/// One message, in order; rejected recipients (`{rcpt_mailer}` error, as
/// Postfix sends them to a milter that asked) come after the accepted ones.
async fn send_full(
    d: &Daemon,
    ip: &str,
    login: Option<&str>,
    sender: &str,
    rcpts: &[&str],
    mta_rejected: &[&str],
    qid: &str,
) -> Sent {
    send_to(d.addr, ip, login, sender, rcpts, mta_rejected, qid).await
}

/// [`send_full`] to a daemon at `addr`.
pub(crate) async fn send_to(
    addr: std::net::SocketAddr,
    ip: &str,
    login: Option<&str>,
    sender: &str,
    rcpts: &[&str],
    mta_rejected: &[&str],
    qid: &str,
) -> Sent {
    let refused = |s: &Status| Sent {
        reply: reply(s),
        held: false,
    };
    let mut c = indymilter_test::TestConnection::configure()
        .available_actions(indymilter::Actions::all())
        .open_tcp(addr)
        .await
        .expect("milter connection");
    let client = std::net::SocketAddr::new(ip.parse().expect("an IP"), 40000);
    assert_eq!(
        c.connect("client.test", client).await.unwrap(),
        Status::Continue
    );
    let mut macros = vec![("i", qid)];
    if let Some(l) = login {
        macros.push(("{auth_authen}", l));
    }
    c.macros(MacroStage::Mail, macros).await.unwrap();
    let s = c.mail([sender]).await.unwrap();
    if s != Status::Continue {
        return refused(&s);
    }
    for r in rcpts {
        c.macros(MacroStage::Rcpt, [("{rcpt_mailer}", "smtp")])
            .await
            .unwrap();
        let s = c.rcpt([format!("<{r}>")]).await.unwrap();
        if s != Status::Continue {
            return refused(&s);
        }
    }
    for r in mta_rejected {
        c.macros(MacroStage::Rcpt, [("{rcpt_mailer}", "error")])
            .await
            .unwrap();
        let s = c.rcpt([format!("<{r}>")]).await.unwrap();
        assert_eq!(
            s,
            Status::Continue,
            "an MTA-rejected recipient is not judged"
        );
    }
    let from = sender.trim_matches(['<', '>']);
    for (name, value) in [("From", from), ("To", "x@example.net"), ("Subject", "hi")] {
        c.header(name, value).await.unwrap();
    }
    let s = c.eoh().await.unwrap();
    if s != Status::Continue {
        return refused(&s);
    }
    c.body("Hello.\r\n").await.unwrap();
    c.macros(MacroStage::Eom, [("i", qid)]).await.unwrap();
    let (actions, s) = c.eom().await.unwrap();
    let _ = c.close().await;
    Sent {
        reply: reply(&s),
        held: actions.has_quarantine(any()),
    }
}

async fn send(d: &Daemon, login: &str, rcpts: &[&str], qid: &str) -> Sent {
    send_full(
        d,
        "192.0.2.10",
        Some(login),
        &format!("<{login}>"),
        rcpts,
        &[],
        qid,
    )
    .await
}

fn opened(d: &Daemon, signal: &str) -> u64 {
    common::counted(
        &d.metrics(),
        "egress_incidents_opened_total",
        &[("signal", signal)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spray_is_held_from_the_message_that_opens_the_incident() {
    let mut hook = Webhook::start(200).await;
    let mut sink = Sink::start().await;
    let d = start(&format!(
        "incidents:
  block_for: 1h
  signals:
    - {{ name: spray, key: user, count: distinct_recipient_domains, above: 5/h }}
  notify:
    webhook: {{ url: \"{}\", timeout: 2s }}
    mail: {{ to: postmaster@example.com, from: egress-milter@example.com, relay: \"127.0.0.1:{}\" }}
",
        hook.url(),
        sink.port
    ))
    .await;
    let alice = "alice@example.com";
    // Five domains in the hour: under the threshold, nothing held.
    for i in 1..=5 {
        let r = format!("x@d{i}.example.net");
        let s = send(&d, alice, &[&r], &format!("QA{i}")).await;
        assert_eq!(
            (s.reply.as_str(), s.held),
            ("continue", false),
            "message {i}"
        );
    }
    assert_eq!(opened(&d, "spray"), 0);
    // The sixth domain crosses: this very message is held.
    let s = send(&d, alice, &["x@d6.example.net"], "QA6").await;
    assert_eq!((s.reply.as_str(), s.held), ("continue", true));
    assert_eq!(opened(&d, "spray"), 1);
    // The next one too, even to a domain already seen; another user not.
    let s = send(&d, alice, &["x@d1.example.net"], "QA7").await;
    assert!(s.held);
    let s = send(&d, "bob@example.com", &["x@d1.example.net"], "QB1").await;
    assert_eq!((s.reply.as_str(), s.held), ("continue", false));
    // Mail from the app servers (no login) is not alice's.
    let s = send_full(
        &d,
        "10.0.0.5",
        None,
        "<app@example.com>",
        &["y@z.test"],
        &[],
        "QC1",
    )
    .await;
    assert!(!s.held);
    // A seventh domain fires the signal again: the incident is extended,
    // not opened twice.
    let s = send(&d, alice, &["x@d7.example.net"], "QA8").await;
    assert!(s.held);
    assert_eq!(opened(&d, "spray"), 1);
    let m = d.metrics();
    assert_eq!(common::unlabelled(&m, "egress_messages_held_total"), 3);
    assert_eq!(
        common::counted(&m, "egress_messages_total", &[("verdict", "hold")]),
        3
    );
    assert_eq!(
        common::counted(&m, "egress_messages_total", &[("verdict", "accept")]),
        7
    );
    assert!(m.contains("\negress_incidents_open 1\n"), "{m}");

    // One POST, with the documented document.
    let doc = hook.next(10).await.expect("the webhook is called");
    assert_eq!(doc["event"], "opened");
    assert_eq!(doc["key"], "user:alice@example.com");
    assert_eq!(doc["kind"], "user");
    assert_eq!(doc["signal"], "spray");
    assert_eq!(doc["action"], "hold");
    assert_eq!(doc["monitor"], false);
    assert!(
        doc["figures"]
            .as_str()
            .unwrap()
            .starts_with("6 distinct_recipient_domains in 1h (threshold 5/h)"),
        "{doc}"
    );
    let earlier: Vec<&str> = doc["earlier_queue_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(earlier, ["QA1", "QA2", "QA3", "QA4", "QA5", "QA6"]);
    assert!(doc["until"].as_str().unwrap().ends_with('Z'), "{doc}");
    // One mail, readable.
    let mail = sink.next(10).await.expect("the postmaster's mail");
    assert_eq!(mail.rcpt_to, ["<postmaster@example.com>"]);
    assert!(
        mail.subject().contains("user:alice@example.com suspended"),
        "{}",
        mail.subject()
    );
    assert!(mail.data.contains("Signal: spray"), "{}", mail.data);
    // Nothing more: one notice per incident.
    assert!(hook.next(2).await.is_none());
    assert!(sink.next(1).await.is_none());
    assert_eq!(
        common::counted(
            &d.metrics(),
            "egress_incident_notifications_total",
            &[("result", "sent")]
        ),
        2
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_signal_opens_its_incident_at_the_crossing() {
    each_signal("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_signal_opens_its_incident_at_the_crossing_in_redis() {
    let redis = common::redis::RedisServer::start();
    each_signal(&format!(
        "rate_limits: {{ backend: redis, redis: {{ url: \"{}\" }} }}\n",
        redis.url()
    ))
    .await;
}

async fn each_signal(backend: &str) {
    let d = start(&format!(
        "{backend}incidents:
  signals:
    - {{ name: volume, key: client, count: messages, above: 3/h }}
    - {{ name: many_rcpts, key: sender, count: recipients, above: 5/h }}
    - {{ name: forgery, key: user, count: refusals, above: 2/10m }}
    - {{ name: bad_rcpts, key: client, count: mta_rejected_recipients, above: 3/h }}
    - {{ name: spread, key: class, count: distinct_recipients, above: 4/h }}
"
    ))
    .await;
    // messages, by client: the fourth from 10.0.0.1 opens it.
    for i in 1..=3 {
        let s = send_full(
            &d,
            "10.0.0.1",
            None,
            "<a@example.com>",
            &["r@x.test"],
            &[],
            &format!("V{i}"),
        )
        .await;
        assert!(!s.held, "{i}");
    }
    assert_eq!(opened(&d, "volume"), 0);
    let s = send_full(
        &d,
        "10.0.0.1",
        None,
        "<a@example.com>",
        &["r@x.test"],
        &[],
        "V4",
    )
    .await;
    assert!(s.held);
    assert_eq!(opened(&d, "volume"), 1);

    // recipients, by sender: 3 + 3 crosses 5 at the second message.
    let s = send_full(
        &d,
        "10.0.0.2",
        None,
        "<b@example.com>",
        &["r@x.test", "s@x.test", "t@x.test"],
        &[],
        "R1",
    )
    .await;
    assert!(!s.held);
    let s = send_full(
        &d,
        "10.0.0.3",
        None,
        "<b@example.com>",
        &["r@x.test", "s@x.test", "t@x.test"],
        &[],
        "R2",
    )
    .await;
    assert!(s.held);
    assert_eq!(opened(&d, "many_rcpts"), 1);

    // refusals, by login: forged senders are refused; the third refusal
    // opens it, and carol's next genuine message is held.
    for i in 1..=3 {
        let s = send_full(
            &d,
            "192.0.2.20",
            Some("carol@example.com"),
            "<ceo@bank.test>",
            &["r@x.test"],
            &[],
            &format!("F{i}"),
        )
        .await;
        assert!(s.reply.starts_with("550 5.7.1"), "{s:?}");
        // (With Redis a refusal is counted aside: give it a moment.)
        let want = u64::from(i == 3);
        for _ in 0..200 {
            if opened(&d, "forgery") == want {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(opened(&d, "forgery"), want, "refusal {i}");
    }
    let s = send(&d, "carol@example.com", &["r@x.test"], "F4").await;
    assert!(s.held);

    // recipients the MTA rejected, by client: 2 + 2 crosses 3.
    let s = send_full(
        &d,
        "10.0.0.4",
        None,
        "<e@example.com>",
        &["ok@x.test"],
        &["nouser1@x.test", "nouser2@x.test"],
        "M1",
    )
    .await;
    assert!(!s.held);
    assert_eq!(opened(&d, "bad_rcpts"), 0);
    let s = send_full(
        &d,
        "10.0.0.4",
        None,
        "<e@example.com>",
        &["ok@x.test"],
        &["nouser3@x.test", "nouser4@x.test"],
        "M2",
    )
    .await;
    assert_eq!(opened(&d, "bad_rcpts"), 1);
    // Opened by the second message's rejected recipients, before its end:
    // the message is held.
    assert!(s.held);

    // distinct recipients, by class: staff have written to r@x.test
    // (carol's last message); dave's three new recipients make four, his
    // fourth crosses, and then every staff member's mail is held.
    // (Each from its own address: the volume signal counts by client.)
    let dave = |i: u32| {
        let d = &d;
        async move {
            let r = format!("n{i}@y.test");
            let ip = format!("192.0.2.{}", 30 + i);
            send_full(
                d,
                &ip,
                Some("dave@example.com"),
                "<dave@example.com>",
                &[&r],
                &[],
                &format!("D{i}"),
            )
            .await
        }
    };
    for i in 1..=3 {
        assert!(!dave(i).await.held, "{i}");
    }
    assert_eq!(opened(&d, "spread"), 0);
    assert!(dave(4).await.held);
    assert_eq!(opened(&d, "spread"), 1);
    let s = send_full(
        &d,
        "192.0.2.40",
        Some("erin@example.com"),
        "<erin@example.com>",
        &["r@x.test"],
        &[],
        "E1",
    )
    .await;
    assert!(s.held);
    // The app servers' class is another key.
    let s = send_full(
        &d,
        "10.0.0.7",
        None,
        "<f@example.com>",
        &["r@x.test"],
        &[],
        "A1",
    )
    .await;
    assert!(!s.held);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempfail_and_reject_refuse_and_monitor_holds_nothing() {
    for (action, first) in [
        ("tempfail", "451 4.7.1 Sending from 10.0.0.9 is suspended"),
        ("reject", "550 5.7.1 Sending from 10.0.0.9 is suspended"),
    ] {
        let d = start(&format!(
            "incidents:\n  action: {action}\n  signals: [{{ name: volume, key: client, count: messages, above: 2/h }}]\n"
        ))
        .await;
        for i in 1..=2 {
            let s = send_full(
                &d,
                "10.0.0.9",
                None,
                "<a@example.com>",
                &["r@x.test"],
                &[],
                &format!("T{i}"),
            )
            .await;
            assert_eq!(s.reply, "continue", "{action} {i}");
        }
        // The crossing message is refused at its end; the next at MAIL FROM.
        let s = send_full(
            &d,
            "10.0.0.9",
            None,
            "<a@example.com>",
            &["r@x.test"],
            &[],
            "T3",
        )
        .await;
        assert_eq!((s.reply.as_str(), s.held), (first, false), "{action}");
        let s = send_full(
            &d,
            "10.0.0.9",
            None,
            "<a@example.com>",
            &["r@x.test"],
            &[],
            "T4",
        )
        .await;
        assert_eq!(s.reply, first, "{action}");
        // Another client is not concerned.
        let s = send_full(
            &d,
            "10.0.0.8",
            None,
            "<a@example.com>",
            &["r@x.test"],
            &[],
            "T5",
        )
        .await;
        assert_eq!(s.reply, "continue");
        d.stop().await;
    }

    // Monitor mode: the incident opens (and is told), nothing is held or
    // refused, the summary says what would have happened.
    let mut hook = Webhook::start(200).await;
    let d = start(&format!(
        "mode: monitor\nincidents:\n  signals: [{{ name: volume, key: client, count: messages, above: 2/h }}]\n  notify: {{ webhook: {{ url: \"{}\" }} }}\n",
        hook.url()
    ))
    .await;
    for i in 1..=5 {
        let s = send_full(
            &d,
            "10.0.0.9",
            None,
            "<a@example.com>",
            &["r@x.test"],
            &[],
            &format!("W{i}"),
        )
        .await;
        assert_eq!((s.reply.as_str(), s.held), ("continue", false), "{i}");
    }
    assert_eq!(opened(&d, "volume"), 1);
    let m = d.metrics();
    assert_eq!(common::unlabelled(&m, "egress_messages_held_total"), 0);
    assert_eq!(
        common::counted(&m, "egress_messages_total", &[("verdict", "would_hold")]),
        3
    );
    let doc = hook.next(10).await.expect("notified");
    assert_eq!(doc["monitor"], true);
    d.stop().await;

    // The incident action `monitor` in enforce mode: the same.
    let d = start(
        "incidents:\n  action: monitor\n  signals: [{ name: volume, key: client, count: messages, above: 2/h }]\n",
    )
    .await;
    for i in 1..=4 {
        let s = send_full(
            &d,
            "10.0.0.9",
            None,
            "<a@example.com>",
            &["r@x.test"],
            &[],
            &format!("X{i}"),
        )
        .await;
        assert_eq!((s.reply.as_str(), s.held), ("continue", false), "{i}");
    }
    assert_eq!(
        common::counted(
            &d.metrics(),
            "egress_messages_total",
            &[("verdict", "would_hold")]
        ),
        2
    );
    d.stop().await;
}

fn cli(config: &Path, args: &[&str]) -> (bool, String) {
    let out = common::cli::with_config(config, args);
    (out.ok(), out.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_opened_by_hand_survives_a_restart_until_closed() {
    use common::process::Running;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let port = common::free_port();
    let path = dir.path().join("milter.yaml");
    std::fs::write(
        &path,
        format!(
            "{}admin: {{ listen: \"unix:{}\" }}\nincidents: {{ state_dir: \"{}\", block_for: 1h }}\n",
            BASE.replace("inet:127.0.0.1:1", &format!("inet:127.0.0.1:{port}")),
            dir.path().join("admin.sock").display(),
            state.display()
        ),
    )
    .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let alice = |qid: &'static str| {
        send_to(
            addr,
            "192.0.2.10",
            Some("alice@example.com"),
            "<alice@example.com>",
            &["x@y.test"],
            &[],
            qid,
        )
    };
    let mut d = Running::start(&path);
    d.wait_for("admin endpoint listening");
    let (ok, out) = cli(
        &path,
        &["incidents", "open", "user:alice@example.com", "--for", "2h"],
    );
    assert!(
        ok && out.starts_with("opened user:alice@example.com: hold until "),
        "{out}"
    );
    assert!(alice("QR1").await.held);

    // A reload keeps it.
    d.signal("-HUP");
    d.wait_for("configuration reloaded");
    assert!(alice("QR1b").await.held);
    // A restart: the incident is read back, still open.
    d.signal("-TERM");
    assert!(d.wait().success());
    let d = Running::start(&path);
    d.wait_for("admin endpoint listening");
    let (ok, out) = cli(&path, &["incidents", "list"]);
    assert!(
        ok && out.contains("user:alice@example.com") && out.contains("operator"),
        "{out}"
    );
    assert!(alice("QR2").await.held);
    // The decision line and the summary name the incident.
    let decision = d.wait_for("verdict=\"hold\"");
    assert!(
        decision.contains("incident=\"user:alice@example.com\"")
            && decision.contains("rule=\"incident\""),
        "{decision}"
    );
    let summary = d.wait_for("\"QR2\"");
    assert!(
        summary.contains("verdict=\"hold\"")
            && summary.contains("incident=\"user:alice@example.com\""),
        "{summary}"
    );
    let s = send_to(
        addr,
        "192.0.2.11",
        Some("bob@example.com"),
        "<bob@example.com>",
        &["x@y.test"],
        &[],
        "QB",
    )
    .await;
    assert!(!s.held);

    // show names the held messages and how to release them.
    let (ok, out) = cli(&path, &["incidents", "show", "alice@example.com"]);
    assert!(ok, "{out}");
    assert!(out.contains("held      QR1 QR1b QR2"), "{out}");
    assert!(out.contains("release   postsuper -H QR1 QR1b QR2"), "{out}");
    assert!(
        out.contains("sendmail -Q -qQ -qIQR1 -qIQR1b -qIQR2"),
        "{out}"
    );
    let (ok, out) = cli(&path, &["incidents", "show", "user:nobody@example.com"]);
    assert!(!ok && out.contains("no open incident"), "{out}");

    // Closed by hand: alice's mail goes through again.
    let (ok, out) = cli(&path, &["incidents", "close", "alice@example.com"]);
    assert!(
        ok && out.starts_with("closed user:alice@example.com"),
        "{out}"
    );
    assert!(out.contains("postsuper -H QR1 QR1b QR2"), "{out}");
    assert!(!alice("QR3").await.held);
    let (ok, out) = cli(&path, &["incidents", "list"]);
    assert!(ok && out == "no open incident\n", "{out}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_mail_from_strangers_is_not_counted() {
    let d = start(
        "incidents:\n  signals:\n    - { name: volume, key: client, count: messages, above: 2/h }\n    - { name: bad_rcpts, key: client, count: mta_rejected_recipients, above: 1/h }\n",
    )
    .await;
    // A stranger's mail to our domain, a bounce, recipients the MTA
    // rejected: none of it is held or opens anything.
    for (i, sender) in [
        "<news@lists.test>",
        "<>",
        "<x@gmail.test>",
        "<y@gmail.test>",
    ]
    .iter()
    .enumerate()
    {
        let s = send_full(
            &d,
            "198.51.100.7",
            None,
            sender,
            &["user@example.com"],
            &["nobody@example.com"],
            &format!("I{i}"),
        )
        .await;
        assert_eq!((s.reply.as_str(), s.held), ("continue", false), "{sender}");
    }
    assert_eq!(opened(&d, "volume") + opened(&d, "bad_rcpts"), 0);
    d.stop().await;
}

/// Serves a daemon's admin endpoint on a unix socket in `dir`.
/// The daemon's answer to one `incidents` request, as the command prints it.
async fn ask(settings: &egress_milter::config::AdminSettings, request: Incidents) -> String {
    egress_milter::admin::request(settings, Request::Incidents(request))
        .await
        .expect("the admin endpoint answers")
        .to_string()
}

async fn admin(d: &Daemon, dir: &Path, name: &str) -> egress_milter::config::AdminSettings {
    let settings = egress_milter::config::AdminSettings {
        listen: egress_milter::config::AdminListen::Unix {
            path: dir.join(name),
            mode: 0o660,
            group: None,
        },
        token_file: None,
    };
    let l = egress_milter::admin::bind(&settings)
        .await
        .unwrap()
        .unwrap();
    tokio::spawn(egress_milter::admin::serve(l, d.shared.clone()));
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_signals_and_incidents_through_redis() {
    let redis = common::redis::RedisServer::start();
    let mut hook = Webhook::start(200).await;
    let config = format!(
        "rate_limits: {{ backend: redis, redis: {{ url: \"{}\" }} }}
incidents:
  signals:
    - {{ name: spray, key: user, count: distinct_recipient_domains, above: 3/h }}
  notify: {{ webhook: {{ url: \"{}\" }} }}
",
        redis.url(),
        hook.url()
    );
    let a = start(&config).await;
    let b = start(&config).await;
    let dir = tempfile::tempdir().unwrap();
    let admin_a = admin(&a, dir.path(), "a.sock").await;
    let admin_b = admin(&b, dir.path(), "b.sock").await;
    let alice = "alice@example.com";
    // Alice's messages alternate between the gateways: one count.
    for (i, gw) in [&a, &b, &a].into_iter().enumerate() {
        let r = format!("x@d{i}.test");
        assert!(!send(gw, alice, &[&r], &format!("G{i}")).await.held, "{i}");
    }
    assert!(send(&b, alice, &["x@d9.test"], "G3").await.held);
    // Opened through b, it holds alice's mail on a too.
    assert!(send(&a, alice, &["x@d1.test"], "G4").await.held);
    assert!(!send(&a, "bob@example.com", &["x@d1.test"], "G5").await.held);
    // Told once, by the gateway that opened it.
    let doc = hook.next(10).await.expect("notified");
    assert_eq!(
        (doc["event"].as_str(), doc["key"].as_str()),
        (Some("opened"), Some("user:alice@example.com"))
    );
    // Both list it, with the messages held on either.
    for settings in [&admin_a, &admin_b] {
        let out = ask(
            settings,
            Incidents::Show {
                key: "alice@example.com".into(),
            },
        )
        .await;
        assert!(out.contains("held      G3 G4"), "{out}");
    }
    // Closed through a: b lets alice's mail through again.
    let out = ask(
        &admin_a,
        Incidents::Close {
            key: "user:alice@example.com".into(),
        },
    )
    .await;
    assert!(out.starts_with("closed user:alice@example.com"), "{out}");
    assert!(!send(&b, alice, &["x@d1.test"], "G6").await.held);
    let doc = hook.next(10).await.expect("told of the end");
    assert_eq!(doc["event"], "closed");
    assert_eq!(doc["reason"], "closed by hand");

    // One that runs out: its end is told once, though both gateways look.
    let out = ask(
        &admin_b,
        Incidents::Open {
            key: "user:carol@example.com".into(),
            duration: Some("4s".into()),
            action: Some("tempfail".into()),
        },
    )
    .await;
    assert!(
        out.starts_with("opened user:carol@example.com: tempfail"),
        "{out}"
    );
    let s = send(&a, "carol@example.com", &["x@d1.test"], "C1").await;
    assert_eq!(
        s.reply,
        "451 4.7.1 Sending from carol@example.com is suspended"
    );
    let doc = hook.next(10).await.expect("opened");
    assert_eq!(
        (doc["event"].as_str(), doc["signal"].as_str()),
        (Some("opened"), Some("operator"))
    );
    let doc = hook.next(10).await.expect("expired");
    assert_eq!(
        (doc["event"].as_str(), doc["reason"].as_str()),
        (Some("closed"), Some("expired"))
    );
    assert!(hook.next(3).await.is_none(), "told twice");
    assert_eq!(
        send(&a, "carol@example.com", &["x@d1.test"], "C2")
            .await
            .reply,
        "continue"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_leaves_each_gateway_counting_on_its_own() {
    let dead = format!("redis://127.0.0.1:{}", common::free_port());
    let d = start(&format!(
        "rate_limits: {{ backend: redis, redis: {{ url: \"{dead}\", timeout: 100ms }} }}
incidents:
  signals: [{{ name: spray, key: user, count: distinct_recipient_domains, above: 2/h }}]
"
    ))
    .await;
    for i in 0..2 {
        let r = format!("x@d{i}.test");
        assert!(!send(&d, "alice@example.com", &[&r], "Q").await.held);
    }
    assert!(
        send(&d, "alice@example.com", &["x@d7.test"], "Q")
            .await
            .held
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_are_capped_per_hour() {
    let mut hook = Webhook::start(200).await;
    let d = start(&format!(
        "incidents:
  signals: [{{ name: volume, key: client, count: messages, above: 1/h }}]
  notify: {{ webhook: {{ url: \"{}\" }}, max_per_hour: 2 }}
",
        hook.url()
    ))
    .await;
    // Three clients, three incidents.
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        for q in ["Q1", "Q2"] {
            send_full(&d, ip, None, "<a@example.com>", &["r@x.test"], &[], q).await;
        }
    }
    assert_eq!(opened(&d, "volume"), 3);
    assert!(hook.next(10).await.is_some());
    assert!(hook.next(10).await.is_some());
    assert!(
        hook.next(2).await.is_none(),
        "a third notice within the hour"
    );
    assert_eq!(
        common::counted(
            &d.metrics(),
            "egress_incident_notifications_total",
            &[("result", "suppressed")]
        ),
        1
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_is_retried_then_counted() {
    let mut hook = Webhook::start(500).await;
    let d = start(&format!(
        "incidents:
  signals: [{{ name: volume, key: client, count: messages, above: 1/h }}]
  notify: {{ webhook: {{ url: \"{}\" }} }}
",
        hook.url()
    ))
    .await;
    for q in ["Q1", "Q2"] {
        send_full(
            &d,
            "10.0.0.1",
            None,
            "<a@example.com>",
            &["r@x.test"],
            &[],
            q,
        )
        .await;
    }
    // Three attempts (after 1 s and 2 s), then given up and counted.
    for attempt in 1..=3 {
        let doc = hook
            .next(10)
            .await
            .unwrap_or_else(|| panic!("attempt {attempt}"));
        assert_eq!(doc["event"], "opened");
    }
    assert!(hook.next(2).await.is_none(), "a fourth attempt");
    let failed = || {
        common::counted(
            &d.metrics(),
            "egress_incident_notifications_total",
            &[("result", "failed")],
        )
    };
    for _ in 0..100 {
        if failed() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(failed(), 1);
    d.stop().await;
}

/// Incidents count one person as limits do (`rate_limits.keys`): a login in
/// any case, a sender with any `+` tag, an IPv6 client anywhere in its /64,
/// a recipient domain in any spelling. The attacker's respellings do not
/// split the count, and an honest user who writes one domain three ways is
/// not counted three times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_key_is_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        "incidents:
  signals:
    - { name: by_login, key: user, count: messages, above: 3/h }
    - { name: by_sender, key: sender, count: messages, above: 3/h }
    - { name: by_client, key: client, count: messages, above: 3/h }
",
    )
    .await;
    let admin = admin(&d, dir.path(), "admin.sock").await;
    // A login in four cases: the fourth message crosses.
    for (i, login) in ["walt", "WALT", "Walt", "wAlT"].iter().enumerate() {
        let s = send_full(
            &d,
            "192.0.2.1",
            Some(login),
            &format!("<w{i}@example.com>"),
            &["a@d.test"],
            &[],
            "L",
        )
        .await;
        assert_eq!(s.held, i == 3, "{login}");
    }
    // Closed by hand in yet another spelling: the folded key is closed.
    let out = ask(
        &admin,
        Incidents::Close {
            key: "user:WaLT".into(),
        },
    )
    .await;
    assert!(out.starts_with("closed user:walt"), "{out}");
    // A sender with a tag each time: one sender.
    for (i, tag) in ["a", "b", "c", "d"].iter().enumerate() {
        let s = send_full(
            &d,
            "10.0.0.1",
            None,
            &format!("<app+{tag}@example.com>"),
            &["a@d.test"],
            &[],
            "S",
        )
        .await;
        assert_eq!(s.held, i == 3, "app+{tag}");
    }
    // And an incident opened by hand on boss@ stops boss+1@ too.
    let out = ask(
        &admin,
        Incidents::Open {
            key: "sender:Boss@example.com".into(),
            duration: None,
            action: None,
        },
    )
    .await;
    assert!(out.starts_with("opened sender:boss@example.com"), "{out}");
    let s = send_full(
        &d,
        "10.0.0.2",
        None,
        "<boss+1@example.com>",
        &["a@d.test"],
        &[],
        "B",
    )
    .await;
    assert!(s.held, "boss+1@ sends as boss@");
    // An IPv6 client rotating within its /64: one client.
    for i in 0..4 {
        let ip = format!("2001:db8:7:7::{:x}", 0x100 + i);
        let s = send_full(
            &d,
            &ip,
            Some(&format!("v6user{i}")),
            &format!("<v{i}@example.com>"),
            &["a@d.test"],
            &[],
            "V",
        )
        .await;
        assert_eq!(s.held, i == 3, "{ip}");
    }
    let out = ask(
        &admin,
        Incidents::Show {
            key: "client:2001:db8:7:7::ffff".into(),
        },
    )
    .await;
    assert!(out.contains("incident  client:2001:db8:7:7::/64"), "{out}");
    d.stop().await;
    // One domain written three ways is one domain; a third real one
    // crosses.
    let d = start(
        "incidents:
  signals:
    - { name: spray, key: user, count: distinct_recipient_domains, above: 2/h }
",
    )
    .await;
    for (i, r) in ["x@d1.test", "y@D1.TEST", "z@d1.test."].iter().enumerate() {
        let sender = format!("<h{i}@example.com>");
        let s = send_full(&d, "192.0.2.2", Some("honest"), &sender, &[r], &[], "H").await;
        assert!(!s.held, "{r}");
    }
    let s = send_full(
        &d,
        "192.0.2.3",
        Some("honest"),
        "<h5@example.com>",
        &["a@d2.test"],
        &[],
        "H",
    )
    .await;
    assert!(!s.held, "two domains");
    let s = send_full(
        &d,
        "192.0.2.4",
        Some("honest"),
        "<h6@example.com>",
        &["a@d3.test"],
        &[],
        "H",
    )
    .await;
    assert!(s.held, "three domains");
    d.stop().await;
}

/// An incident opened from a monitor-mode class's mail is enforced for the
/// same key in an enforcing class (and logged only in the monitor class);
/// `incidents open KEY --action A` on an open incident changes its action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_applies_in_the_mode_of_each_message_and_its_action_can_change() {
    let dir = tempfile::tempdir().unwrap();
    let text = "listen: inet:127.0.0.1:1
local_domains: [example.com]
classes:
  - { name: trial, clients: [10.9.0.0/16], sender_domains: [example.com], mode: monitor }
  - { name: staff, auth: any, sender_domains: [example.com] }
incidents:
  signals:
    - { name: by_login, key: user, count: messages, above: 2/h }
";
    let d = common::start_with(Config::parse(Path::new("modes.yaml"), text).expect("valid")).await;
    let admin = admin(&d, dir.path(), "admin.sock").await;
    // The trial class (monitor) with a login: its third message opens the
    // incident, and nothing is held there.
    for i in 0..3 {
        let s = send_full(
            &d,
            "10.9.0.5",
            Some("eve"),
            "<eve@example.com>",
            &["a@d.test"],
            &[],
            "T",
        )
        .await;
        assert!(!s.held, "monitor class, message {i}");
    }
    assert_eq!(opened(&d, "by_login"), 1);
    // The same login from the enforcing class: held.
    let s = send_full(
        &d,
        "192.0.2.9",
        Some("eve"),
        "<eve@example.com>",
        &["a@d.test"],
        &[],
        "E",
    )
    .await;
    assert!(s.held, "enforcing class");
    // Escalated by hand: refused from now on, in the enforcing class.
    let out = ask(
        &admin,
        Incidents::Open {
            key: "user:Eve".into(),
            duration: None,
            action: Some("reject".into()),
        },
    )
    .await;
    assert!(
        out.starts_with("action changed from hold on user:eve: reject"),
        "{out}"
    );
    let s = send_full(
        &d,
        "192.0.2.9",
        Some("eve"),
        "<eve@example.com>",
        &["a@d.test"],
        &[],
        "E",
    )
    .await;
    assert_eq!(s.reply, "550 5.7.1 Sending from eve is suspended");
    // Relaxed again: held.
    let out = ask(
        &admin,
        Incidents::Open {
            key: "user:eve".into(),
            duration: None,
            action: Some("hold".into()),
        },
    )
    .await;
    assert!(
        out.starts_with("action changed from reject on user:eve: hold"),
        "{out}"
    );
    let s = send_full(
        &d,
        "192.0.2.9",
        Some("eve"),
        "<eve@example.com>",
        &["a@d.test"],
        &[],
        "E",
    )
    .await;
    assert!(s.held);
    // Opened again without --action: the action stays.
    let out = ask(
        &admin,
        Incidents::Open {
            key: "user:eve".into(),
            duration: Some("2h".into()),
            action: None,
        },
    )
    .await;
    assert!(out.starts_with("already open user:eve: hold"), "{out}");
    d.stop().await;
}

/// An incident open in Redis stays enforced while Redis does not answer:
/// each gateway keeps what it last saw open there (in process and under
/// `state_dir`), also across a restart during the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_open_in_redis_holds_through_a_redis_outage() {
    let mut redis = common::redis::RedisServer::start();
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "rate_limits: {{ backend: redis, redis: {{ url: \"{}\", timeout: 100ms, on_failure: local }} }}
incidents:
  state_dir: \"{}\"
  signals:
    - {{ name: spray, key: user, count: distinct_recipient_domains, above: 2/h }}
",
        redis.url(),
        state.path().display()
    );
    let d = start(&config).await;
    let dir = tempfile::tempdir().unwrap();
    let admin = admin(&d, dir.path(), "admin.sock").await;
    let mallory = "mallory@example.com";
    for i in 0..2 {
        let r = format!("x@d{i}.test");
        assert!(!send(&d, mallory, &[&r], "M").await.held);
    }
    assert!(send(&d, mallory, &["x@d9.test"], "M").await.held);
    // One opened by hand too, which this gateway has never seen a message
    // for: the per-second refresh brings it.
    let out = ask(
        &admin,
        Incidents::Open {
            key: "user:oscar@example.com".into(),
            duration: None,
            action: Some("tempfail".into()),
        },
    )
    .await;
    assert!(out.starts_with("opened"), "{out}");
    common::until(
        std::time::Duration::from_secs(10),
        "the refresh keeps both: ",
        || {
            let seen = std::fs::read_to_string(state.path().join("incidents-seen.json"))
                .unwrap_or_default();
            if seen.contains("oscar@example.com") && seen.contains("mallory@example.com") {
                Ok(())
            } else {
                Err(seen)
            }
        },
    )
    .await;
    redis.kill();
    // Redis is gone: mallory's mail is still held, oscar's still deferred,
    // and a stranger's still goes.
    assert!(send(&d, mallory, &["x@d1.test"], "M").await.held);
    assert_eq!(
        send(&d, "oscar@example.com", &["x@d1.test"], "O")
            .await
            .reply,
        "451 4.7.1 Sending from oscar@example.com is suspended"
    );
    assert!(
        !send(&d, "trent@example.com", &["x@d1.test"], "T")
            .await
            .held
    );
    let out = ask(&admin, Incidents::List).await;
    assert!(out.contains("user:mallory@example.com"), "{out}");
    d.stop().await;
    // A restart while Redis is still down: read back from state_dir.
    let d = start(&config).await;
    assert!(send(&d, mallory, &["x@d1.test"], "M").await.held);
    d.stop().await;
}
