//! A real clamd (Debian's clamav-daemon) on a free loopback port, with a
//! database the test writes: one signature for the EICAR test string (no
//! freshclam here). Killed when dropped.

use super::child::Guard;
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The EICAR anti-virus test file, 68 bytes.
pub const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// The name clamd gives it with the test's database.
pub const EICAR_NAME: &str = "Egress.Test.EICAR.UNOFFICIAL";

pub struct Clamd {
    pub port: u16,
    pub socket: PathBuf,
    process: Guard,
    dir: tempfile::TempDir,
}

impl Clamd {
    /// Starts clamd on a free port (another, if another process took the
    /// port first).
    pub fn start() -> Clamd {
        for _ in 0..5 {
            if let Some(c) = Self::try_start(super::free_port()) {
                return c;
            }
        }
        panic!("clamd did not start on any of 5 free ports");
    }

    /// Starts clamd on this TCP port (and a unix socket in its directory).
    pub fn start_on(port: u16) -> Clamd {
        Self::try_start(port).unwrap_or_else(|| panic!("clamd could not listen on {port}"))
    }

    fn try_start(port: u16) -> Option<Clamd> {
        assert!(
            std::path::Path::new("/usr/sbin/clamd").exists(),
            "clamd is not installed: run scripts/test.sh, which installs clamav-daemon"
        );
        let dir = tempfile::tempdir().expect("clamd dir");
        let db = dir.path().join("db");
        std::fs::create_dir(&db).expect("db dir");
        let hex: String = EICAR.bytes().map(|b| format!("{b:02x}")).collect();
        std::fs::write(
            db.join("test.ndb"),
            format!("Egress.Test.EICAR:0:*:{hex}\n"),
        )
        .expect("test.ndb");
        let socket = dir.path().join("clamd.ctl");
        let conf = dir.path().join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "DatabaseDirectory {db}\nTCPSocket {port}\nTCPAddr 127.0.0.1\nLocalSocket {sock}\nForeground yes\nUser root\nLogFile {d}/clamd.log\nPidFile {d}/clamd.pid\nStreamMaxLength 1M\n",
                db = db.display(),
                sock = socket.display(),
                d = dir.path().display()
            ),
        )
        .expect("clamd.conf");
        let process = Guard::spawn(
            "clamd",
            Command::new("/usr/sbin/clamd")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let mut c = Clamd {
            port,
            socket,
            process,
            dir,
        };
        c.wait_ready().then_some(c)
    }

    /// Waits (at most 60 s) for `PONG` to `PING` on our own unix socket
    /// (the TCP port could be another's); false if clamd exited.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&self.socket) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut answer = [0u8; 16];
                if s.write_all(b"zPING\0").is_ok() {
                    if let Ok(n) = s.read(&mut answer) {
                        if answer[..n].starts_with(b"PONG") {
                            // Ours answers: is the TCP port ours too?
                            return self.process.running()
                                && TcpStream::connect(("127.0.0.1", self.port)).is_ok();
                        }
                    }
                }
            }
            if !self.process.running() {
                // Its port was taken, most likely.
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "clamd did not answer: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("clamd.log")).unwrap_or_default()
    }

    /// Sends a signal (`-STOP`, `-CONT`) to this clamd, if it runs.
    pub fn signal(&self, sig: &str) {
        self.process.signal(sig);
    }

    /// Kills clamd (as a crash).
    pub fn kill(&mut self) {
        self.process.kill();
    }
}
