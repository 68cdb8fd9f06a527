//! Mail Postfix makes itself (a bounce) and the milter: unjudged by
//! default; judged as local mail from the class holding 127.0.0.1 with
//! `internal_mail_filter_classes = bounce`; and what a refusal of a bounce
//! does.

use crate::common;
use common::{
    postfix::{swaks, Postfix},
    sink::{Delivered, Sink},
    Daemon,
};

/// An application server (127.0.0.2) and the local class (127.0.0.1) that
/// may or may not send bounces; a DKIM key for example.com in `keydir`.
fn config(local_may_bounce: bool, keydir: &std::path::Path) -> egress_milter::config::Config {
    config_with(local_may_bounce, keydir, "")
}

/// [`config`], with more YAML at the end.
fn config_with(
    local_may_bounce: bool,
    keydir: &std::path::Path,
    extra: &str,
) -> egress_milter::config::Config {
    let (pem, _record) = egress_milter::dkim::generate("ed25519", 0).expect("key");
    let key = keydir.join("s1.pem");
    std::fs::write(&key, pem).expect("key file");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("key mode");
    let text = format!(
        "listen: inet:127.0.0.1:0
local_domains: [example.com, \"*.example.com\"]
classes:
  - name: crm-app
    clients: [127.0.0.2]
    sender_addresses: [noreply@example.com]
  - name: local
    clients: [127.0.0.1]
    sender_domains: [example.com, \"*.example.com\"]
    allow_null_sender: {local_may_bounce}
unknown_clients: relay_deny
from_header: {{ strict: true }}
dkim:
  keys:
    - {{ domain: example.com, selector: s1, file: {} }}
{extra}",
        key.display()
    );
    egress_milter::config::Config::parse(std::path::Path::new("own-mail.yaml"), &text)
        .expect("config")
}

/// The gateway's Postfix, whose mail to nobody@example.com goes to a mail
/// store that has no such user, so that it bounces to the sender; with
/// `classes` as internal_mail_filter_classes. Returns the store too.
fn postfix(
    name: &str,
    d: &Daemon,
    sink: &Sink,
    dir: &std::path::Path,
    classes: &str,
) -> (Postfix, Postfix) {
    let store = Postfix::start_store(&format!("{name}-store"), &["someone"]);
    let transport = dir.join("transport");
    std::fs::write(
        &transport,
        format!("nobody@example.com smtp:[127.0.0.1]:{}\n", store.smtp_port),
    )
    .expect("transport");
    let gw = Postfix::start_custom(
        name,
        &format!("inet:{}", d.addr),
        sink.port,
        &[],
        &format!(
            "transport_maps = texthash:{}\ninternal_mail_filter_classes = {classes}\n",
            transport.display()
        ),
    );
    (gw, store)
}

/// Sends from the application a message that bounces; returns what reached
/// the sink within `secs` seconds.
async fn bounce_one(pf: &Postfix, sink: &mut Sink, secs: u64) -> Option<Delivered> {
    let port = pf.smtp_port;
    let t = tokio::task::spawn_blocking(move || {
        swaks(
            port,
            "127.0.0.2",
            "noreply@example.com",
            "nobody@example.com",
            "noreply@example.com",
            "to bounce",
        )
    })
    .await
    .expect("swaks");
    assert!(t.contains("queued as"), "{t}");
    sink.next(secs).await
}

/// Messages the milter judged, by final verdict.
fn judged(d: &Daemon, verdict: &str) -> u64 {
    common::counted(
        &d.metrics(),
        "egress_messages_total",
        &[("verdict", verdict)],
    )
}

/// The DKIM-Signature fields of the message's own header (not of the
/// returned message inside a bounce).
fn signatures(m: &Delivered) -> Vec<String> {
    let head = m.data.split("\r\n\r\n").next().unwrap_or("");
    common::header_fields(head)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("DKIM-Signature"))
        .map(|(_, v)| v)
        .collect()
}

/// Postfix's bounce to the application: the null sender, From:
/// MAILER-DAEMON at $myorigin.
fn assert_bounce(bounce: &Delivered) {
    assert_eq!(bounce.mail_from, "<>");
    assert_eq!(bounce.rcpt_to, vec!["<noreply@example.com>".to_string()]);
    assert!(
        bounce
            .data
            .contains("From: Mail Delivery System <MAILER-DAEMON@example.com>"),
        "{}",
        bounce.data
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_leaves_unjudged_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = common::start_with(config(true, dir.path())).await;
    let mut sink = Sink::start().await;
    let (pf, _store) = postfix("own-default", &d, &sink, dir.path(), "");
    let bounce = bounce_one(&pf, &mut sink, 60).await.expect("the bounce");
    assert_bounce(&bounce);
    // The milter judged the application's message only; the bounce left
    // unsigned.
    assert_eq!(judged(&d, "accept"), 1, "{}", d.metrics());
    assert!(signatures(&bounce).is_empty(), "{}", bounce.data);
    drop(pf);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_bounce_filtering_a_bounce_is_judged_as_local_mail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = common::start_with(config(true, dir.path())).await;
    let mut sink = Sink::start().await;
    let (pf, _store) = postfix("own-bounce", &d, &sink, dir.path(), "bounce");
    let bounce = bounce_one(&pf, &mut sink, 60).await.expect("the bounce");
    assert_bounce(&bounce);
    // The application's message and the bounce: two transactions; the
    // bounce (From: MAILER-DAEMON@example.com, $myorigin) signed.
    assert_eq!(judged(&d, "accept"), 2, "{}", d.metrics());
    let sigs = signatures(&bounce);
    assert_eq!(sigs.len(), 1, "{}", bounce.data);
    assert!(sigs[0].contains("d=example.com"), "{sigs:?}");
    drop(pf);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bounce_is_not_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = common::start_with(config(false, dir.path())).await;
    let mut sink = Sink::start().await;
    let (pf, _store) = postfix("own-refused", &d, &sink, dir.path(), "bounce");
    let bounce = bounce_one(&pf, &mut sink, 20).await;
    assert!(bounce.is_none(), "{bounce:?}");
    assert_eq!(judged(&d, "reject"), 1, "{}", d.metrics());
    let log = pf.log();
    assert!(
        log.contains("milter-reject: MAIL from localhost[127.0.0.1]: 5.7.1 Null sender not allowed for local; from=<>"),
        "{log}"
    );
    // Not lost: the original message stays deferred, its bounce to be
    // tried again at the next queue run.
    assert!(log.contains("status=deferred (bounce failed)"), "{log}");
    let queue = pf.queue();
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0].0, "deferred", "{queue:?}");
    drop(pf);
    d.stop().await;
}

/// With `bounces`, the bounce Postfix makes passes the milter and is read:
/// the recipient the store refused is suppressed, and the application's
/// next message to it is refused at RCPT TO with the exact reply, until
/// an operator removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_s_own_bounce_suppresses_the_dead_recipient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = common::start_with(config_with(
        true,
        dir.path(),
        "bounces: { suppress: { after: 1, for: 30d } }\n",
    ))
    .await;
    let mut sink = Sink::start().await;
    let (pf, _store) = postfix("own-suppress", &d, &sink, dir.path(), "bounce");
    let bounce = bounce_one(&pf, &mut sink, 60).await.expect("the bounce");
    assert_bounce(&bounce);
    assert!(bounce.data.contains("Status: 5.1.1"), "{}", bounce.data);
    assert_eq!(
        common::counted(&d.metrics(), "egress_bounces_total", &[("kind", "hard")]),
        1,
        "{}",
        d.metrics()
    );
    let port = pf.smtp_port;
    let send = move || {
        swaks(
            port,
            "127.0.0.2",
            "noreply@example.com",
            "Nobody@example.com",
            "noreply@example.com",
            "again",
        )
    };
    let t = tokio::task::spawn_blocking(send).await.expect("swaks");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("now")
        .as_secs();
    let day = egress_milter::incidents::rfc3339(now + 30 * 86_400);
    let day = day.split('T').next().expect("a date");
    assert!(
        t.contains(&format!(
            "<** 550 5.1.1 Recipient <Nobody@example.com> bounced (5.1.1); not sent again before {day}"
        )),
        "{t}"
    );
    let removed = egress_milter::admin::answer(
        &d.shared,
        egress_milter::admin::Request::Suppressions(egress_milter::admin::Suppressions::Remove {
            address: "nobody@example.com".into(),
        }),
    )
    .await;
    assert!(
        matches!(removed, egress_milter::admin::Answer::Ok(_)),
        "{removed:?}"
    );
    let t = tokio::task::spawn_blocking(send).await.expect("swaks");
    assert!(t.contains("queued as"), "{t}");
    drop(pf);
    d.stop().await;
}
