//! Redis behind Sentinel (one master, one replica, three sentinels on
//! loopback): the gateways find the master through the sentinels, and when
//! it dies under load they follow `on_failure` while a replica is promoted,
//! then find the new master by themselves, where the limits continue.

use crate::common;
use common::{
    process::Running,
    sentinel::{SentinelSet, DOWN_AFTER_MS},
};
use egress_milter::config::Config;
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

const BUDGET: usize = 40;
const RATE_LIMITED: &str = "451 4.7.1 Rate limit messages_per_sender exceeded for";
const TEMPFAIL: &str = "451 4.3.0 Temporary policy failure";

fn config(set: &SentinelSet, on_failure: &str) -> Config {
    Config::parse(
        Path::new("sentinel.yaml"),
        &config_text(set, on_failure, "inet:127.0.0.1:0"),
    )
    .unwrap()
}

fn config_text(set: &SentinelSet, on_failure: &str, listen: &str) -> String {
    format!(
        "listen: {listen}
local_domains: [example.com]
classes:
  - {{ name: app, clients: [10.0.0.0/8], sender_domains: [xyz.com] }}
rate_limits:
  backend: redis
  redis:
    sentinel: {{ nodes: [{}], master_name: {} }}
    key_prefix: \"test:\"
    on_failure: {on_failure}
    timeout: 500ms
  messages_per_sender: {BUDGET}/h
",
        set.node_list(),
        common::sentinel::MASTER_NAME
    )
}

async fn mail_via(addr: SocketAddr, ip: &str, sender: &str) -> String {
    common::mail_from(addr, ip, sender, None).await
}

/// Sends MAIL FROM `sender` every 100 ms until it is accepted (Redis
/// answers again), for at most `within`: each answer meanwhile must be
/// on_failure's tempfail, given within 1.5 s (the Redis timeout and a
/// margin). Returns how many tempfails there were.
async fn until_accepted(addr: SocketAddr, sender: &str, within: Duration, what: &str) -> usize {
    let deadline = Instant::now() + within;
    let mut tempfails = 0;
    loop {
        let started = Instant::now();
        let r = mail_via(addr, "10.0.0.1", sender).await;
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{what}: an answer took {:?}",
            started.elapsed()
        );
        if r == "continue" {
            return tempfails;
        }
        assert_eq!(r, TEMPFAIL, "{what}");
        tempfails += 1;
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most `within`) until the replica has every write.
async fn until_in_sync(set: &SentinelSet, within: Duration, what: &str) {
    common::until(within, what, || {
        set.in_sync().then_some(()).ok_or_else(String::new)
    })
    .await
}

/// One answer of the load: when it was asked and answered, to which
/// sender, what.
struct Answer {
    started: Instant,
    at: Instant,
    sender: usize,
    reply: String,
    took: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_dies_under_load_and_the_limits_continue_on_the_promoted_replica() {
    let mut set = tokio::task::spawn_blocking(SentinelSet::start)
        .await
        .unwrap();
    let first_master = set.master_port();
    assert_eq!(first_master, set.nodes[0]);
    // Two gateways: one refuses while Redis is away, one counts locally
    // (the daemon binary, as an administrator runs it, with its log).
    let strict = common::start_with(config(&set, "tempfail")).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let path = dir.path().join("lenient.yaml");
    std::fs::write(
        &path,
        config_text(&set, "local", &format!("inet:127.0.0.1:{port}")),
    )
    .unwrap();
    let lenient_process = Running::start(&path);
    lenient_process.wait_for("egress-milter started");
    let lenient: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // One budget for both, kept on the master the sentinels name.
    let spent = "<spent@xyz.com>";
    for i in 0..BUDGET {
        let addr = if i % 2 == 0 { strict.addr } else { lenient };
        assert_eq!(mail_via(addr, "10.0.0.1", spent).await, "continue");
    }
    for addr in [strict.addr, lenient] {
        let r = mail_via(addr, "10.0.0.1", spent).await;
        assert!(r.starts_with(RATE_LIMITED), "{r}");
    }
    // The daemon says which master the sentinels named.
    lenient_process.wait_for(&format!(
        "redis master for sentinel name \"egress\" is 127.0.0.1:{first_master}"
    ));
    // A master name the sentinels do not know: on_failure, at once.
    let mut unknown = config(&set, "tempfail");
    if let Some(s) = unknown.rate_limits.redis.sentinel.as_mut() {
        s.master_name = "nosuch".into();
    }
    let d = common::start_with(unknown).await;
    let started = Instant::now();
    assert_eq!(mail_via(d.addr, "10.0.0.1", "<n@xyz.com>").await, TEMPFAIL);
    assert!(started.elapsed() < Duration::from_secs(1));
    d.stop().await;
    let key = format!("test:messages_per_sender:{BUDGET}/3600:spent@xyz.com");
    assert!(set.get(first_master, &key).is_some(), "{key} on the master");
    until_in_sync(&set, Duration::from_secs(10), "the replica never caught up").await;
    assert!(
        set.get(set.nodes[1], &key).is_some(),
        "{key} on the replica"
    );

    // Load on the strict gateway: four clients, ten senders in turn, each
    // with its budget of 40, plus the spent sender now and then.
    const SENDERS: usize = 10;
    let answers = Arc::new(std::sync::Mutex::new(Vec::<Answer>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for task in 0..4 {
        let (answers, stop, addr) = (answers.clone(), stop.clone(), strict.addr);
        load.push(tokio::spawn(async move {
            let mut n = task;
            // Bounded: at most 60 s of load.
            let end = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
                // Every fifth message is the spent sender (index SENDERS).
                let sender = if n % 5 == 4 { SENDERS } else { n % SENDERS };
                let address = if sender == SENDERS {
                    "<spent@xyz.com>".to_string()
                } else {
                    format!("<load{sender}@xyz.com>")
                };
                let started = Instant::now();
                let r = mail_via(addr, "10.0.0.2", &address).await;
                answers.lock().unwrap().push(Answer {
                    started,
                    at: Instant::now(),
                    sender,
                    reply: r,
                    took: started.elapsed(),
                });
                n += 4;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }));
    }
    // The lenient gateway under load too: its answers must come at once.
    let lenient_took = {
        let (stop, addr) = (stop.clone(), lenient);
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut n = 0u32;
            let end = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
                let started = Instant::now();
                let r = mail_via(addr, "10.0.0.3", &format!("<l{}@xyz.com>", n % 200)).await;
                assert!(r == "continue" || r.starts_with(RATE_LIMITED), "{r}");
                worst = worst.max(started.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            worst
        })
    };

    // The master dies once the load is well under way.
    common::until(Duration::from_secs(20), "the load never got going", || {
        (answers.lock().unwrap().len() >= 100)
            .then_some(())
            .ok_or_else(String::new)
    })
    .await;
    let killed = Instant::now();
    set.kill(first_master);

    // The sentinels agree the master is down and promote the replica.
    let switched = common::until(Duration::from_secs(30), "no failover in 30 s", || {
        (set.sentinel_master_port(set.sentinels[0]) == Some(set.nodes[1]))
            .then(|| killed.elapsed())
            .ok_or_else(String::new)
    })
    .await;
    // The load goes on until the strict gateway has answered from the new
    // master: a `continue` asked after the kill.
    let resumed = common::until(
        Duration::from_secs(30),
        "the gateway never used the promoted replica",
        || {
            answers
                .lock()
                .unwrap()
                .iter()
                .find(|a| a.started > killed && a.reply == "continue")
                .map(|a| a.at - killed)
                .ok_or_else(String::new)
        },
    )
    .await;
    // Then until every load sender has spent its budget on the new master
    // and been refused there.
    common::until(
        Duration::from_secs(30),
        "load senders never refused after the failover",
        || {
            let answers = answers.lock().unwrap();
            let used: std::collections::HashSet<usize> = answers.iter().map(|a| a.sender).collect();
            let refused: std::collections::HashSet<usize> = answers
                .iter()
                .filter(|a| a.started > killed + resumed && a.reply.starts_with(RATE_LIMITED))
                .map(|a| a.sender)
                .collect();
            if used.is_subset(&refused) {
                Ok(())
            } else {
                Err(format!(": only {refused:?}"))
            }
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let lenient_worst = lenient_took.await.unwrap();
    eprintln!(
        "failover: sentinels named the replica {} ms after the kill (down-after {DOWN_AFTER_MS} ms); \
         the gateway's limits were back {} ms after the kill; slowest answer of the local-fallback gateway {} ms",
        switched.as_millis(),
        resumed.as_millis(),
        lenient_worst.as_millis()
    );

    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let mut accepted: HashMap<usize, usize> = HashMap::new();
    let mut outage = 0;
    for a in answers.iter() {
        // Every answer is one of: accepted, the rate limit, or on_failure's
        // tempfail; and none waits beyond the Redis timeout.
        assert!(
            a.reply == "continue" || a.reply.starts_with(RATE_LIMITED) || a.reply == TEMPFAIL,
            "{}",
            a.reply
        );
        assert!(a.took < Duration::from_millis(1500), "{:?}", a.took);
        if a.reply == TEMPFAIL {
            assert!(a.at > killed, "a tempfail before the kill");
            outage += 1;
        }
        if a.reply == "continue" {
            *accepted.entry(a.sender).or_default() += 1;
        }
    }
    assert!(outage > 0, "the load never met the failover");
    // The operator sees it: Redis failures, and every tempfail of the
    // outage counted as a decision on_failure took.
    let metrics = strict.metrics();
    let counter = |name: &str| common::unlabelled(&metrics, name);
    assert!(counter("egress_redis_failures_total") >= 1, "{metrics}");
    assert!(
        counter("egress_limiter_fallbacks_total") >= outage as u64,
        "{outage} tempfails: {metrics}"
    );
    // The sender whose budget was spent before the kill is refused all
    // along: by the old master, by on_failure, by the promoted replica.
    assert_eq!(
        accepted.get(&SENDERS),
        None,
        "the spent sender got mail out"
    );
    let refused_after = answers
        .iter()
        .filter(|a| a.sender == SENDERS && a.at > killed + resumed)
        .filter(|a| a.reply.starts_with(RATE_LIMITED))
        .count();
    assert!(refused_after > 0, "the promoted replica did not know it");
    // No load sender got more than its budget: counts from before the kill
    // continued on the replica. Replication is asynchronous, so what the
    // master acknowledged in its last instant may be lost with it: allow
    // the answers asked before the kill and given in its last 50 ms (or
    // after it), and no more.
    for sender in 0..SENDERS {
        let last_instant = answers
            .iter()
            .filter(|a| a.sender == sender && a.reply == "continue")
            .filter(|a| a.started <= killed && a.at + Duration::from_millis(50) > killed)
            .count();
        let got = accepted.get(&sender).copied().unwrap_or(0);
        assert!(
            got <= BUDGET + last_instant,
            "load{sender}: {got} accepted, budget {BUDGET}"
        );
    }
    // Both gateways share the new master: a budget spent through the
    // strict one is refused by the lenient one.
    let after = "<after@xyz.com>";
    for _ in 0..BUDGET {
        assert_eq!(mail_via(strict.addr, "10.0.0.4", after).await, "continue");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = mail_via(lenient, "10.0.0.4", after).await;
        if r.starts_with(RATE_LIMITED) {
            break;
        }
        // The lenient gateway may still rest on its local counts for its
        // retry interval after a failure.
        assert!(Instant::now() < deadline, "lenient never rejoined: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The old master comes back empty: the sentinels make it a replica of
    // the new one, and the gateways stay with the new master meanwhile.
    set.start_node(0, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !set.in_sync() {
        let r = mail_via(strict.addr, "10.0.0.1", spent).await;
        assert!(r.starts_with(RATE_LIMITED), "{r}");
        assert!(Instant::now() < deadline, "the old master never rejoined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        set.get(set.nodes[0], &key).is_some(),
        "{key} replicated back"
    );
    // The switch is in the log.
    lenient_process.wait_for(&format!(
        "redis master for sentinel name \"egress\" is 127.0.0.1:{}",
        set.nodes[1]
    ));
    strict.stop().await;
}

/// The first sentinel listed hangs (its port takes connections, nothing
/// answers): the others are asked meanwhile, and the gateway still finds
/// the master they promote when the old one dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_sentinel_does_not_hold_up_the_others() {
    let mut set = tokio::task::spawn_blocking(SentinelSet::start)
        .await
        .unwrap();
    let master = set.master_port();
    let d = common::start_with(config(&set, "tempfail")).await;
    assert_eq!(
        mail_via(d.addr, "10.0.0.1", "<h@xyz.com>").await,
        "continue"
    );
    set.freeze(set.sentinels[0], true);
    set.kill(master);
    common::until(
        Duration::from_secs(30),
        "no failover by the two other sentinels",
        || {
            (set.sentinel_master_port(set.sentinels[1]) == Some(set.nodes[1]))
                .then_some(())
                .ok_or_else(String::new)
        },
    )
    .await;
    let promoted = Instant::now();
    until_accepted(
        d.addr,
        "<h@xyz.com>",
        Duration::from_secs(10),
        "the gateway never found the promoted replica past the hung sentinel",
    )
    .await;
    eprintln!(
        "with the first sentinel hung, limits back {} ms after the promotion",
        promoted.elapsed().as_millis()
    );
    set.freeze(set.sentinels[0], false);

    // Now the master hangs instead of dying (a stalled VM): the old one,
    // back as a replica, is promoted. Meanwhile every answer comes within
    // the timeout, and the budgets counted on the hung master are on the
    // promoted one.
    set.start_node(0, None);
    until_in_sync(
        &set,
        Duration::from_secs(20),
        "the old master never rejoined",
    )
    .await;
    for _ in 0..39 {
        assert_eq!(
            mail_via(d.addr, "10.0.0.1", "<k@xyz.com>").await,
            "continue"
        );
    }
    until_in_sync(&set, Duration::from_secs(10), "the replica never caught up").await;
    set.freeze(set.nodes[1], true);
    let frozen = Instant::now();
    let tempfails = until_accepted(
        d.addr,
        "<k@xyz.com>",
        Duration::from_secs(30),
        "no failover from a hung master",
    )
    .await;
    assert!(tempfails > 0, "the hung master was never noticed");
    assert_eq!(set.master_port(), set.nodes[0]);
    // k's 40th message was the one above; the 41st is refused.
    let r = mail_via(d.addr, "10.0.0.1", "<k@xyz.com>").await;
    assert!(r.starts_with(RATE_LIMITED), "{r}");
    eprintln!(
        "with the master hung, limits back {} ms after it froze",
        frozen.elapsed().as_millis()
    );
    set.freeze(set.nodes[1], false);
    d.stop().await;
}

/// The loader's refusal of a config whose `rate_limits.redis` block is
/// `redis` (from line 5 on).
fn refusal(redis: &str) -> String {
    let text = format!(
        "listen: inet:127.0.0.1:0\nlocal_domains: [example.com]\nrate_limits:\n  redis:\n{redis}"
    );
    match Config::parse(Path::new("bad.yaml"), &text) {
        Ok(_) => panic!("loaded:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// Each mistake in `rate_limits.redis.sentinel` is named with its file,
/// line and key.
#[test]
fn sentinel_mistakes_name_their_line_and_key() {
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        ca.path(),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for (redis, line, key, why) in [
        (
            "    url: \"redis://127.0.0.1:6379\"\n    sentinel: { nodes: [\"127.0.0.1:26379\"], master_name: m }\n".to_string(),
            5,
            "rate_limits.redis.url",
            "either a url or sentinel",
        ),
        (
            "    sentinel: { nodes: [], master_name: m }\n".to_string(),
            5,
            "rate_limits.redis.sentinel.nodes",
            "at least one sentinel",
        ),
        (
            "    sentinel:\n      master_name: m\n      nodes:\n        - \"127.0.0.1:26379\"\n        - \"127.0.0.1\"\n".to_string(),
            9,
            "rate_limits.redis.sentinel.nodes",
            "expected HOST:PORT or redis[s]://HOST:PORT, got \"127.0.0.1\"",
        ),
        (
            "    sentinel: { nodes: [\"redis://u:pw@127.0.0.1:26379\"], master_name: m }\n".to_string(),
            5,
            "rate_limits.redis.sentinel.nodes",
            "sentinel.password_file",
        ),
        (
            "    sentinel: { nodes: [\"rediss://127.0.0.1:26379\", \"127.0.0.1:26380\"], master_name: m }\n".to_string(),
            5,
            "rate_limits.redis.sentinel.nodes",
            "TLS for all or none",
        ),
        (
            "    sentinel: { nodes: [\"127.0.0.1:26379\"], master_name: \"\" }\n".to_string(),
            5,
            "rate_limits.redis.sentinel.master_name",
            "sentinel monitor NAME",
        ),
        (
            format!(
                "    sentinel: {{ nodes: [\"127.0.0.1:26379\"], master_name: m }}\n    ca_file: \"{}\"\n",
                ca.path().display()
            ),
            6,
            "rate_limits.redis.ca_file",
            "must start with rediss://",
        ),
        (
            "    sentinel: { nodes: [\"127.0.0.1:26379\"], master_name: m, password_file: /nonexistent/pw }\n".to_string(),
            5,
            "rate_limits.redis.sentinel.password_file",
            "cannot read /nonexistent/pw",
        ),
    ] {
        let e = refusal(&redis);
        assert!(
            e.contains(&format!("bad.yaml:{line}")) && e.contains(key) && e.contains(why),
            "{redis}\n{e}"
        );
    }
    // Missing master_name, or an unknown key: the YAML reader says where.
    for bad in [
        "    sentinel: { nodes: [\"127.0.0.1:26379\"] }\n",
        "    sentinel: { nodes: [\"127.0.0.1:26379\"], master_name: m, master: m }\n",
    ] {
        let e = refusal(bad);
        assert!(e.contains("bad.yaml:5") && e.contains("master"), "{e}");
    }
    // Good: bare HOST:PORT and URLs, for the daemon to ask.
    let text = "listen: inet:127.0.0.1:0\nlocal_domains: [example.com]\nrate_limits:\n  backend: redis\n  redis:\n    sentinel: { nodes: [\"127.0.0.1:26379\", \"redis://[::1]:26380\"], master_name: egress }\n";
    let c = Config::parse(Path::new("good.yaml"), text).unwrap();
    let s = c.rate_limits.redis.sentinel.unwrap();
    assert_eq!(s.nodes, ["redis://127.0.0.1:26379", "redis://[::1]:26380"]);
    assert_eq!(s.master_name, "egress");
}

/// Sentinel with TLS everywhere, an ACL user on the data nodes and a
/// password on the sentinels (each from a file): the master is found and
/// used, and after a failover the promoted replica. A wrong sentinel
/// password, or no CA, and Redis is not reached: `on_failure` answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_over_tls_with_passwords() {
    let mut set = tokio::task::spawn_blocking(SentinelSet::start_secure)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-it\n").unwrap();
    let config = |sentinel_password: &Path, ca: bool| {
        let ca = if ca {
            format!("    ca_file: \"{}\"\n", set.file("ca.pem").display())
        } else {
            String::new()
        };
        let text = format!(
            "listen: inet:127.0.0.1:0
local_domains: [example.com]
classes:
  - {{ name: app, clients: [10.0.0.0/8], sender_domains: [xyz.com] }}
rate_limits:
  backend: redis
  redis:
    sentinel: {{ nodes: [{}], master_name: {}, password_file: \"{}\" }}
{ca}    username: {}
    password_file: \"{}\"
    on_failure: tempfail
    timeout: 2s
  messages_per_sender: 2/h
",
            set.node_list(),
            common::sentinel::MASTER_NAME,
            sentinel_password.display(),
            common::sentinel::USER,
            set.file("password").display(),
        );
        Config::parse(Path::new("tls.yaml"), &text).unwrap()
    };
    let good = common::start_with(config(&set.file("sentinel-password"), true)).await;
    for _ in 0..2 {
        assert_eq!(
            mail_via(good.addr, "10.0.0.1", "<t@xyz.com>").await,
            "continue"
        );
    }
    let r = mail_via(good.addr, "10.0.0.1", "<t@xyz.com>").await;
    assert!(r.starts_with(RATE_LIMITED), "{r}");
    let master = set.master_port();
    assert!(
        set.get(master, "egress:messages_per_sender:2/3600:t@xyz.com")
            .is_some(),
        "the count is on the master"
    );

    for bad in [
        config(&wrong, true),
        config(&set.file("sentinel-password"), false),
    ] {
        let d = common::start_with(bad).await;
        assert_eq!(mail_via(d.addr, "10.0.0.2", "<u@xyz.com>").await, TEMPFAIL);
        d.stop().await;
    }

    // The master dies: refused with on_failure until the sentinels promote
    // the replica, which the gateway then finds over TLS too.
    set.kill(master);
    until_accepted(
        good.addr,
        "<f@xyz.com>",
        Duration::from_secs(30),
        "no failover over TLS",
    )
    .await;
    assert_ne!(set.master_port(), master);
    assert_eq!(
        mail_via(good.addr, "10.0.0.1", "<f@xyz.com>").await,
        "continue"
    );
    let r = mail_via(good.addr, "10.0.0.1", "<f@xyz.com>").await;
    assert!(r.starts_with(RATE_LIMITED), "{r}");
    good.stop().await;
}
