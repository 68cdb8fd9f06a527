//! MAIL FROM decisions per second with a class whose `sender_addresses`
//! come from a real slapd (started here on loopback, as the tests start
//! it): with the cache warm (every lookup a hit), and with every lookup a
//! miss that goes to LDAP, one at a time and 32 at once on one connection;
//! and, for reference, the same list in a file. Needs slapd (run
//! scripts/test.sh once, which installs it).
//!
//!     cargo bench --bench sources

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/it/common/child.rs"]
#[allow(dead_code)]
mod child;
#[path = "../tests/it/common/slapd.rs"]
#[allow(dead_code)]
mod slapd;
#[path = "../tests/it/common/tls.rs"]
mod tls;

use egress_milter::{
    config::Config,
    session::{Answer, Connection, Macros},
    Shared,
};
use std::{path::Path, sync::Arc, time::Instant};

/// A free loopback port (for slapd).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn config(source: &str) -> Config {
    let text = format!(
        "listen: inet:127.0.0.1:0
local_domains: [example.com]
sources:
  senders: {source}
classes: [{{ name: app, clients: [10.0.0.0/8], sender_addresses: {{ source: senders }} }}]
"
    );
    Config::parse(Path::new("bench.yaml"), &text).expect("bench config")
}

/// One MAIL FROM on a fresh connection; true if accepted.
async fn mail(shared: &Arc<Shared>, sender: &str) -> bool {
    let mut c = Connection::new(
        shared.clone(),
        "app".into(),
        Some("10.0.0.5".parse().expect("ip")),
    );
    let macros = Macros::default();
    assert!(c.connect().await == Answer::Continue);
    let ok = c.mail(sender.as_bytes(), &macros).await == Answer::Continue;
    c.close();
    ok
}

fn report(label: &str, n: usize, secs: f64) {
    println!(
        "MAIL FROM, sender_addresses from {label}: {:.0} decisions/s ({:.1} µs each)",
        n as f64 / secs,
        secs / n as f64 * 1e6
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let slapd = slapd::Slapd::start();
    let ldap = format!(
        "{{ ldap: {{ url: \"{}\", base: \"{}\", filter: \"(mail=%s)\" }}, cache: {{ ttl: 10m, negative_ttl: 10m, max_entries: 1000000 }} }}",
        slapd.url(),
        slapd::BASE
    );
    rt.block_on(async {
        // Warm: the three senders are looked up once, then always cached.
        let shared = Shared::new(config(&ldap));
        let known = [
            "<alice@example.com>",
            "<bob@example.com>",
            "<carol@example.com>",
        ];
        for s in known {
            assert!(mail(&shared, s).await, "{s} accepted");
        }
        let n = 100_000;
        let start = Instant::now();
        for i in 0..n {
            mail(&shared, known[i % 3]).await;
        }
        report("LDAP, cache warm", n, start.elapsed().as_secs_f64());

        // Every lookup a miss: a sender never seen, answered by slapd.
        let n = 5_000;
        let start = Instant::now();
        for i in 0..n {
            assert!(!mail(&shared, &format!("<u{i}@example.com>")).await);
        }
        report(
            "LDAP, every lookup a miss, one at a time",
            n,
            start.elapsed().as_secs_f64(),
        );
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let per = n / 32;
        for t in 0..32 {
            let shared = shared.clone();
            tasks.spawn(async move {
                for i in 0..per {
                    mail(&shared, &format!("<c{t}-{i}@example.com>")).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        report(
            "LDAP, every lookup a miss, 32 at once",
            per * 32,
            start.elapsed().as_secs_f64(),
        );

        // The same decision from a file source of 100,000 addresses.
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("senders.txt");
        let list: String = (0..100_000)
            .map(|i| format!("u{i}@example.com\n"))
            .collect();
        std::fs::write(&file, list).expect("write list");
        let shared = Shared::new(config(&format!("{{ file: {} }}", file.display())));
        let n = 100_000;
        let start = Instant::now();
        for i in 0..n {
            mail(&shared, &format!("<u{}@example.com>", i % 200_000)).await;
        }
        report("a file of 100,000", n, start.elapsed().as_secs_f64());
    });
}
