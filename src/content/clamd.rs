//! ClamAV's clamd: the message streamed with `INSTREAM` over sessions
//! (`IDSESSION`) kept open between scans. Several clamds are tried in
//! order; one that fails (refused, reset, silent past the timeout) is
//! skipped for `antivirus.backoff` and the next one scans.

use crate::config::{AntivirusSettings, Clamd};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

/// Bytes per INSTREAM chunk.
const CHUNK: usize = 64 * 1024;
/// Idle sessions kept per clamd.
const IDLE: usize = 16;
/// The longest answer read from clamd.
const MAX_ANSWER: usize = 4096;

/// What a scan found.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Scan {
    Clean,
    /// A virus, by clamd's signature name.
    Virus(String),
    /// clamd answered, with an error (a size limit, say): no verdict.
    Error(String),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A session with clamd: `IDSESSION` sent, answers prefixed by an id.
struct Session {
    io: BufReader<Box<dyn Io>>,
}

struct Endpoint {
    addr: Clamd,
    down_until: Mutex<Option<Instant>>,
    idle: Mutex<Vec<Session>>,
}

pub struct Client {
    endpoints: Vec<Endpoint>,
}

impl Client {
    pub fn new(settings: &AntivirusSettings) -> Self {
        Self {
            endpoints: settings
                .clamd
                .iter()
                .map(|addr| Endpoint {
                    addr: addr.clone(),
                    down_until: Mutex::new(None),
                    idle: Mutex::new(Vec::new()),
                })
                .collect(),
        }
    }

    /// Scans a message with the first clamd that answers. `Err` when none
    /// could: every one failed or rests after a failure.
    pub async fn scan(
        &self,
        message: &[u8],
        settings: &AntivirusSettings,
    ) -> Result<(Scan, &Clamd), String> {
        if message.len() > settings.max_size {
            return Ok((
                Scan::Error(format!(
                    "message of {} bytes is over antivirus.max_size ({} bytes)",
                    message.len(),
                    settings.max_size
                )),
                &self.endpoints.first().ok_or("no clamd configured")?.addr,
            ));
        }
        let mut failures = Vec::new();
        for ep in &self.endpoints {
            if ep.resting() {
                failures.push(format!("{}: resting after a failure", ep.addr));
                continue;
            }
            match tokio::time::timeout(settings.timeout, ep.scan(message)).await {
                Ok(Ok(scan)) => return Ok((scan, &ep.addr)),
                Ok(Err(e)) => {
                    ep.failed(settings.backoff, &e.to_string());
                    failures.push(format!("{}: {e}", ep.addr));
                }
                Err(_) => {
                    let e = format!("no answer within {:?}", settings.timeout);
                    ep.failed(settings.backoff, &e);
                    failures.push(format!("{}: {e}", ep.addr));
                }
            }
        }
        Err(format!("no clamd could scan ({})", failures.join("; ")))
    }
}

impl Endpoint {
    fn resting(&self) -> bool {
        let until = *self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    fn failed(&self, backoff: Duration, why: &str) {
        let mut until = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        if until.is_none_or(|t| Instant::now() >= t) {
            tracing::warn!(clamd = %self.addr, ?backoff, "clamd failed, skipped meanwhile: {why}");
        }
        *until = Some(Instant::now() + backoff);
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    async fn connect(&self) -> std::io::Result<Session> {
        let io: Box<dyn Io> = match &self.addr {
            Clamd::Unix(p) => Box::new(UnixStream::connect(p).await?),
            Clamd::Inet(a) => {
                let s = TcpStream::connect(a.as_str()).await?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
        };
        let mut io = BufReader::new(io);
        io.get_mut().write_all(b"zIDSESSION\0").await?;
        Ok(Session { io })
    }

    /// One scan: on an idle session if there is one (clamd may have closed
    /// it meanwhile: then once more on a new one), else on a new one.
    async fn scan(&self, message: &[u8]) -> std::io::Result<Scan> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(mut s) = idle {
            if let Ok(scan) = s.instream(message).await {
                self.keep(s);
                return Ok(scan);
            }
        }
        let mut s = self.connect().await?;
        let scan = s.instream(message).await?;
        self.keep(s);
        Ok(scan)
    }

    fn keep(&self, s: Session) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE {
            idle.push(s);
        }
    }
}

impl Session {
    async fn instream(&mut self, message: &[u8]) -> std::io::Result<Scan> {
        let w = self.io.get_mut();
        w.write_all(b"zINSTREAM\0").await?;
        for chunk in message.chunks(CHUNK) {
            w.write_all(&(chunk.len() as u32).to_be_bytes()).await?;
            w.write_all(chunk).await?;
        }
        w.write_all(&0u32.to_be_bytes()).await?;
        w.flush().await?;
        let mut answer = Vec::new();
        let n = (&mut self.io)
            .take(MAX_ANSWER as u64)
            .read_until(0, &mut answer)
            .await?;
        if n == 0 || answer.last() != Some(&0) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "clamd closed the session",
            ));
        }
        answer.pop();
        Ok(parse(&String::from_utf8_lossy(&answer)))
    }
}

/// clamd's answer to INSTREAM, with or without a session id:
/// `1: stream: OK`, `stream: Eicar-Signature FOUND`,
/// `INSTREAM size limit exceeded. ERROR`.
pub fn parse(answer: &str) -> Scan {
    let a = answer.trim();
    // In a session, answers start with the request's id.
    let a = match a.split_once(": ") {
        Some((id, rest)) if id.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => a,
    };
    let body = a.strip_prefix("stream: ").unwrap_or(a);
    if body == "OK" {
        Scan::Clean
    } else if let Some(sig) = body.strip_suffix(" FOUND") {
        Scan::Virus(sig.trim().to_string())
    } else {
        Scan::Error(a.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(parse("1: stream: OK"), Scan::Clean);
        assert_eq!(parse("stream: OK"), Scan::Clean);
        assert_eq!(
            parse("3: stream: Egress.Test.EICAR.UNOFFICIAL FOUND"),
            Scan::Virus("Egress.Test.EICAR.UNOFFICIAL".into())
        );
        assert_eq!(
            parse("2: INSTREAM size limit exceeded. ERROR"),
            Scan::Error("INSTREAM size limit exceeded. ERROR".into())
        );
    }
}
