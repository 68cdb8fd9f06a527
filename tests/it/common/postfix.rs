//! A private Postfix instance on loopback ports for end-to-end tests: its
//! own config and queue directories under the target directory, no chroot,
//! no port 25, the next hop a test sink. Stopped when dropped.

use super::child::{ready, Guard};
use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

pub struct Postfix {
    pub dir: PathBuf,
    pub smtp_port: u16,
    /// A second smtpd, as `master.cf`'s `submission` line would run it
    /// (port 587 on a real gateway), with the same restrictions.
    pub submission_port: u16,
    /// `postfix stop` at the end.
    _process: Guard,
}

const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

impl Postfix {
    /// Starts Postfix with `smtpd_milters` at `milter` (e.g.
    /// `inet:127.0.0.1:PORT`) and `[127.0.0.1]:sink_port` as relayhost.
    pub fn start(name: &str, milter: &str, sink_port: u16) -> Postfix {
        Self::start_with(name, milter, sink_port, &[])
    }

    /// [`start`](Self::start), with SMTP AUTH (PLAIN and LOGIN, Cyrus
    /// SASL's sasldb) for these logins and passwords.
    pub fn start_with(
        name: &str,
        milter: &str,
        sink_port: u16,
        logins: &[(&str, &str)],
    ) -> Postfix {
        Self::start_custom(name, milter, sink_port, logins, "")
    }

    /// [`start_with`](Self::start_with), with main.cf lines appended
    /// (a later line overrides an earlier one of the same name).
    pub fn start_custom(
        name: &str,
        milter: &str,
        sink_port: u16,
        logins: &[(&str, &str)],
        extra: &str,
    ) -> Postfix {
        Self::start_inner(name, milter, sink_port, logins, extra, false)
    }

    /// Postfix as Debian runs it: smtpd and cleanup chrooted into the
    /// queue directory, which is the system's `/var/spool/postfix` (so
    /// that a path the package makes there is found as Debian's Postfix
    /// finds it); `milter` as main.cf names it from inside the chroot.
    pub fn start_chrooted(name: &str, milter: &str, sink_port: u16) -> Postfix {
        Self::start_inner(
            name,
            milter,
            sink_port,
            &[],
            "queue_directory = /var/spool/postfix\n",
            true,
        )
    }

    fn start_inner(
        name: &str,
        milter: &str,
        sink_port: u16,
        logins: &[(&str, &str)],
        extra: &str,
        chroot: bool,
    ) -> Postfix {
        assert!(
            Path::new("/usr/sbin/postfix").exists(),
            "postfix is not installed: run scripts/test.sh, which installs it"
        );
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("postfix-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("queue")).expect("queue dir");
        std::fs::create_dir_all(dir.join("data")).expect("data dir");
        // master.lock and the TLS caches live here, written as mail_owner.
        let chown = Command::new("chown")
            .arg("postfix:")
            .arg(dir.join("data"))
            .status();
        assert!(
            chown.is_ok_and(|s| s.success()),
            "chown postfix data directory"
        );
        let smtp_port = super::free_port();
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = gw.example.com
mydomain = example.com
myorigin = example.com
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
relay_domains =
relayhost = [127.0.0.1]:{sink_port}
smtp_host_lookup = native
# Every loopback client may relay as far as Postfix is concerned: the
# milter alone stands between them and an open relay.
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_milters = {milter}
non_smtpd_milters = {milter}
milter_protocol = 6
milter_default_action = tempfail
smtp_header_checks = regexp:{dir}/smtp_header_checks
maillog_file = {dir}/postfix.log
maillog_file_prefixes = {dir}
alias_maps =
alias_database =
smtputf8_enable = no
biff = no
",
            dir = dir.display()
        );
        let main_cf = if logins.is_empty() {
            main_cf
        } else {
            sasl(&dir, logins);
            format!(
                "{main_cf}smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {dir}/sasl
smtpd_sasl_security_options = noanonymous
",
                dir = dir.display()
            )
        };
        std::fs::write(dir.join("main.cf"), format!("{main_cf}{extra}")).expect("main.cf");
        // The shipped rule that redacts Postfix's own hop (a milter cannot
        // see it), with loopback counted as internal for the test.
        let rules = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/postfix-smtp_header_checks"
        ))
        .expect("packaging/postfix-smtp_header_checks")
        .replace("(10\\.|", "(127\\.|10\\.|");
        std::fs::write(dir.join("smtp_header_checks"), rules).expect("smtp_header_checks");
        Self::launch(dir, smtp_port, chroot)
    }

    /// Writes master.cf, starts the instance whose main.cf is written, and
    /// waits for its SMTP port.
    fn launch(dir: PathBuf, smtp_port: u16, chroot: bool) -> Postfix {
        let submission_port = super::free_port();
        let (c, services) = if chroot {
            // Debian's master.cf chroots these two.
            (
                "y",
                MASTER_CF.replace(
                    "cleanup   unix  n       -       n",
                    "cleanup   unix  n       -       y",
                ),
            )
        } else {
            ("n", MASTER_CF.to_string())
        };
        let master = format!(
            "127.0.0.1:{smtp_port} inet n - {c} - - smtpd\n127.0.0.1:{submission_port} inet n - {c} - - smtpd -o syslog_name=postfix/submission\n{services}"
        );
        std::fs::write(dir.join("master.cf"), master).expect("master.cf");
        let mut stop = Command::new("/usr/sbin/postfix");
        stop.arg("-c").arg(&dir).arg("stop");
        let pf = Postfix {
            dir,
            smtp_port,
            submission_port,
            _process: Guard::stopped_by("postfix", stop),
        };
        pf.postfix(&["check"]);
        pf.postfix(&["start"]);
        pf.wait_listening();
        pf
    }

    /// A mail store for callouts: example.com is its own domain and
    /// `users` its mailboxes, every other recipient refused with Postfix's
    /// "User unknown in local recipient table"; or, with `users` empty, a
    /// catch-all that accepts any recipient. Nothing is delivered: the test
    /// only asks.
    pub fn start_store(name: &str, users: &[&str]) -> Postfix {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("postfix-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("queue")).expect("queue dir");
        std::fs::create_dir_all(dir.join("data")).expect("data dir");
        let chown = Command::new("chown")
            .arg("postfix:")
            .arg(dir.join("data"))
            .status();
        assert!(
            chown.is_ok_and(|s| s.success()),
            "chown postfix data directory"
        );
        let table: String = users.iter().map(|u| format!("{u} ok\n")).collect();
        std::fs::write(dir.join("users"), table).expect("users");
        let maps = if users.is_empty() {
            String::new()
        } else {
            format!("texthash:{}/users", dir.display())
        };
        let smtp_port = super::free_port();
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = store.example.com
mydomain = example.com
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination = example.com
local_recipient_maps = {maps}
relay_domains =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = reject_unlisted_recipient, permit_mynetworks, reject
# Held, never delivered: a store for questions only.
smtpd_end_of_data_restrictions = check_client_access static:HOLD
maillog_file = {dir}/postfix.log
maillog_file_prefixes = {dir}
alias_maps =
alias_database =
smtputf8_enable = no
biff = no
",
            dir = dir.display()
        );
        std::fs::write(dir.join("main.cf"), main_cf).expect("main.cf");
        Self::launch(dir, smtp_port, false)
    }

    fn postfix(&self, args: &[&str]) {
        let out = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("run postfix");
        assert!(
            out.status.success(),
            "postfix {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits (at most 30 s) for smtpd's port to accept connections.
    fn wait_listening(&self) {
        ready(Duration::from_secs(30), "postfix did not listen: ", || {
            TcpStream::connect(("127.0.0.1", self.smtp_port))
                .map(|_| ())
                .map_err(|_| self.log())
        });
    }

    /// Runs one of Postfix's commands (postqueue, postsuper) on this
    /// instance; returns its standard output.
    pub fn command(&self, name: &str, args: &[&str]) -> String {
        let out = Command::new(format!("/usr/sbin/{name}"))
            .arg("-c")
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("run a postfix command");
        assert!(
            out.status.success(),
            "{name} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The queue as `postqueue -j` lists it: (queue name, queue id).
    pub fn queue(&self) -> Vec<(String, String)> {
        self.command("postqueue", &["-j"])
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                (
                    v["queue_name"].as_str().unwrap_or("").to_string(),
                    v["queue_id"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postfix.log")).unwrap_or_default()
    }
}

/// Cyrus SASL for smtpd: a sasldb with the logins, readable by Postfix.
fn sasl(dir: &Path, logins: &[(&str, &str)]) {
    use std::io::Write as _;
    use std::process::Stdio;
    assert!(
        Path::new("/usr/sbin/saslpasswd2").exists(),
        "saslpasswd2 is not installed: run scripts/test.sh, which installs sasl2-bin"
    );
    let db = dir.join("sasldb2");
    std::fs::create_dir_all(dir.join("sasl")).expect("sasl dir");
    std::fs::write(
        dir.join("sasl/smtpd.conf"),
        format!(
            "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: {}\n",
            db.display()
        ),
    )
    .expect("smtpd.conf");
    for (login, password) in logins {
        let (user, realm) = login.split_once('@').unwrap_or((login, ""));
        let mut child = Command::new("/usr/sbin/saslpasswd2")
            .arg("-f")
            .arg(&db)
            .args(["-c", "-p", "-u", realm, user])
            .stdin(Stdio::piped())
            .spawn()
            .expect("saslpasswd2");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(password.as_bytes())
            .expect("password");
        assert!(
            child.wait().expect("saslpasswd2").success(),
            "saslpasswd2 {login}"
        );
    }
    let chown = Command::new("chown").arg("postfix:").arg(&db).status();
    assert!(chown.is_ok_and(|s| s.success()), "chown sasldb");
}

/// Sends one message with swaks to `127.0.0.1:port` from a given loopback
/// source address; returns swaks's transcript.
pub fn swaks(
    port: u16,
    source_ip: &str,
    from: &str,
    to: &str,
    header_from: &str,
    subject: &str,
) -> String {
    swaks_with(port, source_ip, from, to, header_from, subject, &[])
}

/// `swaks`, with more headers added (`Name: value` each).
pub fn swaks_with(
    port: u16,
    source_ip: &str,
    from: &str,
    to: &str,
    header_from: &str,
    subject: &str,
    more_headers: &[String],
) -> String {
    let mut extra = Vec::new();
    for h in more_headers {
        extra.extend(["--add-header", h.as_str()]);
    }
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--local-interface", source_ip])
        .args(["--from", from, "--to", to])
        .args(["--header", &format!("From: {header_from}")])
        .args(["--header", &format!("Subject: {subject}")])
        .args(["--add-header", "X-Originating-IP: [10.20.30.40]"])
        // Two hops inside the organisation before the gateway.
        .args(["--add-header", "Received: from app7.corp (app7.corp [10.9.8.7]) by relay.corp (Postfix) with ESMTP id 1A; Mon, 23 Nov 2026 01:00:01 +0000"])
        .args(["--add-header", "Received: from build3.corp ([10.9.8.3]) by app7.corp with ESMTP id 0B; Mon, 23 Nov 2026 01:00:00 +0000"])
        .args(extra)
        .args(["--body", "Test message body.", "--timeout", "30"])
        .output()
        .expect("swaks is not installed: run scripts/test.sh, which installs it");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends one message through the MTA (Postfix or Sendmail) with swaks,
/// logged in when a login is given, with more swaks arguments; the queue
/// id the MTA gave it.
pub fn submit(
    port: u16,
    login: Option<(&str, &str)>,
    from: &str,
    to: &str,
    extra: &[&str],
) -> String {
    let mut cmd = Command::new("swaks");
    cmd.args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--from", from, "--to", to])
        .args(["--timeout", "30"])
        .args(extra);
    if let Some((user, password)) = login {
        cmd.args([
            "--auth",
            "PLAIN",
            "--auth-user",
            user,
            "--auth-password",
            password,
        ]);
    }
    let out = cmd.output().expect("swaks");
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    t.lines()
        .filter(|l| l.starts_with("<-  250"))
        .find_map(|l| {
            l.split_once("queued as ")
                .map(|(_, id)| id.trim().to_string())
                .or_else(|| {
                    l.contains("Message accepted")
                        .then(|| l.split_whitespace().nth(3).unwrap_or("").to_string())
                })
        })
        .unwrap_or_else(|| panic!("not queued: {t}"))
}
