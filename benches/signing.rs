//! Messages per second through the milter socket, with DKIM signing (RSA
//! 2048 and Ed25519) and without, for 2 KB and 100 KB messages: full
//! transactions (connect, HELO, MAIL, RCPT, headers, body, end of message)
//! from concurrent milter connections, against the real daemon on a unix
//! socket (as Postfix commonly connects; over TCP the test client's own
//! Nagle delays would be measured instead).
//!
//!     cargo bench --bench signing

use egress_milter::{config::Config, dkim::generate, Shared};
use indymilter::Actions;
use indymilter_test::{Status, TestConnection};
use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::Path,
    time::{Duration, Instant},
};

const CONNECTIONS: usize = 8;
const MESSAGES_PER_CONNECTION: usize = 250;

fn config(dir: &Path, algorithm: Option<&str>) -> Config {
    let mut text = String::from(
        "listen: inet:127.0.0.1:0\nlocal_domains: [example.com]\nclasses: [{ name: app, clients: [10.0.0.0/8] }]\n\
         content: { max_message_size: 10MB }\n",
    );
    if let Some(alg) = algorithm {
        let (pem, _) = generate(alg, 2048).expect("key");
        let path = dir.join(format!("{alg}.pem"));
        std::fs::write(&path, pem).expect("write key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        text.push_str(&format!(
            "dkim:\n  keys:\n    - {{ domain: example.com, selector: s1, file: {} }}\n",
            path.display()
        ));
    }
    Config::parse(Path::new("bench.yaml"), &text).expect("bench config")
}

async fn transaction(conn: &mut TestConnection, body: &[u8]) -> Duration {
    let start = Instant::now();
    conn.macros(indymilter::MacroStage::Mail, [("i", "BENCH")])
        .await
        .expect("macros");
    assert_eq!(
        conn.mail(["<app@example.com>"]).await.expect("mail"),
        Status::Continue
    );
    assert_eq!(
        conn.rcpt(["<r@gmail.com>"]).await.expect("rcpt"),
        Status::Continue
    );
    for (n, v) in [
        ("From", "App <app@example.com>"),
        ("To", "r@gmail.com"),
        ("Subject", "Your order"),
        ("Date", "Mon, 23 Nov 2026 01:00:00 +0000"),
        ("Message-ID", "<x@example.com>"),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=utf-8"),
    ] {
        conn.header(n, v).await.expect("header");
    }
    assert_eq!(conn.eoh().await.expect("eoh"), Status::Continue);
    // The MTA sends the body in chunks of at most 64 KB.
    for chunk in body.chunks(65_535) {
        conn.body(chunk.to_vec()).await.expect("body");
    }
    let (_, status) = conn.eom().await.expect("eom");
    assert_eq!(status, Status::Continue);
    start.elapsed()
}

async fn run(label: &str, socket: &Path, size: usize) {
    let line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n";
    let body: Vec<u8> = line.iter().copied().cycle().take(size).collect();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let body = body.clone();
        let socket = socket.to_path_buf();
        tasks.push(tokio::spawn(async move {
            let mut conn = TestConnection::configure()
                .available_actions(Actions::all())
                .open_unix(&socket)
                .await
                .expect("connect");
            let client: SocketAddr = format!("10.0.0.{}:1", c + 1).parse().expect("addr");
            conn.connect("app", client).await.expect("connect stage");
            conn.helo("app").await.expect("helo");
            let mut latencies = Vec::with_capacity(MESSAGES_PER_CONNECTION);
            for _ in 0..MESSAGES_PER_CONNECTION {
                latencies.push(transaction(&mut conn, &body).await);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    let p =
        |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "{label:<20} {:>4} KB: {:>6.0} msg/s   p50 {:>6.2} ms  p99 {:>6.2} ms",
        size / 1000,
        all.len() as f64 / secs,
        p(0.5),
        p(0.99)
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        println!("{CONNECTIONS} milter connections x {MESSAGES_PER_CONNECTION} messages each");
        for (label, alg) in [
            ("no signing", None),
            ("rsa-2048 signing", Some("rsa")),
            ("ed25519 signing", Some("ed25519")),
        ] {
            let socket = dir.path().join("milter.sock");
            let listen = egress_milter::config::Listen::Unix(socket.clone());
            let listener = egress_milter::server::bind(&listen, 0o600)
                .await
                .expect("bind");
            let shared = Shared::new(config(dir.path(), alg));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let daemon = tokio::spawn(egress_milter::run(listener, shared, async move {
                let _ = stopped.await;
            }));
            for size in [2_000, 100_000] {
                run(label, &socket, size).await;
            }
            let _ = stop.send(());
            let _ = daemon.await;
        }
    });
}
