//! A small HTTP server that takes POSTs (the incident webhook) and hands
//! each body, parsed as JSON, to the test on a channel.

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::mpsc,
};

pub struct Webhook {
    pub port: u16,
    pub posts: mpsc::UnboundedReceiver<serde_json::Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    /// Answers every request with `status` (200 for a healthy receiver).
    pub async fn start(status: u16) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind webhook");
        let port = listener.local_addr().expect("webhook addr").port();
        let (tx, posts) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    let mut length = 0usize;
                    let mut line = String::new();
                    // The request head, bounded.
                    for _ in 0..100 {
                        line.clear();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = l.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0u8; length.min(1 << 20)];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if let Ok(v) = serde_json::from_slice(&body) {
                        let _ = tx.send(v);
                    }
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = write.write_all(answer.as_bytes()).await;
                });
            }
        });
        Webhook { port, posts, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/egress", self.port)
    }

    /// The next POST, waiting at most `secs` seconds.
    pub async fn next(&mut self, secs: u64) -> Option<serde_json::Value> {
        tokio::time::timeout(std::time::Duration::from_secs(secs), self.posts.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}
