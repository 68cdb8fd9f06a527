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
        Self::start_with_ttl(&[("example.com", records)], 60)
    }

    /// A zone for each (name, records), each with its SOA (TTL 1: answers
    /// and NXDOMAINs are cached a second at most) and NS, each updatable
    /// with the TSIG key; every query logged (`query_log`).
    pub fn start_zones(zones: &[(&str, &str)]) -> Bind {
        Self::start_with_ttl(zones, 1)
    }

    fn start_with_ttl(zones: &[(&str, &str)], ttl: u32) -> Bind {
        let port = super::free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let mut declared = String::new();
        for (zone, records) in zones {
            std::fs::write(
                d.join(format!("{zone}.zone")),
                format!(
                    "$TTL {ttl}\n@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 60 60 600 1\n\
                     @ IN NS ns1.{zone}.\nns1 IN A 127.0.0.1\n{records}\n"
                ),
            )
            .expect("zone");
            declared.push_str(&format!(
                "zone \"{zone}\" {{\n  type primary;\n  file \"{dir}/{zone}.zone\";\n\
                 journal \"{dir}/{zone}.jnl\";\n  allow-update {{ key \"{TSIG_NAME}\"; }};\n}};\n",
                dir = d.display()
            ));
        }
        std::fs::write(d.join("tsig.key"), Self::key_text()).expect("key");
        std::fs::write(
            d.join("named.conf"),
            format!(
                "include \"{dir}/tsig.key\";\n\
                 options {{\n  directory \"{dir}\";\n  pid-file \"{dir}/named.pid\";\n\
                 listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n\
                 recursion no;\n  dnssec-validation no;\n  notify no;\n  querylog yes;\n\
                 session-keyfile \"{dir}/session.key\";\n  managed-keys-directory \"{dir}\";\n}};\n\
                 controls {{ }};\n{declared}",
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
                .stderr(std::fs::File::create(d.join("named.log")).expect("named.log")),
        );
        let bind = Bind {
            port,
            _process: process,
            dir,
        };
        // Ready once it says so (every zone loaded, updates taken) and
        // every zone answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        let log = bind.dir.path().join("named.log");
        while !std::fs::read_to_string(&log)
            .is_ok_and(|l| l.lines().any(|l| l.ends_with(" running")))
            || zones.iter().any(|(z, _)| bind.dig(z, "SOA").is_empty())
        {
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

    /// The queries answered so far, one line each, as BIND logs them
    /// (`05-Dec-2026 06:50:01.123 queries: info: client ... query: NAME IN A ...`).
    pub fn query_log(&self) -> String {
        // -g sends every log line to stderr, kept in named.log.
        std::fs::read_to_string(self.dir.path().join("named.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" query: "))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Stops answering (SIGSTOP: queries then time out) or answers again.
    pub fn pause(&self, paused: bool) {
        assert!(self._process.signal(if paused { "-STOP" } else { "-CONT" }));
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
        self.update_zone("example.com", commands)
    }

    /// [`update`](Self::update) in another of its zones.
    pub fn update_zone(&self, zone: &str, commands: &str) {
        let script = format!(
            "server 127.0.0.1 {}\nzone {zone}\n{commands}\nsend\n",
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
            "nsupdate failed: {}{}\nnamed's log ends:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("named.log"))
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.contains(" query: "))
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
