//! A real OpenLDAP slapd (Debian's) on free loopback ports, with a
//! directory the test writes: the people of example.com, their addresses
//! and aliases, and a bind account for egress-milter. ldaps:// on a second
//! port and StartTLS on the first, with a certificate authority made for
//! the test. Killed when dropped.

use super::child::Guard;
use super::tls::run;
use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

pub const BASE: &str = "dc=example,dc=com";
pub const BIND_DN: &str = "cn=egress,dc=example,dc=com";
pub const BIND_PASSWORD: &str = "egress-secret";

/// uid, then the mail values (the first is the person's own address).
pub const PEOPLE: &[(&str, &[&str])] = &[
    (
        "alice",
        &[
            "alice@example.com",
            "alice.smith@example.com",
            "sales@example.com",
        ],
    ),
    ("bob", &["bob@example.com"]),
    ("carol", &["carol@example.com"]),
];

pub struct Slapd {
    pub port: u16,
    pub tls_port: u16,
    process: Guard,
    pub dir: tempfile::TempDir,
}

fn ldif() -> String {
    let mut out = format!(
        "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=domains,{BASE}\nobjectClass: organizationalUnit\nou: domains\n\n\
         dn: ou=example.com,ou=domains,{BASE}\nobjectClass: organizationalUnit\nobjectClass: domainRelatedObject\nou: example.com\nassociatedDomain: example.com\n\n\
         dn: {BIND_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: egress\nuserPassword: {BIND_PASSWORD}\n\n"
    );
    for (uid, mails) in PEOPLE {
        out.push_str(&format!(
            "dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
        ));
        for m in *mails {
            out.push_str(&format!("mail: {m}\n"));
        }
        out.push('\n');
    }
    out
}

impl Slapd {
    /// Starts slapd on free ports (others, if another process took one).
    pub fn start() -> Slapd {
        assert!(
            Path::new("/usr/sbin/slapd").exists(),
            "slapd is not installed: run scripts/test.sh, which installs it"
        );
        let mut dir = tempfile::tempdir().expect("slapd dir");
        super::tls::make_certs(dir.path());
        std::fs::create_dir(dir.path().join("db")).expect("db dir");
        let conf = dir.path().join("slapd.conf");
        std::fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {d}/ca.pem
TLSCertificateFile {d}/cert.pem
TLSCertificateKeyFile {d}/key.pem
database mdb
maxsize 10485760
suffix \"{BASE}\"
rootdn \"cn=admin,{BASE}\"
rootpw admin-secret
directory {d}/db
",
                d = dir.path().display()
            ),
        )
        .expect("slapd.conf");
        let data = dir.path().join("data.ldif");
        std::fs::write(&data, ldif()).expect("ldif");
        run(Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&data));
        for _ in 0..5 {
            let (port, tls_port) = (super::free_port(), super::free_port());
            let process = Guard::spawn(
                "slapd",
                Command::new("/usr/sbin/slapd")
                    .arg("-f")
                    .arg(&conf)
                    .arg("-h")
                    .arg(format!(
                        "ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/"
                    ))
                    // -d keeps it in the foreground: ours to kill.
                    .args(["-d", "0"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            let mut s = Slapd {
                port,
                tls_port,
                process,
                dir,
            };
            if s.wait_ready() {
                return s;
            }
            s.kill();
            dir = std::mem::replace(&mut s.dir, tempfile::tempdir().expect("dir"));
        }
        panic!("slapd did not start on any of 5 pairs of free ports");
    }

    /// Waits (at most 30 s) for both ports; false if slapd exited.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if !self.process.running() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.tls_port)).is_ok()
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn tls_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A file holding the bind password, as `password_file` reads it.
    pub fn password_file(&self) -> PathBuf {
        let p = self.dir.path().join("egress.secret");
        std::fs::write(&p, format!("{BIND_PASSWORD}\n")).expect("secret");
        p
    }

    /// Sends a signal (`-STOP`, `-CONT`) to slapd, if it runs.
    pub fn signal(&self, sig: &str) {
        self.process.signal(sig);
    }

    /// Kills slapd (as a crash).
    pub fn kill(&mut self) {
        self.process.kill();
    }
}
