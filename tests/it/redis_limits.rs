//! The Redis backend against a real redis-server: gateways sharing one
//! budget, Redis killed and back, connection leases across gateways.

use crate::common;
use common::{mail, process::Running, redis::RedisServer, reply};
use egress_milter::config::Config;
use indymilter::Actions;
use indymilter_test::TestConnection;
use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

fn config_text(listen: &str, redis_url: &str, on_failure: &str, extra: &str) -> String {
    format!(
        "listen: {listen}
local_domains: [example.com]
log: {{ format: json }}
classes:
  - {{ name: app, clients: [10.0.0.0/8], sender_domains: [xyz.com] }}
rate_limits:
  backend: redis
  redis: {{ url: \"{redis_url}\", key_prefix: \"test:\", on_failure: {on_failure}, timeout: 500ms, lease: 1s }}
  messages_per_sender: 3/h
{extra}"
    )
}

async fn mail_via(addr: SocketAddr, ip: &str, sender: &str) -> String {
    common::mail_from(addr, ip, sender, None).await
}

struct Gateway {
    process: Running,
    addr: SocketAddr,
}

fn gateway(dir: &Path, name: &str, redis_url: &str) -> Gateway {
    let port = common::free_port();
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        config_text(&format!("inet:127.0.0.1:{port}"), redis_url, "local", ""),
    )
    .unwrap();
    let process = Running::start(&path);
    process.wait_for("egress-milter started");
    Gateway {
        process,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    }
}

/// How many scripts Redis has run (`INFO commandstats`).
fn scripts_run(redis: &RedisServer) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-u", &redis.url(), "info", "commandstats"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .filter_map(|l| l.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// `reserve`: a gateway takes a few cells ahead for a busy sender and
/// spends them without asking Redis; two gateways spending a sender's
/// budget that way together still never pass its limit, and reach it at
/// most the cells they hold early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_taken_ahead_cut_the_round_trips_and_never_pass_a_limit() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        let port = common::free_port();
        let path = dir.path().join(format!("{name}.yaml"));
        let text = config_text(
            &format!("inet:127.0.0.1:{port}"),
            &redis.url(),
            "tempfail",
            "",
        )
        .replace("messages_per_sender: 3/h", "messages_per_sender: 200/h");
        std::fs::write(&path, text).unwrap();
        let process = Running::start(&path);
        process.wait_for("egress-milter started");
        Gateway {
            process,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        }
    };
    let (a, b) = (start("a"), start("b"));
    let before = scripts_run(&redis);
    let mut accepted = 0;
    let mut refused = [false, false];
    for i in 0..260 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let r = mail_via(gw.addr, "10.0.0.1", "<jim@xyz.com>").await;
        if r == "continue" {
            accepted += 1;
        } else {
            assert!(
                r.starts_with("451 4.7.1 Rate limit messages_per_sender"),
                "{r}"
            );
            refused[i % 2] = true;
            if refused == [true, true] {
                break;
            }
        }
    }
    // 1% of 200 is 2 cells ahead per gateway: at most 4 unspent.
    assert!((196..=200).contains(&accepted), "{accepted} accepted");
    assert_eq!(refused, [true, true]);
    // Three messages per round trip while the budget is at most half used,
    // then one each: well under one per message.
    let calls = scripts_run(&redis) - before;
    assert!(calls < 170, "{calls} round trips for {accepted} messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_budget_and_survive_redis_dying() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = gateway(dir.path(), "a", &redis.url());
    let b = gateway(dir.path(), "b", &redis.url());
    let jim = "<jim@xyz.com>";
    assert_eq!(mail_via(a.addr, "10.0.0.1", jim).await, "continue");
    assert_eq!(mail_via(b.addr, "10.0.0.2", jim).await, "continue");
    assert_eq!(mail_via(a.addr, "10.0.0.3", jim).await, "continue");
    for gw in [&a, &b] {
        let r = mail_via(gw.addr, "10.0.0.4", jim).await;
        assert!(
            r.starts_with(
                "451 4.7.1 Rate limit messages_per_sender exceeded for jim@xyz.com, retry in 12"
            ),
            "{r}"
        );
    }

    // Redis dies: on_failure local, so each gateway limits on its own and
    // answers at once; nothing is refused that its own counts allow.
    redis.kill();
    let started = Instant::now();
    assert_eq!(mail_via(a.addr, "10.0.0.1", jim).await, "continue");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    a.process.wait_for("redis failed");
    for _ in 0..2 {
        assert_eq!(mail_via(a.addr, "10.0.0.1", jim).await, "continue");
    }
    let r = mail_via(a.addr, "10.0.0.1", jim).await;
    assert!(
        r.starts_with("451 4.7.1 Rate limit messages_per_sender"),
        "local fallback still limits: {r}"
    );

    // Redis comes back (empty, as after a restart without persistence).
    // Each gateway notices on its own: a finds it again once its retry
    // interval has passed; b, idle meanwhile, may first find its old
    // connection broken and rest too. Probe both with new senders (the
    // local fallback refuses none of them) until both use Redis.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut up = [false, true];
    let mut probe = 0;
    while !(up[0] && up[1] && probe >= 4) {
        assert!(
            Instant::now() < deadline,
            "the gateways never used redis again: {up:?}"
        );
        for (i, gw) in [&a, &b].into_iter().enumerate() {
            probe += 1;
            assert_eq!(
                mail_via(gw.addr, "10.0.0.1", &format!("<p{probe}@xyz.com>")).await,
                "continue"
            );
            for line in gw.process.lines.try_iter() {
                if line.contains("redis failed") {
                    up[i] = false;
                } else if line.contains("redis is reachable again") {
                    up[i] = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One shared budget again.
    let bob = "<bob@xyz.com>";
    assert_eq!(mail_via(a.addr, "10.0.0.1", bob).await, "continue");
    assert_eq!(mail_via(b.addr, "10.0.0.2", bob).await, "continue");
    assert_eq!(mail_via(a.addr, "10.0.0.3", bob).await, "continue");
    let r = mail_via(b.addr, "10.0.0.4", bob).await;
    assert!(
        r.starts_with("451 4.7.1 Rate limit messages_per_sender exceeded for bob@xyz.com"),
        "{r}"
    );
}

#[tokio::test]
async fn on_failure_tempfail_and_accept_answer_at_once() {
    let dead = format!("redis://127.0.0.1:{}", common::free_port());
    for (on_failure, want) in [
        ("tempfail", "451 4.3.0 Temporary policy failure"),
        ("accept", "continue"),
        ("local", "continue"),
    ] {
        let text = config_text("inet:127.0.0.1:0", &dead, on_failure, "");
        let config = Config::parse(Path::new("t.yaml"), &text).unwrap();
        let d = common::start_with(config).await;
        let started = Instant::now();
        let mut conn = d.client("10.0.0.1").await;
        assert_eq!(
            reply(&mail(&mut conn, "<jim@xyz.com>", None).await),
            want,
            "{on_failure}"
        );
        conn.close().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        // The operator sees the failure counted.
        let metrics = d.metrics();
        let failures: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("egress_redis_failures_total "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(
            failures >= 1,
            "{on_failure}: {failures} Redis failures counted"
        );
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_leases_are_shared_released_and_expire_with_their_gateway() {
    let redis = RedisServer::start();
    let extra = "  concurrent_per_client: 2\n";
    let in_process = |text: String| async move {
        let config = Config::parse(Path::new("t.yaml"), &text).unwrap();
        common::start_with(config).await
    };
    let b = in_process(config_text(
        "inet:127.0.0.1:0",
        &redis.url(),
        "tempfail",
        extra,
    ))
    .await;

    // Gateway a is a process, so that it can die.
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let path = dir.path().join("a.yaml");
    std::fs::write(
        &path,
        config_text(
            &format!("inet:127.0.0.1:{port}"),
            &redis.url(),
            "tempfail",
            extra,
        ),
    )
    .unwrap();
    let mut a = Running::start(&path);
    a.wait_for("egress-milter started");
    let a_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let client: SocketAddr = "10.5.5.5:1".parse().unwrap();
    let open_a = || async {
        let mut c = TestConnection::configure()
            .available_actions(Actions::all())
            .open_tcp(a_addr)
            .await
            .unwrap();
        let r = reply(&c.connect("x", client).await.unwrap());
        (c, r)
    };
    let (a1, r1) = open_a().await;
    assert_eq!(r1, "continue");
    let mut b1 = b.open().await;
    assert_eq!(reply(&b1.connect("x", client).await.unwrap()), "continue");
    // Two open across the gateways: a third on either is refused.
    let mut b2 = b.open().await;
    assert_eq!(
        reply(&b2.connect("x", client).await.unwrap()),
        "421 4.7.0 Too many connections from 10.5.5.5"
    );
    drop(b2);
    // A clean close on b gives its place back.
    b1.close().await.unwrap();
    // Counted in Redis, as `limits show` reads it.
    let open_b = || common::open_connections(&b.shared, "10.5.5.5");
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_b().await != 1 {
        assert!(Instant::now() < deadline, "b's place was not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (a2, r2) = open_a().await;
    assert_eq!(r2, "continue");
    // Gateway a dies holding two places: they expire after the 1 s lease,
    // and are not renewed any more.
    a.signal("-KILL");
    a.wait();
    drop((a1, a2));
    let died = Instant::now();
    assert_eq!(open_b().await, 2);
    while open_b().await != 0 {
        assert!(
            died.elapsed() < Duration::from_secs(5),
            "a dead gateway's leases never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut b3 = b.open().await;
    assert_eq!(reply(&b3.connect("x", client).await.unwrap()), "continue");
    b3.close().await.unwrap();
    b.stop().await;
}

/// `warn_at` with the Redis backend: the fill levels come back from the
/// Lua script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_at_reads_the_fill_from_redis() {
    let redis = RedisServer::start();
    let text = config_text(
        "inet:127.0.0.1:0",
        &redis.url(),
        "tempfail",
        "  warn_at: 60%\n",
    );
    let d = common::start_with(Config::parse(Path::new("w.yaml"), &text).unwrap()).await;
    let warned = |d: &common::Daemon| {
        common::counted(
            &d.metrics(),
            "egress_limit_warnings_total",
            &[("limit", "messages_per_sender")],
        )
    };
    for (i, want) in [(1, 0), (2, 1), (3, 1)] {
        assert_eq!(
            mail_via(d.addr, "10.0.0.9", "<w@xyz.com>").await,
            "continue",
            "message {i}"
        );
        // 3/h: the 2nd message leaves it 67% used, past 60%; once.
        assert_eq!(warned(&d), want, "message {i}");
    }
    assert!(mail_via(d.addr, "10.0.0.9", "<w@xyz.com>")
        .await
        .starts_with("451 4.7.1 Rate limit messages_per_sender"));
    d.stop().await;
}

/// Distinct recipients with Redis: members recorded by the Lua script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_recipients_in_redis() {
    let redis = RedisServer::start();
    let text = config_text(
        "inet:127.0.0.1:0",
        &redis.url(),
        "tempfail",
        "  custom:\n    - { name: spread, key: sender, count: distinct_recipients, rate: 2/h }\n",
    );
    let d = common::start_with(Config::parse(Path::new("d.yaml"), &text).unwrap()).await;
    let mut conn = d.client("10.0.0.10").await;
    assert_eq!(
        reply(&mail(&mut conn, "<s@xyz.com>", None).await),
        "continue"
    );
    for r in [
        "<a@x.example>",
        "<B@x.example>",
        "<a+1@x.example>",
        "<b@x.example>",
    ] {
        assert_eq!(reply(&conn.rcpt([r]).await.unwrap()), "continue", "{r}");
    }
    let r = reply(&conn.rcpt(["<c@x.example>"]).await.unwrap());
    assert!(
        r.starts_with("451 4.7.1 Rate limit spread exceeded for s@xyz.com"),
        "{r}"
    );
    conn.close().await.unwrap();
    d.stop().await;
}

/// `rediss://` with the test CA, an ACL user and its password from a file:
/// the limits are counted in Redis (with `on_failure: tempfail`, any
/// failure to reach it would answer 451 4.3.0). A wrong password, or no
/// CA, and it is not reached; a password in the URL is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_an_acl_user_with_a_password_file() {
    let redis = RedisServer::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let tls = |ca: bool, password: &Path| {
        let ca = if ca {
            format!("ca_file: \"{}\", ", redis.ca_file().display())
        } else {
            String::new()
        };
        format!(
            "listen: inet:127.0.0.1:0
local_domains: [example.com]
classes:
  - {{ name: app, clients: [10.0.0.0/8], sender_domains: [xyz.com] }}
rate_limits:
  backend: redis
  redis: {{ url: \"{}\", {ca}username: {}, password_file: \"{}\", on_failure: tempfail, timeout: 2s }}
  messages_per_sender: 2/h
",
            redis.url(),
            common::redis::TLS_USER,
            password.display()
        )
    };
    let good = Config::parse(Path::new("tls.yaml"), &tls(true, &redis.password_file())).unwrap();
    let d = common::start_with(good).await;
    for _ in 0..2 {
        assert_eq!(
            mail_via(d.addr, "10.0.0.11", "<t@xyz.com>").await,
            "continue"
        );
    }
    let r = mail_via(d.addr, "10.0.0.11", "<t@xyz.com>").await;
    assert!(
        r.starts_with("451 4.7.1 Rate limit messages_per_sender"),
        "{r}"
    );
    d.stop().await;

    // A wrong password: refused by Redis, so on_failure answers.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-it\n").unwrap();
    let d =
        common::start_with(Config::parse(Path::new("tls.yaml"), &tls(true, &wrong)).unwrap()).await;
    assert_eq!(
        mail_via(d.addr, "10.0.0.12", "<t@xyz.com>").await,
        "451 4.3.0 Temporary policy failure"
    );
    d.stop().await;
    // No CA: the test CA is not one the system trusts.
    let d = common::start_with(
        Config::parse(Path::new("tls.yaml"), &tls(false, &redis.password_file())).unwrap(),
    )
    .await;
    assert_eq!(
        mail_via(d.addr, "10.0.0.13", "<t@xyz.com>").await,
        "451 4.3.0 Temporary policy failure"
    );
    d.stop().await;

    // Configuration errors, each naming its key.
    for (redis_line, key, why) in [
        (
            format!("{{ url: \"rediss://egress:pw@127.0.0.1:{}\" }}", redis.port),
            "rate_limits.redis.url",
            "password_file",
        ),
        (
            format!(
                "{{ url: \"redis://127.0.0.1:1\", ca_file: \"{}\" }}",
                redis.ca_file().display()
            ),
            "rate_limits.redis.ca_file",
            "rediss://",
        ),
        (
            "{ password_file: /nonexistent/pw }".to_string(),
            "rate_limits.redis.password_file",
            "cannot read /nonexistent/pw",
        ),
    ] {
        let text = format!(
            "listen: inet:127.0.0.1:0\nlocal_domains: [example.com]\nrate_limits:\n  backend: redis\n  redis: {redis_line}\n"
        );
        let e = Config::parse(Path::new("bad.yaml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.yaml:5") && e.contains(key) && e.contains(why),
            "{e}"
        );
    }
}

/// At connect, the cap on open connections and the connection rate are
/// one round trip to Redis, all or nothing: a connection the cap refuses
/// spends none of the rate, and one the rate refuses holds no place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_connect_a_refused_connection_counts_against_neither_limit() {
    let redis = RedisServer::start();
    let text = config_text(
        "inet:127.0.0.1:0",
        &redis.url(),
        "tempfail",
        "  concurrent_per_client: 1\n  connections_per_client: 2/h\n",
    );
    let d = common::start_with(Config::parse(Path::new("t.yaml"), &text).unwrap()).await;
    let client: SocketAddr = "10.6.6.6:1".parse().unwrap();
    let refused = "421 4.7.0 Too many connections from 10.6.6.6";
    let open = || common::open_connections(&d.shared, "10.6.6.6");
    let closed = || async {
        let deadline = Instant::now() + Duration::from_secs(5);
        while open().await != 0 {
            assert!(Instant::now() < deadline, "the place was not given back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mut a = d.open().await;
    assert_eq!(reply(&a.connect("x", client).await.unwrap()), "continue");
    assert_eq!(open().await, 1);
    // The cap refuses the second: it spends nothing of the rate.
    let mut b = d.open().await;
    assert_eq!(reply(&b.connect("x", client).await.unwrap()), refused);
    drop(b);
    a.close().await.unwrap();
    closed().await;
    let mut c = d.open().await;
    assert_eq!(reply(&c.connect("x", client).await.unwrap()), "continue");
    c.close().await.unwrap();
    closed().await;
    // The rate (2 an hour) refuses the third it counted: it takes no place.
    let mut e = d.open().await;
    assert_eq!(reply(&e.connect("x", client).await.unwrap()), refused);
    assert_eq!(open().await, 0);
    drop(e);
    d.stop().await;
}

/// A client that connects again at once takes the place its last
/// connection gave back, and pays its connection rate from cells held
/// ahead: a run of connections costs a few Redis calls, not one each. The
/// cap still holds with places kept, and a cap lowered by a reload is
/// judged in Redis at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connecting_again_reuses_its_place_without_a_round_trip() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.yaml");
    let text = |cap: u32| {
        config_text(
            "inet:127.0.0.1:0",
            &redis.url(),
            "tempfail",
            &format!("  concurrent_per_client: {cap}\n  connections_per_client: 1000/h\n"),
        )
    };
    std::fs::write(&path, text(2)).unwrap();
    let d = common::start_with(Config::load(&path).unwrap()).await;
    let client: SocketAddr = "10.7.7.7:1".parse().unwrap();
    let refused = "421 4.7.0 Too many connections from 10.7.7.7";
    let connect = || async {
        let mut c = d.open().await;
        let r = reply(&c.connect("x", client).await.unwrap());
        (c, r)
    };
    // Until the daemon has dropped all but `n` of its connections.
    let settled = |n: i64| {
        let gauge = &d.shared.metrics.open_connections;
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while gauge.load(std::sync::atomic::Ordering::Relaxed) != n {
                assert!(Instant::now() < deadline, "connections not closed");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let open = || common::open_connections(&d.shared, "10.7.7.7");

    let before = scripts_run(&redis);
    for i in 0..30 {
        let (c, r) = connect().await;
        assert_eq!(r, "continue", "connection {i}");
        c.close().await.unwrap();
        settled(0).await;
        assert!(open().await <= 1, "connection {i}: more than one place");
    }
    let calls = scripts_run(&redis) - before;
    assert!(calls <= 8, "30 connections took {calls} Redis calls");
    // The place kept is removed once not reused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while open().await != 0 {
        assert!(Instant::now() < deadline, "a place kept was never removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Two places at most, kept ones included.
    let (a, ra) = connect().await;
    let (b, rb) = connect().await;
    let (c, rc) = connect().await;
    assert_eq!(
        (ra.as_str(), rb.as_str(), rc.as_str()),
        ("continue", "continue", refused)
    );
    drop(c);
    a.close().await.unwrap();
    settled(1).await;
    let (e, re) = connect().await;
    assert_eq!(re, "continue", "the place a gave back");
    let (f, rf) = connect().await;
    assert_eq!(rf, refused);
    drop(f);
    assert_eq!(open().await, 2);

    // The cap lowered to one: the place e gives back is not reused, and b
    // still holds the one place.
    std::fs::write(&path, text(1)).unwrap();
    d.shared.reload().unwrap();
    e.close().await.unwrap();
    settled(1).await;
    let (g, rg) = connect().await;
    assert_eq!(rg, refused);
    drop(g);
    b.close().await.unwrap();
    settled(0).await;
    let (h, rh) = connect().await;
    assert_eq!(rh, "continue");
    h.close().await.unwrap();
    d.stop().await;
}
