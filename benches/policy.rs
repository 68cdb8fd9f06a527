//! The policy's own cost per message, without sockets: the daemon's
//! transaction code (`Connection`) driven directly through every stage of
//! a 2 KB message (connect, HELO, MAIL, RCPT, 7 headers, end of headers,
//! body, end of message) with the default checks on, four local rate
//! limits, content rules and header scrubbing; first with no log
//! subscriber, then with the daemon's text subscriber writing the summary
//! line of each message to /dev/null.
//!
//!     cargo bench --bench policy

/// The daemon's allocator, so that the figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use egress_milter::{
    config::Config,
    session::{Connection, Macros},
    Shared,
};
use std::{path::Path, time::Instant};

fn config() -> Config {
    let text = "listen: inet:127.0.0.1:0
local_domains: [example.com]
classes: [{ name: app, clients: [10.0.0.0/8], sender_domains: [example.com] }]
internal_networks: [10.0.0.0/8]
headers: { strip_internal_received: true, remove: [X-Originating-IP] }
rate_limits:
  connections_per_client: 100000000/m
  messages_per_client: 100000000/h
  messages_per_sender: 100000000/h
  messages_per_recipient: 100000000/h
  recipients_per_sender: 100000000/h
";
    Config::parse(Path::new("bench.yaml"), text).expect("bench config")
}

const HEADERS: [(&str, &str); 7] = [
    ("From", "App <app@example.com>"),
    ("To", "r@example.net"),
    ("Subject", "Your order"),
    ("Date", "Mon, 23 Nov 2026 01:00:00 +0000"),
    ("Message-ID", "<x@example.com>"),
    ("MIME-Version", "1.0"),
    ("Content-Type", "text/plain; charset=utf-8"),
];

async fn message(shared: &std::sync::Arc<Shared>, body: &bytes::Bytes) {
    let mut c = Connection::new(
        shared.clone(),
        "app".into(),
        Some("10.0.0.5".parse().expect("ip")),
    );
    let macros = Macros {
        queue_id: Some("BENCH".into()),
        auth_login: None,
        rcpt_mailer: None,
    };
    assert!(c.connect().await == egress_milter::session::Answer::Continue);
    c.helo("app.example.com");
    assert!(
        c.mail(b"<app@example.com>", &macros).await == egress_milter::session::Answer::Continue
    );
    assert!(c.rcpt(b"<r@example.net>", &macros).await == egress_milter::session::Answer::Continue);
    for (n, v) in HEADERS {
        c.header(n.as_bytes(), v.as_bytes());
    }
    assert!(c.end_of_headers(&macros).await == egress_milter::session::Answer::Continue);
    c.body(body.clone());
    let (answer, _) = c.end_of_message(&macros).await;
    assert!(answer == egress_milter::session::Answer::Continue);
    c.close();
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let shared = Shared::new(config());
    let body = bytes::Bytes::from(
        "Your order 4711 has shipped and will arrive on Thursday. Thank you.\r\n".repeat(30),
    );
    let run = |label: &str| {
        rt.block_on(async {
            for _ in 0..2_000 {
                message(&shared, &body).await;
            }
            let n = 100_000;
            let start = Instant::now();
            for _ in 0..n {
                message(&shared, &body).await;
            }
            let per = start.elapsed().as_secs_f64() / n as f64 * 1e6;
            println!(
                "policy, 2 KB plain message, all default checks, {label}: {per:.1} µs per message ({:.0} messages/s on one core)",
                1e6 / per
            );
        })
    };
    run("no log subscriber");
    // The daemon's subscriber, writing its summary lines to /dev/null.
    let sink = std::fs::File::create("/dev/null").expect("/dev/null");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(sink))
        .try_init();
    run("summary line per message to /dev/null");
}
