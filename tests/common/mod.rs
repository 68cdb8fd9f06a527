//! Shared by the integration tests: start the real daemon on a loopback port
//! with a scenario's configuration, and talk to it with a milter client.
#![allow(dead_code)]

pub mod dns;
pub mod postfix;
pub mod process;
pub mod redis;
pub mod sink;

use egress_milter::{config::Config, Shared};
use indymilter::{Actions, MacroStage};
use indymilter_test::{Status, TestConnection};
use std::{net::SocketAddr, path::PathBuf, sync::Arc};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub struct Daemon {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

pub fn config_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs")
        .join(name)
}

/// Starts the daemon with `tests/configs/NAME` on 127.0.0.1, any free port.
pub async fn start(name: &str) -> Daemon {
    let config = Config::load(&config_path(name)).expect("scenario config is valid");
    start_with(config).await
}

pub async fn start_with(config: Config) -> Daemon {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let shared = Shared::new(config);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(egress_milter::run(listener, shared.clone(), async move {
        let _ = stopped.await;
    }));
    Daemon {
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Daemon {
    pub async fn open(&self) -> TestConnection {
        TestConnection::configure()
            .available_actions(Actions::all())
            .open_tcp(self.addr)
            .await
            .expect("milter connection")
    }

    /// Opens a milter connection and sends connect + HELO for a client IP.
    pub async fn client(&self, ip: &str) -> TestConnection {
        let mut conn = self.open().await;
        let socket: SocketAddr = format!("{ip}:40000").parse().expect("ip");
        assert_eq!(
            conn.connect("client.test", socket).await.unwrap(),
            Status::Continue
        );
        assert_eq!(conn.helo("client.test").await.unwrap(), Status::Continue);
        conn
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("daemon task").expect("daemon run");
        }
    }
}

/// MAIL FROM with an optional SASL login sent as the `{auth_authen}` macro.
pub async fn mail(conn: &mut TestConnection, sender: &str, login: Option<&str>) -> Status {
    let mut macros = vec![("i", "QID1")];
    if let Some(l) = login {
        macros.push(("{auth_authen}", l));
    }
    conn.macros(MacroStage::Mail, macros).await.unwrap();
    conn.mail([sender]).await.unwrap()
}

/// The whole reply of a refusal ("550 5.7.1 ..."), or "continue".
pub fn reply(status: &Status) -> String {
    match status {
        Status::Continue => "continue".into(),
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            m.to_string_lossy().into_owned()
        }
        other => format!("{other:?}"),
    }
}

/// Sends the headers, end of headers, and (if not refused) a body and end of
/// message; returns the reply at the first stage that was not "continue".
pub async fn message(conn: &mut TestConnection, headers: &[(&str, &str)]) -> String {
    for (name, value) in headers {
        let s = conn.header(*name, *value).await.unwrap();
        assert_eq!(s, Status::Continue, "header {name}");
    }
    let eoh = conn.eoh().await.unwrap();
    if eoh != Status::Continue {
        return reply(&eoh);
    }
    let (_, eom) = conn.eom().await.unwrap();
    reply(&eom)
}
