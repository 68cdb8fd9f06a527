//! The Debian package: built with `scripts/package.sh` (cargo deb) from the
//! test build, its contents checked, then installed with dpkg on this
//! machine; the installed daemon started as its own user on the installed
//! configuration (readiness through the systemd notify socket) and driven
//! by a chrooted Postfix over the packaged unix socket, in monitor mode and
//! then enforcing; who may reach which socket; removal and purge; and an
//! install on a host without systemd.

use crate::common;

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the package from the binary this test run built.
fn build_package(out: &Path) -> PathBuf {
    run(Command::new("bash")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "scripts/package.sh",
            "--no-build",
            "--profile",
            "dev",
            "--no-strip",
            "--fast",
        ])
        .arg("--output")
        .arg(out));
    let deb = std::fs::read_dir(out)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb was written");
    deb
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

#[tokio::test(flavor = "multi_thread")]
async fn package_builds_installs_starts_and_purges() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let deb = build_package(dir.path());

    // What is in it.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/egress-milter",
        "./etc/egress-milter/milter.yaml",
        "./usr/lib/systemd/system/egress-milter.service",
        "./usr/lib/systemd/system/egress-milter-queue.socket",
        "./usr/lib/systemd/system/egress-milter-queue@.service",
        "./usr/share/egress-milter/sysusers.conf",
        "./usr/lib/tmpfiles.d/egress-milter.conf",
        "./usr/share/man/man8/egress-milter.8.gz",
        "./usr/share/man/man8/egress-milter-limits-show.8.gz",
        "./usr/share/man/man5/milter.yaml.5.gz",
        "./usr/share/egress-milter/milter.schema.json",
        "./usr/share/doc/egress-milter/examples/postfix-main.cf",
        "./usr/share/doc/egress-milter/examples/postfix-smtp_header_checks",
        "./usr/share/doc/egress-milter/examples/sendmail.mc",
        "./usr/share/doc/egress-milter/examples/grafana-dashboard.json",
        "./usr/share/doc/egress-milter/examples/prometheus-alerts.yml",
        "./usr/share/doc/egress-milter/examples/cases.yaml",
        "./usr/share/doc/egress-milter/copyright",
        "./usr/share/doc/egress-milter/html/index.html",
        "./usr/share/doc/egress-milter/html/rate-limits.html",
        "./usr/share/doc/egress-milter/html/configuration.html",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} missing from the package:\n{listing}"
        );
    }
    // The configuration is not readable by everyone (it names key files).
    let conf_line = listing
        .lines()
        .find(|l| l.ends_with("./etc/egress-milter/milter.yaml"))
        .unwrap();
    assert!(conf_line.starts_with("-rw-r-----"), "{conf_line}");
    let package = run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Package"));
    assert_eq!(package.trim(), "egress-milter");
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/egress-milter/milter.yaml");

    // The unit as shipped: systemd accepts every key, and it is hardened.
    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let unit = root.join("usr/lib/systemd/system/egress-milter.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for key in [
        "Type=notify",
        "User=egress-milter",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "RuntimeDirectory=egress-milter",
        "ExecReload=/usr/bin/egress-milter check-config --config /etc/egress-milter/milter.yaml\nExecReload=/bin/kill -HUP $MAINPID",
        "ReadWritePaths=-/var/spool/postfix/egress-milter",
        "RuntimeDirectoryMode=0751",
    ] {
        assert!(text.contains(key), "unit lacks {key:?}");
    }
    assert!(
        Path::new("/usr/bin/systemd-analyze").exists(),
        "systemd-analyze is missing: scripts/test.sh installs it"
    );
    // The configuration it installs: a unix socket in Postfix's queue
    // directory, monitor mode, the administrators' group on the admin socket.
    let conf = std::fs::read_to_string(root.join("etc/egress-milter/milter.yaml")).unwrap();
    for line in [
        "\nlisten: unix:/var/spool/postfix/egress-milter/milter.sock\n",
        "\nmode: monitor\n",
        "\n  socket_group: egress-admin\n",
    ] {
        assert!(
            conf.contains(line),
            "installed configuration lacks {line:?}"
        );
    }
    // verify needs the ExecStart binary where the unit says; check a copy
    // whose paths point into the unpacked tree.
    let bin = root.join("usr/bin/egress-milter");
    let conf = root.join("etc/egress-milter/milter.yaml");
    let copy = dir.path().join("egress-milter.service");
    std::fs::write(
        &copy,
        text.replace("/usr/bin/egress-milter", &bin.to_string_lossy())
            .replace("/etc/egress-milter/milter.yaml", &conf.to_string_lossy()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("Unknown key") && !err.contains("Failed to parse"),
        "systemd-analyze verify: {err}"
    );
    // The console's queue helper: its socket and the service it starts per
    // request (verified together, from a directory of their own).
    let units = dir.path().join("queue-units");
    std::fs::create_dir(&units).unwrap();
    for name in ["egress-milter-queue.socket", "egress-milter-queue@.service"] {
        let text = std::fs::read_to_string(root.join("usr/lib/systemd/system").join(name)).unwrap();
        std::fs::write(
            units.join(name),
            text.replace("/usr/bin/egress-milter", &bin.to_string_lossy())
                .replace("/etc/egress-milter/milter.yaml", &conf.to_string_lossy()),
        )
        .unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(units.join("egress-milter-queue.socket"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("Unknown key")
            && !err.contains("Failed to parse")
            && !err.contains("not found"),
        "systemd-analyze verify: {err}"
    );
    // The man pages render without a warning.
    for page in [
        "man8/egress-milter.8.gz",
        "man8/egress-milter-incidents-open.8.gz",
        "man5/milter.yaml.5.gz",
    ] {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(root.join("usr/share/man").join(page))
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(out.status.success(), "man {page}");
        assert!(
            out.stderr.is_empty(),
            "man {page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            shown.contains("NAME") && shown.contains("SEE ALSO"),
            "{page}"
        );
    }

    // Installed on this machine: needs root, as dpkg does.
    assert!(
        is_root(),
        "installing the package needs root (run the suite as root, as CI does)"
    );
    assert!(
        Path::new("/var/spool/postfix").is_dir(),
        "Postfix is not installed: scripts/test.sh installs it"
    );
    let _purge = Purge;
    let out = run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(out.contains("installed in monitor mode"), "{out}");
    let user = run(Command::new("getent").args(["passwd", "egress-milter"]));
    assert!(user.contains("/usr/sbin/nologin"), "{user}");
    assert_groups();
    run(Command::new("/usr/bin/egress-milter").args([
        "check-config",
        "--config",
        "/etc/egress-milter/milter.yaml",
    ]));
    // As the unit's reload checks it: as the service's user.
    run(&mut as_user(
        "egress-milter",
        &["check-config", "--config", "/etc/egress-milter/milter.yaml"],
    ));

    // Started as the unit starts it: as egress-milter, readiness through
    // NOTIFY_SOCKET, only once the milter answers.
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    run(Command::new("chmod")
        .arg("0777")
        .arg(notify_dir.path())
        .arg(&notify_path));
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut daemon = as_user(
        "egress-milter",
        &["run", "--config", "/etc/egress-milter/milter.yaml"],
    );
    daemon
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(std::process::Stdio::null());
    let mut daemon = common::child::Guard::spawn("egress-milter", &mut daemon);
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 within 20 s");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "READY=1");
    let pid =
        run(Command::new("ps").args(["-o", "user=", "-p", &daemon.pid().unwrap().to_string()]));
    assert_eq!(pid.trim(), "egress-milter");

    // Who reaches what: the milter socket for the egress-milter group
    // (postfix), the admin socket for egress-admin, the configuration for
    // egress-admin; postfix reaches neither of the last two.
    let stat = |p: &str| {
        run(Command::new("stat").args(["-c", "%U:%G %a", p]))
            .trim()
            .to_string()
    };
    assert_eq!(
        stat("/var/spool/postfix/egress-milter/milter.sock"),
        "egress-milter:egress-milter 660"
    );
    assert_eq!(
        stat("/run/egress-milter/admin.sock"),
        "egress-milter:egress-admin 660"
    );
    assert_eq!(
        stat("/run/egress-milter"),
        "egress-milter:egress-milter 751"
    );
    assert_eq!(
        stat("/var/lib/egress-milter"),
        "egress-milter:egress-milter 750"
    );
    let listed = run(Command::new("/usr/bin/egress-milter").args([
        "incidents",
        "list",
        "--config",
        "/etc/egress-milter/milter.yaml",
    ]));
    assert_eq!(listed, "no open incident\n");
    // An administrator: any user in egress-admin.
    let admin = run(Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--groups=egress-admin",
            "--",
        ])
        .args([
            "/usr/bin/egress-milter",
            "incidents",
            "list",
            "--config",
            "/etc/egress-milter/milter.yaml",
        ]));
    assert_eq!(admin, "no open incident\n");
    // Postfix's user: cannot read the configuration, and cannot speak to
    // the admin socket even with a copy of it.
    let out = as_user(
        "postfix",
        &[
            "incidents",
            "list",
            "--config",
            "/etc/egress-milter/milter.yaml",
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success(), "postfix read the configuration");
    let copy = dir.path().join("readable.yaml");
    std::fs::copy("/etc/egress-milter/milter.yaml", &copy).unwrap();
    run(Command::new("chmod").arg("0755").arg(dir.path()).arg(&copy));
    for args in [
        vec!["incidents", "open", "client:10.1.2.3"],
        vec!["limits", "reset", "10.1.2.3"],
    ] {
        let mut a = args.clone();
        a.extend(["--config", copy.to_str().unwrap()]);
        let out = as_user("postfix", &a).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && text.contains("Permission denied"),
            "postfix ran {args:?}: {text}"
        );
    }

    // A chrooted Postfix, as Debian runs it, names the socket as seen from
    // inside its chroot. Monitor mode: a forged From: is logged, not
    // refused.
    let mut sink = common::sink::Sink::start().await;
    let pf = common::postfix::Postfix::start_chrooted(
        "package",
        "unix:/egress-milter/milter.sock",
        sink.port,
    );
    let port = pf.smtp_port;
    let send = move || {
        tokio::task::spawn_blocking(move || {
            common::postfix::swaks(
                port,
                "127.0.0.2",
                "noreply@example.com",
                "someone@example.net",
                "\"Bank\" <service@bank.example>",
                "monitor",
            )
        })
    };
    let t = send().await.unwrap();
    assert!(t.contains("<-  250 2.0.0 Ok: queued"), "{t}");
    assert!(sink.next(30).await.is_some(), "delivered in monitor mode");
    let metrics = common::scrape(9357);
    assert!(
        common::counted(
            &metrics,
            "egress_decisions_total",
            &[("verdict", "would_reject")]
        ) >= 1,
        "{metrics}"
    );
    // Switched to enforcing as the README says: the same mail is refused.
    let conf = std::fs::read_to_string("/etc/egress-milter/milter.yaml").unwrap();
    // Editors find the schema the package installed.
    let schema = "/usr/share/egress-milter/milter.schema.json";
    assert!(
        conf.starts_with(&format!("# yaml-language-server: $schema={schema}\n")),
        "{conf}"
    );
    assert_eq!(
        std::fs::read_to_string(schema).unwrap(),
        egress_milter::config::schema()
    );
    std::fs::write(
        "/etc/egress-milter/milter.yaml",
        conf.replace("\nmode: monitor\n", "\nmode: enforce\n"),
    )
    .unwrap();
    run(Command::new("kill")
        .arg("-HUP")
        .arg(daemon.pid().unwrap().to_string()));
    common::until(Duration::from_secs(10), "reloaded: ", || {
        let m = common::scrape(9357);
        match common::counted(&m, "egress_config_reloads_total", &[("result", "ok")]) {
            1 => Ok(()),
            n => Err(n.to_string()),
        }
    })
    .await;
    let t = send().await.unwrap();
    assert!(
        t.contains("550 5.7.1 From: domain bank.example not authorised"),
        "{t}"
    );
    // The example cases pass against the installed, enforcing
    // configuration.
    let cases = run(Command::new("/usr/bin/egress-milter").args([
        "test",
        "--config",
        "/etc/egress-milter/milter.yaml",
        "/usr/share/doc/egress-milter/examples/cases.yaml",
    ]));
    assert!(cases.contains(" passed, 0 failed"), "{cases}");

    run(Command::new("kill")
        .arg("-TERM")
        .arg(daemon.pid().unwrap().to_string()));
    let stopping = notify.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(
        String::from_utf8_lossy(&buf[..stopping]).trim(),
        "STOPPING=1"
    );
    assert!(daemon.wait().success());

    // Removed while main.cf still names the milter: said, with what to do.
    let out = Command::new("dpkg")
        .args(["-r", "egress-milter"])
        .env("MAIL_CONFIG", &pf.dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("still names egress-milter"), "{said}");
    drop(pf);
    // Purged: what the package made is gone.
    run(Command::new("dpkg").args(["-P", "egress-milter"]));
    assert!(!Path::new("/usr/bin/egress-milter").exists());
    assert!(!Path::new("/etc/egress-milter/milter.yaml").exists());
    for gone in ["/var/lib/egress-milter", "/var/spool/postfix/egress-milter"] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
    let groups = run(Command::new("id").args(["-nG", "postfix"]));
    assert!(
        !groups.split_whitespace().any(|g| g == "egress-milter"),
        "{groups}"
    );

    // A host without systemd: no systemd-sysusers, no systemd-tmpfiles
    // (hidden in a mount namespace). The install makes the same users,
    // groups and directories by adduser and install.
    for name in ["egress-milter", "egress-admin"] {
        let _ = Command::new("deluser")
            .arg("--quiet")
            .arg("--system")
            .arg(name)
            .status();
        let _ = Command::new("delgroup")
            .arg("--quiet")
            .arg("--system")
            .arg(name)
            .status();
    }
    let mut hide = String::new();
    for tool in ["systemd-sysusers", "systemd-tmpfiles"] {
        for d in ["/usr/bin", "/bin"] {
            let p = format!("{d}/{tool}");
            if Path::new(&p).exists() {
                hide.push_str(&format!("mount --bind /dev/null {p} && "));
            }
        }
    }
    run(Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "{hide}! command -v systemd-sysusers && ! command -v systemd-tmpfiles && dpkg -i {}",
            deb.display()
        )));
    assert_groups();
    assert_eq!(
        stat("/run/egress-milter"),
        "egress-milter:egress-milter 751"
    );
    assert_eq!(
        stat("/var/lib/egress-milter"),
        "egress-milter:egress-milter 750"
    );
    run(&mut as_user(
        "egress-milter",
        &["check-config", "--config", "/etc/egress-milter/milter.yaml"],
    ));
    run(Command::new("dpkg").args(["-P", "egress-milter"]));
}

/// The users and groups the package makes, and who is in which.
fn assert_groups() {
    let stat = |p: &str| {
        run(Command::new("stat").args(["-c", "%U:%G %a", p]))
            .trim()
            .to_string()
    };
    assert_eq!(stat("/etc/egress-milter"), "root:egress-admin 750");
    assert_eq!(
        stat("/etc/egress-milter/milter.yaml"),
        "root:egress-admin 640"
    );
    assert_eq!(
        stat("/var/spool/postfix/egress-milter"),
        "egress-milter:egress-milter 750"
    );
    let groups = |u: &str| run(Command::new("id").args(["-nG", u]));
    let daemon = groups("egress-milter");
    assert!(
        daemon.split_whitespace().any(|g| g == "egress-admin"),
        "{daemon}"
    );
    let postfix = groups("postfix");
    assert!(
        postfix.split_whitespace().any(|g| g == "egress-milter"),
        "{postfix}"
    );
    assert!(
        !postfix.split_whitespace().any(|g| g == "egress-admin"),
        "{postfix}"
    );
}

/// The installed binary run as `user`, with that user's groups.
fn as_user(user: &str, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={user}"),
        &format!("--regid={user}"),
        "--init-groups",
        "--no-new-privs",
        "--",
        "/usr/bin/egress-milter",
    ])
    .args(args);
    c
}

/// Purges the package however the test ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["-P", "egress-milter"])
            .stdout(std::process::Stdio::null())
            .status();
    }
}
