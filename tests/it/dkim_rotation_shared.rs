//! `dkim.rotation` on several gateways (`rate_limits.backend: redis`), as
//! real processes on one real redis-server, with a real BIND 9 serving
//! the zone: one gateway drives (the lease), the keys reach the others
//! sealed through Redis, every gateway switches at the moment recorded,
//! and when the driver is killed midway another finishes the rotation.

use crate::common::{self, bind::Bind, cli, process::Running, redis::RedisServer};
use crate::dkim_spf::send;
use egress_milter::config::Config;
use egress_milter::limiter::RedisLimiter;
use egress_milter::rotation::ring::{Algorithm, Key, Ring, State};
use indymilter_test::TestConnection;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A gateway's `milter.yaml` in `dir`: its own port and `key_dir`, the
/// shared Redis and secret, a hand key published in BIND.
fn gateway_config(bind: &Bind, redis: &RedisServer, dir: &Path, shared: &Path) -> (PathBuf, u16) {
    let port = common::free_port();
    let path = dir.join("milter.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:{port}
local_domains: [example.com]
classes:
  - {{ name: app, clients: [10.0.0.0/8], sender_domains: [example.com] }}
dns: {{ nameservers: [\"127.0.0.1:{bind}\"], timeout: 2s }}
rate_limits:
  backend: redis
  redis: {{ url: \"{url}\", key_prefix: \"gw:\", timeout: 2s }}
dkim:
  keys: [{{ domain: example.com, selector: hand, file: \"{shared}/hand.pem\" }}]
  rotation:
    domains: [example.com]
    key_dir: \"{dir}/keys\"
    check_every: 1s
    dns_port: {bind}
    secret_file: \"{shared}/secret\"
admin: {{ listen: \"unix:{dir}/admin.sock\" }}
",
            bind = bind.port,
            url = redis.url(),
            dir = dir.display(),
            shared = shared.display(),
        ),
    )
    .unwrap();
    (path, port)
}

/// A milter connection to the gateway on `port` (waiting, bounded, for
/// it to listen), after connect and HELO.
async fn connect(port: u16) -> TestConnection {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    common::until(Duration::from_secs(10), "the gateway listening", || {
        std::net::TcpStream::connect(addr)
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    let mut conn = TestConnection::configure()
        .available_actions(indymilter_test::Actions::all())
        .open_tcp(addr)
        .await
        .expect("milter connection");
    conn.connect(
        "client.test",
        std::net::SocketAddr::from(([10, 0, 0, 1], 40000)),
    )
    .await
    .unwrap();
    conn.helo("client.test").await.unwrap();
    conn
}

/// The selector of a message's one DKIM signature.
fn selector(message: &str) -> String {
    message
        .split("DKIM-Signature:")
        .nth(1)
        .and_then(|sig| {
            sig.split(';')
                .map(str::trim)
                .find_map(|t| t.strip_prefix("s=").map(String::from))
        })
        .unwrap_or_default()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The shared state, as Redis holds it.
async fn ring(r: &RedisLimiter) -> Ring {
    egress_milter::rotation::shared::load(r).await.unwrap().0
}

async fn rsa(r: &RedisLimiter) -> Option<Key> {
    ring(r)
        .await
        .keys
        .into_iter()
        .filter(|k| k.algorithm == Algorithm::Rsa)
        .max_by_key(|k| k.created)
}

/// The pid in `dkim status`'s "driven by HOST:PID:..." line.
fn driver_pid(config: &Path) -> Result<u32, String> {
    let out = cli::with_config(config, &["dkim", "status"]);
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("driven by "))
        .and_then(|d| d.split(':').nth(1))
        .and_then(|p| p.parse().ok())
        .ok_or(out.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_share_the_keys_switch_together_and_survive_the_driver() {
    let bind = Bind::start("");
    let redis = RedisServer::start();
    let shared = tempfile::tempdir().unwrap();
    let (pem, record) = egress_milter::dkim::generate("rsa", 2048).unwrap();
    std::fs::write(shared.path().join("hand.pem"), pem).unwrap();
    bind.update(&format!(
        "update add hand._domainkey.example.com 60 TXT {}",
        egress_milter::dkim::txt_strings(&record)
    ));
    std::fs::write(
        shared.path().join("secret"),
        "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=\n",
    )
    .unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (config_a, port_a) = gateway_config(&bind, &redis, dir_a.path(), shared.path());
    let (config_b, port_b) = gateway_config(&bind, &redis, dir_b.path(), shared.path());
    let r = RedisLimiter::new(&Config::load(&config_a).unwrap().rate_limits.redis).unwrap();

    let mut a = Some(Running::start(&config_a));
    let mut b = Some(Running::start(&config_b));
    // One of them makes the keys (the record not published: pending).
    // Bounded generously: two daemons start, one makes an RSA key.
    let pending = common::until(Duration::from_secs(60), "pending keys in Redis", || {
        futures_executor(rsa(&r))
            .filter(|k| k.state == State::Pending)
            .ok_or("none yet".to_string())
    })
    .await;
    let driver = common::until(Duration::from_secs(10), "a driver named", || {
        driver_pid(&config_a)
    })
    .await;
    // No private key is in Redis in the clear.
    let redis_cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-u", &redis.url(), "--raw"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let sealed: Vec<String> = redis_cli(&["keys", "gw:dkim:key:*"])
        .lines()
        .map(|k| redis_cli(&["get", k]))
        .collect();
    assert_eq!(sealed.len(), 2, "one sealed key per algorithm");
    assert!(sealed.iter().all(|s| !s.contains("PRIVATE")));

    // The driver dies midway; the other gateway takes the lease.
    let (killed_config, survivor_config) = if a.as_ref().unwrap().pid() == driver {
        a.as_ref().unwrap().signal("-KILL");
        a = None;
        (config_a.clone(), config_b.clone())
    } else {
        assert_eq!(b.as_ref().unwrap().pid(), driver);
        b.as_ref().unwrap().signal("-KILL");
        b = None;
        (config_b.clone(), config_a.clone())
    };
    let survivor = match (&a, &b) {
        (Some(x), None) | (None, Some(x)) => x.pid(),
        _ => unreachable!(),
    };
    common::until(
        Duration::from_secs(15),
        "the survivor drives",
        || match driver_pid(&survivor_config) {
            Ok(p) if p == survivor => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    // The killed gateway back, as a follower.
    let restarted = Running::start(&killed_config);
    if a.is_none() {
        a = Some(restarted);
    } else {
        b = Some(restarted);
    }
    let _gateways = (a, b);
    let mut conn_a = connect(port_a).await;
    let mut conn_b = connect(port_b).await;
    for conn in [&mut conn_a, &mut conn_b] {
        let (reply, message) = send(conn, "app@example.com", &[]).await;
        assert_eq!(reply, "continue");
        assert_eq!(selector(&message), "hand", "pending keys do not sign");
    }

    // The record published: the driver makes the key active from a
    // moment ahead, and both gateways switch then.
    bind.update(&format!(
        "update add {}. 60 TXT {}",
        pending.name(),
        egress_milter::dkim::txt_strings(&pending.record)
    ));
    let active = common::until(Duration::from_secs(20), "the RSA key active", || {
        futures_executor(rsa(&r))
            .filter(|k| k.state == State::Active)
            .ok_or("not yet".to_string())
    })
    .await;
    assert_eq!(active.selector, pending.selector);
    let switch_ms = active.since * 1000;
    assert!(
        switch_ms > now_ms() + 500,
        "the moment is recorded ahead: {} vs now {}",
        switch_ms,
        now_ms()
    );
    let status = cli::with_config(&survivor_config, &["dkim", "status"]);
    assert!(
        status.stdout.contains("every gateway switches then"),
        "{}",
        status.stdout
    );
    // Messages through both gateways until well past the moment.
    let mut seen = Vec::new();
    while now_ms() < switch_ms + 1500 {
        for (name, conn) in [("a", &mut conn_a), ("b", &mut conn_b)] {
            let start = now_ms();
            let (_, message) = send(conn, "app@example.com", &[]).await;
            seen.push((name, start, now_ms(), selector(&message), message));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, start, end, sel, _) in &seen {
        if *end + 50 < switch_ms {
            assert_eq!(sel, "hand", "gateway {name} at {start}: before {switch_ms}");
        }
        if *start > switch_ms + 300 {
            assert_eq!(
                sel, &active.selector,
                "gateway {name} at {start}: after {switch_ms}"
            );
        }
    }
    for gw in ["a", "b"] {
        let before = seen
            .iter()
            .filter(|s| s.0 == gw && s.2 + 50 < switch_ms)
            .count();
        let after: Vec<_> = seen
            .iter()
            .filter(|s| s.0 == gw && s.1 > switch_ms + 300)
            .collect();
        assert!(
            before > 0 && !after.is_empty(),
            "gateway {gw}: {before} before, {} after",
            after.len()
        );
        // Signed with the key that came through Redis, and verified
        // against BIND's answer.
        assert!(
            common::verify_dkim_python(&after[0].4, &active.name(), &active.record),
            "{}",
            after[0].4
        );
    }
    // Each gateway keeps its own copy of the private key.
    for dir in [dir_a.path(), dir_b.path()] {
        assert!(egress_milter::rotation::store::Store::at(&dir.join("keys"))
            .key_path(&active)
            .exists());
    }
}

/// Runs a future to completion from a synchronous closure (the test's
/// polling loops).
fn futures_executor<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// With the Redis backend the keys are sealed with `secret_file`: its
/// absence, or a file that is not 32 bytes of base64, is a config error
/// naming the file, the line and the key.
#[test]
fn shared_rotation_needs_a_secret_of_32_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "c2hvcnQ=\n").unwrap();
    let base = "listen: inet:127.0.0.1:0
local_domains: [example.com]
rate_limits:
  backend: redis
  redis: { url: \"redis://127.0.0.1:1\" }
dkim:
  rotation:
    domains: [example.com]
";
    let e = Config::parse(Path::new("gw.yaml"), base)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("gw.yaml:8") && e.contains("dkim.rotation.secret_file"),
        "{e}"
    );
    let text = format!("{base}    secret_file: \"{}\"\n", short.display());
    let e = Config::parse(Path::new("gw.yaml"), &text)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("gw.yaml:9") && e.contains("5 bytes, expected 32"),
        "{e}"
    );
    // With the local backend, no secret is needed.
    let local = base.replace("  backend: redis\n", "  backend: local\n");
    assert!(Config::parse(Path::new("gw.yaml"), &local).is_ok());
}
