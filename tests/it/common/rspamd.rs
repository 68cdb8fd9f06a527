//! A private rspamd on loopback ports (Debian's package, a minimal
//! configuration, the modules that would query DNS turned off). Its
//! compiled Hyperscan database is kept under the target directory, so only
//! the first start of a run takes long. Stopped when dropped.

use super::child::{ready, Guard};
use std::{path::PathBuf, process::Command, time::Duration};

pub struct Rspamd {
    pub url: String,
    process: Guard,
}

impl Rspamd {
    pub fn start() -> Rspamd {
        assert!(
            std::path::Path::new("/usr/bin/rspamd").exists(),
            "rspamd is not installed: run scripts/test.sh, which installs it"
        );
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let db = tmp.join("rspamd-db");
        let dir = tmp.join(format!("rspamd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in [
            dir.join("etc/local.d"),
            dir.join("run"),
            dir.join("log"),
            db.clone(),
        ] {
            std::fs::create_dir_all(&d).expect("rspamd dirs");
        }
        for m in [
            "rbl",
            "hfilter",
            "spf",
            "dkim",
            "dmarc",
            "fuzzy_check",
            "asn",
        ] {
            std::fs::write(
                dir.join(format!("etc/local.d/{m}.conf")),
                "enabled = false;\n",
            )
            .expect("local.d");
        }
        let (normal, controller) = (super::free_port(), super::free_port());
        let conf = format!(
            ".include \"$CONFDIR/common.conf\"\n\
             options {{\n  pidfile = \"$RUNDIR/rspamd.pid\";\n  .include \"$CONFDIR/options.inc\"\n}}\n\
             logging {{\n  type = \"file\";\n  filename = \"$LOGDIR/rspamd.log\";\n  .include \"$CONFDIR/logging.inc\"\n}}\n\
             worker \"normal\" {{\n  bind_socket = \"127.0.0.1:{normal}\";\n  .include \"$CONFDIR/worker-normal.inc\"\n}}\n\
             worker \"controller\" {{\n  bind_socket = \"127.0.0.1:{controller}\";\n  .include \"$CONFDIR/worker-controller.inc\"\n}}\n"
        );
        std::fs::write(dir.join("rspamd.conf"), conf).expect("rspamd.conf");
        let chown = Command::new("chown")
            .args(["-R", "_rspamd:_rspamd"])
            .arg(dir.join("run"))
            .arg(dir.join("log"))
            .arg(&db)
            .status();
        assert!(chown.is_ok_and(|s| s.success()), "chown rspamd dirs");
        let status = Command::new("/usr/bin/rspamd")
            .args(["-u", "_rspamd", "-g", "_rspamd", "-c"])
            .arg(dir.join("rspamd.conf"))
            .arg(format!("--var=LOCAL_CONFDIR={}", dir.join("etc").display()))
            .arg(format!("--var=DBDIR={}", db.display()))
            .arg(format!("--var=RUNDIR={}", dir.join("run").display()))
            .arg(format!("--var=LOGDIR={}", dir.join("log").display()))
            .status()
            .expect("start rspamd");
        assert!(status.success(), "rspamd did not start");
        let r = Rspamd {
            url: format!("http://127.0.0.1:{normal}"),
            process: Guard::pid_file("rspamd", dir.join("run/rspamd.pid")),
        };
        // The first start compiles its regex database: up to a minute here.
        ready(
            Duration::from_secs(90),
            "rspamd never answered /ping",
            || ping(normal).then_some(()).ok_or_else(String::new),
        );
        r
    }

    /// Stops rspamd (SIGTERM to its main process) and waits until it is gone.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /ping HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.contains("pong")
}
