//! A real BIND 9 (Debian's `named`) on a free loopback port, authoritative
//! for example.com from a zone of its own, updated by RFC 2136 with a
//! TSIG key (as the tests publish records, and as `publish: rfc2136`
//! does). No system instance: its own configuration, directory and port.
//! Killed when dropped.

use super::child::Guard;
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The TSIG key's name and secret (base64).
pub const TSIG_NAME: &str = "egress-update";
pub const TSIG_SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==";

pub struct Bind {
    pub port: u16,
    _process: Guard,
    pub dir: tempfile::TempDir,
}

impl Bind {
    /// example.com: its SOA, NS ns1.example.com at 127.0.0.1, and
    /// `records` (lines of zone file, relative names).
    pub fn start(records: &str) -> Bind {
        let port = super::free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(
            d.join("example.com.zone"),
            format!(
                "$TTL 60\n@ IN SOA ns1.example.com. hostmaster.example.com. 1 60 60 600 1\n\
                 @ IN NS ns1.example.com.\nns1 IN A 127.0.0.1\n{records}\n"
            ),
        )
        .expect("zone");
        std::fs::write(d.join("tsig.key"), Self::key_text()).expect("key");
        std::fs::write(
            d.join("named.conf"),
            format!(
                "include \"{dir}/tsig.key\";\n\
                 options {{\n  directory \"{dir}\";\n  pid-file \"{dir}/named.pid\";\n\
                 listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n\
                 recursion no;\n  dnssec-validation no;\n  notify no;\n\
                 session-keyfile \"{dir}/session.key\";\n  managed-keys-directory \"{dir}\";\n}};\n\
                 controls {{ }};\n\
                 zone \"example.com\" {{\n  type primary;\n  file \"{dir}/example.com.zone\";\n\
                 journal \"{dir}/example.com.jnl\";\n  allow-update {{ key \"{TSIG_NAME}\"; }};\n}};\n",
                dir = d.display()
            ),
        )
        .expect("named.conf");
        let process = Guard::spawn(
            "named",
            Command::new("/usr/sbin/named")
                .args(["-g", "-4", "-c"])
                .arg(d.join("named.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let bind = Bind {
            port,
            _process: process,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while bind.dig("ns1.example.com", "A").is_empty() {
            assert!(
                Instant::now() < deadline,
                "named did not answer on port {port}: run scripts/test.sh, which installs bind9"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        bind
    }

    /// The TSIG key in BIND's form, as `tsig-keygen` writes it.
    pub fn key_text() -> String {
        format!(
            "key \"{TSIG_NAME}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{TSIG_SECRET}\";\n}};\n"
        )
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("tsig.key")
    }

    /// What the server answers for NAME TYPE (dig +short), TXT strings
    /// joined.
    pub fn dig(&self, name: &str, kind: &str) -> String {
        let out = Command::new("dig")
            .args(["+short", "+norecurse", "+time=2", "+tries=1", "-p"])
            .arg(self.port.to_string())
            .args(["@127.0.0.1", name, kind])
            .output()
            .expect("dig is not installed: run scripts/test.sh, which installs bind9-dnsutils");
        let text = String::from_utf8_lossy(&out.stdout);
        if kind == "TXT" {
            text.lines()
                .map(|l| l.replace("\" \"", "").trim_matches('"').to_string())
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            text.trim().to_string()
        }
    }

    /// An RFC 2136 update signed with the TSIG key (nsupdate): `commands`
    /// such as `update add NAME 60 TXT "..."`.
    pub fn update(&self, commands: &str) {
        let script = format!(
            "server 127.0.0.1 {}\nzone example.com\n{commands}\nsend\n",
            self.port
        );
        let mut child = Command::new("nsupdate")
            .arg("-y")
            .arg(format!("hmac-sha256:{TSIG_NAME}:{TSIG_SECRET}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsupdate");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("nsupdate");
        assert!(
            out.status.success(),
            "nsupdate failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
