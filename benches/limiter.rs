//! Rate-limiter figures: decisions per second (local and Redis backends),
//! bytes per tracked key at 1 million keys, and memory under a flood of
//! 10 million distinct keys against the default cap. Incident signals:
//! memory and time for 10 million distinct recipients from 1,000 logins.
//!
//!     cargo bench --bench limiter
//!
//! The Redis figures need /usr/bin/redis-server (started here on a free
//! loopback port); without it they are skipped with a note.

use egress_milter::config::{Backend, RateLimits};
use egress_milter::limiter::{Check, LimitId, LimitName, Limiter, LocalLimiter, Outcome, Rate};
use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn check(name: LimitName, key: String) -> Check {
    Check {
        name: name.into(),
        key,
        rate: Rate {
            count: 100,
            period: Duration::from_secs(3600),
        },
        n: 1,
        member: None,
    }
}

/// A message's MAIL FROM batch: client, sender and login.
fn batch(i: u64, senders: u64) -> Vec<Check> {
    vec![
        check(
            LimitName::MessagesPerClient,
            format!("10.0.{}.{}", (i / 256) % 256, i % 256),
        ),
        check(
            LimitName::MessagesPerSender,
            format!("user{}@example.com", i % senders),
        ),
        check(LimitName::MessagesPerUser, format!("user{}", i % senders)),
    ]
}

/// The same, with seven custom limits beside: ten limits in the stage's
/// batch (tenant, network, class, pairs, bounces-style keys).
fn batch10(i: u64, senders: u64) -> Vec<Check> {
    let mut b = batch(i, senders);
    let user = i % senders;
    for (name, key) in [
        ("tenant_msgs", format!("tenant{}.example", user % 500)),
        ("net_msgs", format!("10.0.{}.0/24", (i / 256) % 256)),
        ("class_msgs", "app".to_string()),
        ("user_domain", format!("user{user}+gmail.example")),
        ("tenant_hourly", format!("tenant{}.example", user % 500)),
        (
            "client_daily",
            format!("10.0.{}.{}", (i / 256) % 256, i % 256),
        ),
        ("sender_daily", format!("user{user}@example.com")),
    ] {
        let mut c = check(LimitName::MessagesPerClient, key);
        c.name = LimitId::Custom(egress_milter::limiter::intern(name));
        b.push(c);
    }
    b
}

fn local_throughput() {
    local_throughput_of("3 limits", batch);
    local_throughput_of("10 limits", batch10);
}

fn local_throughput_of(what: &str, batch: fn(u64, u64) -> Vec<Check>) {
    let limiter = Arc::new(LocalLimiter::new(1_000_000));
    let n = 1_000_000u64;
    let threads = 2;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let l = limiter.clone();
            s.spawn(move || {
                for i in (t..n).step_by(threads as usize) {
                    let _ = l.check(&batch(i, 50_000));
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "local backend: {n} MAIL FROM decisions ({what} each) on {threads} threads in {secs:.2}s = {:.0} decisions/s",
        n as f64 / secs
    );
}

fn bytes_per_key() {
    let before = rss_bytes();
    let limiter = LocalLimiter::new(1_000_000);
    for i in 0..1_000_000u64 {
        let c = [check(
            LimitName::MessagesPerSender,
            format!("s{i}@example.com"),
        )];
        assert_eq!(limiter.check(&c), Outcome::Allowed);
    }
    let after = rss_bytes();
    let keys = limiter.tracked_keys();
    println!(
        "memory: {keys} tracked keys use {:.1} MB of RSS = {:.0} bytes per key",
        (after - before) as f64 / 1e6,
        (after - before) as f64 / keys as f64
    );
}

fn flood() {
    let before = rss_bytes();
    let limiter = LocalLimiter::new(1_000_000);
    let start = Instant::now();
    let mut peak = 0;
    for i in 0..10_000_000u64 {
        let c = [check(
            LimitName::MessagesPerSender,
            format!("flood{i}@example.net"),
        )];
        let _ = limiter.check(&c);
        if i % 1_000_000 == 0 {
            peak = peak.max(rss_bytes() - before);
        }
    }
    peak = peak.max(rss_bytes() - before);
    println!(
        "flood: 10000000 distinct senders in {:.1}s with max_keys 1000000: {} keys tracked, {} evicted, peak RSS growth {:.1} MB",
        start.elapsed().as_secs_f64(),
        limiter.tracked_keys(),
        limiter.evictions(),
        peak as f64 / 1e6
    );
}

fn redis_throughput() {
    if !std::path::Path::new("/usr/bin/redis-server").exists() {
        println!("redis backend: skipped (no /usr/bin/redis-server)");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(16379);
    let mut server = match Command::new("/usr/bin/redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(s) => s,
        Err(e) => {
            println!("redis backend: skipped ({e})");
            return;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut config = RateLimits {
        backend: Backend::Redis,
        ..RateLimits::default()
    };
    config.redis.url = format!("redis://127.0.0.1:{port}");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for (what, batch) in [
        ("3 limits", batch as fn(u64, u64) -> Vec<Check>),
        ("10 limits", batch10),
    ] {
        redis_throughput_of(&runtime, &config, what, batch);
    }
    let _ = server.kill();
    let _ = server.wait();
}

fn redis_throughput_of(
    runtime: &tokio::runtime::Runtime,
    config: &RateLimits,
    what: &str,
    batch: fn(u64, u64) -> Vec<Check>,
) {
    runtime.block_on(async {
        let limiter = Arc::new(Limiter::new(config));
        let n = 100_000u64;
        let concurrency = 32;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let l = limiter.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (t..n).step_by(concurrency as usize) {
                    let s = Instant::now();
                    let _ = l.check(&batch(i, 50_000)).await;
                    latencies.push(s.elapsed());
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        let secs = start.elapsed().as_secs_f64();
        all.sort();
        let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)].as_micros();
        let failures = limiter.redis_failures();
        println!(
            "redis backend: {n} MAIL FROM decisions ({what}, one round trip each), {concurrency} concurrent, in {secs:.2}s = {:.0} decisions/s; latency p50 {}us p99 {}us p999 {}us; {failures} failures",
            n as f64 / secs,
            p(0.5),
            p(0.99),
            p(0.999)
        );
    });
}

/// 10 million messages, each to a new recipient at a new domain, from
/// 1,000 logins, through two distinct-count signals (recipients and
/// recipient domains, by login) whose thresholds are never reached.
fn incident_flood() {
    let config = egress_milter::config::Config::parse(
        std::path::Path::new("bench.yaml"),
        "listen: inet:127.0.0.1:1
local_domains: [example.com]
incidents:
  signals:
    - { name: spray, key: user, count: distinct_recipient_domains, above: 100000000/h }
    - { name: rcpts, key: user, count: distinct_recipients, above: 100000000/h }
",
    )
    .expect("bench config");
    let settings = &config.incidents;
    let before = rss_bytes();
    let incidents = egress_milter::incidents::Incidents::new(settings);
    let logins: Vec<String> = (0..1000).map(|i| format!("user{i}@example.com")).collect();
    let start = Instant::now();
    let t0 = 1_796_180_400_000u64;
    let mut peak = 0;
    let mut rcpt = vec![String::new()];
    for i in 0..10_000_000u64 {
        let keys = egress_milter::incidents::Keys {
            user: Some(&logins[(i % 1000) as usize]),
            class: Some("staff"),
            ..Default::default()
        };
        rcpt[0] = format!("r{i}@d{i}.example.net");
        let event = egress_milter::incidents::Event::Accepted {
            queue_id: None,
            recipients: &rcpt,
        };
        // 10 million messages over 50 minutes: one window.
        let opened = incidents.observe_local(t0 + i * 300 / 1000, &keys, &event, settings, false);
        assert!(opened.is_empty());
        if i % 1_000_000 == 0 {
            peak = peak.max(rss_bytes().saturating_sub(before));
        }
    }
    peak = peak.max(rss_bytes().saturating_sub(before));
    println!(
        "incident signals: 10000000 distinct recipients (and domains) from 1000 logins in {:.1}s: {} keys tracked, peak RSS growth {:.1} MB ({:.0} KB per login and signal)",
        start.elapsed().as_secs_f64(),
        incidents.tracked_keys(),
        peak as f64 / 1e6,
        peak as f64 / 1e3 / 2000.0
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` must not run this.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    local_throughput();
    bytes_per_key();
    flood();
    incident_flood();
    redis_throughput();
}
