//! The console as an administrator sets it up: HTTPS with `tls`, a unix
//! socket for a reverse proxy, and `check-config` naming what is wrong.

use crate::common;
use crate::console::files;
use common::process::Running;
use std::process::Command;

/// `curl` ARGS: (HTTP status, body), or the failure.
fn curl(args: &[&str]) -> Result<(String, String), String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl (scripts/test.sh installs it)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    Ok((code.to_string(), body.to_string()))
}

fn daemon(dir: &std::path::Path, console: &str) -> Running {
    let path = dir.join("milter.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:{}\nlocal_domains: [example.com]\nconsole:\n{console}",
            common::free_port()
        ),
    )
    .unwrap();
    let d = Running::start(&path);
    d.wait_for("console listening");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_serves_https_and_a_unix_socket() {
    let f = files();
    let dir = f.dir.path();
    common::tls::make_certs(dir);
    let port = common::free_port();
    let _https = daemon(
        dir,
        &format!(
            "  listen: 127.0.0.1:{port}\n  users_file: {}\n  tls: {{ cert_file: {}, key_file: {} }}\n",
            f.users.display(),
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
    );
    let url = format!("https://127.0.0.1:{port}/login");
    let ca = dir.join("ca.pem");
    let (code, body) = curl(&["--cacert", ca.to_str().unwrap(), &url]).unwrap();
    assert_eq!(code, "200");
    assert!(body.contains("<h1>Log in</h1>"), "{body}");
    // The certificate is checked: without its authority curl refuses it.
    assert!(curl(&[&url]).is_err());
    // Plain HTTP gets no page from the TLS port.
    let plain = curl(&[&format!("http://127.0.0.1:{port}/login")]);
    assert!(
        plain.as_ref().map_or(true, |(c, _)| c != "200"),
        "{plain:?}"
    );

    let unix_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let socket = unix_dir.path().join("console.sock");
    let _unix = daemon(
        unix_dir.path(),
        &format!(
            "  listen: unix:{}\n  users_file: {}\n",
            socket.display(),
            f.users.display()
        ),
    );
    let (code, body) = curl(&[
        "--unix-socket",
        socket.to_str().unwrap(),
        "http://console/login",
    ])
    .unwrap();
    assert_eq!(code, "200");
    assert!(body.contains("<h1>Log in</h1>"), "{body}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
}

#[test]
fn check_config_names_the_file_line_and_key_of_a_wrong_console() {
    let f = files();
    let dir = f.dir.path();
    let check = |console: &str| {
        let path = dir.join("c.yaml");
        std::fs::write(
            &path,
            format!(
                "listen: inet:127.0.0.1:9999\nlocal_domains: [example.com]\nconsole:\n{console}"
            ),
        )
        .unwrap();
        let out = common::cli::with_config(&path, &["check-config"]);
        assert_eq!(out.code, 2, "{}", out.text());
        out.text()
    };
    let said = check("  listen: 127.0.0.1:9360\n");
    assert!(
        said.contains("c.yaml:4: console.users_file: the console needs a users file"),
        "{said}"
    );
    let said = check(&format!(
        "  listen: 0.0.0.0:9360\n  users_file: {}\n",
        f.users.display()
    ));
    assert!(
        said.contains("c.yaml:4: console.listen: 0.0.0.0:9360 is beyond loopback"),
        "{said}"
    );
    let bad = dir.join("bad.users");
    std::fs::write(&bad, "alice:plain-text:admin\n").unwrap();
    let said = check(&format!("  users_file: {}\n", bad.display()));
    assert!(
        said.contains("c.yaml:4: console.users_file:")
            && said.contains("bad.users:1: the hash of \"alice\" is not an Argon2 PHC string"),
        "{said}"
    );
    let short = dir.join("short.secret");
    std::fs::write(&short, "tooshort\n").unwrap();
    let said = check(&format!(
        "  users_file: {}\n  link_secret_file: {}\n",
        f.users.display(),
        short.display()
    ));
    assert!(
        said.contains("c.yaml:5: console.link_secret_file:")
            && said.contains("fewer than 32 bytes"),
        "{said}"
    );
    // A good one.
    let path = dir.join("good.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:9999\nlocal_domains: [example.com]\nconsole:\n  users_file: {}\n  link_secret_file: {}\n",
            f.users.display(),
            f.secret.display()
        ),
    )
    .unwrap();
    let out = common::cli::with_config(&path, &["check-config"]);
    assert_eq!(out.code, 0, "{}", out.text());
}

/// egress-milter-queue.socket as systemd runs it (`Accept=yes`): for each
/// connection, `egress-milter queue-helper` with the connection as its
/// standard input and output. The number of helpers started so far.
fn socket_activation(
    socket: &std::path::Path,
    config: &std::path::Path,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::os::fd::OwnedFd;
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (count, config) = (started.clone(), config.to_path_buf());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let Ok(out) = stream.try_clone() else { return };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let child = Command::new(common::process::BIN)
                .args(["queue-helper", "--config"])
                .arg(&config)
                .stdin(std::process::Stdio::from(OwnedFd::from(stream)))
                .stdout(std::process::Stdio::from(OwnedFd::from(out)))
                .spawn();
            if let Ok(mut c) = child {
                std::thread::spawn(move || c.wait());
            }
        }
    });
    started
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_mail_is_reached_through_the_queue_helper_socket() {
    use crate::console::{config, delivered, held_ids, STAFF};
    use common::console::Http;
    use common::postfix::submit;
    let f = files();
    let (milter_port, console_port) = (common::free_port(), common::free_port());
    let hook = common::webhook::Webhook::start(200).await;
    let mut sink = common::sink::Sink::start().await;
    let pf = common::postfix::Postfix::start_with(
        "console-helper",
        &format!("inet:127.0.0.1:{milter_port}"),
        sink.port,
        &[("alice@example.com", "alice-pw")],
    );
    let socket = f.dir.path().join("queue.sock");
    let cfg = config(
        &f,
        milter_port,
        console_port,
        &hook.url(),
        STAFF,
        &format!(
            "  postfix_config: {}\n  queue_socket: {}\n",
            pf.dir.display(),
            socket.display()
        ),
    );
    let daemon = Running::start(&cfg);
    daemon.wait_for("console listening");
    let mut admin = Http::new(console_port);
    assert_eq!(admin.login("alice", "alice-password").await.status, 303);
    // No helper yet: the page says so, and what to start.
    let page = admin.get("/held").await;
    assert!(
        page.body.contains("egress-milter-queue.socket"),
        "{}",
        page.body
    );
    let started = socket_activation(&socket, &cfg);
    let port = pf.smtp_port;
    let alice = Some(("alice@example.com", "alice-pw"));
    for (to, subject) in [("x@d1.test", "one"), ("x@d2.test", "two")] {
        tokio::task::spawn_blocking(move || {
            submit(
                port,
                alice,
                "alice@example.com",
                to,
                &["--header", &format!("Subject: {subject}")],
            )
        })
        .await
        .unwrap();
    }
    assert_eq!(delivered(&mut sink, 1, 10).await, ["one"]);
    let held = held_ids(&pf);
    assert_eq!(held.len(), 1, "{}", pf.log());
    let q = &held[0];
    let page = admin.get(&format!("/held/{q}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("<td id=\"subject\">two</td>"),
        "{}",
        page.body
    );
    let csrf = page.input("csrf");
    let r = admin.act(&csrf, "release", &format!("message:{q}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(delivered(&mut sink, 1, 10).await, ["two"]);
    // Listing, reading and releasing each took a helper of their own.
    assert!(started.load(std::sync::atomic::Ordering::SeqCst) >= 4);
}
