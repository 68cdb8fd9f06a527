//! A small SMTP sink for the next hop of a test MTA: it accepts every
//! message and hands it, envelope and content, to the test on a channel.

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

#[derive(Clone, Debug)]
pub struct Delivered {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: String,
}

impl Delivered {
    /// The Subject: header's value ("" when there is none).
    pub fn subject(&self) -> String {
        self.data
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or("")
            .to_string()
    }
}

pub struct Sink {
    pub port: u16,
    pub messages: mpsc::UnboundedReceiver<Delivered>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let port = listener.local_addr().expect("sink addr").port();
        let (tx, messages) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, tx.clone()));
            }
        });
        Sink {
            port,
            messages,
            task,
        }
    }

    /// The next delivered message, waiting at most `secs` seconds.
    pub async fn next(&mut self, secs: u64) -> Option<Delivered> {
        tokio::time::timeout(std::time::Duration::from_secs(secs), self.messages.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(stream: TcpStream, tx: mpsc::UnboundedSender<Delivered>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let _ = write.write_all(b"220 sink.test ESMTP\r\n").await;
    let mut current = Delivered {
        mail_from: String::new(),
        rcpt_to: vec![],
        data: String::new(),
    };
    while let Ok(Some(line)) = lines.next_line().await {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250-sink.test\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            current = Delivered {
                mail_from: line[10..].to_string(),
                rcpt_to: vec![],
                data: String::new(),
            };
            b"250 2.1.0 Ok\r\n"
        } else if upper.starts_with("RCPT TO:") {
            current.rcpt_to.push(line[8..].to_string());
            b"250 2.1.5 Ok\r\n"
        } else if upper == "DATA" {
            let _ = write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await;
            while let Ok(Some(l)) = lines.next_line().await {
                if l == "." {
                    break;
                }
                // SMTP transparency (RFC 5321 §4.5.2): a leading dot was
                // doubled by the client. Lines end in CRLF, as received.
                current.data.push_str(
                    l.strip_prefix('.')
                        .filter(|_| l.starts_with(".."))
                        .unwrap_or(&l),
                );
                current.data.push_str("\r\n");
            }
            let _ = tx.send(current.clone());
            b"250 2.0.0 Ok: delivered\r\n"
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
            return;
        } else {
            b"250 2.0.0 Ok\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
