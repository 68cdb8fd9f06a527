//! `egress-milter limits show|reset KEY` against a running daemon, with the
//! local and the Redis backend.

use crate::common;
use common::{process::Running, process::BIN, redis::RedisServer};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

fn limits(config: &Path, args: &[&str]) -> (bool, String) {
    let out = common::cli::with_config(config, &[&["limits"], args].concat());
    (out.ok(), out.text())
}

async fn send(addr: SocketAddr, sender: &str) -> String {
    common::mail_from(addr, "10.0.0.7", sender, None).await
}

/// The daemon run from a `milter.yaml` in `dir`, with its admin socket
/// there; `rest` is the configuration after `listen`, `local_domains` and
/// `admin`. Returns it, the config's path and the milter's address.
fn daemon(dir: &Path, rest: &str) -> (Running, PathBuf, SocketAddr) {
    let port = common::free_port();
    let path = dir.join("milter.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:{port}
local_domains: [example.com]
admin: {{ listen: \"unix:{}\" }}
{rest}",
            dir.join("admin.sock").display()
        ),
    )
    .unwrap();
    let d = Running::start(&path);
    d.wait_for("egress-milter started");
    (d, path, format!("127.0.0.1:{port}").parse().unwrap())
}

async fn show_and_reset(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (d, path, addr) = daemon(
        dir.path(),
        &format!(
            "classes: [{{ name: app, clients: [10.0.0.0/8], sender_domains: [xyz.com] }}]
rate_limits:
  {backend}
  messages_per_sender: 3/h
  messages_per_client: 100/h
  concurrent_per_client: 5
  custom:
    - {{ name: tenant, key: sender_domain, count: messages, rate: 1000/d }}
  overrides:
    - {{ match: jim@xyz.com, messages_per_sender: 2/m }}
"
        ),
    );
    // One budget however jim spells himself (rate_limits.keys defaults),
    // and shown and reset under any spelling.
    assert_eq!(send(addr, "<jim@xyz.com>").await, "continue");
    assert_eq!(send(addr, "<Jim+news@xyz.com>").await, "continue");
    assert!(send(addr, "<jim@xyz.com>").await.starts_with("451 4.7.1"));

    let (ok, out) = limits(&path, &["show", "JIM+promo@xyz.com"]);
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("messages_per_sender"))
        .unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1..3], ["2/m", "0"], "{out}");
    // Full again in a minute or a little less.
    let secs: u64 = cols[3].trim_end_matches('s').parse().unwrap();
    assert!((58..=60).contains(&secs), "{out}");
    // The default 3/h does not apply to jim and holds nothing: not shown.
    assert!(!out.contains("3/h"), "{out}");

    let (ok, out) = limits(&path, &["show", "10.0.0.7"]);
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("messages_per_client"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[1..3],
        ["100/h", "98"],
        "{out}"
    );
    assert!(out.contains("concurrent_per_client"), "{out}");

    // The tenant's custom limit, by its domain in any case: two messages
    // passed (the third was refused by messages_per_sender before it).
    let (ok, out) = limits(&path, &["show", "XYZ.com"]);
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("tenant"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[1..3],
        ["1000/d", "998"],
        "{out}"
    );
    let (ok, out) = limits(&path, &["reset", "xyz.com"]);
    assert!(ok && out.contains("reset xyz.com: 1 counters"), "{out}");
    let (ok, out) = limits(&path, &["show", "xyz.com"]);
    assert!(ok && out.contains(" 1000 "), "{out}");

    let (ok, out) = limits(&path, &["reset", "jim+x@XYZ.com"]);
    assert!(ok && out.contains("reset jim@xyz.com"), "{out}");
    assert_eq!(send(addr, "<jim@xyz.com>").await, "continue");

    let (ok, out) = limits(&path, &["show", ""]);
    assert!(!ok, "{out}");
    // KIND:KEY says what the key is; an unknown kind, a key that is not of
    // its kind, or an unknown limit is an error, not a full budget.
    let (ok, out) = limits(
        &path,
        &[
            "show",
            "sender:jim@xyz.com",
            "--limit",
            "messages_per_sender",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 2, "one limit: {out}");
    for (args, want) in [
        (vec!["show", "usr:jim"], "unknown key kind \"usr\""),
        (vec!["show", "client:jim"], "\"jim\" is not a client key"),
        (
            vec!["show", "jim@xyz.com", "--limit", "messages_per_sendr"],
            "no limit named \"messages_per_sendr\"",
        ),
        (
            vec!["reset", "10.0.0.7", "--limit", "nope"],
            "no limit named \"nope\"",
        ),
    ] {
        let (ok, out) = limits(&path, &args);
        assert!(!ok && out.contains(want), "{args:?}: {out}");
    }
    // A client's open connections alone.
    let (ok, out) = limits(
        &path,
        &["show", "10.0.0.7", "--limit", "concurrent_per_client"],
    );
    assert!(ok && out.contains(" open"), "{out}");
    assert_eq!(out.lines().count(), 2, "one limit: {out}");
    // An IPv6 client: its /64, with its connection limits.
    let (ok, out) = limits(&path, &["show", "2001:db8:1:2::7"]);
    assert!(ok && out.contains("messages_per_client"), "{out}");
    drop(d);
    let (ok, out) = limits(&path, &["show", "jim@xyz.com"]);
    assert!(!ok && out.contains("cannot reach the daemon"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend() {
    show_and_reset("backend: local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend() {
    let redis = RedisServer::start();
    show_and_reset(&format!(
        "backend: redis\n  redis: {{ url: \"{}\" }}",
        redis.url()
    ))
    .await;
}

/// Runs `egress-milter ARGS --config CONFIG` as the unprivileged user
/// nobody, from a copy of the binary anyone may run.
fn as_nobody(bin: &Path, config: &Path, args: &[&str]) -> (bool, String) {
    let out = common::cli::output(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin)
            .args(args)
            .arg("--config")
            .arg(config),
    );
    (out.ok(), out.text())
}

async fn raw_tcp(addr: SocketAddr, text: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(text.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_user_is_refused_on_the_socket_and_on_tcp() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Everything but the endpoint itself is open to nobody: the directory,
    // the configuration, a copy of the binary.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("egress-milter");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, out) = as_nobody(&bin, Path::new("/dev/null"), &["--version"]);
    assert!(
        ok && out.contains("egress-milter"),
        "nobody cannot run it: {out}"
    );

    // The unix socket, mode 0660, owned by the daemon's user and group.
    let sock = dir.path().join("admin.sock");
    let path = dir.path().join("unix.yaml");
    let port = common::free_port();
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:{port}\nlocal_domains: [example.com]\nadmin: {{ listen: \"unix:{}\" }}\nrate_limits: {{ messages_per_client: 10/h }}\n",
            sock.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = Running::start(&path);
    d.wait_for("admin endpoint listening");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let (ok, out) = limits(&path, &["show", "10.0.0.7"]);
    assert!(ok, "the daemon's user: {out}");
    let (ok, out) = as_nobody(&bin, &path, &["limits", "reset", "10.0.0.7"]);
    assert!(!ok && out.contains("Permission denied"), "{out}");
    let (ok, out) = as_nobody(&bin, &path, &["incidents", "close", "user:alice"]);
    assert!(!ok && out.contains("Permission denied"), "{out}");
    let mut d = d;
    d.signal("-TERM");
    assert!(d.wait().success());
    assert!(!sock.exists(), "the socket is removed at shutdown");

    // TCP: only with the token, which nobody cannot read.
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "s3cret-token-0123456789\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let admin = common::free_port();
    let path = dir.path().join("tcp.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:{port}\nlocal_domains: [example.com]\nadmin: {{ listen: \"inet:127.0.0.1:{admin}\", token_file: \"{}\" }}\n",
            token.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = Running::start(&path);
    d.wait_for("admin endpoint listening");
    let (ok, out) = limits(&path, &["show", "10.0.0.7"]);
    assert!(ok, "with the token: {out}");
    let (ok, out) = as_nobody(&bin, &path, &["limits", "reset", "10.0.0.7"]);
    assert!(!ok && out.contains("cannot read the admin token"), "{out}");
    let addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let reset = r#""request":{"limits":{"reset":{"key":"10.0.0.7","limit":null}}}"#;
    for attempt in [
        format!("{{{reset}}}\n"),
        format!("{{\"token\":\"wrong-token-0123456789\",{reset}}}\n"),
        format!("{{\"token\":\"\",{reset}}}\n"),
    ] {
        assert_eq!(
            raw_tcp(addr, &attempt).await,
            "{\"error\":\"authentication required\"}\n",
            "{attempt:?}"
        );
    }
    let answer = raw_tcp(
        addr,
        "{\"token\":\"s3cret-token-0123456789\",\"request\":{\"incidents\":\"list\"}}\n",
    )
    .await;
    assert_eq!(answer, "{\"ok\":\"no open incident\\n\"}\n");
    let answer = raw_tcp(addr, "incidents list\n").await;
    assert!(
        answer.starts_with("{\"error\":\"not a request: "),
        "{answer}"
    );
    drop(d);

    // TCP without a token is a configuration error.
    std::fs::write(
        &path,
        format!("listen: inet:127.0.0.1:{port}\nlocal_domains: [example.com]\nadmin: {{ listen: \"inet:127.0.0.1:{admin}\" }}\n"),
    )
    .unwrap();
    let out = common::cli::output(
        Command::new(BIN)
            .arg("check-config")
            .arg("--config")
            .arg(&path),
    );
    let text = out.stderr.clone();
    assert!(!out.ok());
    assert!(
        text.contains("tcp.yaml:3: admin.listen") && text.contains("needs admin.token_file"),
        "{text}"
    );

    // A token the daemon would refuse (too short) is refused by
    // check-config too, at the key that names it.
    std::fs::write(&token, "short\n").unwrap();
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:{port}\nlocal_domains: [example.com]\nadmin:\n  listen: \"inet:127.0.0.1:{admin}\"\n  token_file: \"{}\"\n",
            token.display()
        ),
    )
    .unwrap();
    let out = common::cli::output(
        Command::new(BIN)
            .arg("check-config")
            .arg("--config")
            .arg(&path),
    );
    let text = out.stderr.clone();
    assert!(!out.ok(), "{text}");
    assert!(
        text.contains("tcp.yaml:5: admin.token_file")
            && text.contains("shorter than 16 characters"),
        "{text}"
    );
}

/// With `fold_case: false`, a dotted login is kept as spelt for the limits
/// keyed by login, while a domain is still a domain (lower case) for the
/// limits keyed by domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dotted_login_is_a_login_and_a_domain_is_a_domain() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, path, addr) = daemon(
        dir.path(),
        "classes: [{ name: staff, auth: any, sender_domains: [xyz.com] }]
rate_limits:
  keys: { fold_case: false }
  messages_per_user: 5/h
  custom:
    - { name: tenant, key: sender_domain, count: messages, rate: 1000/d }
",
    );
    for _ in 0..2 {
        let r = common::mail_from(addr, "192.0.2.9", "<john@Xyz.com>", Some("John.Smith")).await;
        assert_eq!(r, "continue");
    }
    let row = |out: &str, name: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let (ok, out) = limits(&path, &["show", "John.Smith"]);
    assert!(ok, "{out}");
    assert_eq!(row(&out, "messages_per_user")[1..3], ["5/h", "3"], "{out}");
    // Another spelling is another login here.
    let (ok, out) = limits(&path, &["show", "john.smith"]);
    assert!(ok, "{out}");
    assert_eq!(row(&out, "messages_per_user")[1..3], ["5/h", "5"], "{out}");
    // The domain, in any case.
    let (ok, out) = limits(&path, &["show", "XYZ.Com"]);
    assert!(ok, "{out}");
    assert_eq!(row(&out, "tenant")[1..3], ["1000/d", "998"], "{out}");
    // Reset of the login leaves the domain's budget alone, and the other
    // way round.
    let (ok, out) = limits(&path, &["reset", "John.Smith"]);
    assert!(ok && out.contains("reset John.Smith"), "{out}");
    let (_, out) = limits(&path, &["show", "John.Smith"]);
    assert_eq!(row(&out, "messages_per_user")[1..3], ["5/h", "5"], "{out}");
}
