//! The daemon as an administrator runs it: check-config, a unix socket
//! (stale file, mode), the JSON decision log, SIGHUP reload (bad, good,
//! and slow), SIGTERM.

use crate::common;
use common::{mail, process::Running, reply};
use indymilter::Actions;
use indymilter_test::TestConnection;
use std::{
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use common::process::BIN;

fn check_config(path: &Path) -> common::cli::Cli {
    common::cli::with_config(path, &["check-config"])
}

/// One rule for every command: 0 done, 1 failed (a check, a case, the
/// daemon), 2 a mistake in what it was given (the arguments, the
/// configuration). A broken configuration is named, file and line, and
/// exits 2 whatever the command.
#[test]
fn every_command_exits_2_on_a_broken_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, "local_domains: [example.com]\nlisten: [unclosed\n").unwrap();
    let cases = dir.path().join("cases.yaml");
    std::fs::write(&cases, "[]\n").unwrap();
    let commands: &[&[&str]] = &[
        &["run"],
        &["check-config"],
        &["selfcheck"],
        &[
            "explain",
            "--client",
            "127.0.0.1",
            "--from",
            "a@example.com",
            "--rcpt",
            "b@example.net",
        ],
        &["test", cases.to_str().unwrap()],
        &["test", "--generate"],
        &[
            "probe",
            "--server",
            "127.0.0.1:1",
            "--rcpt",
            "b@example.net",
        ],
        &["limits", "show", "127.0.0.1"],
        &["incidents", "list"],
        &["cache", "show", "user@example.com"],
        &["senders", "show", "staff"],
    ];
    for args in commands {
        let out = common::cli::output(Command::new(BIN).args(*args).arg("--config").arg(&path));
        let stderr = out.stderr.clone();
        assert_eq!(Some(out.code), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{}:2", path.display())),
            "{args:?} names the file and line: {stderr}"
        );
    }
    // A usage mistake is 2 too.
    let out = common::cli::output(Command::new(BIN).args(["limits", "frobnicate"]));
    assert_eq!(Some(out.code), Some(2));
}

#[test]
fn check_config_accepts_the_shipped_file() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("milter.yaml");
    let out = check_config(&shipped);
    assert!(out.ok(), "{}", out.stderr.clone());
    assert_eq!(out.stdout.clone(), "ok\n");
    // Its TCP socket is said to be reachable by every local user.
    let err = out.stderr.clone();
    assert!(
        err.contains("warning: ")
            && err.contains("listen: inet:127.0.0.1:7357 can be reached by every local user"),
        "{err}"
    );
}

#[test]
fn check_config_reports_every_mistake_at_once() {
    let path = common::config_path("twenty_mistakes.yaml");
    let out = check_config(&path);
    assert_eq!(Some(out.code), Some(2));
    let stderr = out.stderr.clone();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 20, "{stderr}");
    let prefix = format!("{}:", path.display());
    for l in &lines {
        assert!(l.starts_with(&prefix), "no file in {l}");
        let rest = &l[prefix.len()..];
        let (line, rest) = rest.split_once(": ").unwrap();
        assert!(line.parse::<u32>().unwrap() > 1, "no line in {l}");
        assert!(rest.contains(": "), "no key in {l}");
    }
    assert!(
        stderr.contains(":7: classes[0].clients[0]: invalid network \"10.1.2.0/33\""),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            ":19: milter.timeout: expected a duration such as 30s, 10m or 2h, got \"soon\""
        ),
        "{stderr}"
    );
}

#[test]
fn check_config_names_line_of_unknown_key_and_bad_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\nclasses:\n  - name: a\n    client: [10.0.0.1]\n").unwrap();
    let out = check_config(&path);
    assert_eq!(Some(out.code), Some(2));
    let stderr = out.stderr.clone();
    assert!(
        stderr.starts_with(&format!("{}:5: ", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("client"), "{stderr}");
    std::fs::write(&path, "listen: [unclosed\n").unwrap();
    let out = check_config(&path);
    assert_eq!(Some(out.code), Some(2));
    let out = check_config(Path::new("/nonexistent/x.yaml"));
    assert_eq!(Some(out.code), Some(2));
    assert!(out.stderr.clone().contains("/nonexistent/x.yaml"));
}

/// A reload that takes seconds (content rules whose case-insensitive
/// Unicode classes are slow to compile; the pattern was found by the config
/// fuzzer) is checked off the runtime's workers: with a single worker, a
/// message is answered while the new configuration is still being read.
#[tokio::test]
async fn a_slow_reload_does_not_hold_up_the_traffic() {
    let (_dir, socket, config, d) = started(&[("TOKIO_WORKER_THREADS", "1")]);

    let pattern = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/slow_regex.txt"),
    )
    .unwrap();
    write_config(&config, &socket, "example.net");
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str("content:\n  custom:\n");
    for i in 0..3 {
        yaml.push_str(&format!(
            "    - {{ name: slow{i}, score: 1, subject: {} }}\n",
            serde_json::to_string(&pattern).unwrap()
        ));
    }
    std::fs::write(&config, yaml).unwrap();
    d.signal("-HUP");
    d.wait_for("reloading the configuration");

    // Answered by the old configuration, before the reload is done.
    assert_eq!(
        sender_reply(&socket, "<a@example.net>").await,
        "550 5.7.1 Sender <a@example.net> not authorised for app"
    );
    let logged_meanwhile: Vec<String> = d.lines.try_iter().collect();
    assert!(
        !logged_meanwhile
            .iter()
            .any(|l| l.contains("configuration reloaded")),
        "the reply waited for the reload: {logged_meanwhile:?}"
    );
    d.wait_for("configuration reloaded");
    assert_eq!(sender_reply(&socket, "<a@example.net>").await, "continue");
}

/// A whole accepted transaction, with HELO and headers taken without an
/// answer, logs nothing at WARN: the milter library warns (once per
/// session) when a callback answers a command the MTA agreed not to wait on.
#[tokio::test]
async fn a_clean_transaction_logs_no_warning() {
    let (_dir, socket, _config, mut d) = started(&[]);

    let mut conn = open_unix(&socket).await;
    let addr: std::net::SocketAddr = "10.1.2.3:4000".parse().unwrap();
    conn.connect("app.test", addr).await.unwrap();
    assert_eq!(
        conn.helo("app.test").await.unwrap(),
        indymilter_test::Status::Noreply
    );
    common::envelope(&mut conn, "<a@example.com>", "<b@example.org>").await;
    let verdict = common::message(
        &mut conn,
        &[
            ("From", "A <a@example.com>"),
            ("To", "b@example.org"),
            ("Subject", "report"),
        ],
    )
    .await;
    assert_eq!(verdict, "continue");
    conn.close().await.unwrap();

    // Every line the daemon writes, up to its exit.
    d.signal("-TERM");
    let lines = d.rest_of_log();
    assert_eq!(d.wait().code(), Some(0));
    assert!(
        lines.iter().any(|l| l.contains("\"message\"")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("egress-milter stopped")));
    let warnings: Vec<&String> = lines.iter().filter(|l| l.contains("WARN")).collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

/// The daemon started on a unix socket in a new directory, with the
/// configuration of `write_config` (senders of example.com) and these
/// environment variables.
fn started(env: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, PathBuf, Running) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("milter.sock");
    let config = dir.path().join("milter.yaml");
    write_config(&config, &socket, "example.com");
    let d = Running::start_with_env(&config, env);
    d.wait_for("egress-milter started");
    (dir, socket, config, d)
}

fn write_config(path: &Path, socket: &Path, sender_domain: &str) {
    std::fs::write(
        path,
        format!(
            "listen: unix:{}\nsocket_mode: \"0640\"\nadmin: {{ listen: off }}\nlocal_domains: [example.com, example.net]\nlog: {{ format: json }}\nclasses:\n  - {{ name: app, clients: [10.1.2.0/24], sender_domains: [{sender_domain}] }}\n",
            socket.display()
        ),
    )
    .unwrap();
}

async fn open_unix(socket: &Path) -> TestConnection {
    TestConnection::configure()
        .available_actions(Actions::all())
        .open_unix(socket)
        .await
        .unwrap()
}

async fn sender_reply(socket: &Path, sender: &str) -> String {
    let mut conn = open_unix(socket).await;
    let addr: std::net::SocketAddr = "10.1.2.3:4000".parse().unwrap();
    conn.macros(
        indymilter::MacroStage::Connect,
        [("{daemon_addr}", "192.0.2.25"), ("{daemon_port}", "587")],
    )
    .await
    .unwrap();
    conn.connect("app.test", addr).await.unwrap();
    let r = reply(&mail(&mut conn, sender, None).await);
    conn.close().await.unwrap();
    r
}

#[tokio::test]
async fn unix_socket_json_log_reload_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("milter.sock");
    let config = dir.path().join("milter.yaml");
    write_config(&config, &socket, "example.com");
    // A stale socket file, as a crashed run leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());

    let mut d = Running::start(&config);
    d.wait_for("egress-milter started");
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);

    // A decision, and its JSON log line with every field.
    assert_eq!(
        sender_reply(&socket, "<a@example.net>").await,
        "550 5.7.1 Sender <a@example.net> not authorised for app"
    );
    let line = d.wait_for("\"decision\"");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["stage"], "mail");
    assert_eq!(v["verdict"], "reject");
    assert_eq!(v["rule"], "sender_domains");
    assert_eq!(
        v["reply"],
        "550 5.7.1 Sender <a@example.net> not authorised for app"
    );
    assert_eq!(v["client_ip"], "10.1.2.3");
    assert_eq!(v["class"], "app");
    assert_eq!(v["sender"], "a@example.net");
    assert_eq!(v["queue_id"], "QID1");
    assert_eq!(v["auth"], "-");
    assert_eq!(v["rcpt_count"], 0);
    assert!(v["conn_id"].as_u64().is_some());
    let summary = d.wait_for("\"message\"");
    let s: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(s["verdict"], "reject");
    assert_eq!(s["queue_id"], "QID1");
    assert_eq!(s["daemon"], "192.0.2.25:587");
    assert!(s["milter_us"].as_u64().is_some());
    assert_eq!(s["class"], "app");
    assert_eq!(s["rule"], "sender_domains");
    assert_eq!(s["stage"], "mail");
    assert!(s["elapsed_ms"].is_string() || s["elapsed_ms"].is_number());

    // A bad configuration on SIGHUP is refused; the old one keeps serving.
    std::fs::write(
        &config,
        "listen: unix:/x\nlocal_domains: [\"bad domain\"]\n",
    )
    .unwrap();
    d.signal("-HUP");
    let refused = d.wait_for("reload refused");
    assert!(refused.contains("local_domains[0]"), "{refused}");
    assert_eq!(
        sender_reply(&socket, "<a@example.net>").await,
        "550 5.7.1 Sender <a@example.net> not authorised for app"
    );

    // A good one is swapped in.
    write_config(&config, &socket, "example.net");
    d.signal("-HUP");
    d.wait_for("configuration reloaded");
    assert_eq!(sender_reply(&socket, "<a@example.net>").await, "continue");

    // A change that needs a restart is said to need one; reverted, it no
    // longer does (the reload compares with what is running).
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("socket_mode: \"0640\"", "socket_mode: \"0660\""),
    )
    .unwrap();
    d.signal("-HUP");
    let line = d.wait_for("configuration reloaded");
    assert!(
        line.contains("listen, socket_mode take effect after a restart"),
        "{line}"
    );
    std::fs::write(&config, &text).unwrap();
    d.signal("-HUP");
    let line = d.wait_for("configuration reloaded");
    assert!(!line.contains("restart"), "{line}");

    // SIGTERM while a connection is open mid-message: exit 0, socket removed.
    let mut open = open_unix(&socket).await;
    let addr: std::net::SocketAddr = "10.1.2.3:4000".parse().unwrap();
    open.connect("app.test", addr).await.unwrap();
    assert_eq!(
        reply(&mail(&mut open, "<a@example.net>", None).await),
        "continue"
    );
    d.signal("-TERM");
    d.wait_for("egress-milter stopped");
    let status = d.wait();
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists());
}

#[tokio::test]
async fn refuses_to_steal_a_live_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("milter.sock");
    let config = dir.path().join("milter.yaml");
    write_config(&config, &socket, "example.com");
    let _live = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let out = common::cli::output(Command::new(BIN).args(["run", "--config"]).arg(&config));
    assert_eq!(Some(out.code), Some(1));
    assert!(out.stderr.clone().contains("in use"));
}

/// The README's first command, on the shipped milter.yaml from a checkout:
/// no error; what it cannot keep there (open incidents, for want of
/// /var/lib/egress-milter) it says at info level, once.
#[test]
fn a_first_run_on_the_shipped_file_is_clean() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("milter.yaml");
    let mut d = common::process::Running::start(&shipped);
    let mut log = Vec::new();
    while let Ok(line) = d.lines.recv_timeout(std::time::Duration::from_secs(20)) {
        let started = line.contains("egress-milter started");
        log.push(line);
        if started {
            break;
        }
    }
    d.signal("-TERM");
    assert!(d.wait().success());
    log.extend(d.rest_of_log());
    assert!(
        log.iter().any(|l| l.contains("egress-milter stopped")),
        "{}",
        log.join("\n")
    );
    assert!(
        !log.iter().any(|l| l.contains("ERROR")),
        "{}",
        log.join("\n")
    );
    let kept = log
        .iter()
        .filter(|l| l.contains("incidents.state_dir"))
        .count();
    assert!(kept <= 1, "{}", log.join("\n"));
    assert!(log
        .iter()
        .filter(|l| l.contains("incidents.state_dir"))
        .all(|l| l.contains(" INFO ")));
}

/// What stops the start is said once, naming the socket, port or file and
/// the key that set it; "started" is logged only once everything is bound.
#[test]
fn a_start_up_error_names_its_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("milter.yaml");
    let run = |text: String| {
        std::fs::write(&config, text).unwrap();
        let out = common::cli::output(Command::new(BIN).args(["run", "--config"]).arg(&config));
        (Some(out.code), out.stderr.clone())
    };
    let base = "local_domains: [example.com]\nadmin: { listen: off }\n";
    // The socket's directory does not exist.
    let missing = dir.path().join("no-such-dir/milter.sock");
    let (code, err) = run(format!("listen: unix:{}\n{base}", missing.display()));
    assert_eq!(code, Some(1), "{err}");
    let want = format!(
        "listen: cannot listen on unix:{}: No such file or directory",
        missing.display()
    );
    assert_eq!(err.matches(&want).count(), 1, "{err}");
    assert!(!err.contains("egress-milter started"), "{err}");
    // The metrics port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let socket = dir.path().join("milter.sock");
    let (code, err) = run(format!(
        "listen: unix:{}\n{base}metrics: {{ listen: \"127.0.0.1:{port}\" }}\n",
        socket.display()
    ));
    assert_eq!(code, Some(1), "{err}");
    let want = format!("metrics.listen: cannot listen on 127.0.0.1:{port}: Address already in use");
    assert_eq!(err.matches(&want).count(), 1, "{err}");
    assert!(!err.contains("egress-milter started"), "{err}");
    // Another daemon's admin socket, alive: refused, not taken over.
    let admin = dir.path().join("admin.sock");
    let _live = std::os::unix::net::UnixListener::bind(&admin).unwrap();
    let (code, err) = run(format!(
        "listen: unix:{}\nlocal_domains: [example.com]\nadmin: {{ listen: \"unix:{}\" }}\n",
        socket.display(),
        admin.display()
    ));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("admin.listen: the admin endpoint")
            && err.contains("belongs to a running daemon"),
        "{err}"
    );
    assert!(admin.exists(), "the live socket is left alone");
}

#[test]
fn dkim_keygen_writes_a_private_key_and_prints_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    for alg in ["ed25519", "rsa"] {
        let _ = std::fs::remove_file(&key);
        let out = common::cli::output(
            Command::new(BIN)
                .args([
                    "dkim-keygen",
                    "--domain",
                    "Example.COM",
                    "--selector",
                    "s1",
                    "--algorithm",
                    alg,
                    "--out",
                ])
                .arg(&key),
        );
        assert!(out.ok(), "{}", out.stderr.clone());
        let record = out.stdout.clone();
        assert!(
            record.starts_with(&format!(
                "s1._domainkey.example.com. IN TXT ( \"v=DKIM1; k={alg}; p="
            )),
            "{record}"
        );
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The key loads, and the record printed is the key's own.
        let loaded = egress_milter::dkim::DkimKey::load(
            egress_milter::address::Domain::parse("example.com").unwrap(),
            "s1".into(),
            &key,
        )
        .unwrap();
        let joined: String = record.split('"').skip(1).step_by(2).collect();
        assert_eq!(joined, loaded.dns_record());
    }
    // An existing key is never overwritten.
    let before = std::fs::read(&key).unwrap();
    let out = common::cli::output(
        Command::new(BIN)
            .args([
                "dkim-keygen",
                "--domain",
                "example.com",
                "--selector",
                "s1",
                "--out",
            ])
            .arg(&key),
    );
    assert_eq!(Some(out.code), Some(1));
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

/// `check-config` run as root reads every file; with `--user` it reads them
/// as the daemon's user would, and names the one that user cannot read.
#[test]
fn check_config_as_the_service_user_names_a_file_it_cannot_read() {
    let root = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&root.stdout).trim(),
        "0",
        "run the suite as root, as CI does"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = dir.path().join("example.com.pem");
    let (pem, _) = egress_milter::dkim::generate("ed25519", 0).unwrap();
    std::fs::write(&key, pem).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("milter.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: unix:/run/x.sock\nlocal_domains: [example.com]\ndkim:\n  keys:\n    - {{ domain: example.com, selector: s1, file: {} }}\n",
            key.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check_config(&config);
    assert!(out.ok(), "{}", out.stderr.clone());
    let out = common::cli::output(
        Command::new(BIN)
            .args(["check-config", "--user", "nobody", "--config"])
            .arg(&config),
    );
    let err = out.stderr.clone();
    assert_eq!(Some(out.code), Some(2), "{err}");
    assert!(
        err.contains("milter.yaml:5: dkim.keys[0]") && err.contains("Permission denied"),
        "{err}"
    );
}
