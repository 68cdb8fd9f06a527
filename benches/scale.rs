//! Whether the cost of a message grows with the configuration: for each
//! dimension a configuration can grow in (classes, local domains, a class's
//! allowed addresses, rate-limit overrides, a custom limit's overrides), a
//! configuration of 10, 1,000 and 100,000 entries, the message placed where
//! a scan would find it last (its client in the last class, its sender the
//! last address, no override matching), and every dimension at once at
//! each size. Prints, per row, the time to read
//! and check the file (as `check-config` and a reload do), the memory the
//! configuration takes, and the policy's cost per message (the daemon's
//! transaction code driven directly, as `cargo bench --bench policy`).
//!
//!     cargo bench --bench scale

/// The daemon's allocator, counting the bytes held, so that the memory a
/// configuration takes is what it holds (not what the reader freed).
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn held(n: usize) {
    let now = HELD.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed on to mimalloc unchanged; only counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller's contract.
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            held(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller's contract.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as the caller's contract.
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HELD.fetch_sub(layout.size(), Ordering::Relaxed);
            held(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

use egress_milter::{
    config::Config,
    session::{Answer, Connection, Macros},
    Shared,
};
use std::alloc::{GlobalAlloc, Layout};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::{path::Path, sync::Arc, time::Instant};

const BASE: &str = "listen: inet:127.0.0.1:0
internal_networks: [10.0.0.0/8]
headers: { strip_internal_received: true }
";

const LIMITS: &str = "  messages_per_client: 100000000/h
  messages_per_sender: 100000000/h
  messages_per_recipient: 100000000/h
  recipients_per_sender: 100000000/h
";

/// The n-th of many distinct client networks, all in 10.0.0.0/8: /28s.
fn network(i: usize) -> String {
    let n = (i as u32) << 4;
    format!(
        "10.{}.{}.{}/28",
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

/// An address inside the n-th network.
fn client(i: usize) -> String {
    let n = ((i as u32) << 4) + 5;
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// A configuration of `n` entries in one dimension, and the client the
/// message comes from.
fn configuration(dimension: &str, n: usize) -> (String, String) {
    let mut y = String::from(BASE);
    let mut ip = client(0);
    match dimension {
        "classes" => {
            y.push_str("local_domains: [example.com]\nclasses:\n");
            for i in 0..n {
                let _ = writeln!(y, "  - {{ name: c{i}, clients: [{}] }}", network(i));
            }
            ip = client(n - 1);
            y.push_str("rate_limits:\n");
            y.push_str(LIMITS);
        }
        "local domains" => {
            y.push_str("local_domains:\n");
            push_domains(&mut y, n);
            y.push_str("classes: [{ name: app, clients: [10.0.0.0/8] }]\n");
            y.push_str("rate_limits:\n");
            y.push_str(LIMITS);
        }
        "allowed addresses" => {
            y.push_str("local_domains: [example.com]\nclasses:\n  - name: app\n    clients: [10.0.0.0/8]\n    sender_addresses:\n");
            push_addresses(&mut y, n);
            y.push_str("rate_limits:\n");
            y.push_str(LIMITS);
        }
        "overrides" => {
            y.push_str("local_domains: [example.com]\nclasses: [{ name: app, clients: [10.0.0.0/8] }]\nrate_limits:\n");
            y.push_str(LIMITS);
            push_overrides(&mut y, n);
        }
        "custom limit overrides" => {
            y.push_str("local_domains: [example.com]\nclasses: [{ name: app, clients: [10.0.0.0/8] }]\nrate_limits:\n");
            y.push_str(LIMITS);
            push_custom(&mut y, n);
        }
        "every dimension at once" => {
            // n local domains, n classes (the last with n allowed
            // addresses), n rate-limit overrides and n custom-limit ones.
            y.push_str("local_domains:\n");
            push_domains(&mut y, n);
            y.push_str("classes:\n");
            for i in 0..n - 1 {
                let _ = writeln!(y, "  - {{ name: c{i}, clients: [{}] }}", network(i));
            }
            let _ = writeln!(
                y,
                "  - name: app\n    clients: [{}]\n    sender_addresses:",
                network(n - 1)
            );
            push_addresses(&mut y, n);
            ip = client(n - 1);
            y.push_str("rate_limits:\n");
            y.push_str(LIMITS);
            push_overrides(&mut y, n);
            push_custom(&mut y, n);
        }
        _ => unreachable!("{dimension}"),
    }
    (y, ip)
}

/// n local domains, half of them wildcards, `example.com` last.
fn push_domains(y: &mut String, n: usize) {
    for i in 0..n - 1 {
        if i % 2 == 0 {
            let _ = writeln!(y, "  - d{i}.example");
        } else {
            let _ = writeln!(y, "  - \"*.w{i}.example\"");
        }
    }
    y.push_str("  - example.com\n");
}

/// n allowed addresses of a class, the message's sender last.
fn push_addresses(y: &mut String, n: usize) {
    for i in 0..n - 1 {
        let _ = writeln!(y, "      - a{i}@example.com");
    }
    y.push_str("      - app@example.com\n");
}

/// n rate-limit overrides of every kind, none matching the message.
fn push_overrides(y: &mut String, n: usize) {
    y.push_str("  overrides:\n");
    for i in 0..n {
        let matcher = match i % 4 {
            0 => format!("\"@o{i}.example\""),
            1 => format!("u{i}@example.net"),
            2 => format!("\"{}\"", network(i + 1_000_000 / 16)),
            _ => format!("login{i}"),
        };
        let _ = writeln!(
            y,
            "    - {{ match: {matcher}, messages_per_sender: 1000/h }}"
        );
    }
}

/// A custom limit with n overrides, none matching the message.
fn push_custom(y: &mut String, n: usize) {
    y.push_str("  custom:\n    - name: tenant\n      key: sender_domain\n      count: messages\n      rate: 100000000/h\n      overrides:\n");
    for i in 0..n {
        let _ = writeln!(y, "        - {{ match: \"@t{i}.example\", rate: 1000/h }}");
    }
}

const HEADERS: [(&str, &str); 6] = [
    ("From", "App <app@example.com>"),
    ("To", "r@example.net"),
    ("Subject", "Your order"),
    ("Date", "Mon, 23 Nov 2026 01:00:00 +0000"),
    ("Message-ID", "<x@example.com>"),
    ("Received", "from app (app [10.0.0.5]) by gw"),
];

async fn message(shared: &Arc<Shared>, ip: &str, body: &bytes::Bytes) {
    let mut c = Connection::new(shared.clone(), "app".into(), Some(ip.parse().expect("ip")));
    let macros = Macros {
        queue_id: Some("BENCH".into()),
        auth_login: None,
        rcpt_mailer: None,
    };
    assert!(c.connect().await == Answer::Continue);
    c.helo("app.example.com");
    assert!(c.mail(b"<app@example.com>", &macros).await == Answer::Continue);
    assert!(c.rcpt(b"<r@example.net>", &macros).await == Answer::Continue);
    for (n, v) in HEADERS {
        c.header(n.as_bytes(), v.as_bytes());
    }
    assert!(c.end_of_headers(&macros).await == Answer::Continue);
    c.body(body.clone());
    let (answer, _) = c.end_of_message(&macros).await;
    assert!(answer == Answer::Continue, "{answer:?}");
    c.close();
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("SCALE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 1_000, 100_000]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let body = bytes::Bytes::from(
        "Your order 4711 has shipped and will arrive on Thursday. Thank you.\r\n".repeat(30),
    );
    println!("| dimension | entries | load (check-config) | memory held | peak while reading | µs per message | × the 10-entry row |");
    println!("|---|---|---|---|---|---|---|");
    for dimension in [
        "classes",
        "local domains",
        "allowed addresses",
        "overrides",
        "custom limit overrides",
        "every dimension at once",
    ] {
        let mut first = None;
        for &n in &sizes {
            let (text, ip) = configuration(dimension, n);
            let before = HELD.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let started = Instant::now();
            let config = Config::parse(Path::new("scale.yaml"), &text).expect("config");
            let load = started.elapsed();
            let memory = HELD.load(Ordering::Relaxed).saturating_sub(before);
            let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
            let shared = Shared::new(config);
            let per = rt.block_on(async {
                for _ in 0..200 {
                    message(&shared, &ip, &body).await;
                }
                let started = Instant::now();
                let mut done = 0u32;
                while done < 200 || started.elapsed().as_millis() < 1_000 {
                    message(&shared, &ip, &body).await;
                    done += 1;
                }
                started.elapsed().as_secs_f64() / f64::from(done) * 1e6
            });
            let base = *first.get_or_insert(per);
            println!(
                "| {dimension} | {n} | {:.0} ms | {:.1} MB | {:.1} MB | {per:.1} | {:.2} |",
                load.as_secs_f64() * 1e3,
                memory as f64 / 1e6,
                peak as f64 / 1e6,
                per / base
            );
            drop(shared);
        }
    }
}
