//! Messages per second through the milter socket, with DKIM signing (RSA
//! 2048 and Ed25519) and without, for 2 KB and 100 KB messages: full
//! transactions (connect, HELO, MAIL, RCPT, headers, body, end of message)
//! from concurrent milter connections, against the real daemon on a unix
//! socket (as Postfix commonly connects; over TCP the test client's own
//! Nagle delays would be measured instead).
//!
//!     cargo bench --bench signing

use egress_milter::{config::Config, dkim::generate};
mod common;

use std::{os::unix::fs::PermissionsExt, path::Path};

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

async fn report(label: &str, socket: &Path, size: usize) {
    let line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n";
    let body: Vec<u8> = line.iter().copied().cycle().take(size).collect();
    let f = common::run(
        socket,
        "text/plain; charset=utf-8",
        body,
        MESSAGES_PER_CONNECTION,
    )
    .await;
    println!(
        "{label:<20} {:>4} KB: {:>6.0} msg/s   p50 {:>6.2} ms  p99 {:>6.2} ms",
        size / 1000,
        f.per_second,
        f.p50_ms,
        f.p99_ms
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
            "{} milter connections x {MESSAGES_PER_CONNECTION} messages each",
            common::CONNECTIONS
        );
        for (label, alg) in [
            ("no signing", None),
            ("rsa-2048 signing", Some("rsa")),
            ("ed25519 signing", Some("ed25519")),
        ] {
            let daemon = common::Daemon::start(dir.path(), config(dir.path(), alg)).await;
            for size in [2_000, 100_000] {
                report(label, &daemon.socket, size).await;
            }
            daemon.stop().await;
        }
    });
}
