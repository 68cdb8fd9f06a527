//! The console, route by route over HTTP, against a daemon process whose
//! mail goes through a real Postfix (and Sendmail): what a stranger, a
//! viewer and an admin may do; release and delete through the MTA; the
//! signed links of the incident notice; hostile mail shown inert.

use crate::common;
use common::console::{add_user, Http};
use common::postfix::{submit, Postfix};
use common::webhook::Webhook;
use common::{process::Running, sendmail::Sendmail, sink::Sink};
use std::path::{Path, PathBuf};

/// A console's files: users alice (admin) and bob (viewer), a link secret.
pub struct Files {
    pub dir: tempfile::TempDir,
    pub users: PathBuf,
    pub secret: PathBuf,
}

pub fn files() -> Files {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let users = dir.path().join("console.users");
    let said = add_user(&users, "alice", "admin", "alice-password");
    assert!(said.starts_with("added alice (admin)"), "{said}");
    add_user(&users, "bob", "viewer", "bob-password");
    let secret = dir.path().join("console.secret");
    std::fs::write(&secret, "k4b1Qm3JxA0Yt7V2cR9sW6eZ8nL5pH1uG4dF7jK0mN3q\n").unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    Files { dir, users, secret }
}

/// The daemon's configuration: logins that spray open an incident that
/// holds; the console on `console_port`.
pub fn config(
    f: &Files,
    milter_port: u16,
    console_port: u16,
    webhook: &str,
    policy: &str,
    console_extra: &str,
) -> PathBuf {
    let path = f.dir.path().join("milter.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:{milter_port}
local_domains: [example.com]
{policy}
incidents:
  state_dir: {state}
  notify: {{ webhook: {{ url: \"{webhook}\" }} }}
  signals: [{signal}]
console:
  listen: 127.0.0.1:{console_port}
  users_file: {users}
  link_secret_file: {secret}
{console_extra}",
            policy = policy.split_once('|').map_or(policy, |p| p.0),
            signal = policy.split_once('|').map_or("", |p| p.1),
            state = f.dir.path().join("state").display(),
            users = f.users.display(),
            secret = f.secret.display(),
        ),
    )
    .unwrap();
    path
}

/// Staff logins; one that sprays (a second recipient domain in an hour)
/// has its mail held. (Classes, then `|`, then the signal.)
pub const STAFF: &str = "classes:\n  - { name: staff, auth: any, sender_domains: [example.com] }|{ name: spray, key: user, count: distinct_recipient_domains, above: 1/h }";
/// An application on 127.0.0.1; more than one message an hour is held.
pub const APP: &str = "classes:\n  - { name: app, clients: [127.0.0.1], sender_domains: [example.com] }|{ name: volume, key: client, count: messages, above: 1/h }";

pub async fn delivered(sink: &mut Sink, want: usize, secs: u64) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < want {
        match sink.next(secs).await {
            Some(m) => got.push(m.subject()),
            None => break,
        }
    }
    got.sort();
    got
}

pub fn held_ids(pf: &Postfix) -> Vec<String> {
    let mut ids: Vec<String> = pf
        .queue()
        .into_iter()
        .filter(|(q, _)| q == "hold")
        .map(|(_, id)| id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_postfix_who_may_do_what_release_delete_and_the_notice_links() {
    let f = files();
    let (milter_port, console_port) = (common::free_port(), common::free_port());
    let mut webhook = Webhook::start(200).await;
    let mut sink = Sink::start().await;
    let pf = Postfix::start_with(
        "console",
        &format!("inet:127.0.0.1:{milter_port}"),
        sink.port,
        &[("alice@example.com", "alice-pw")],
    );
    let cfg = config(
        &f,
        milter_port,
        console_port,
        &webhook.url(),
        STAFF,
        &format!("  postfix_config: {}\n", pf.dir.display()),
    );
    let daemon = Running::start(&cfg);
    daemon.wait_for("console listening");
    let port = pf.smtp_port;
    let alice = Some(("alice@example.com", "alice-pw"));
    let send = |to: &'static str, extra: Vec<&'static str>| {
        tokio::task::spawn_blocking(move || submit(port, alice, "alice@example.com", to, &extra))
    };
    send("x@d1.test", vec!["--header", "Subject: first"])
        .await
        .unwrap();
    assert_eq!(delivered(&mut sink, 1, 10).await, ["first"]);
    // The second domain opens the incident: held from then on.
    let q2 = send("x@d2.test", vec!["--header", "Subject: second"])
        .await
        .unwrap();
    let q3 = send("x@d3.test", vec!["--header", "Subject: third"])
        .await
        .unwrap();
    let hostile =
        "--header=Subject: <script>alert(1)</script> \u{7}bell ".to_string() + &"x".repeat(1500);
    let hostile: &'static str = Box::leak(hostile.into_boxed_str());
    let q4 = send(
        "x@d4.test",
        vec![
            hostile,
            "--add-header",
            "Content-Type: text/html",
            "--body",
            "<p onclick=steal()>hi <img src=http://tracker.test/p.png><script>alert(2)</script></p>",
        ],
    )
    .await
    .unwrap();
    let mut want = vec![q2.clone(), q3.clone(), q4.clone()];
    want.sort();
    assert_eq!(held_ids(&pf), want, "{}", pf.log());
    // The notice of the incident carries its links.
    let notice = webhook.next(10).await.expect("the incident's notice");
    assert_eq!(notice["event"], "opened", "{notice}");
    let release_link = notice["links"]["release"]
        .as_str()
        .expect("a release link")
        .to_string();
    let delete_link = notice["links"]["delete"]
        .as_str()
        .expect("a delete link")
        .to_string();
    let base = format!("http://127.0.0.1:{console_port}");
    assert!(
        release_link.starts_with(&format!("{base}/l/")),
        "{release_link}"
    );

    // A stranger: sent to the login, refused any action.
    let mut stranger = Http::new(console_port);
    let pages = [
        "/".to_string(),
        "/incidents".into(),
        "/incident?key=user%3Aalice%40example.com".into(),
        "/held".into(),
        format!("/held/{q4}"),
        "/limits".into(),
        "/reputation".into(),
        "/suppressions".into(),
        "/decisions?q=hold".into(),
        "/audit".into(),
    ];
    for page in &pages {
        let r = stranger.get(page).await;
        assert_eq!(
            (r.status, r.header("location").as_str()),
            (303, "/login"),
            "{page}"
        );
        assert!(!r.body.contains(&q4), "{page} shows nothing");
    }
    let r = stranger.post("/logout", &[("csrf", "x")]).await;
    assert_eq!((r.status, r.header("location").as_str()), (303, "/login"));
    let r = stranger.act("x", "release", &format!("message:{q2}")).await;
    assert_eq!(r.status, 403);
    let r = stranger.get("/login").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-security-policy")
        .contains("default-src 'none'"));
    assert_eq!(r.header("x-frame-options"), "DENY");
    assert_eq!(r.header("cache-control"), "no-store");
    let r = stranger.login("alice", "wrong password").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("wrong user name or password"));
    // A login form that is not the console's own.
    let r = stranger
        .post(
            "/login",
            &[
                ("token", "forged"),
                ("user", "alice"),
                ("password", "alice-password"),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(stranger.cookie.is_none());

    // A viewer sees the held mail and may not act.
    let mut bob = Http::new(console_port);
    let r = bob.login("bob", "bob-password").await;
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r.header("set-cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    for page in &pages[1..] {
        let r = bob.get(page).await;
        assert_eq!(r.status, 200, "{page}: {}", r.body);
        assert!(r.body.contains("bob (viewer)"), "{page}");
    }
    let held = bob.get("/held").await;
    assert_eq!(held.status, 200);
    for q in [&q2, &q3, &q4] {
        assert!(
            held.body.contains(&format!("id=\"held-{q}\"")),
            "{}",
            held.body
        );
    }
    assert!(
        held.body.contains("incident user:alice@example.com"),
        "{}",
        held.body
    );
    assert!(
        !held.body.contains("name=\"action\""),
        "a viewer gets no action buttons"
    );
    let csrf = held.input("csrf");
    for (action, target) in [
        ("release", format!("message:{q2}")),
        ("delete", "incident:user:alice@example.com".to_string()),
        ("close", "incident:user:alice@example.com".to_string()),
        (
            "reset",
            "limit:messages_per_sender:alice@example.com".to_string(),
        ),
        ("unsuppress", "address:x@d1.test".to_string()),
    ] {
        let r = bob.act(&csrf, action, &target).await;
        assert_eq!(r.status, 403, "{action}");
        assert!(r.body.contains("viewers may look, not act"), "{action}");
    }

    // An admin: the CSRF token is required.
    let mut admin = Http::new(console_port);
    assert_eq!(admin.login("alice", "alice-password").await.status, 303);
    let page = admin.get(&format!("/held/{q4}")).await;
    assert_eq!(page.status, 200);
    // Hostile content is shown escaped, never as markup.
    assert!(
        !page.body.contains("<script>") && !page.body.contains("<img"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("onclick"), "{}", page.body);
    assert!(
        page.body
            .contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{}",
        page.body
    );
    assert!(page.body.contains("\u{fffd}bell"), "{}", page.body);
    assert!(page.body.contains("id=\"release\""));
    let csrf = page.input("csrf");
    let r = admin.act("", "release", &format!("message:{q2}")).await;
    assert_eq!(r.status, 403);
    let r = admin
        .act(&bob_token_of(&held), "release", &format!("message:{q2}"))
        .await;
    assert_eq!(r.status, 403, "another session's token is no token");
    assert_eq!(held_ids(&pf).len(), 3);

    // Release one: it reaches the next hop.
    let r = admin.act(&csrf, "release", &format!("message:{q2}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(&format!("Done: released {q2}")),
        "{}",
        r.body
    );
    assert_eq!(delivered(&mut sink, 1, 10).await, ["second"]);
    // Delete another: gone, never delivered.
    let r = admin.act(&csrf, "delete", &format!("message:{q3}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(held_ids(&pf), std::slice::from_ref(&q4));
    // A message that is not held is not acted on.
    let r = admin.act(&csrf, "delete", &format!("message:{q2}")).await;
    assert_eq!(r.status, 409, "{}", r.body);

    // The notice's release link: a page first, the action only on POST.
    let path = release_link.strip_prefix(&base).unwrap().to_string();
    let mut anyone = Http::new(console_port);
    let confirm = anyone.get(&path).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(
        confirm.body.contains(&q4) && confirm.body.contains("id=\"confirm\""),
        "{}",
        confirm.body
    );
    assert_eq!(
        held_ids(&pf),
        std::slice::from_ref(&q4),
        "opening the link did nothing"
    );
    let r = anyone.post(&path, &[("confirm", "1")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(&format!("released {q4}")), "{}", r.body);
    assert_eq!(delivered(&mut sink, 1, 10).await.len(), 1);
    assert!(held_ids(&pf).is_empty());
    // Used once: refused the second time, and on GET too.
    let r = anyone.post(&path, &[("confirm", "1")]).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("used already"), "{}", r.body);
    assert_eq!(anyone.get(&path).await.status, 403);
    // Expired, and forged.
    let secret = std::fs::read(&f.secret).unwrap();
    let old = egress_milter::links::sign(
        secret.trim_ascii(),
        "delete",
        "incident:user:alice@example.com",
        egress_milter::incidents::now_ms() / 1000 - 25 * 3600,
    );
    let r = anyone.get(&format!("/l/{old}")).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("expired"), "{}", r.body);
    let forged = delete_link
        .strip_prefix(&base)
        .unwrap()
        .replace("/l/", "/l/A");
    assert_eq!(anyone.get(&forged).await.status, 403);

    // The incident's page: close it, then reopen it.
    let key = "user:alice@example.com";
    let page = admin.get("/incident?key=user%3Aalice%40example.com").await;
    assert!(page.body.contains("id=\"close\""), "{}", page.body);
    let r = admin.act(&csrf, "close", &format!("incident:{key}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list = admin.get("/incidents").await;
    assert!(list.body.contains("No open incident"), "{}", list.body);
    assert!(list.body.contains("closed by hand"), "{}", list.body);
    let r = admin.act(&csrf, "reopen", &format!("incident:{key}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list = admin.get("/incidents").await;
    assert!(
        list.body.contains("id=\"open\"") && list.body.contains(key),
        "{}",
        list.body
    );

    // What was done, by whom: the audit log, the log, the metric.
    let audit = admin.get("/audit").await;
    for (who, what) in [
        ("alice", "release"),
        ("alice", "delete"),
        ("link", "release"),
        ("alice", "close"),
        ("alice", "reopen"),
    ] {
        assert!(
            audit
                .body
                .contains(&format!("<td>{who}</td><td>{what}</td>")),
            "{who} {what}: {}",
            audit.body
        );
    }
    let kept = std::fs::read_to_string(f.dir.path().join("state/console-audit.log")).unwrap();
    assert_eq!(kept.lines().count(), 6, "{kept}");
    daemon.wait_for("console action");
    // Recent decisions, filtered.
    let d = admin.get("/decisions?q=hold+alice").await;
    assert!(
        d.body.contains(&q4) && !d.body.contains("first"),
        "{}",
        d.body
    );

    // Logged out: the session is gone.
    let r = admin.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(admin.get("/held").await.status, 303);

    // Guessing passwords at speed is refused.
    let mut guesser = Http::new(console_port);
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(guesser.login("carol", "guess").await.status);
    }
    assert_eq!(statuses[..5], [401; 5]);
    assert_eq!(statuses[6], 429, "{statuses:?}");
}

/// Bob's CSRF token, as his page carried it.
fn bob_token_of(page: &common::console::Page) -> String {
    page.input("csrf")
}

/// The sendmail program as the console runs it: the test instance's
/// binary with its .cf, in a UTS namespace with a qualified host name.
fn sendmail_wrapper(dir: &Path, sm: &Sendmail) -> PathBuf {
    let path = dir.join("sendmail");
    let bin = common::sendmail::root().join("usr/libexec/sendmail/sendmail");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec unshare -u sh -c 'hostname gw.example.com && exec \"$0\" \"$@\"' {} -C {} \"$@\"\n",
            bin.display(),
            sm.dir().join("sendmail.cf").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_sendmail_quarantined_mail_is_released_and_deleted() {
    let f = files();
    let (milter_port, console_port) = (common::free_port(), common::free_port());
    let webhook = Webhook::start(200).await;
    let mut sink = Sink::start().await;
    let sm = Sendmail::start(milter_port, sink.port);
    let wrapper = sendmail_wrapper(f.dir.path(), &sm);
    let cfg = config(
        &f,
        milter_port,
        console_port,
        &webhook.url(),
        APP,
        &format!(
            "  mta: sendmail\n  sendmail: {}\n  sendmail_queue: {}\n",
            wrapper.display(),
            sm.dir().join("queue").display()
        ),
    );
    let daemon = Running::start(&cfg);
    daemon.wait_for("console listening");
    let port = sm.smtp_port;
    let send = move |subject: &'static str| {
        tokio::task::spawn_blocking(move || {
            submit(
                port,
                None,
                "app@example.com",
                "someone@gmail.test",
                &["--header", &format!("Subject: {subject}")],
            )
        })
    };
    send("m1").await.unwrap();
    assert_eq!(delivered(&mut sink, 1, 10).await, ["m1"]);
    let q2 = send("m2").await.unwrap();
    let q3 = send("m3").await.unwrap();
    let mut admin = Http::new(console_port);
    assert_eq!(admin.login("alice", "alice-password").await.status, 303);
    let held = admin.get("/held").await;
    for q in [&q2, &q3] {
        assert!(
            held.body.contains(&format!("id=\"held-{q}\"")),
            "{q}: {}",
            held.body
        );
    }
    assert!(
        held.body.contains("incident client:127.0.0.1"),
        "{}",
        held.body
    );
    assert!(
        held.body.contains("<td>m2</td>"),
        "the subject, from the queue: {}",
        held.body
    );
    let csrf = held.input("csrf");
    let r = admin.act(&csrf, "release", &format!("message:{q2}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(delivered(&mut sink, 1, 15).await, ["m2"]);
    let r = admin.act(&csrf, "delete", &format!("message:{q3}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let listed = sm.command(&["-bp", "-qQ"]);
    assert!(!listed.contains(&q3) && !listed.contains(&q2), "{listed}");
    assert!(!sm.dir().join(format!("queue/df{q3}")).exists());
    assert!(delivered(&mut sink, 1, 2).await.is_empty());
}
