//! Shared by the integration tests: start the real daemon on a loopback port
//! with a scenario's configuration, and talk to it with a milter client.
#![allow(dead_code)]

pub mod bind;
pub mod browser;
pub mod child;
pub mod clamd;
pub mod cli;
pub mod console;
pub mod delayed_ack;
pub mod dns;
pub mod postfix;
pub mod process;
pub mod redis;
pub mod rspamd;
pub mod sendmail;
pub mod sentinel;
pub mod sink;
pub mod slapd;
pub mod tls;
pub mod webhook;

use egress_milter::{config::Config, Shared};
use indymilter::{Actions, MacroStage};
use indymilter_test::{Status, TestConnection};
use std::{net::SocketAddr, path::PathBuf, sync::Arc};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub struct Daemon {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

pub fn config_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs")
        .join(name)
}

/// Starts the daemon with `tests/configs/NAME` on 127.0.0.1, any free port.
pub async fn start(name: &str) -> Daemon {
    let config = Config::load(&config_path(name)).expect("scenario config is valid");
    start_with(config).await
}

pub async fn start_with(config: Config) -> Daemon {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let shared = Shared::new(config);
    let (stop, stopped) = oneshot::channel::<()>();
    let listener = egress_milter::server::MilterTcpListener(listener);
    let task = tokio::spawn(egress_milter::run(listener, shared.clone(), async move {
        let _ = stopped.await;
    }));
    Daemon {
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Daemon {
    pub async fn open(&self) -> TestConnection {
        TestConnection::configure()
            .available_actions(Actions::all())
            .open_tcp(self.addr)
            .await
            .expect("milter connection")
    }

    /// Opens a milter connection and sends connect + HELO for a client IP.
    pub async fn client(&self, ip: &str) -> TestConnection {
        let mut conn = self.open().await;
        let socket: SocketAddr = format!("{ip}:40000").parse().expect("ip");
        assert_eq!(
            conn.connect("client.test", socket).await.unwrap(),
            Status::Continue
        );
        // Taken without an answer: egress-milter never refuses at HELO.
        assert_eq!(conn.helo("client.test").await.unwrap(), Status::Noreply);
        conn
    }

    /// What the daemon's metrics endpoint would answer now.
    pub fn metrics(&self) -> String {
        self.shared.metrics_text()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("daemon task").expect("daemon run");
        }
    }
}

/// MAIL FROM with an optional SASL login sent as the `{auth_authen}` macro.
pub async fn mail(conn: &mut TestConnection, sender: &str, login: Option<&str>) -> Status {
    let mut macros = vec![("i", "QID1")];
    if let Some(l) = login {
        macros.push(("{auth_authen}", l));
    }
    conn.macros(MacroStage::Mail, macros).await.unwrap();
    conn.mail([sender]).await.unwrap()
}

/// A new milter connection to `addr` from client `ip`, MAIL FROM `sender`
/// (with an optional login), closed again: the reply to the connection if
/// it was refused, else to MAIL FROM ("continue" or the refusal).
pub async fn mail_from(addr: SocketAddr, ip: &str, sender: &str, login: Option<&str>) -> String {
    let mut conn = TestConnection::configure()
        .available_actions(Actions::all())
        .open_tcp(addr)
        .await
        .unwrap();
    let client: SocketAddr = format!("{ip}:1").parse().unwrap();
    let c = reply(&conn.connect("gw.test", client).await.unwrap());
    if c != "continue" {
        return c;
    }
    let r = reply(&mail(&mut conn, sender, login).await);
    conn.close().await.unwrap();
    r
}

/// The whole reply of a refusal ("550 5.7.1 ..."), or "continue".
pub fn reply(status: &Status) -> String {
    match status {
        Status::Continue => "continue".into(),
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            m.to_string_lossy().into_owned()
        }
        other => format!("{other:?}"),
    }
}

/// Sends the headers, end of headers, and (if not refused) a body and end of
/// message; returns the reply at the first stage that was not "continue".
pub async fn message(conn: &mut TestConnection, headers: &[(&str, &str)]) -> String {
    for (name, value) in headers {
        // Headers are taken without an answer to each; a refusal decided
        // on one is given at end of headers.
        let s = conn.header(*name, *value).await.unwrap();
        assert_eq!(s, Status::Noreply, "header {name}");
    }
    let eoh = conn.eoh().await.unwrap();
    if eoh != Status::Continue {
        return reply(&eoh);
    }
    let (_, eom) = conn.eom().await.unwrap();
    reply(&eom)
}

/// Verifies every DKIM-Signature of a message with python3-dkim (an
/// implementation independent of ours), the keys' TXT records given.
pub fn python_dkim(message: &str, records: &[(&str, &str)]) -> bool {
    let mut table = String::from("{");
    for (name, text) in records {
        table.push_str(&format!("b'{name}.': b'{text}',"));
    }
    table.push('}');
    python_dkim_with(
        message,
        &format!("recs = {table}\ndef dns(name, timeout=5):\n    return recs.get(name)\n"),
    )
}

/// [`python_dkim`], the keys looked up by `dns`, Python source that
/// defines `dns(name, timeout=5)` (a name in bytes, its TXT value in
/// bytes, or None).
pub fn python_dkim_with(message: &str, dns: &str) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let msg = dir.path().join("m.eml");
    std::fs::write(&msg, message).expect("write message");
    let script = format!(
        "import dkim, sys\n\
         {dns}\
         m = open(sys.argv[1], 'rb').read()\n\
         d = dkim.DKIM(m)\n\
         n = len([l for l in m.split(b'\\r\\n\\r\\n')[0].split(b'\\r\\n') if l.lower().startswith(b'dkim-signature:')])\n\
         res = [d.verify(idx=i, dnsfunc=dns) for i in range(n)]\n\
         print(res)\n\
         sys.exit(0 if n > 0 and all(res) else 1)\n"
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(&msg)
        .output()
        .expect("python3-dkim is not installed: run scripts/test.sh, which installs it");
    eprintln!(
        "python3-dkim: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

pub fn verify_dkim_python(message: &str, name: &str, record: &str) -> bool {
    python_dkim(message, &[(name, record)])
}

/// The header fields of a message's header section (CRLF lines), each with
/// its folding kept as LF + WSP, as a milter receives header values.
pub fn header_fields(head: &str) -> Vec<(String, String)> {
    let mut fields: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        match fields.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push('\n');
                last.push_str(line);
            }
            _ => fields.push(line.to_string()),
        }
    }
    fields
        .into_iter()
        .filter_map(|f| {
            f.split_once(':')
                .map(|(n, v)| (n.to_string(), v.trim_start_matches(' ').to_string()))
        })
        .collect()
}

/// A ZIP with every entry's general-purpose flags and compression method
/// rewritten, in its local headers and in its central directory (bit 0 of
/// the flags: encrypted; method 12: bzip2, 14: LZMA, 99: AES), as an
/// archiver that the checks cannot read would have written it.
pub fn zip_patched(mut zip: Vec<u8>, flags: u16, method: u16) -> Vec<u8> {
    let mut at = 0;
    while let Some(i) = zip[at..]
        .windows(4)
        .position(|w| w == b"PK\x03\x04" || w == b"PK\x01\x02")
    {
        let h = at + i;
        // Local header: flags at 6, method at 8; central: at 8 and 10.
        let off = if zip[h + 2] == 3 { 6 } else { 8 };
        zip[h + off..h + off + 2].copy_from_slice(&flags.to_le_bytes());
        zip[h + off + 2..h + off + 4].copy_from_slice(&method.to_le_bytes());
        at = h + 4;
    }
    zip
}

/// MAIL FROM and one RCPT TO, both expected to pass.
pub async fn envelope(conn: &mut TestConnection, sender: &str, rcpt: &str) {
    assert_eq!(
        reply(&mail(conn, sender, None).await),
        "continue",
        "MAIL FROM {sender}"
    );
    assert_eq!(
        reply(&conn.rcpt([rcpt]).await.unwrap()),
        "continue",
        "RCPT TO {rcpt}"
    );
}

/// A loopback TCP port free at the time of asking.
/// The `elapsed_ms` of the next `n` summary lines a running daemon logs;
/// each message must have been accepted.
pub fn summary_elapsed_ms(d: &process::Running, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let line = d.wait_for("egress_milter::summary");
            assert!(line.contains("verdict=\"accept\""), "{line}");
            line.split_once("elapsed_ms=")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no elapsed_ms: {line}"))
        })
        .collect()
}

/// A loopback port free for TCP now, for a server a test starts or for a
/// port that must stay dead. Taken from the 10,000 ports below the kernel's
/// ephemeral range, so no outgoing connection and no `bind(:0)` can take it
/// before the server binds it; one test process never hands it out twice.
pub fn free_port() -> u16 {
    free_port_where(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// Like [`free_port`], for a port `usable` accepts.
pub fn free_port_where(usable: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    const SPAN: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let low = ephemeral_low.saturating_sub(SPAN).max(1024);
    let span = ephemeral_low.saturating_sub(low).max(1);
    // Each test binary starts elsewhere in the span.
    let offset = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(low + (offset + n) % span) else {
            continue;
        };
        if usable(port) {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{}", low + span);
}

/// The metrics endpoint's answer (status line, headers, body).
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("metrics request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("metrics answer");
    out
}

/// The sum of the samples of a labelled counter whose labels include every
/// `(name, value)` given, in an exposition of the metrics endpoint.
pub fn counted(exposition: &str, metric: &str, labels: &[(&str, &str)]) -> u64 {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix(metric)?.strip_prefix('{'))
        .filter_map(|l| l.split_once("} "))
        .filter(|(have, _)| {
            labels
                .iter()
                .all(|(k, v)| have.split(',').any(|p| p == format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, n)| n.trim().parse::<u64>().ok())
        .sum()
}

/// Decisions (refusals, and would-be refusals in monitor mode) with this
/// verdict, as the metrics endpoint counts them.
pub fn decisions(exposition: &str, verdict: &str) -> u64 {
    counted(
        exposition,
        "egress_decisions_total",
        &[("verdict", verdict)],
    )
}

/// An unlabelled counter's value in an exposition; fails when it is not
/// there.
pub fn unlabelled(exposition: &str, metric: &str) -> u64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(metric)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {metric} in {exposition}"))
}

/// The connections `limits show IP` counts open for a client, as an
/// operator reads them.
pub async fn open_connections(shared: &egress_milter::Shared, ip: &str) -> u64 {
    use egress_milter::admin::{answer, Answer, Limits, Request};
    let request = Request::Limits(Limits::Show {
        key: ip.to_string(),
        limit: Some("concurrent_per_client".into()),
    });
    match answer(shared, request).await {
        Answer::Ok(text) => text
            .lines()
            .find(|l| l.starts_with("concurrent_per_client"))
            .and_then(|l| l.split_whitespace().rev().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no open count in {text}")),
        Answer::Error(e) => panic!("limits show {ip}: {e}"),
    }
}

/// Polls `check` every 50 ms until it gives `Ok`, for at most `within`;
/// then fails with `what` and the last `Err`'s detail.
pub async fn until<T>(
    within: std::time::Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(detail) => assert!(std::time::Instant::now() < deadline, "{what}{detail}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// One unlabelled metric's value as the endpoint on `port` shows it.
pub fn metric(port: u16, name: &str) -> Option<String> {
    scrape(port).lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|v| v.strip_prefix(' '))
            .map(|v| v.trim().to_string())
    })
}

/// A delivered message's signature (selector s1 of example.com) verifies
/// with python3-dkim, and no longer once its body is changed.
pub fn assert_signed_s1(data: &str, record: &str) {
    assert!(
        verify_dkim_python(data, "s1._domainkey.example.com", record),
        "{data}"
    );
    let tampered = data.replace("Test message body.", "Test message b0dy.");
    assert_ne!(tampered, data, "the body to tamper with is not there");
    assert!(!verify_dkim_python(
        &tampered,
        "s1._domainkey.example.com",
        record
    ));
}
