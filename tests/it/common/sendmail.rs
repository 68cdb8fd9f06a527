//! A private Sendmail on loopback for end-to-end tests, run from the
//! Debian packages unpacked into a private root (scripts/test.sh does that:
//! `target/sendmail-root`), never installed: its own .mc/.cf, queue and pid
//! files in a directory of the test, `INPUT_MAIL_FILTER` at the milter,
//! every message relayed to a test sink. Stopped when dropped.

use super::child::{ready, Guard};
use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

pub struct Sendmail {
    pub smtp_port: u16,
    process: Guard,
    _dir: tempfile::TempDir,
}

/// Where scripts/test.sh unpacked sendmail-bin, sendmail-base, sendmail-cf.
pub fn root() -> PathBuf {
    std::env::var_os("EGRESS_SENDMAIL_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sendmail-root"))
}

impl Sendmail {
    /// Starts Sendmail with the milter at `milter_port` on 127.0.0.1 and
    /// every message relayed to `[127.0.0.1]:sink_port`.
    pub fn start(milter_port: u16, sink_port: u16) -> Sendmail {
        let root = root();
        let bin = root.join("usr/libexec/sendmail/sendmail");
        let cf_dir = root.join("usr/share/sendmail/cf");
        assert!(
            bin.exists() && cf_dir.exists(),
            "Sendmail is not unpacked in {}: run scripts/test.sh, which unpacks it",
            root.display()
        );
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("sendmail dir");
        let d = dir.path();
        let queue = d.join("queue");
        std::fs::create_dir(&queue).expect("queue dir");
        std::fs::set_permissions(&queue, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("queue mode");
        let smtp_port = super::free_port();
        // The shipped snippet's INPUT_MAIL_FILTER and macro lines, pointed
        // at the test's milter.
        let snippet = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/sendmail.mc"
        ))
        .expect("packaging/sendmail.mc")
        .replace(
            "inet:7357@127.0.0.1",
            &format!("inet:{milter_port}@127.0.0.1"),
        );
        assert!(snippet.contains("INPUT_MAIL_FILTER"), "{snippet}");
        let mc = format!(
            "divert(-1)\ndivert(0)dnl
include(`{cf}/m4/cf.m4')dnl
OSTYPE(`linux')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`QUEUE_DIR', `{queue}')dnl
define(`ALIAS_FILE', `')dnl
define(`STATUS_FILE', `{d}/statistics')dnl
define(`confPID_FILE', `{d}/sendmail.pid')dnl
define(`confDELIVERY_MODE', `interactive')dnl
define(`SMART_HOST', `[127.0.0.1]')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {sink_port}')dnl
define(`ESMTP_MAILER_ARGS', `TCP $h {sink_port}')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`nocanonify')dnl
FEATURE(`no_default_msa')dnl
DAEMON_OPTIONS(`Port={smtp_port}, Addr=127.0.0.1, Name=MTA')dnl
{snippet}
MAILER(`smtp')dnl
",
            cf = cf_dir.display(),
            queue = queue.display(),
            d = d.display(),
        );
        std::fs::write(d.join("sendmail.mc"), &mc).expect("sendmail.mc");
        let cf = Command::new("m4")
            .arg(d.join("sendmail.mc"))
            .output()
            .expect("m4 is not installed: run scripts/test.sh, which installs it");
        assert!(
            cf.status.success(),
            "m4: {}",
            String::from_utf8_lossy(&cf.stderr)
        );
        std::fs::write(d.join("sendmail.cf"), &cf.stdout).expect("sendmail.cf");
        // Sendmail hangs at start unless its host name is qualified: give it
        // one in a UTS namespace of its own.
        let log = std::fs::File::create(d.join("sendmail.err")).expect("sendmail.err");
        let mut cmd = Command::new("unshare");
        cmd.args(["-u", "sh", "-c"])
            .arg(format!(
                "hostname gw.example.com && exec {} -C {} -bD",
                bin.display(),
                d.join("sendmail.cf").display()
            ))
            .stdout(Stdio::null())
            .stderr(log);
        let mut sm = Sendmail {
            smtp_port,
            process: Guard::spawn("sendmail", &mut cmd).gentle(),
            _dir: dir,
        };
        sm.wait_listening();
        sm
    }

    fn wait_listening(&mut self) {
        let err = self.dir().join("sendmail.err");
        let process = &mut self.process;
        let port = self.smtp_port;
        ready(Duration::from_secs(30), "sendmail did not listen: ", || {
            let log = || std::fs::read_to_string(&err).unwrap_or_default();
            assert!(process.running(), "sendmail exited: {}", log());
            TcpStream::connect(("127.0.0.1", port))
                .map(|_| ())
                .map_err(|_| log())
        });
    }

    /// Runs the Sendmail binary with this instance's .cf (and the same
    /// qualified host name); returns its standard output.
    pub fn command(&self, args: &[&str]) -> String {
        let bin = root().join("usr/libexec/sendmail/sendmail");
        let out = Command::new("unshare")
            .args(["-u", "sh", "-c"])
            .arg(format!(
                "hostname gw.example.com && exec {} -C {} {}",
                bin.display(),
                self.dir().join("sendmail.cf").display(),
                args.join(" ")
            ))
            .output()
            .expect("run sendmail");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}
