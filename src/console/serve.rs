//! The console's socket (TCP, TCP with TLS, or unix) and its routes;
//! every response carries the headers that keep a browser safe with it.

use crate::config::{ConsoleListen, ConsoleSettings};
use crate::state::Shared;
use axum::http::{header, HeaderValue};
use axum::routing::{get, post};
use axum::Router;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::mpsc;

/// The console's bound socket.
pub enum ConsoleListener {
    Tcp(TcpListener),
    Tls(TlsListener),
    Unix(UnixListener, std::path::PathBuf),
}

impl ConsoleListener {
    /// The unix socket's path, removed when the daemon stops.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Unix(_, p) => Some(p),
            _ => None,
        }
    }
}

/// TCP connections whose TLS handshake is done, each made on its own
/// task (a slow client never holds up the others).
pub struct TlsListener {
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_config(settings: &ConsoleSettings) -> io::Result<Option<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let Some(tls) = &settings.tls else {
        return Ok(None);
    };
    let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        io::Error::other(format!("console.tls.{what}: {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .map_err(|e| bad("cert_file", &tls.cert_file, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("cert_file", &tls.cert_file, &e))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| bad("key_file", &tls.key_file, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(format!("console.tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("cert_file", &tls.cert_file, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(config))
}

/// Binds the console's socket (a start-up error when it cannot be).
pub async fn bind(settings: &ConsoleSettings) -> io::Result<ConsoleListener> {
    match &settings.listen {
        ConsoleListen::Unix(path) => {
            if let Ok(m) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if m.file_type().is_socket() {
                    let _ = std::fs::remove_file(path);
                }
            }
            let l = UnixListener::bind(path)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
            Ok(ConsoleListener::Unix(l, path.clone()))
        }
        ConsoleListen::Tcp(addr) => {
            let tcp = TcpListener::bind(addr).await?;
            let Some(config) = tls_config(settings)? else {
                return Ok(ConsoleListener::Tcp(tcp));
            };
            let addr = tcp.local_addr()?;
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let (tx, ready) = mpsc::channel(64);
            tokio::spawn(async move {
                loop {
                    let (stream, peer) = match tcp.accept().await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(target: "egress_milter::console", "accept: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    if tx.is_closed() {
                        return;
                    }
                    let (acceptor, tx) = (acceptor.clone(), tx.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls)) => {
                                let _ = tx.send((tls, peer)).await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(target: "egress_milter::console", %peer, "TLS handshake: {e}")
                            }
                            Err(_) => {
                                tracing::debug!(target: "egress_milter::console", %peer, "TLS handshake timed out")
                            }
                        }
                    });
                }
            });
            Ok(ConsoleListener::Tls(TlsListener { ready, addr }))
        }
    }
}

/// The console's routes.
pub fn router(app: Arc<super::App>) -> Router {
    use super::{actions, pages};
    Router::new()
        .route("/", get(pages::home))
        .route("/style.css", get(pages::style))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/incidents", get(pages::incidents))
        .route("/incident", get(pages::incident))
        .route("/held", get(pages::held))
        .route("/held/{id}", get(pages::message))
        .route("/limits", get(pages::limits))
        .route("/reputation", get(pages::reputation))
        .route("/suppressions", get(pages::suppressions))
        .route("/decisions", get(pages::decisions))
        .route("/audit", get(pages::audit))
        .route("/act", post(actions::act))
        .route(
            "/l/{token}",
            get(actions::link_form).post(actions::link_act),
        )
        .fallback(pages::not_found)
        .layer(axum::middleware::map_response(safe_headers))
        .with_state(app)
}

/// No script, no framing, no caching, no referrer, no sniffing.
async fn safe_headers(mut r: axum::response::Response) -> axum::response::Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Serves the console until the task is aborted.
pub async fn serve(listener: ConsoleListener, shared: Arc<Shared>) {
    let app = router(Arc::new(super::App::new(shared)));
    let result = match listener {
        ConsoleListener::Tcp(l) => axum::serve(l, app).await,
        ConsoleListener::Tls(l) => axum::serve(l, app).await,
        ConsoleListener::Unix(l, _) => axum::serve(l, app).await,
    };
    if let Err(e) = result {
        tracing::error!(target: "egress_milter::console", "the console stopped: {e}");
    }
}
