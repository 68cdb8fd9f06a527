//! Messages per second through the content checks (MIME walk, attachment
//! names, ZIP listing, rules) for 2 KB, 100 KB and 5 MB multipart messages
//! with an attachment, and the daemon's peak memory: full
//! transactions (connect, HELO, MAIL, RCPT, headers, body, end of message)
//! from concurrent milter connections, against the real daemon on a unix
//! socket (as Postfix commonly connects; over TCP the test client's own
//! Nagle delays would be measured instead).
//!
//!     cargo bench --bench content

use egress_milter::config::Config;
mod common;

use std::path::Path;

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

async fn report(label: &str, socket: &Path, size: usize, messages: usize) {
    let f = common::run(
        socket,
        "multipart/mixed; boundary=\"b1\"",
        message_body(size),
        messages,
    )
    .await;
    println!(
        "{label:<16} {:>5} KB: {:>6.0} msg/s   p50 {:>7.2} ms  p99 {:>7.2} ms   peak RSS {} MB",
        size / 1000,
        f.per_second,
        f.p50_ms,
        f.p99_ms,
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
            "{} milter connections; RSS before: {} MB",
            common::CONNECTIONS,
            peak_rss_kb() / 1024
        );
        let daemon = common::Daemon::start(dir.path(), config()).await;
        // Peak RSS is the process's high-water mark: the sizes run from
        // small to large so each row's figure is that size's peak.
        for (size, messages) in [(2_000, 250), (100_000, 100), (5_000_000, 4)] {
            report("content checks", &daemon.socket, size, messages).await;
        }
        daemon.stop().await;
    });
}
