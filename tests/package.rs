//! The Debian package: built with `cargo deb` from the test build, its
//! contents checked, then installed with dpkg on this machine, the installed
//! daemon started as its own user on the installed configuration (readiness
//! through the systemd notify socket), asked over the milter socket, stopped,
//! and the package purged.

mod common;

use indymilter_test::{Status, TestConnection};
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
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "deb",
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
        "./usr/lib/sysusers.d/egress-milter.conf",
        "./usr/lib/tmpfiles.d/egress-milter.conf",
        "./usr/share/man/man8/egress-milter.8.gz",
        "./usr/share/man/man5/milter.yaml.5.gz",
        "./usr/share/doc/egress-milter/examples/postfix-main.cf",
        "./usr/share/doc/egress-milter/examples/postfix-smtp_header_checks",
        "./usr/share/doc/egress-milter/examples/sendmail.mc",
        "./usr/share/doc/egress-milter/examples/grafana-dashboard.json",
        "./usr/share/doc/egress-milter/examples/cases.yaml",
        "./usr/share/doc/egress-milter/copyright",
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
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(text.contains(key), "unit lacks {key:?}");
    }
    assert!(
        Path::new("/usr/bin/systemd-analyze").exists(),
        "systemd-analyze is missing: scripts/test.sh installs it"
    );
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
    // The man pages render without a warning.
    for page in ["man8/egress-milter.8.gz", "man5/milter.yaml.5.gz"] {
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
    let _purge = Purge;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    let user = run(Command::new("getent").args(["passwd", "egress-milter"]));
    assert!(user.contains("/usr/sbin/nologin"), "{user}");
    let meta = run(Command::new("stat").args(["-c", "%U:%G %a", "/etc/egress-milter"]));
    assert_eq!(meta.trim(), "root:egress-milter 750");
    run(Command::new("/usr/bin/egress-milter").args([
        "check-config",
        "--config",
        "/etc/egress-milter/milter.yaml",
    ]));
    // The example cases pass against the installed configuration.
    let cases = run(Command::new("/usr/bin/egress-milter").args([
        "test",
        "--config",
        "/etc/egress-milter/milter.yaml",
        "/usr/share/doc/egress-milter/examples/cases.yaml",
    ]));
    assert!(cases.contains(" passed, 0 failed"), "{cases}");

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
    let daemon = Command::new("setpriv")
        .args([
            "--reuid=egress-milter",
            "--regid=egress-milter",
            "--init-groups",
            "--no-new-privs",
            "--",
            "/usr/bin/egress-milter",
            "run",
            "--config",
            "/etc/egress-milter/milter.yaml",
        ])
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut daemon = KillOnDrop(daemon);
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 within 20 s");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "READY=1");
    let pid = run(Command::new("ps").args(["-o", "user=", "-p", &daemon.0.id().to_string()]));
    assert_eq!(pid.trim(), "egress-milter");

    // The shipped configuration: 127.0.0.2 is the crm-app class, which may
    // not put a bank in From:.
    let mut conn = TestConnection::configure()
        .available_actions(indymilter::Actions::all())
        .open_tcp("127.0.0.1:7357")
        .await
        .unwrap();
    let client: std::net::SocketAddr = "127.0.0.2:40000".parse().unwrap();
    assert_eq!(conn.connect("app", client).await.unwrap(), Status::Continue);
    common::envelope(&mut conn, "<noreply@example.com>", "<x@example.net>").await;
    let answer = common::message(&mut conn, &[("From", "\"Bank\" <service@bank.example>")]).await;
    assert_eq!(answer, "550 5.7.1 From: domain bank.example not authorised");
    drop(conn);
    // The admin endpoint: the daemon's socket, for its user and group.
    let meta = run(Command::new("stat").args(["-c", "%U:%G %a", "/run/egress-milter/admin.sock"]));
    assert_eq!(meta.trim(), "egress-milter:egress-milter 660");
    let listed = run(Command::new("/usr/bin/egress-milter").args([
        "incidents",
        "list",
        "--config",
        "/etc/egress-milter/milter.yaml",
    ]));
    assert_eq!(listed, "no open incident\n");
    let state = run(Command::new("stat").args(["-c", "%U:%G %a", "/var/lib/egress-milter"]));
    assert_eq!(state.trim(), "egress-milter:egress-milter 750");

    run(Command::new("kill")
        .arg("-TERM")
        .arg(daemon.0.id().to_string()));
    let stopping = notify.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(
        String::from_utf8_lossy(&buf[..stopping]).trim(),
        "STOPPING=1"
    );
    assert!(daemon.0.wait().unwrap().success());

    run(Command::new("dpkg").args(["-P", "egress-milter"]));
    assert!(!Path::new("/usr/bin/egress-milter").exists());
    assert!(!Path::new("/etc/egress-milter/milter.yaml").exists());
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

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
