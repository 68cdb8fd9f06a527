//! The reputation watch against a real BIND serving a fake address list,
//! a fake domain list and our domain's records: a listing is told once,
//! naming the top senders, flips the metric and pauses the named class
//! while another class flows; delisting lifts it and is told once; a
//! list's refusal code and a server that does not answer count as errors
//! and change nothing; an SPF record that drops an egress address is told
//! once; no list is asked twice per address per period.

use crate::common::{self, bind::Bind, webhook::Webhook, Daemon};
use crate::incidents::{send_to, Sent};
use egress_milter::admin::{Reputation, Request};
use egress_milter::config::Config;
use std::path::Path;
use std::time::Duration;

const EVERY_SECS: u64 = 2;

fn config(bind: &Bind, hook: &Webhook, action: &str, state_dir: &Path) -> Config {
    config_with(bind, hook, action, state_dir, "")
}

/// [`config`], with more YAML at the end.
fn config_with(bind: &Bind, hook: &Webhook, action: &str, state_dir: &Path, extra: &str) -> Config {
    let text = format!(
        "listen: inet:127.0.0.1:1
local_domains: [example.com]
egress_ips: [192.0.2.10, 192.0.2.11]
dns: {{ nameservers: [\"127.0.0.1:{port}\"], timeout: 1s }}
classes:
  - {{ name: bulk, auth: [bulk@example.com], sender_domains: [example.com] }}
  - {{ name: staff, auth: any, sender_domains: [example.com] }}
incidents:
  state_dir: {dir}
  notify: {{ webhook: {{ url: \"{url}\" }} }}
reputation:
  every: {EVERY_SECS}s
  domains: [example.com]
  ip_lists: [list.test]
  domain_lists: [dbl.test]
  on_listed: {{ action: {action}, classes: [bulk] }}
{extra}",
        port = bind.port,
        dir = state_dir.display(),
        url = hook.url()
    );
    Config::parse(Path::new("reputation.yaml"), &text).expect("valid config")
}

async fn send(d: &Daemon, login: &str, n: usize) -> Sent {
    send_at(d.addr, login, n).await
}

async fn send_at(addr: std::net::SocketAddr, login: &str, n: usize) -> Sent {
    let rcpts: Vec<String> = (0..n).map(|i| format!("r{i}@example.net")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    send_to(
        addr,
        "127.0.0.1",
        Some(login),
        &format!("<{login}>"),
        &rcpts,
        &[],
        "Q1",
    )
    .await
}

/// The notices of the next `secs` seconds.
async fn notices(hook: &mut Webhook, secs: u64) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while let Some(v) = hook
        .next(
            end.saturating_duration_since(tokio::time::Instant::now())
                .as_secs()
                .max(1),
        )
        .await
    {
        out.push(v);
        if tokio::time::Instant::now() >= end {
            break;
        }
    }
    out
}

/// The next notice with `change`, waiting up to `secs`; any other
/// notice on the way is returned too.
async fn next_change(
    hook: &mut Webhook,
    change: &str,
    secs: u64,
) -> (serde_json::Value, Vec<serde_json::Value>) {
    let mut others = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = end
            .saturating_duration_since(tokio::time::Instant::now())
            .as_secs();
        assert!(
            left > 0,
            "no {change} notice within {secs}s; others: {others:?}"
        );
        let Some(v) = hook.next(left).await else {
            continue;
        };
        if v["change"] == change {
            return (v, others);
        }
        others.push(v);
    }
}

fn listed_metric(d: &Daemon, target: &str, list: &str) -> Option<String> {
    let m = d.metrics();
    let prefix = format!("egress_reputation_listed{{target=\"{target}\",list=\"{list}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

fn errors_metric(d: &Daemon, list: &str) -> u64 {
    common::counted(
        &d.metrics(),
        "egress_reputation_check_errors_total",
        &[("list", list)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_are_told_once_pause_a_class_and_errors_change_nothing() {
    let bind = Bind::start_zones(&[
        (
            "example.com",
            "@ IN TXT \"v=spf1 ip4:192.0.2.10 ip4:192.0.2.11 -all\"\n\
             @ IN MX 10 mx.example.com.\n\
             mx IN A 127.0.0.1\n\
             _dmarc IN TXT \"v=DMARC1; p=reject\"",
        ),
        ("list.test", ""),
        ("dbl.test", ""),
    ]);
    let mut hook = Webhook::start(200).await;
    let state = tempfile::tempdir().expect("a directory");
    let d = common::start_with(config(&bind, &hook, "tempfail", state.path())).await;

    // The first rounds: nothing listed, the records as they are.
    common::until(Duration::from_secs(15), "a first round", || {
        let a = listed_metric(&d, "192.0.2.10", "list.test");
        let b = listed_metric(&d, "example.com", "dbl.test");
        (a.as_deref() == Some("0") && b.as_deref() == Some("0"))
            .then_some(())
            .ok_or(format!("not yet: {a:?} {b:?}"))
    })
    .await;
    // Both classes flow; the bulk login sends the most.
    assert_eq!(send(&d, "bulk@example.com", 7).await.reply, "continue");
    assert_eq!(send(&d, "alice@example.com", 2).await.reply, "continue");

    // Listed: one notice, naming the top senders of the hours before.
    bind.update_zone(
        "list.test",
        "update add 10.2.0.192.list.test. 1 A 127.0.0.2",
    );
    let (notice, others) = next_change(&mut hook, "listed", 15).await;
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(notice["event"], "reputation");
    assert_eq!(notice["target"], "192.0.2.10");
    assert_eq!(notice["list"], "list.test");
    let top = notice["top_senders"].as_array().expect("top senders");
    assert_eq!(top[0]["kind"], "login");
    assert_eq!(top[0]["key"], "bulk@example.com");
    assert_eq!(top[0]["recipients"], 7);
    assert_eq!(
        listed_metric(&d, "192.0.2.10", "list.test").as_deref(),
        Some("1")
    );
    // The bulk class is paused, staff mail flows, inbound mail too.
    let paused = send(&d, "bulk@example.com", 1).await;
    assert_eq!(
        paused.reply,
        "451 4.7.1 Sending paused: 192.0.2.10 is listed on list.test"
    );
    assert_eq!(send(&d, "alice@example.com", 1).await.reply, "continue");

    // A refusal code on another address and a server that does not answer
    // are errors: nothing changes, nothing is told.
    bind.update_zone(
        "list.test",
        "update add 11.2.0.192.list.test. 1 A 127.255.255.254",
    );
    let before = errors_metric(&d, "list.test");
    common::until(Duration::from_secs(15), "the refusal counted", || {
        (errors_metric(&d, "list.test") > before)
            .then_some(())
            .ok_or("not yet".to_string())
    })
    .await;
    assert_eq!(
        listed_metric(&d, "192.0.2.11", "list.test").as_deref(),
        Some("0")
    );
    let asked_before_pause = bind.query_log();
    bind.pause(true);
    let before = errors_metric(&d, "list.test");
    common::until(Duration::from_secs(20), "timeouts counted", || {
        (errors_metric(&d, "list.test") >= before + 2)
            .then_some(())
            .ok_or("not yet".to_string())
    })
    .await;
    assert_eq!(
        listed_metric(&d, "192.0.2.10", "list.test").as_deref(),
        Some("1")
    );
    assert!(send(&d, "bulk@example.com", 1)
        .await
        .reply
        .starts_with("451 4.7.1 Sending paused"));
    bind.pause(false);
    // The queries sent while it was stopped are all logged as it wakes,
    // ahead of a query of ours sent now: left out of the pacing below.
    bind.dig("woken.example.com", "A");
    let woken = common::until(Duration::from_secs(10), "the woken query", || {
        bind.query_log()
            .lines()
            .position(|l| l.contains("woken.example.com"))
            .map(|i| i + 1)
            .ok_or(String::new())
    })
    .await;
    let quiet = notices(&mut hook, 2 * EVERY_SECS + 1).await;
    assert!(quiet.is_empty(), "errors told nothing: {quiet:?}");

    // Delisted: one notice, the class flows again.
    bind.update_zone("list.test", "update delete 10.2.0.192.list.test. A");
    let (notice, others) = next_change(&mut hook, "delisted", 15).await;
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(notice["target"], "192.0.2.10");
    assert_eq!(send(&d, "bulk@example.com", 1).await.reply, "continue");

    // The SPF record drops an egress address: told once.
    bind.update(
        "update delete example.com. TXT\n\
         update add example.com. 1 TXT \"v=spf1 ip4:192.0.2.10 -all\"",
    );
    let (notice, others) = next_change(&mut hook, "record_changed", 15).await;
    assert!(others.is_empty(), "{others:?}");
    let records = notice["records"].as_array().expect("records");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["check"], "spf");
    assert_eq!(records[0]["target"], "example.com for 192.0.2.11");
    assert_eq!(records[0]["was"], "pass");
    let again = notices(&mut hook, 2 * EVERY_SECS + 1).await;
    assert!(again.is_empty(), "told once: {again:?}");
    assert!(
        common::counted(
            &d.metrics(),
            "egress_reputation_record_ok",
            &[("check", "spf"), ("subject", "example.com for 192.0.2.11")]
        ) == 0
    );

    // What the command shows.
    let Ok(text) = answer(&d, false).await else {
        panic!("an answer")
    };
    assert!(text.contains("192.0.2.10"), "{text}");
    assert!(text.contains("delisted 192.0.2.10 on list.test"), "{text}");
    assert!(text.contains("WRONG spf"), "{text}");

    // Pacing: no name asked twice within a period, the names of a round
    // spread over it (three names: a third of a period apart).
    let after: String = bind
        .query_log()
        .lines()
        .skip(woken)
        .map(|l| format!("{l}\n"))
        .collect();
    let names = [
        "10.2.0.192.list.test",
        "11.2.0.192.list.test",
        "example.com.dbl.test",
    ];
    for name in names {
        let n = query_times(&asked_before_pause, name).len() + query_times(&after, name).len();
        assert!(n >= 4, "{name} asked {n} times");
    }
    for log in [&asked_before_pause, &after] {
        for name in names {
            let times = query_times(log, name);
            for w in times.windows(2) {
                assert!(
                    w[1] - w[0] >= EVERY_SECS as f64 * 1000.0 * 0.95,
                    "{name} asked twice within a period: {times:?}"
                );
            }
        }
        let first = query_times(log, names[0]);
        for t in query_times(log, names[1]) {
            let nearest = first.iter().map(|f| (t - f).abs()).fold(f64::MAX, f64::min);
            assert!(nearest >= 400.0, "not spread: {t} vs {first:?}");
        }
    }
    d.stop().await;
}

/// `egress-milter reputation [--check]`, as the daemon answers it.
async fn answer(d: &Daemon, check: bool) -> Result<String, String> {
    match egress_milter::admin::answer(&d.shared, Request::Reputation(Reputation { check })).await {
        egress_milter::admin::Answer::Ok(t) => Ok(t),
        egress_milter::admin::Answer::Error(e) => Err(e),
    }
}

/// When (ms of the day) BIND logged a query for `name` (type A).
fn query_times(log: &str, name: &str) -> Vec<f64> {
    let needle = format!("query: {name} IN A ");
    log.lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| {
            let time = l.split_whitespace().nth(1)?;
            let mut parts = time.split(':');
            let h: f64 = parts.next()?.parse().ok()?;
            let m: f64 = parts.next()?.parse().ok()?;
            let s: f64 = parts.next()?.parse().ok()?;
            Some(((h * 60.0 + m) * 60.0 + s) * 1000.0)
        })
        .collect()
}

/// `on_listed: hold` holds the paused class's mail (accepted, quarantined)
/// and `--check` runs a round at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_quarantines_the_paused_class_and_check_asks_now() {
    let bind = Bind::start_zones(&[
        (
            "example.com",
            "@ IN TXT \"v=spf1 ip4:192.0.2.10 ip4:192.0.2.11 -all\"",
        ),
        ("list.test", "10.2.0.192 IN A 127.0.0.2"),
        ("dbl.test", ""),
    ]);
    let hook = Webhook::start(200).await;
    let state = tempfile::tempdir().expect("a directory");
    let mut config = config(&bind, &hook, "hold", state.path());
    if let Some(r) = config.reputation.as_mut() {
        // No periodic round soon: what is known comes from --check.
        r.every = Duration::from_secs(3600);
    }
    let d = common::start_with(config).await;
    let text = answer(&d, true).await.expect("checked");
    assert!(text.contains("LISTED: 192.0.2.10 on list.test"), "{text}");
    let held = send(&d, "bulk@example.com", 1).await;
    assert_eq!(held.reply, "continue");
    assert!(held.held, "the bulk class's mail is held");
    let staff = send(&d, "alice@example.com", 1).await;
    assert!(!staff.held, "staff mail is not");
    // Kept across a restart: the state file says it was listed.
    d.stop().await;
    let saved = std::fs::read_to_string(state.path().join("reputation.json")).expect("saved");
    assert!(saved.contains("\"listed\": true"), "{saved}");
}

/// With a Spamhaus DQS key the `*.spamhaus.org` lists are asked under
/// `KEY.LIST.dq.spamhaus.net`; an IPv6 address is asked by its nibbles,
/// apart from the IPv4 one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dqs_names_and_ipv6_addresses() {
    let bind = Bind::start_zones(&[
        ("example.com", ""),
        (
            "dq.spamhaus.net",
            "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.k3y9.zen IN A 127.0.0.3",
        ),
        ("dbl.test", ""),
    ]);
    let hook = Webhook::start(200).await;
    let state = tempfile::tempdir().expect("a directory");
    let key = state.path().join("dqs.key");
    std::fs::write(&key, "K3Y9\n").expect("written");
    let mut config = config_with(&bind, &hook, "tempfail", state.path(), "");
    if let Some(r) = config.reputation.as_mut() {
        r.every = Duration::from_secs(3600);
        r.addresses = vec![
            "192.0.2.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ];
        r.ip_lists = vec![egress_milter::address::Domain::parse("zen.spamhaus.org").unwrap()];
        r.dqs_key = Some("k3y9".into());
    }
    let d = common::start_with(config).await;
    let text = answer(&d, true).await.expect("checked");
    assert!(
        text.contains("LISTED: 2001:db8::10 on zen.spamhaus.org"),
        "{text}"
    );
    assert_eq!(
        listed_metric(&d, "192.0.2.10", "zen.spamhaus.org").as_deref(),
        Some("0")
    );
    assert_eq!(
        send(&d, "bulk@example.com", 1).await.reply,
        "451 4.7.1 Sending paused: 2001:db8::10 is listed on zen.spamhaus.org"
    );
    let log = bind.query_log();
    assert!(
        log.contains("query: 10.2.0.192.k3y9.zen.dq.spamhaus.net IN A"),
        "{log}"
    );
    d.stop().await;
    // The key file as the configuration reads it: lower case, one line.
    let text = format!(
        "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\negress_ips: [192.0.2.10]\n\
         reputation: {{ dqs_key_file: {} }}\n",
        key.display()
    );
    let c = Config::parse(Path::new("r.yaml"), &text).expect("valid");
    assert_eq!(
        c.reputation.and_then(|r| r.dqs_key).as_deref(),
        Some("k3y9")
    );
    std::fs::write(&key, "not a key!\n").expect("written");
    let e = Config::parse(Path::new("r.yaml"), &text)
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("r.yaml:4") && e.contains("reputation.dqs_key_file"),
        "{e}"
    );
}

/// Two gateways on one Redis: one runs the rounds, a listing is told
/// once, naming the senders of both, and both pause the class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_tell_once_and_both_pause() {
    let redis = common::redis::RedisServer::start();
    let bind = Bind::start_zones(&[("example.com", ""), ("list.test", ""), ("dbl.test", "")]);
    let mut hook = Webhook::start(200).await;
    let (sa, sb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let extra = format!(
        "rate_limits: {{ backend: redis, redis: {{ url: \"{}\", key_prefix: \"rep:\" }} }}\n",
        redis.url()
    );
    let a = common::start_with(config_with(&bind, &hook, "tempfail", sa.path(), &extra)).await;
    let b = common::start_with(config_with(&bind, &hook, "tempfail", sb.path(), &extra)).await;
    assert_eq!(send(&a, "bulk@example.com", 3).await.reply, "continue");
    assert_eq!(
        send_at(b.addr, "bulk@example.com", 4).await.reply,
        "continue"
    );
    assert_eq!(
        send_at(b.addr, "alice@example.com", 2).await.reply,
        "continue"
    );
    // Both have counted into Redis before a round tells.
    common::until(Duration::from_secs(10), "counts in Redis", || {
        let (bulk, alice) = (
            tallied(&redis, "bulk@example.com"),
            tallied(&redis, "alice@example.com"),
        );
        (bulk == 7 && alice == 2)
            .then_some(())
            .ok_or(format!(": bulk {bulk}, alice {alice}"))
    })
    .await;
    bind.update_zone(
        "list.test",
        "update add 10.2.0.192.list.test. 1 A 127.0.0.2",
    );
    let (notice, mut seen) = next_change(&mut hook, "listed", 15).await;
    let top = notice["top_senders"].as_array().expect("top senders");
    assert_eq!(top[0]["key"], "bulk@example.com", "{top:?}");
    assert_eq!(top[0]["recipients"], 7, "both gateways' counts: {top:?}");
    assert_eq!(top[1]["key"], "alice@example.com", "{top:?}");
    for (name, addr) in [("a", a.addr), ("b", b.addr)] {
        common::until(Duration::from_secs(10), "paused", || {
            futures_block(send_at(addr, "bulk@example.com", 1))
                .reply
                .starts_with("451 4.7.1 Sending paused")
                .then_some(())
                .ok_or(format!("gateway {name} not paused yet"))
        })
        .await;
    }
    seen.extend(notices(&mut hook, 2 * EVERY_SECS + 1).await);
    let shown = answer(&b, false).await.expect("an answer");
    assert!(shown.starts_with("rounds run by "), "{shown}");
    assert!(shown.contains("LISTED: 192.0.2.10 on list.test"), "{shown}");
    // Besides the listing, only the records wrong at first sight (this
    // zone has no SPF, DMARC or MX), in one notice from one gateway.
    assert_eq!(seen.len(), 1, "told once: {seen:?}");
    assert_eq!(seen[0]["change"], "record_changed", "{seen:?}");
    let mut records: Vec<String> = seen[0]["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["check"].as_str().unwrap_or_default().to_string())
        .collect();
    records.sort();
    assert_eq!(records, ["dmarc", "mx", "spf"], "{seen:?}");
    a.stop().await;
    b.stop().await;
}

/// What the gateways have counted for a sender (as the envelope sender) in
/// Redis, over every hour.
fn tallied(redis: &common::redis::RedisServer, sender: &str) -> u64 {
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-u", &redis.url()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut total = 0;
    for hash in cli(&["--scan", "--pattern", "rep:reputation:senders:*"]).lines() {
        let fields = cli(&["hgetall", hash]);
        let mut lines = fields.lines();
        while let (Some(field), Some(n)) = (lines.next(), lines.next()) {
            if field == format!("sender\t{sender}") {
                total += n.parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

fn futures_block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Through a real Postfix: while our address is listed, the paused class
/// (an application server) gets `451 4.7.1 Sending paused` at MAIL FROM
/// and its mail stays with the sender; another class leaves; inbound mail
/// from a stranger to our domain still comes in; delisted, the paused
/// class's mail leaves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_postfix_the_paused_class_is_deferred_and_the_rest_flows() {
    use common::postfix::{swaks, Postfix};
    let bind = Bind::start_zones(&[
        ("example.com", "@ IN TXT \"v=spf1 ip4:192.0.2.10 -all\""),
        ("list.test", "10.2.0.192 IN A 127.0.0.2"),
    ]);
    let text = std::fs::read_to_string(common::config_path("e2e.yaml"))
        .expect("e2e.yaml")
        .replace(
            "classes:\n",
            "classes:\n  - { name: staff, clients: [127.0.0.3], sender_domains: [example.com] }\n",
        )
        + &format!(
            "egress_ips: [192.0.2.10]\n\
             dns: {{ nameservers: [\"127.0.0.1:{}\"], timeout: 1s }}\n\
             reputation: {{ every: {EVERY_SECS}s, domains: [example.com], ip_lists: [list.test], \
             domain_lists: [], on_listed: {{ action: tempfail, classes: [crm-app] }} }}\n",
            bind.port
        );
    let config = Config::parse(Path::new("e2e.yaml"), &text).expect("valid config");
    let d = common::start_with(config).await;
    common::until(Duration::from_secs(15), "listed", || {
        (listed_metric(&d, "192.0.2.10", "list.test").as_deref() == Some("1"))
            .then_some(())
            .ok_or("not yet".to_string())
    })
    .await;
    let mut sink = common::sink::Sink::start().await;
    let pf = Postfix::start("reputation", &format!("inet:{}", d.addr), sink.port);
    let port = pf.smtp_port;
    let run = |ip: &'static str, from: &'static str, to: &'static str, subject: &'static str| {
        tokio::task::spawn_blocking(move || swaks(port, ip, from, to, from, subject))
    };
    let t = run(
        "127.0.0.2",
        "noreply@example.com",
        "someone@example.net",
        "paused",
    )
    .await
    .expect("swaks");
    assert!(
        t.contains("<** 451 4.7.1 Sending paused: 192.0.2.10 is listed on list.test"),
        "{t}"
    );
    let t = run(
        "127.0.0.3",
        "alice@example.com",
        "someone@example.net",
        "staff",
    )
    .await
    .expect("swaks");
    assert!(t.contains("queued as"), "{t}");
    let t = run("127.0.0.9", "x@outside.test", "user@example.com", "inbound")
        .await
        .expect("swaks");
    assert!(t.contains("queued as"), "{t}");
    let mut got = vec![
        sink.next(60).await.expect("delivered").subject(),
        sink.next(60).await.expect("delivered").subject(),
    ];
    got.sort();
    assert_eq!(got, ["inbound", "staff"]);
    // Delisted: the application's mail leaves again.
    bind.update_zone("list.test", "update delete 10.2.0.192.list.test. A");
    common::until(Duration::from_secs(15), "delisted", || {
        (listed_metric(&d, "192.0.2.10", "list.test").as_deref() == Some("0"))
            .then_some(())
            .ok_or("still listed".to_string())
    })
    .await;
    let t = run(
        "127.0.0.2",
        "noreply@example.com",
        "someone@example.net",
        "again",
    )
    .await
    .expect("swaks");
    assert!(t.contains("queued as"), "{t}");
    assert_eq!(sink.next(60).await.expect("delivered").subject(), "again");
    drop(pf);
    d.stop().await;
}
