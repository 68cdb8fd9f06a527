//! The endpoint's transport: the unix socket or the TCP port, the token,
//! one JSON line each way.

use super::{answer, Answer, Envelope, Request};
use crate::config::{AdminListen, AdminSettings};
use crate::state::Shared;
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tracing::{info, warn};

/// A request line longer than this is refused: keys are addresses.
const MAX_REQUEST: usize = 4096;
/// A client that sends no request within this is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound endpoint.
pub enum Listener {
    Unix(UnixListener, PathBuf),
    /// TCP, with the token every request must give.
    Tcp(TcpListener, String),
}

/// Binds the endpoint the settings name (None for `listen: off`). The
/// socket's directory must exist (the package makes /run/egress-milter).
pub async fn bind(settings: &AdminSettings) -> std::io::Result<Option<Listener>> {
    match &settings.listen {
        AdminListen::Off => Ok(None),
        AdminListen::Unix { path, mode, group } => {
            crate::files::remove_stale_socket(path).await?;
            let l = UnixListener::bind(path)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
            if let Some(gid) = group {
                // The daemon's user must be a member of the group.
                std::os::unix::fs::chown(path, None, Some(*gid)).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot give {} to group {gid} (admin.socket_group; is the daemon's user a member?): {e}", path.display()),
                    )
                })?;
            }
            info!(path = %path.display(), mode = format!("{mode:o}"), "admin endpoint listening");
            Ok(Some(Listener::Unix(l, path.clone())))
        }
        AdminListen::Inet(addr) => {
            let token = settings
                .token()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "the TCP admin endpoint needs admin.token_file",
                    )
                })?;
            let l = TcpListener::bind(addr).await?;
            info!(%addr, "admin endpoint listening (token required)");
            Ok(Some(Listener::Tcp(l, token)))
        }
    }
}

impl Listener {
    /// The unix socket's path, to remove at shutdown.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Listener::Unix(_, p) => Some(p),
            Listener::Tcp(..) => None,
        }
    }
}

pub async fn serve(listener: Listener, shared: Arc<Shared>) {
    loop {
        let accepted = match &listener {
            Listener::Unix(l, _) => l.accept().await.map(|(s, _)| {
                let (r, w) = s.into_split();
                (
                    Box::new(r) as Box<dyn AsyncRead + Unpin + Send>,
                    Box::new(w) as Box<dyn AsyncWrite + Unpin + Send>,
                    None,
                )
            }),
            Listener::Tcp(l, token) => l.accept().await.map(|(s, peer)| {
                let (r, w) = s.into_split();
                (
                    Box::new(r) as Box<dyn AsyncRead + Unpin + Send>,
                    Box::new(w) as Box<dyn AsyncWrite + Unpin + Send>,
                    Some((token.clone(), peer)),
                )
            }),
        };
        let (read, mut write, tcp) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(read.take(2 * MAX_REQUEST as u64));
            let mut line = String::new();
            let answer = match read_line(&mut reader, &mut line).await {
                Some(n) if n > 0 && n <= MAX_REQUEST => {
                    match serde_json::from_str::<Envelope>(line.trim()) {
                        Ok(envelope) => match &tcp {
                            Some((token, peer))
                                if !same(
                                    envelope.token.as_deref().unwrap_or("").as_bytes(),
                                    token.as_bytes(),
                                ) =>
                            {
                                warn!(%peer, "admin request refused: no valid token");
                                Answer::error("authentication required")
                            }
                            _ => {
                                info!(request = ?envelope.request, "admin request");
                                answer(&shared, envelope.request).await
                            }
                        },
                        Err(e) => Answer::error(format!("not a request: {e}")),
                    }
                }
                _ => Answer::error("no request"),
            };
            let mut out = serde_json::to_string(&answer).unwrap_or_default();
            out.push('\n');
            let _ = write.write_all(out.as_bytes()).await;
        });
    }
}

/// One line, within the request timeout.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut String,
) -> Option<usize> {
    line.clear();
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(line)).await {
        Ok(Ok(n)) => Some(n),
        _ => None,
    }
}

/// Compares in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client side, for the commands: sends one request to the daemon's
/// endpoint and returns its answer.
pub async fn request(settings: &AdminSettings, request: Request) -> std::io::Result<Answer> {
    let timeout = |what: &'static str| std::io::Error::new(std::io::ErrorKind::TimedOut, what);
    let token = match &settings.listen {
        AdminListen::Inet(_) => Some(
            settings
                .token()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?
                .unwrap_or_default(),
        ),
        _ => None,
    };
    let mut line = serde_json::to_string(&Envelope { token, request })?;
    line.push('\n');
    let mut answer = String::new();
    match &settings.listen {
        AdminListen::Off => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the admin endpoint is off (admin.listen: off)",
            ))
        }
        AdminListen::Unix { path, .. } => {
            let mut s = tokio::time::timeout(REQUEST_TIMEOUT, UnixStream::connect(path))
                .await
                .map_err(|_| timeout("connect timed out"))??;
            s.write_all(line.as_bytes()).await?;
            tokio::time::timeout(REQUEST_TIMEOUT, s.read_to_string(&mut answer))
                .await
                .map_err(|_| timeout("no answer"))??;
        }
        AdminListen::Inet(addr) => {
            let mut s = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
                .await
                .map_err(|_| timeout("connect timed out"))??;
            s.write_all(line.as_bytes()).await?;
            tokio::time::timeout(REQUEST_TIMEOUT, s.read_to_string(&mut answer))
                .await
                .map_err(|_| timeout("no answer"))??;
        }
    }
    serde_json::from_str(answer.trim()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the daemon's answer is not understood (a different version?): {e}"),
        )
    })
}

/// Where the endpoint is, for messages.
pub fn describe(settings: &AdminSettings) -> String {
    match &settings.listen {
        AdminListen::Off => "nowhere (admin.listen: off)".into(),
        AdminListen::Unix { path, .. } => path.display().to_string(),
        AdminListen::Inet(a) => a.to_string(),
    }
}
