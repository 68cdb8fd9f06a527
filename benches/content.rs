//! Messages per second through the content checks (MIME walk, attachment
//! names, ZIP listing, rules) for 2 KB, 100 KB and 5 MB multipart messages
//! with an attachment, and the daemon's peak memory: full
//! transactions (connect, HELO, MAIL, RCPT, headers, body, end of message)
//! from concurrent milter connections, against the real daemon on a unix
//! socket (as Postfix commonly connects; over TCP the test client's own
//! Nagle delays would be measured instead).
//!
//!     cargo bench --bench content

use egress_milter::{config::Config, Shared};
use indymilter::Actions;
use indymilter_test::{Status, TestConnection};
use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

const CONNECTIONS: usize = 8;

fn config() -> Config {
    let text = "listen: inet:127.0.0.1:0\nlocal_domains: [example.com]\nclasses: [{ name: app, clients: [10.0.0.0/8] }]\n\
                content: { max_message_size: 20MB, custom: [{ name: lottery, subject: \"(?i)lottery\", body: \"(?i)you have won\", score: 5 }] }\n";
    Config::parse(Path::new("bench.yaml"), text).expect("bench config")
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A multipart message of about `size` bytes: a text part and a base64
/// attachment (a ZIP, so that its names are listed too).
fn message_body(size: usize) -> Vec<u8> {
    use std::io::Write;
    let mut zip = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut zip);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file("report.pdf", opts).expect("zip");
        let filler: Vec<u8> = (0..size * 3 / 4).map(|i| (i % 251) as u8).collect();
        z.write_all(&filler).expect("zip");
        z.finish().expect("zip");
    }
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, zip.into_inner());
    let mut body = String::from("--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, the report is attached.\r\n--b1\r\n");
    body.push_str("Content-Type: application/zip; name=\"report.zip\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"report.zip\"\r\n\r\n");
    for line in b64.as_bytes().chunks(76) {
        body.push_str(std::str::from_utf8(line).unwrap_or(""));
        body.push_str("\r\n");
    }
    body.push_str("--b1--\r\n");
    body.into_bytes()
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
        ("Content-Type", "multipart/mixed; boundary=\"b1\""),
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

async fn run(label: &str, socket: &Path, size: usize, messages: usize) {
    let body = message_body(size);
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
            let mut latencies = Vec::with_capacity(messages);
            for _ in 0..messages {
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
        "{label:<16} {:>5} KB: {:>6.0} msg/s   p50 {:>7.2} ms  p99 {:>7.2} ms   peak RSS {} MB",
        size / 1000,
        all.len() as f64 / secs,
        p(0.5),
        p(0.99),
        peak_rss_kb() / 1024
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        println!(
            "{CONNECTIONS} milter connections; RSS before: {} MB",
            peak_rss_kb() / 1024
        );
        let socket = dir.path().join("milter.sock");
        let listen = egress_milter::config::Listen::Unix(socket.clone());
        let listener = egress_milter::server::bind(&listen, 0o600)
            .await
            .expect("bind");
        let shared = Shared::new(config());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(egress_milter::run(listener, shared, async move {
            let _ = stopped.await;
        }));
        // Peak RSS is the process's high-water mark: the sizes run from
        // small to large so each row's figure is that size's peak.
        for (size, messages) in [(2_000, 250), (100_000, 100), (5_000_000, 4)] {
            run("content checks", &socket, size, messages).await;
        }
        let _ = stop.send(());
        let _ = daemon.await;
    });
}
