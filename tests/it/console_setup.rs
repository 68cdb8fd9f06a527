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
