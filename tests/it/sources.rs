//! Sources: lists and login maps from files and from a real slapd, sender
//! verification by LDAP, the directory stopped, frozen and failed over,
//! TLS, the caches (in process and shared through Redis) and the
//! `cache show|flush` commands.

use crate::common;
use common::{mail, process::Running, process::BIN, redis::RedisServer, reply, slapd::Slapd};
use egress_milter::config::Config;
use indymilter_test::Status;
use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

fn parse(text: &str) -> Config {
    Config::parse(Path::new("sources.yaml"), text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The reply to MAIL FROM from a client IP, with an optional login.
async fn sender(d: &common::Daemon, ip: &str, from: &str, login: Option<&str>) -> String {
    let mut conn = d.client(ip).await;
    let r = reply(&mail(&mut conn, from, login).await);
    conn.close().await.unwrap();
    r
}

/// The reply to RCPT TO from an unknown client (after MAIL FROM).
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

/// Polls (every 100 ms, at most `within`) until `check` gives `want`.
async fn eventually<F: AsyncFn() -> String>(within: Duration, want: &str, check: F) -> String {
    let deadline = Instant::now() + within;
    loop {
        let got = check().await;
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sources_follow_their_files_and_keep_a_broken_one_out() {
    let dir = tempfile::tempdir().unwrap();
    let senders = dir.path().join("senders.txt");
    let clients = dir.path().join("clients.txt");
    let domains = dir.path().join("domains.txt");
    std::fs::write(&senders, "# CRM senders\nnoreply@example.com\n").unwrap();
    std::fs::write(&clients, "10.1.2.0/24\n").unwrap();
    std::fs::write(&domains, "example.com\n*.example.org\n").unwrap();
    let d = common::start_with(parse(&format!(
        "listen: inet:127.0.0.1:1
local_domains: {{ source: domains }}
sources:
  crm-senders: {{ file: {} }}
  crm-clients: {{ file: {} }}
  domains: {{ file: {} }}
classes:
  - {{ name: crm, clients: {{ source: crm-clients }}, sender_addresses: {{ source: crm-senders }} }}
",
        senders.display(),
        clients.display(),
        domains.display()
    )))
    .await;
    assert_eq!(
        sender(&d, "10.1.2.5", "<noreply@example.com>", None).await,
        "continue"
    );
    assert_eq!(
        sender(&d, "10.1.2.5", "<sales@example.com>", None).await,
        "550 5.7.1 Sender <sales@example.com> not authorised for crm"
    );
    // Not in crm-clients: an unknown client, held to our domains (from
    // the domains file, patterns included).
    assert_eq!(recipient(&d, "<x@example.com>").await, "continue");
    assert_eq!(recipient(&d, "<x@a.example.org>").await, "continue");
    assert_eq!(
        recipient(&d, "<x@example.org>").await,
        "554 5.7.1 Relay access denied"
    );
    assert_eq!(
        recipient(&d, "<x@example.net>").await,
        "554 5.7.1 Relay access denied"
    );

    // A new entry takes effect without a reload.
    std::fs::write(&senders, "noreply@example.com\nsales@example.com\n").unwrap();
    std::fs::write(&clients, "10.1.2.0/24\n10.7.7.7\n").unwrap();
    let got = eventually(Duration::from_secs(5), "continue", async || {
        sender(&d, "10.1.2.5", "<sales@example.com>", None).await
    })
    .await;
    assert_eq!(got, "continue");
    let got = eventually(Duration::from_secs(5), "continue", async || {
        sender(&d, "10.7.7.7", "<noreply@example.com>", None).await
    })
    .await;
    assert_eq!(got, "continue");

    // A broken file (a line that is no address) keeps the old entries: the
    // new one it holds is not taken, the ones it dropped stay.
    std::fs::write(&senders, "billing@example.com\nnot an address\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        sender(&d, "10.1.2.5", "<billing@example.com>", None).await,
        "550 5.7.1 Sender <billing@example.com> not authorised for crm"
    );
    assert_eq!(
        sender(&d, "10.1.2.5", "<sales@example.com>", None).await,
        "continue"
    );
    // So does a file that is gone.
    std::fs::remove_file(&senders).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sender(&d, "10.1.2.5", "<noreply@example.com>", None).await,
        "continue"
    );
    // Fixed again: taken.
    std::fs::write(&senders, "billing@example.com\n").unwrap();
    let got = eventually(Duration::from_secs(5), "continue", async || {
        sender(&d, "10.1.2.5", "<billing@example.com>", None).await
    })
    .await;
    assert_eq!(got, "continue");
    assert_eq!(
        sender(&d, "10.1.2.5", "<noreply@example.com>", None).await,
        "550 5.7.1 Sender <noreply@example.com> not authorised for crm"
    );
    d.stop().await;
}

#[test]
fn a_broken_source_file_names_its_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let senders = dir.path().join("senders.txt");
    std::fs::write(&senders, "noreply@example.com\n\nnoreply\n").unwrap();
    let text = format!(
        "listen: inet:127.0.0.1:1
local_domains: [example.com]
sources:
  crm: {{ file: {} }}
  nowhere: {{ file: /nonexistent/list.txt }}
classes:
  - {{ name: crm, clients: [10.0.0.0/8], sender_addresses: {{ source: crm }}, from_domains: {{ source: nowhere }} }}
  - {{ name: app, clients: [10.0.0.0/8], sender_domains: {{ source: typo }} }}
",
        senders.display()
    );
    let errors = Config::parse(Path::new("milter.yaml"), &text)
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains(&format!(
            "{}:3: sources.crm.file: invalid address \"noreply\"",
            senders.display()
        )),
        "{errors}"
    );
    assert!(
        errors.contains("milter.yaml:5: sources.nowhere.file: /nonexistent/list.txt: cannot read"),
        "{errors}"
    );
    assert!(
        errors.contains("milter.yaml:8: classes[1].sender_domains: no source named \"typo\""),
        "{errors}"
    );
}

/// The directory sources the LDAP tests share.
fn ldap_config(urls: &[String], slapd: &Slapd, extra: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "listen: inet:127.0.0.1:1
local_domains: [example.com]
sources:
  senders:
    ldap: {{ url: [{urls}], bind_dn: \"{bind}\", password_file: {pw}, base: \"{base}\", filter: \"(mail=%s)\", timeout: 1s }}
  logins:
    ldap: {{ url: [{urls}], bind_dn: \"{bind}\", password_file: {pw}, base: \"{base}\", filter: \"(uid=%s)\", attribute: mail, timeout: 1s }}
classes:
  - {{ name: app, clients: [10.1.0.0/16], sender_addresses: {{ source: senders }} }}
  - {{ name: verified, clients: [10.2.0.0/16], verify_sender: {{ source: senders }} }}
  - {{ name: staff, auth: any, login_match: true, login_map: {{ source: logins }} }}
{extra}",
        urls = urls.join(", "),
        bind = common::slapd::BIND_DN,
        pw = slapd.password_file().display(),
        base = common::slapd::BASE,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_allowlists_login_maps_and_sender_verification() {
    let slapd = Slapd::start();
    let d = common::start_with(parse(&ldap_config(&[slapd.url()], &slapd, ""))).await;
    // An allowlist in the directory.
    assert_eq!(
        sender(&d, "10.1.0.1", "<bob@example.com>", None).await,
        "continue"
    );
    assert_eq!(
        sender(&d, "10.1.0.1", "<nobody@example.com>", None).await,
        "550 5.7.1 Sender <nobody@example.com> not authorised for app"
    );
    // A login map: alice sends as herself, her alias and the shared
    // mailbox the directory gives her, and as nobody else.
    for own in [
        "alice@example.com",
        "alice.smith@example.com",
        "sales@example.com",
        "Alice.Smith@example.com",
    ] {
        assert_eq!(
            sender(&d, "192.0.2.9", &format!("<{own}>"), Some("alice")).await,
            "continue",
            "{own}"
        );
    }
    assert_eq!(
        sender(&d, "192.0.2.9", "<bob@example.com>", Some("alice")).await,
        "553 5.7.1 Sender <bob@example.com> not owned by user alice"
    );
    // A login the directory does not know owns nothing, not even its
    // namesake; a login that is a filter owns nothing either (RFC 4515
    // escaping: no injection).
    assert_eq!(
        sender(&d, "192.0.2.9", "<mallory@example.com>", Some("mallory")).await,
        "553 5.7.1 Sender <mallory@example.com> not owned by user mallory"
    );
    for login in ["*", "alice)(uid=*", "*)(|(mail=*"] {
        assert_eq!(
            sender(&d, "192.0.2.9", "<alice@example.com>", Some(login)).await,
            format!("553 5.7.1 Sender <alice@example.com> not owned by user {login}"),
        );
    }
    // Sender verification against the directory.
    assert_eq!(
        sender(&d, "10.2.0.1", "<carol@example.com>", None).await,
        "continue"
    );
    assert_eq!(
        sender(&d, "10.2.0.1", "<ghost@example.com>", None).await,
        "550 5.1.7 Sender address <ghost@example.com> does not exist"
    );
    let m = d.metrics();
    assert!(
        common::counted(
            &m,
            "egress_source_lookups_total",
            &[("source", "senders"), ("result", "found")]
        ) >= 2,
        "{m}"
    );
    assert!(
        common::counted(
            &m,
            "egress_source_lookups_total",
            &[("source", "senders"), ("result", "not_found")]
        ) >= 2,
        "{m}"
    );
    assert!(
        m.contains("egress_source_lookup_seconds_count{source=\"logins\"}"),
        "{m}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_stopped_frozen_or_failed_over() {
    let mut first = Slapd::start();
    let second = Slapd::start();
    let d = common::start_with(parse(&ldap_config(
        &[first.url(), second.url()],
        &second,
        "",
    )))
    .await;
    assert_eq!(
        sender(&d, "10.1.0.1", "<bob@example.com>", None).await,
        "continue"
    );
    // The first server dies: the second answers.
    first.kill();
    assert_eq!(
        sender(&d, "10.1.0.1", "<carol@example.com>", None).await,
        "continue"
    );
    d.stop().await;

    // One server, frozen: each lookup gives up after the 1 s timeout and
    // follows on_error (tempfail); nothing hangs the MTA.
    let mut only = second;
    let d = common::start_with(parse(&ldap_config(&[only.url()], &only, ""))).await;
    assert_eq!(
        sender(&d, "10.1.0.1", "<bob@example.com>", None).await,
        "continue"
    );
    only.signal("-STOP");
    let started = Instant::now();
    assert_eq!(
        sender(&d, "10.1.0.1", "<carol@example.com>", None).await,
        "451 4.3.0 Temporary policy failure"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        sender(&d, "10.2.0.1", "<carol@example.com>", None).await,
        "451 4.1.7 Sender address <carol@example.com> could not be verified"
    );
    // Cached before the freeze: still answered.
    assert_eq!(
        sender(&d, "10.1.0.1", "<bob@example.com>", None).await,
        "continue"
    );
    only.signal("-CONT");
    assert_eq!(
        sender(&d, "10.1.0.1", "<carol@example.com>", None).await,
        "continue"
    );
    // Stopped: the same.
    only.kill();
    assert_eq!(
        sender(&d, "192.0.2.9", "<alice@example.com>", Some("alice")).await,
        "451 4.3.0 Temporary policy failure"
    );
    let m = d.metrics();
    assert!(
        common::counted(
            &m,
            "egress_source_lookups_total",
            &[("source", "senders"), ("result", "error")]
        ) >= 1,
        "{m}"
    );
    d.stop().await;

    // on_error: accept is the operator's choice: then, and only then, a
    // failed lookup lets mail through.
    let d = common::start_with(parse(&ldap_config(
        &[only.url()],
        &only,
        "on_error: accept\n",
    )))
    .await;
    assert_eq!(
        sender(&d, "10.2.0.1", "<ghost@example.com>", None).await,
        "continue"
    );
    assert_eq!(
        sender(&d, "10.1.0.1", "<nobody@example.com>", None).await,
        "continue"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldaps_and_starttls_with_the_configured_authority() {
    let slapd = Slapd::start();
    let ca = slapd.ca_file();
    let config = |url: &str, tls: &str| {
        format!(
            "listen: inet:127.0.0.1:1
local_domains: [example.com]
sources:
  senders:
    ldap: {{ url: \"{url}\", base: \"{base}\", filter: \"(mail=%s)\", timeout: 2s{tls} }}
classes:
  - {{ name: app, clients: [10.1.0.0/16], sender_addresses: {{ source: senders }} }}
",
            base = common::slapd::BASE
        )
    };
    let with_ca = format!(", ca_file: {}", ca.display());
    for (url, tls) in [
        (slapd.tls_url(), with_ca.clone()),
        (slapd.url(), format!("{with_ca}, starttls: true")),
    ] {
        let d = common::start_with(parse(&config(&url, &tls))).await;
        assert_eq!(
            sender(&d, "10.1.0.1", "<bob@example.com>", None).await,
            "continue",
            "{url} {tls}"
        );
        assert_eq!(
            sender(&d, "10.1.0.1", "<nobody@example.com>", None).await,
            "550 5.7.1 Sender <nobody@example.com> not authorised for app"
        );
        d.stop().await;
    }
    // Without the authority the server's certificate is not trusted: no
    // answer, and on_error (tempfail) decides.
    let d = common::start_with(parse(&config(&slapd.tls_url(), ""))).await;
    assert_eq!(
        sender(&d, "10.1.0.1", "<bob@example.com>", None).await,
        "451 4.3.0 Temporary policy failure"
    );
    d.stop().await;
}

fn cache_cli(config: &Path, args: &[&str]) -> (bool, String) {
    let out = common::cli::output(
        Command::new(BIN)
            .arg("cache")
            .args(args)
            .arg("--config")
            .arg(config),
    );
    let text = format!("{}{}", out.stdout.clone(), out.stderr.clone());
    (out.ok(), text)
}

async fn send(addr: SocketAddr, ip: &str, from: &str) -> String {
    common::mail_from(addr, ip, from, None).await
}

/// A second lookup within the TTL does not reach the directory (it is
/// frozen by then); `cache show` shows the answer; `cache flush` forgets
/// it, and the next lookup goes to the directory again. With `redis`, two
/// daemons share the cache and its flush.
async fn cache_and_commands(redis: Option<&RedisServer>) {
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().unwrap();
    let backend = match redis {
        Some(r) => format!(
            "rate_limits: {{ backend: redis, redis: {{ url: \"{}\" }} }}\n",
            r.url()
        ),
        None => String::new(),
    };
    let mut daemons = Vec::new();
    for i in 0..if redis.is_some() { 2 } else { 1 } {
        let port = common::free_port();
        let path = dir.path().join(format!("milter{i}.yaml"));
        let text = ldap_config(&[slapd.url()], &slapd, &backend).replace(
            "listen: inet:127.0.0.1:1",
            &format!("listen: inet:127.0.0.1:{port}"),
        ) + &format!(
            "admin: {{ listen: \"unix:{}\" }}\n",
            dir.path().join(format!("admin{i}.sock")).display()
        );
        std::fs::write(&path, text).unwrap();
        let d = Running::start(&path);
        d.wait_for("egress-milter started");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        daemons.push((d, path, addr));
    }
    let (_, path0, addr0) = &daemons[0];
    let (_, path_last, addr_last) = daemons.last().unwrap();
    assert_eq!(
        send(*addr0, "10.1.0.1", "<bob@example.com>").await,
        "continue"
    );
    assert_eq!(
        send(*addr0, "10.1.0.1", "<nobody@example.com>").await,
        "550 5.7.1 Sender <nobody@example.com> not authorised for app"
    );
    slapd.signal("-STOP");
    // Answered by the cache (the other daemon's too, with Redis): found
    // and not found alike, at once.
    let started = Instant::now();
    assert_eq!(
        send(*addr_last, "10.1.0.1", "<bob@example.com>").await,
        "continue"
    );
    assert_eq!(
        send(*addr_last, "10.1.0.1", "<nobody@example.com>").await,
        "550 5.7.1 Sender <nobody@example.com> not authorised for app"
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    let (ok, out) = cache_cli(path_last, &["show", "bob@example.com"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("senders") && out.contains("bob@example.com") && out.contains("found"),
        "{out}"
    );
    let (ok, out) = cache_cli(path_last, &["show", "nobody@example.com"]);
    assert!(ok && out.contains("not found"), "{out}");
    let (ok, out) = cache_cli(path_last, &["flush", "bob@example.com"]);
    assert!(ok && out.contains("flushed 1"), "{out}");
    // Flushed: the next lookup asks the (frozen) directory.
    assert_eq!(
        send(*addr0, "10.1.0.1", "<bob@example.com>").await,
        "451 4.3.0 Temporary policy failure"
    );
    assert_eq!(
        send(*addr0, "10.1.0.1", "<nobody@example.com>").await,
        "550 5.7.1 Sender <nobody@example.com> not authorised for app"
    );
    let (ok, out) = cache_cli(path0, &["flush"]);
    assert!(ok && out.contains("flushed"), "{out}");
    assert_eq!(
        send(*addr_last, "10.1.0.1", "<nobody@example.com>").await,
        "451 4.3.0 Temporary policy failure"
    );
    slapd.signal("-CONT");
    assert_eq!(
        send(*addr0, "10.1.0.1", "<bob@example.com>").await,
        "continue"
    );
    let (ok, out) = cache_cli(path0, &["show", "carol@example.com"]);
    assert!(ok && out.contains("in no cache"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_in_process() {
    cache_and_commands(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_shared_through_redis() {
    let redis = RedisServer::start();
    cache_and_commands(Some(&redis)).await;
}

#[test]
fn explain_shows_each_lookup_and_the_cache() {
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("milter.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: inet:127.0.0.1:1
local_domains: {{ source: domains }}
sources:
  domains:
    ldap: {{ url: \"{url}\", base: \"{base}\", filter: \"(associatedDomain=%s)\" }}
  logins:
    ldap: {{ url: \"{url}\", base: \"{base}\", filter: \"(uid=%s)\", attribute: mail }}
classes:
  - {{ name: staff, auth: any, login_match: true, login_map: {{ source: logins }} }}
",
            url = slapd.url(),
            base = common::slapd::BASE
        ),
    )
    .unwrap();
    let explain = |args: &[&str]| {
        let out = common::cli::output(
            Command::new(BIN)
                .args(["explain", "--config"])
                .arg(&config)
                .args(args),
        );
        out.stdout.clone() + &out.stderr.clone()
    };
    let out = explain(&[
        "--client",
        "192.0.2.9",
        "--auth",
        "alice",
        "--from",
        "sales@example.com",
        "--rcpt",
        "x@example.net",
    ]);
    assert!(
        out.contains("source logins asked for alice: found: alice@example.com, alice.smith@example.com, sales@example.com"),
        "{out}"
    );
    assert!(
        out.contains("source domains asked for example.com: found"),
        "{out}"
    );
    assert!(out.contains("result: accept"), "{out}");
    // A stranger writing to two of our users: the second lookup of the
    // domain is the cache's.
    let out = explain(&[
        "--client",
        "192.0.2.1",
        "--from",
        "news@example.net",
        "--rcpt",
        "a@example.com,b@example.com",
    ]);
    let lookups: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("source domains asked for example.com"))
        .collect();
    assert_eq!(lookups.len(), 2, "{out}");
    assert!(lookups[0].ends_with("found"), "{out}");
    assert!(lookups[1].ends_with("found (cache)"), "{out}");
}

/// A reload takes a new source (and a source's new file); a reload whose
/// source file is broken is refused whole, and the rules in force stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_takes_new_sources_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, bad) = (
        dir.path().join("a.txt"),
        dir.path().join("b.txt"),
        dir.path().join("bad.txt"),
    );
    std::fs::write(&a, "noreply@example.com\n").unwrap();
    std::fs::write(&b, "billing@example.com\n").unwrap();
    std::fs::write(&bad, "billing@example.com\nbilling\n").unwrap();
    let path = dir.path().join("milter.yaml");
    let write = |list: &Path| {
        std::fs::write(
            &path,
            format!(
                "listen: inet:127.0.0.1:1
local_domains: [example.com]
sources:
  senders: {{ file: {} }}
  brands: {{ file: {} }}
classes:
  - {{ name: crm, clients: [10.1.0.0/16], sender_addresses: {{ source: senders }}, from_domains: {{ source: brands }} }}
",
                list.display(),
                dir.path().join("brands.txt").display()
            ),
        )
        .unwrap();
    };
    std::fs::write(dir.path().join("brands.txt"), "example.com\n").unwrap();
    write(&a);
    let d = common::start_with(Config::load(&path).unwrap()).await;
    let from = async |d: &common::Daemon, header: &str| {
        let mut conn = d.client("10.1.0.1").await;
        assert_eq!(
            mail(&mut conn, "<noreply@example.com>", None).await,
            Status::Continue
        );
        assert_eq!(
            conn.rcpt(["<x@example.net>"]).await.unwrap(),
            Status::Continue
        );
        let r = common::message(&mut conn, &[("From", header), ("Subject", "s")]).await;
        conn.close().await.unwrap();
        r
    };
    // from_domains from a file source.
    assert_eq!(from(&d, "noreply@example.com").await, "continue");
    assert_eq!(
        from(&d, "noreply@sub.example.com").await,
        "550 5.7.1 From: domain sub.example.com not authorised"
    );
    assert_eq!(
        sender(&d, "10.1.0.1", "<billing@example.com>", None).await,
        "550 5.7.1 Sender <billing@example.com> not authorised for crm"
    );
    write(&b);
    d.shared.reload().unwrap();
    assert_eq!(
        sender(&d, "10.1.0.1", "<billing@example.com>", None).await,
        "continue"
    );
    write(&bad);
    let e = d.shared.reload().unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "{}:2: sources.senders.file: invalid address \"billing\"",
            bad.display()
        )),
        "{e}"
    );
    assert_eq!(
        sender(&d, "10.1.0.1", "<billing@example.com>", None).await,
        "continue"
    );
    assert_eq!(
        sender(&d, "10.1.0.1", "<noreply@example.com>", None).await,
        "550 5.7.1 Sender <noreply@example.com> not authorised for crm"
    );
    d.stop().await;
}

/// verify_recipients by a source: inbound mail to a mailbox the directory
/// does not have is refused at RCPT TO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_recipients_verified_against_the_directory() {
    let slapd = Slapd::start();
    let d = common::start_with(parse(&ldap_config(
        &[slapd.url()],
        &slapd,
        "verify_recipients: { source: senders }\n",
    )))
    .await;
    assert_eq!(recipient(&d, "<carol@example.com>").await, "continue");
    assert_eq!(recipient(&d, "<sales@example.com>").await, "continue");
    assert_eq!(
        recipient(&d, "<ghost@example.com>").await,
        "550 5.1.1 Recipient <ghost@example.com> does not exist"
    );
    // Outbound mail (a client in a class) is not held to our mailboxes.
    let mut conn = d.client("10.1.0.1").await;
    assert_eq!(
        mail(&mut conn, "<bob@example.com>", None).await,
        Status::Continue
    );
    assert_eq!(
        conn.rcpt(["<ghost@example.com>"]).await.unwrap(),
        Status::Continue
    );
    conn.close().await.unwrap();
    d.stop().await;
}
