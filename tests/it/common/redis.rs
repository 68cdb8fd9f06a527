//! A real redis-server on a free loopback port, killed when dropped.

use super::child::{ready, Guard};
use std::{
    net::TcpStream,
    process::{Command, Stdio},
    time::Duration,
};

pub struct RedisServer {
    pub port: u16,
    process: Option<Guard>,
    /// A TLS-only server with an ACL user: its config, certificates and
    /// password file.
    tls: Option<tempfile::TempDir>,
}

/// The ACL user of [`RedisServer::start_tls`] and its password.
pub const TLS_USER: &str = "egress";
pub const TLS_PASSWORD: &str = "s3cret-pw";

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut r = RedisServer {
            port,
            process: None,
            tls: None,
        };
        r.restart();
        r
    }

    /// A server that speaks TLS only (a certificate for 127.0.0.1 from a
    /// test CA), where the default user is off and only the ACL user
    /// [`TLS_USER`] may log in.
    pub fn start_tls() -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir");
        super::tls::make_certs(dir.path());
        std::fs::write(dir.path().join("password"), format!("{TLS_PASSWORD}\n")).expect("password");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let d = |f: &str| dir.path().join(f).display().to_string();
        std::fs::write(
            dir.path().join("redis.conf"),
            format!(
                "port 0\nbind 127.0.0.1\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
                 tls-ca-cert-file {}\ntls-auth-clients no\nuser default off\n\
                 user {TLS_USER} on >{TLS_PASSWORD} ~* &* +@all\nsave \"\"\nappendonly no\n",
                d("cert.pem"),
                d("key.pem"),
                d("ca.pem")
            ),
        )
        .expect("redis.conf");
        let mut r = RedisServer {
            port,
            process: None,
            tls: Some(dir),
        };
        r.restart();
        r
    }

    /// The TLS server's CA file and password file.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.tls
            .as_ref()
            .expect("a TLS server")
            .path()
            .join("ca.pem")
    }

    pub fn password_file(&self) -> std::path::PathBuf {
        self.tls
            .as_ref()
            .expect("a TLS server")
            .path()
            .join("password")
    }

    /// Starts (again) on the same port, with no persistence.
    pub fn restart(&mut self) {
        assert!(
            std::path::Path::new("/usr/bin/redis-server").exists(),
            "redis-server is not installed: run scripts/test.sh, which installs it"
        );
        let mut cmd = Command::new("/usr/bin/redis-server");
        match &self.tls {
            Some(dir) => cmd.arg(dir.path().join("redis.conf")),
            None => cmd
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"]),
        };
        self.process = Some(Guard::spawn(
            "redis-server",
            cmd.stdout(Stdio::null()).stderr(Stdio::null()),
        ));
        ready(
            Duration::from_secs(10),
            "redis-server did not listen: ",
            || TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string()),
        );
    }

    /// Kills the server (SIGKILL: as a crash, not a shutdown).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}
