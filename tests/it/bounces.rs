//! Bounces over the milter socket: delivery-status notices that come in
//! (remote servers' notices to our senders) are read; a recipient whose
//! mailbox is gone is refused at RCPT TO, in any spelling, with the exact
//! reply; a delay, a policy refusal and an unreadable notice suppress
//! nothing; the list survives a restart.

use crate::common::{self, reply, Daemon};
use egress_milter::admin::{Request, Suppressions};
use egress_milter::config::Config;
use indymilter::MacroStage;
use indymilter_test::Status;
use std::path::Path;

fn config(state_dir: &Path, extra: &str) -> Config {
    let text = format!(
        "listen: inet:127.0.0.1:1
local_domains: [example.com]
classes:
  - {{ name: app, clients: [10.0.0.0/8], sender_domains: [example.com] }}
incidents: {{ state_dir: {} }}
bounces: {{ suppress: {{ after: 1, for: 30d }} }}
{extra}",
        state_dir.display()
    );
    Config::parse(Path::new("bounces.yaml"), &text).unwrap_or_else(|e| panic!("{e}"))
}

/// A remote server's notice: `recipients` as (address, action, status).
fn notice(recipients: &[(&str, &str, &str)]) -> String {
    let mut groups = String::new();
    for (a, action, status) in recipients {
        groups.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {a}\r\nAction: {action}\r\nStatus: {status}\r\n"
        ));
    }
    format!(
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\n\
         Reporting-MTA: dns; mx.example.org\r\n{groups}\r\n--B--\r\n"
    )
}

/// A message with a null sender from a stranger to our `app@example.com`;
/// the reply at end of message.
async fn bounce(d: &Daemon, content_type: &str, body: &str) -> String {
    bounce_to(d, "<app@example.com>", content_type, body).await
}

/// [`bounce`] to another of our senders.
async fn bounce_to(d: &Daemon, rcpt: &str, content_type: &str, body: &str) -> String {
    let mut c = d.client("192.0.2.1").await;
    c.macros(MacroStage::Mail, [("i", "B1")]).await.unwrap();
    assert_eq!(c.mail(["<>"]).await.unwrap(), Status::Continue);
    assert_eq!(c.rcpt([rcpt]).await.unwrap(), Status::Continue);
    for (n, v) in [
        ("From", "MAILER-DAEMON@mx.example.org"),
        ("To", "app@example.com"),
        ("Subject", "Undelivered Mail Returned to Sender"),
        ("MIME-Version", "1.0"),
        ("Content-Type", content_type),
    ] {
        c.header(n, v).await.unwrap();
    }
    assert_eq!(c.eoh().await.unwrap(), Status::Continue);
    c.body(body.to_string()).await.unwrap();
    let (_, s) = c.eom().await.unwrap();
    c.close().await.unwrap();
    reply(&s)
}

const REPORT: &str = "multipart/report; report-type=delivery-status; boundary=\"B\"";

/// A whole message from `sender` (the app class, or a login) to
/// `rcpts`, accepted: the gateway now knows the sender wrote to them.
async fn wrote(d: &Daemon, login: Option<&str>, sender: &str, rcpts: &[&str]) {
    let ip = if login.is_some() {
        "192.0.2.7"
    } else {
        "10.0.0.5"
    };
    let sent =
        crate::incidents::send_to(d.addr, ip, login, &format!("<{sender}>"), rcpts, &[], "Q").await;
    assert_eq!(sent.reply, "continue");
}

/// RCPT TO from the app class; the reply.
async fn send_to(d: &Daemon, rcpt: &str) -> String {
    let mut c = d.client("10.0.0.5").await;
    assert_eq!(
        common::mail(&mut c, "<app@example.com>", None).await,
        Status::Continue
    );
    let r = reply(&c.rcpt([rcpt]).await.unwrap());
    c.close().await.unwrap();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_mailbox_is_refused_and_nothing_else_is() {
    let state = tempfile::tempdir().unwrap();
    let d = common::start_with(config(state.path(), "")).await;
    assert_eq!(send_to(&d, "<ghost@example.org>").await, "continue");
    wrote(
        &d,
        None,
        "app@example.com",
        &[
            "ghost@example.org",
            "slow@example.org",
            "blocked@example.org",
        ],
    )
    .await;
    // A forged notice, about a recipient the sender never wrote to:
    // counted, not believed.
    let forged = bounce(
        &d,
        REPORT,
        &notice(&[("partner@example.net", "failed", "5.1.1")]),
    )
    .await;
    assert_eq!(forged, "continue");
    assert_eq!(send_to(&d, "<partner@example.net>").await, "continue");
    let r = bounce(
        &d,
        REPORT,
        &notice(&[
            ("ghost@example.org", "failed", "5.1.1"),
            ("slow@example.org", "delayed", "4.4.1"),
            ("blocked@example.org", "failed", "5.7.1"),
        ]),
    )
    .await;
    assert_eq!(r, "continue", "the notice itself goes through");
    let until = chrono_day(30);
    // Every spelling of it (the domain is written as DNS has it).
    for (spelling, shown) in [
        ("<ghost@example.org>", "ghost@example.org"),
        ("<Ghost@Example.ORG>", "Ghost@example.org"),
        ("<ghost+x@example.org>", "ghost+x@example.org"),
    ] {
        assert_eq!(
            send_to(&d, spelling).await,
            format!("550 5.1.1 Recipient <{shown}> bounced (5.1.1); not sent again before {until}")
        );
    }
    // A delay and a policy refusal suppress nothing.
    assert_eq!(send_to(&d, "<slow@example.org>").await, "continue");
    assert_eq!(send_to(&d, "<blocked@example.org>").await, "continue");
    // Inbound mail to the suppressed address is not ours to refuse.
    let mut c = d.client("192.0.2.1").await;
    assert_eq!(
        common::mail(&mut c, "<ghost@example.org>", None).await,
        Status::Continue
    );
    assert_eq!(
        reply(&c.rcpt(["<app@example.com>"]).await.unwrap()),
        "continue"
    );
    c.close().await.unwrap();
    // An unreadable notice is counted, not used.
    let vague = "Hi. This is the qmail-send program at mx.example.org.\r\n\r\n<vague@example.org>:\r\nSorry, no mailbox here by that name.\r\n";
    assert_eq!(bounce(&d, "text/plain", vague).await, "continue");
    assert_eq!(send_to(&d, "<vague@example.org>").await, "continue");
    let m = d.metrics();
    for (kind, n) in [
        ("hard", 2),
        ("soft", 1),
        ("unreadable", 1),
        ("unmatched", 1),
    ] {
        assert_eq!(
            common::counted(&m, "egress_bounces_total", &[("kind", kind)]),
            n,
            "{kind}: {m}"
        );
    }
    assert!(m.contains("egress_suppressed_recipients 1"), "{m}");
    assert!(common::decisions(&m, "reject") >= 3);
    d.stop().await;
    // Kept across a restart.
    let d = common::start_with(config(state.path(), "")).await;
    assert!(send_to(&d, "<ghost@example.org>")
        .await
        .starts_with("550 5.1.1"));
    // What the operator sees and does (`egress-milter suppressions ...`).
    let list = admin(&d, Suppressions::List).await.expect("a list");
    assert!(
        list.contains("ghost@example.org") && list.contains("1 recipient(s) suppressed"),
        "{list}"
    );
    let shown = admin(
        &d,
        Suppressions::Show {
            address: "<GHOST+news@Example.org>".into(),
        },
    )
    .await
    .expect("shown");
    assert!(
        shown.starts_with("ghost@example.org: 1 hard failure(s)")
            && shown.contains("refused at RCPT TO until"),
        "{shown}"
    );
    admin(
        &d,
        Suppressions::Remove {
            address: "Ghost@example.org".into(),
        },
    )
    .await
    .expect("removed");
    assert_eq!(send_to(&d, "<ghost@example.org>").await, "continue");
    assert!(admin(
        &d,
        Suppressions::Remove {
            address: "ghost@example.org".into()
        }
    )
    .await
    .is_err());
    admin(
        &d,
        Suppressions::Add {
            address: "spamtrap@example.net".into(),
            for_: Some("1d".into()),
        },
    )
    .await
    .expect("added");
    let until = chrono_day(1);
    assert_eq!(
        send_to(&d, "<spamtrap@example.net>").await,
        format!("550 5.1.1 Recipient <spamtrap@example.net> bounced (by hand); not sent again before {until}")
    );
    d.stop().await;
}

async fn admin(d: &Daemon, r: Suppressions) -> Result<String, String> {
    match egress_milter::admin::answer(&d.shared, Request::Suppressions(r)).await {
        egress_milter::admin::Answer::Ok(t) => Ok(t),
        egress_milter::admin::Answer::Error(e) => Err(e),
    }
}

/// `after: 2`: the first hard failure counts, the second suppresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_counts_hard_failures() {
    let state = tempfile::tempdir().unwrap();
    let mut c = config(state.path(), "");
    if let Some(b) = c.bounces.as_mut() {
        b.suppress_after = 2;
    }
    let d = common::start_with(c).await;
    wrote(&d, None, "app@example.com", &["gone@example.org"]).await;
    let dead = notice(&[("gone@example.org", "failed", "5.1.1")]);
    bounce(&d, REPORT, &dead).await;
    assert_eq!(send_to(&d, "<gone@example.org>").await, "continue");
    bounce(&d, REPORT, &dead).await;
    assert!(send_to(&d, "<gone@example.org>")
        .await
        .starts_with("550 5.1.1 Recipient <gone@example.org> bounced"));
    d.stop().await;
}

/// The day `days` from now, as the reply writes it.
fn chrono_day(days: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = egress_milter::incidents::rfc3339(now + days * 86_400);
    t.split('T').next().unwrap().to_string()
}

/// Two gateways on one redis-server share the list: a notice read by one
/// has the other refuse the recipient; a removal on one lets it through
/// on both; with Redis gone, each keeps refusing what it knew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_the_list() {
    let mut redis = common::redis::RedisServer::start();
    let extra = format!(
        "rate_limits: {{ backend: redis, redis: {{ url: \"{}\", key_prefix: \"bo:\", on_failure: local }} }}\n",
        redis.url()
    );
    let (sa, sb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = common::start_with(config(sa.path(), &extra)).await;
    let b = common::start_with(config(sb.path(), &extra)).await;
    wrote(&a, None, "app@example.com", &["ghost@example.org"]).await;
    bounce(
        &a,
        REPORT,
        &notice(&[("ghost@example.org", "failed", "5.1.1")]),
    )
    .await;
    common::until(std::time::Duration::from_secs(10), "b refuses", || {
        let r = futures_block(send_to(&b, "<ghost@example.org>"));
        r.starts_with("550 5.1.1 Recipient <ghost@example.org> bounced (5.1.1)")
            .then_some(())
            .ok_or(r)
    })
    .await;
    admin(
        &b,
        Suppressions::Remove {
            address: "ghost@example.org".into(),
        },
    )
    .await
    .expect("removed");
    common::until(
        std::time::Duration::from_secs(10),
        "a lets it through",
        || {
            let r = futures_block(send_to(&a, "<ghost@example.org>"));
            (r == "continue").then_some(()).ok_or(r)
        },
    )
    .await;
    admin(
        &a,
        Suppressions::Add {
            address: "trap@example.net".into(),
            for_: None,
        },
    )
    .await
    .expect("added");
    common::until(
        std::time::Duration::from_secs(10),
        "b refuses the trap",
        || {
            let r = futures_block(send_to(&b, "<trap@example.net>"));
            r.starts_with("550 5.1.1").then_some(()).ok_or(r)
        },
    )
    .await;
    redis.kill();
    // Once b has found Redis gone, it still refuses what it knew.
    common::until(
        std::time::Duration::from_secs(10),
        "b sees Redis fail",
        || {
            let m = b.metrics();
            (common::unlabelled(&m, "egress_redis_failures_total") > 0)
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;
    assert!(send_to(&b, "<trap@example.net>")
        .await
        .starts_with("550 5.1.1"));
    a.stop().await;
    b.stop().await;
}

fn futures_block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// `count: hard_bounces`: the bounces that come back to a sender count
/// against it and against the login that recently sent as it; past the
/// threshold an incident opens and that login's next message is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_bounces_open_an_incident_for_the_login() {
    let state = tempfile::tempdir().unwrap();
    let text = format!(
        "listen: inet:127.0.0.1:1
local_domains: [example.com]
classes:
  - {{ name: staff, auth: any, sender_domains: [example.com] }}
incidents:
  state_dir: {}
  action: hold
  signals:
    - {{ name: bouncing, key: user, count: hard_bounces, above: 2/h }}
bounces: {{}}
",
        state.path().display()
    );
    let d = common::start_with(Config::parse(Path::new("b.yaml"), &text).unwrap()).await;
    let send = |login: &'static str| {
        let addr = d.addr;
        async move {
            crate::incidents::send_to(
                addr,
                "192.0.2.7",
                Some(login),
                "<news@example.com>",
                &["x@example.org"],
                &[],
                "Q",
            )
            .await
        }
    };
    // Mallory sends as news@; its mail bounces three times.
    wrote(
        &d,
        Some("mallory"),
        "news@example.com",
        &[
            "dead0@example.org",
            "dead1@example.org",
            "dead2@example.org",
        ],
    )
    .await;
    for i in 0..3 {
        let r = bounce_to(
            &d,
            "<News@example.com>",
            REPORT,
            &notice(&[(&format!("dead{i}@example.org"), "failed", "5.1.1")]),
        )
        .await;
        assert_eq!(r, "continue");
    }
    let m = d.metrics();
    assert_eq!(
        common::counted(
            &m,
            "egress_incidents_opened_total",
            &[("signal", "bouncing")]
        ),
        1,
        "{m}"
    );
    let held = send("mallory").await;
    assert!(held.held, "the login's mail is held: {held:?}");
    assert!(!send("alice").await.held, "another login's is not");
    d.stop().await;
}

/// `count: bounce_ratio` (`above: 20%`, `min: 10/h`), in process and in
/// Redis: a sender whose recipients bounce at 30% opens an incident; one
/// whose single bounce is 50% of two recipients, under `min`, does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounce_ratio_judges_senders_with_enough_mail() {
    let redis = common::redis::RedisServer::start();
    for backend in [
        String::new(),
        format!(
            "rate_limits: {{ backend: redis, redis: {{ url: \"{}\", key_prefix: \"ratio:\" }} }}\n",
            redis.url()
        ),
    ] {
        let state = tempfile::tempdir().unwrap();
        let text = format!(
            "listen: inet:127.0.0.1:1
local_domains: [example.com]
classes:
  - {{ name: staff, auth: any, sender_domains: [example.com] }}
incidents:
  state_dir: {}
  signals:
    - {{ name: ratio, key: sender, count: bounce_ratio, above: 20%, min: 10/h }}
bounces: {{}}
{backend}",
            state.path().display()
        );
        let d = common::start_with(Config::parse(Path::new("r.yaml"), &text).unwrap()).await;
        let rcpts: Vec<String> = (0..10).map(|i| format!("r{i}@example.org")).collect();
        let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let sent = crate::incidents::send_to(
            d.addr,
            "192.0.2.7",
            Some("a"),
            "<news@example.com>",
            &rcpts,
            &[],
            "Q",
        )
        .await;
        assert_eq!(sent.reply, "continue");
        let sent = crate::incidents::send_to(
            d.addr,
            "192.0.2.7",
            Some("b"),
            "<rare@example.com>",
            &rcpts[..2],
            &[],
            "Q",
        )
        .await;
        assert_eq!(sent.reply, "continue");
        let opened = || {
            common::counted(
                &d.metrics(),
                "egress_incidents_opened_total",
                &[("signal", "ratio")],
            )
        };
        // One bounce of rare's two recipients: 50%, but under min.
        bounce_to(
            &d,
            "<rare@example.com>",
            REPORT,
            &notice(&[("r0@example.org", "failed", "5.1.1")]),
        )
        .await;
        assert_eq!(opened(), 0, "{backend}");
        // Two of news's ten: 20%, not above.
        for i in 0..2 {
            bounce_to(
                &d,
                "<news@example.com>",
                REPORT,
                &notice(&[(&format!("r{i}@example.org"), "failed", "5.1.1")]),
            )
            .await;
        }
        assert_eq!(opened(), 0, "{backend}");
        // The third: 30%.
        bounce_to(
            &d,
            "<news@example.com>",
            REPORT,
            &notice(&[("r2@example.org", "failed", "5.1.1")]),
        )
        .await;
        assert_eq!(opened(), 1, "{backend}: {}", d.metrics());
        d.stop().await;
    }
}
