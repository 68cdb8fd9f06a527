//! Virus scanning through a real clamd: EICAR in every place a message can
//! carry it, a clean message, an allowed signature, hold and monitor, and
//! clamd dead, stopped, or the first of two dead.

use crate::common;
use common::clamd::{Clamd, EICAR, EICAR_NAME};
use common::{reply, Daemon};
use egress_milter::config::Config;
use indymilter::MacroStage;
use indymilter_test::{any, Status};
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

async fn start(extra: &str) -> Daemon {
    let text = format!(
        "listen: inet:127.0.0.1:1
local_domains: [example.com]
classes:
  - {{ name: trusted, clients: [10.9.0.0/16], sender_domains: [example.com], antivirus: false }}
  - {{ name: app, clients: [10.0.0.0/8], sender_domains: [example.com] }}
{extra}"
    );
    let config = Config::parse(Path::new("antivirus.yaml"), &text).expect("valid config");
    common::start_with(config).await
}

fn clamd_config(c: &Clamd, extra: &str) -> String {
    format!(
        "antivirus:\n  clamd: [\"inet:127.0.0.1:{}\"]\n  timeout: 2s\n{extra}",
        c.port
    )
}

#[derive(Debug)]
struct Sent {
    reply: String,
    held: bool,
}

/// One message from `ip` with these headers (From/To added) and body.
async fn send(d: &Daemon, ip: &str, headers: &[(&str, &str)], body: &str) -> Sent {
    let mut c = d.client(ip).await;
    common::envelope(&mut c, "<app@example.com>", "<someone@example.net>").await;
    for (name, value) in [("From", "app@example.com"), ("To", "someone@example.net")]
        .iter()
        .chain(headers)
    {
        c.header(*name, *value).await.unwrap();
    }
    let s = c.eoh().await.unwrap();
    if s != Status::Continue {
        return Sent {
            reply: reply(&s),
            held: false,
        };
    }
    for chunk in body.as_bytes().chunks(60_000) {
        c.body(chunk.to_vec()).await.unwrap();
    }
    c.macros(MacroStage::Eom, [("i", "QAV")]).await.unwrap();
    let (actions, s) = c.eom().await.unwrap();
    let _ = c.close().await;
    Sent {
        reply: reply(&s),
        held: actions.has_quarantine(any()),
    }
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(data);
    text.as_bytes()
        .chunks(76)
        .map(|l| String::from_utf8_lossy(l).into_owned() + "\r\n")
        .collect()
}

fn zip_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file(name, opts).unwrap();
        z.write_all(data).unwrap();
        z.finish().unwrap();
    }
    out.into_inner()
}

fn multipart(part: &str) -> (Vec<(&'static str, &'static str)>, String) {
    (
        vec![
            ("MIME-Version", "1.0"),
            ("Content-Type", "multipart/mixed; boundary=\"b1\""),
        ],
        format!(
            "--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b1\r\n{part}\r\n--b1--\r\n"
        ),
    )
}

/// A way to carry a file: what it is, the message's headers, its body.
type Carrier = (&'static str, Vec<(&'static str, &'static str)>, String);

/// The ways one message can carry the EICAR file.
fn infected() -> Vec<Carrier> {
    let mut out = vec![("plain body", vec![], format!("Hello,\r\n{EICAR}\r\n"))];
    let (h, b) = multipart(&format!(
        "Content-Type: application/octet-stream; name=\"e.bin\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"e.bin\"\r\n\r\n{}",
        b64(EICAR.as_bytes())
    ));
    out.push(("base64 attachment", h, b));
    let (h, b) = multipart(&format!(
        "Content-Type: application/zip; name=\"docs.zip\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"docs.zip\"\r\n\r\n{}",
        b64(&zip_of("readme.txt", EICAR.as_bytes()))
    ));
    out.push(("inside a ZIP attachment", h, b));
    let (h, b) = multipart(&format!(
        "Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\nFrom: x@example.com\r\nSubject: inner\r\nContent-Type: text/plain\r\n\r\n{EICAR}\r\n"
    ));
    out.push(("inside an attached message", h, b));
    out
}

fn scans(d: &Daemon, result: &str) -> u64 {
    common::counted(
        &d.metrics(),
        "egress_antivirus_scans_total",
        &[("result", result)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eicar_is_refused_wherever_it_hides() {
    let clamd = Clamd::start();
    let d = start(&clamd_config(&clamd, "")).await;
    let want = format!("550 5.7.1 Message contains a virus ({EICAR_NAME})");
    for (what, headers, body) in infected() {
        let s = send(&d, "10.0.0.5", &headers, &body).await;
        assert_eq!(s.reply, want, "{what}");
    }
    let s = send(
        &d,
        "10.0.0.5",
        &[("Subject", "clean")],
        "Nothing to see.\r\n",
    )
    .await;
    assert_eq!(s.reply, "continue");
    // A class that turns scanning off is not scanned.
    let (_, headers, body) = &infected()[0];
    assert_eq!(send(&d, "10.9.0.5", headers, body).await.reply, "continue");
    let m = d.metrics();
    assert_eq!(scans(&d, "virus"), 4, "{m}");
    assert_eq!(scans(&d, "clean"), 1, "{m}");
    assert_eq!(
        common::counted(&m, "egress_viruses_total", &[("signature", EICAR_NAME)]),
        4
    );
    assert_eq!(
        common::counted(
            &m,
            "egress_decisions_total",
            &[("rule", "antivirus"), ("verdict", "reject")]
        ),
        4
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_held_and_monitored() {
    let clamd = Clamd::start();
    let (_, headers, body) = &infected()[1];
    // allow: the signature is let through, counted as allowed.
    let d = start(&clamd_config(&clamd, "  allow: [\"Egress.Test.*\"]\n")).await;
    let s = send(&d, "10.0.0.5", headers, body).await;
    assert_eq!((s.reply.as_str(), s.held), ("continue", false));
    assert_eq!(scans(&d, "allowed"), 1);
    d.stop().await;
    // hold: accepted with the quarantine action.
    let d = start(&clamd_config(&clamd, "  action: hold\n")).await;
    let s = send(&d, "10.0.0.5", headers, body).await;
    assert_eq!((s.reply.as_str(), s.held), ("continue", true));
    assert_eq!(
        common::counted(
            &d.metrics(),
            "egress_messages_total",
            &[("verdict", "hold")]
        ),
        1
    );
    d.stop().await;
    // tempfail.
    let d = start(&clamd_config(&clamd, "  action: tempfail\n")).await;
    let s = send(&d, "10.0.0.5", headers, body).await;
    assert_eq!(
        s.reply,
        format!("451 4.7.1 Message contains a virus ({EICAR_NAME})")
    );
    d.stop().await;
    // monitor (the action, or the mode): let through, logged as would_reject.
    for extra in ["  action: monitor\n", ""] {
        let config = clamd_config(&clamd, extra)
            + if extra.is_empty() {
                "mode: monitor\n"
            } else {
                ""
            };
        let d = start(&config).await;
        let s = send(&d, "10.0.0.5", headers, body).await;
        assert_eq!((s.reply.as_str(), s.held), ("continue", false), "{extra:?}");
        assert_eq!(
            common::counted(
                &d.metrics(),
                "egress_decisions_total",
                &[("rule", "antivirus"), ("verdict", "would_reject")]
            ),
            1,
            "{extra:?}"
        );
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_stopped_clamd_follows_on_error_within_the_timeout() {
    let (_, headers, body) = &infected()[0];
    let mut clamd = Clamd::start();
    let d = start(&clamd_config(&clamd, "")).await;
    assert!(send(&d, "10.0.0.5", headers, body)
        .await
        .reply
        .starts_with("550"));
    // Stopped (SIGSTOP): no answer; the timeout (2 s), then on_error.
    clamd.signal("-STOP");
    let t = Instant::now();
    let s = send(&d, "10.0.0.5", headers, body).await;
    assert_eq!(
        s.reply,
        "451 4.3.0 Temporary policy failure",
        "after {:?}, clamd log: {}",
        t.elapsed(),
        clamd.log()
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    clamd.signal("-CONT");
    // Killed: refused connections, on_error at once.
    clamd.kill();
    let t = Instant::now();
    let s = send(&d, "10.0.0.5", headers, body).await;
    assert_eq!(s.reply, "451 4.3.0 Temporary policy failure");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(scans(&d, "error") >= 2);
    d.stop().await;
    // antivirus.on_error: accept lets it through (and says so).
    let d = start(&format!(
        "antivirus:\n  clamd: [\"inet:127.0.0.1:{}\"]\n  on_error: accept\n",
        clamd.port
    ))
    .await;
    assert_eq!(send(&d, "10.0.0.5", headers, body).await.reply, "continue");
    assert_eq!(
        common::counted(
            &d.metrics(),
            "egress_decisions_total",
            &[("rule", "internal_error"), ("verdict", "error_accepted")]
        ),
        1
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_clamd_scans_while_the_first_is_down() {
    let (_, headers, body) = &infected()[0];
    let first_port = common::free_port();
    let mut second = Clamd::start();
    // The first, on its unix socket... not started yet: refused.
    let d = start(&format!(
        "antivirus:\n  clamd: [\"inet:127.0.0.1:{first_port}\", \"unix:{}\"]\n  timeout: 2s\n  backoff: 1s\n",
        second.socket.display()
    ))
    .await;
    assert!(send(&d, "10.0.0.5", headers, body)
        .await
        .reply
        .starts_with("550 5.7.1 Message contains a virus"));
    // The first comes up, the second goes away: after the first's
    // back-off, it is tried again and scans.
    let _first = Clamd::start_on(first_port);
    second.kill();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(send(&d, "10.0.0.5", headers, body)
        .await
        .reply
        .starts_with("550 5.7.1 Message contains a virus"));
    assert_eq!(scans(&d, "error"), 0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_refuses_an_infected_message_and_delivers_a_clean_one() {
    use common::{postfix::Postfix, sink::Sink};
    let clamd = Clamd::start();
    let d = start(&clamd_config(&clamd, "")).await;
    let mut sink = Sink::start().await;
    // 127.0.0.2 is in no class here; Postfix relays for loopback, and the
    // recipient is local, so the message is inbound: scanned all the same.
    let pf = Postfix::start("antivirus", &format!("inet:{}", d.addr), sink.port);
    let port = pf.smtp_port;
    let send = move |body: String, subject: &'static str| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("swaks")
                .args(["--server", &format!("127.0.0.1:{port}")])
                .args(["--from", "someone@example.net", "--to", "user@example.com"])
                .args(["--header", &format!("Subject: {subject}")])
                .args(["--body", &body])
                .output()
                .expect("swaks");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let t = send(format!("Hello,\n{EICAR}\n"), "infected")
        .await
        .unwrap();
    assert!(
        t.lines()
            .any(|l| l == format!("<** 550 5.7.1 Message contains a virus ({EICAR_NAME})")),
        "{t}"
    );
    let t = send("Hello, nothing here.".into(), "clean").await.unwrap();
    assert!(t.contains("queued as"), "{t}");
    let got = sink.next(10).await.expect("the clean message");
    assert_eq!(got.subject(), "clean");
    assert!(sink.next(2).await.is_none(), "the infected message left");
    d.stop().await;
}

#[test]
fn explain_scans_through_the_configured_clamd() {
    let clamd = Clamd::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("milter.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\nclasses: [{{ name: app, clients: [10.0.0.0/8], sender_domains: [example.com] }}]\n{}",
            clamd_config(&clamd, "")
        ),
    )
    .unwrap();
    let eml = dir.path().join("m.eml");
    std::fs::write(
        &eml,
        format!("From: a@example.com\nSubject: x\n\n{EICAR}\n"),
    )
    .unwrap();
    let out = std::process::Command::new(common::process::BIN)
        .args(["explain", "--config"])
        .arg(&config)
        .args([
            "--client",
            "10.0.0.5",
            "--from",
            "a@example.com",
            "--rcpt",
            "x@example.net",
        ])
        .arg(&eml)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "eom      antivirus                virus {EICAR_NAME}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "result: 550 5.7.1 Message contains a virus ({EICAR_NAME})"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_clamd_will_not_take_follows_on_error() {
    let clamd = Clamd::start();
    // clamd here takes 1 MB at most (StreamMaxLength): it answers ERROR.
    let big = "x".repeat(76).repeat(16_000) + "\r\n";
    let d = start(&clamd_config(&clamd, "")).await;
    let s = send(&d, "10.0.0.5", &[("Subject", "big")], &big).await;
    assert_eq!(s.reply, "451 4.3.0 Temporary policy failure");
    assert_eq!(scans(&d, "error"), 1);
    d.stop().await;
    // Over antivirus.max_size: not sent at all, the same answer.
    let d = start(&clamd_config(&clamd, "  max_size: 100KB\n")).await;
    let s = send(&d, "10.0.0.5", &[("Subject", "big")], &"y".repeat(200_000)).await;
    assert_eq!(s.reply, "451 4.3.0 Temporary policy failure");
    // Under it, scanned.
    let s = send(&d, "10.0.0.5", &[("Subject", "small")], "small\r\n").await;
    assert_eq!(s.reply, "continue");
    assert_eq!((scans(&d, "error"), scans(&d, "clean")), (1, 1));
    d.stop().await;
}
