//! The MTA's side of full milter transactions, shared by the benches:
//! concurrent connections on the daemon's unix socket, each sending
//! messages (connect, HELO, MAIL, RCPT, headers, body, end of message).

use indymilter::Actions;
use indymilter_test::{Status, TestConnection};
use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

pub const CONNECTIONS: usize = 8;

async fn transaction(conn: &mut TestConnection, content_type: &str, body: &[u8]) -> Duration {
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
        ("Content-Type", content_type),
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

/// Messages per second and latency percentiles, over `CONNECTIONS`
/// connections sending `messages` messages each.
pub struct Figures {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub async fn run(socket: &Path, content_type: &str, body: Vec<u8>, messages: usize) -> Figures {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let body = body.clone();
        let socket = socket.to_path_buf();
        let content_type = content_type.to_string();
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
                latencies.push(transaction(&mut conn, &content_type, &body).await);
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
    Figures {
        per_second: all.len() as f64 / secs,
        p50_ms: p(0.5),
        p99_ms: p(0.99),
    }
}

/// The real daemon serving a configuration on a unix socket in `dir`.
pub struct Daemon {
    pub socket: std::path::PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Daemon {
    pub async fn start(dir: &Path, config: egress_milter::config::Config) -> Daemon {
        let socket = dir.join("milter.sock");
        let listen = egress_milter::config::Listen::Unix(socket.clone());
        let listener = egress_milter::server::bind(&listen, 0o600)
            .await
            .expect("bind");
        let shared = egress_milter::Shared::new(config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(egress_milter::run(listener, shared, async move {
            let _ = stopped.await;
        }));
        Daemon { socket, stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
