//! Content checks over the milter socket, on a corpus of real-world-shaped
//! messages generated here: the reply at end of message, and the headers
//! added.

use crate::common;
use base64::Engine;
use common::{mail, reply};
use indymilter_test::{Actions, EomAction, ProtoOpts, Status, TestConnection};
use std::io::Write;

/// Sends a raw message (headers folded with CRLF + WSP, a blank line, the
/// body) as an MTA would: one header at a time, the body in chunks.
async fn send(conn: &mut TestConnection, raw: &str) -> (String, Vec<(String, String)>) {
    common::envelope(conn, "<app@example.com>", "<r@gmail.com>").await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    for (name, value) in common::header_fields(head) {
        let s = conn.header(name, value).await.unwrap();
        assert_eq!(s, Status::Noreply);
    }
    assert_eq!(conn.eoh().await.unwrap(), Status::Continue);
    for chunk in body.as_bytes().chunks(65_535) {
        assert_eq!(conn.body(chunk.to_vec()).await.unwrap(), Status::Continue);
    }
    let (actions, status) = conn.eom().await.unwrap();
    let added = actions
        .actions
        .iter()
        .filter_map(|a| match a {
            EomAction::InsertHeader { name, value, .. } => Some((
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )),
            _ => None,
        })
        .collect();
    (reply(&status), added)
}

const HEAD: &str = "From: App <app@example.com>\r\nTo: r@gmail.com\r\nDate: Mon, 23 Nov 2026 01:00:00 +0000\r\nMessage-ID: <m1@example.com>\r\nMIME-Version: 1.0\r\n";

fn multipart(subject: &str, parts: &[String]) -> String {
    let mut m = format!("{HEAD}Subject: {subject}\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n");
    for p in parts {
        m.push_str("--b1\r\n");
        m.push_str(p);
        m.push_str("\r\n");
    }
    m.push_str("--b1--\r\n");
    m
}

fn text_part() -> String {
    "Content-Type: text/plain; charset=utf-8\r\n\r\nHello, see the attachment.\r\n".into()
}

fn attachment(headers: &str, content: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(content);
    format!("{headers}\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n")
}

fn zip_with(names: &[&str]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut buf);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for n in names {
        z.start_file(*n, opts).unwrap();
        z.write_all(b"MZ payload").unwrap();
    }
    z.finish().unwrap();
    buf.into_inner()
}

fn html(subject: &str, head: &str, body: &str) -> String {
    format!("{head}Subject: {subject}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>{body}</body></html>\r\n")
}

#[tokio::test]
async fn corpus() {
    let d = common::start("content.yaml").await;
    let lying = r#"<p>Your account is locked.</p><a href="http://login.evil.example/paypal">https://www.paypal.com/signin</a>"#;
    let no_date = "From: App <app@example.com>\r\nTo: r@gmail.com\r\n";
    let encoded_name = format!(
        "=?utf-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode("report.scr")
    );
    let exe = "Attachment type .exe not allowed";
    let cases: Vec<(&str, String, &str, bool)> = vec![
        ("plain", format!("{HEAD}Subject: hello\r\n\r\nJust text.\r\n"), "continue", false),
        ("double extension", multipart("invoice", &[text_part(), attachment("Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"invoice.pdf.exe\"", b"MZ")]), exe, false),
        ("upper case, name= only", multipart("setup", &[text_part(), attachment("Content-Type: application/octet-stream; name=\"SETUP.JS\"", b"x")]), "Attachment type .js not allowed", false),
        ("RFC 2231 continued", multipart("doc", &[text_part(), attachment("Content-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n filename*0*=utf-8''invoice%2Epdf;\r\n filename*1=\".exe\"", b"x")]), exe, false),
        ("encoded word", multipart("report", &[text_part(), attachment(&format!("Content-Type: application/octet-stream; name=\"{encoded_name}\""), b"x")]), "Attachment type .scr not allowed", false),
        ("names disagree", multipart("x", &[text_part(), attachment("Content-Type: application/octet-stream; name=\"run.bat\"\r\nContent-Disposition: attachment; filename=\"notes.txt\"", b"x")]), "Attachment type .bat not allowed", false),
        ("exe inside a zip", multipart("files", &[text_part(), attachment("Content-Type: application/zip\r\nContent-Disposition: attachment; filename=\"files.zip\"", &zip_with(&["readme.txt", "bin/payload.exe"]))]), exe, false),
        ("clean zip", multipart("files", &[text_part(), attachment("Content-Type: application/zip\r\nContent-Disposition: attachment; filename=\"files.zip\"", &zip_with(&["a.txt", "b.pdf"]))]), "continue", false),
        ("attached message", multipart("fwd", &[text_part(), format!("Content-Type: message/rfc822\r\n\r\n{}", multipart("inner", &[text_part(), attachment("Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"inner.exe\"", b"MZ")]))]), exe, false),
        ("broken boundary", format!("{HEAD}Subject: x\r\nContent-Type: multipart/mixed; boundary=\"abc\"\r\n\r\n--xyz\r\nContent-Type: text/plain\r\n\r\nhi\r\n--xyz--\r\n"), "continue", false),
        ("8-bit headers", format!("{HEAD}Subject: Caf\u{e9} cr\u{e8}me \u{1f600}\r\n\r\nBonjour.\r\n"), "continue", false),
        ("html and a lying link: tagged", html("notice", HEAD, lying), "continue", true),
        ("+ no Date/Message-ID: deferred", html("notice", no_date, lying), "451 4.7.1 Message deferred as suspected spam (score 7.5)", false),
        ("+ lottery subject: rejected", html("You have WON the lottery", no_date, lying), "550 5.7.1 Message rejected as spam (score 12.5)", false),
    ];
    for (name, raw, want, tagged) in cases {
        let mut conn = d.client("10.0.0.1").await;
        let (got, added) = send(&mut conn, &raw).await;
        assert!(
            got == want || got.ends_with(want),
            "{name}: got {got:?}, want {want:?}"
        );
        let tags: Vec<&(String, String)> = added
            .iter()
            .filter(|(n, _)| n.starts_with("X-Egress"))
            .collect();
        assert_eq!(!tags.is_empty(), tagged, "{name}: {added:?}");
        if tagged {
            assert!(
                tags.contains(&&("X-Egress-Score".to_string(), "5.5".to_string())),
                "{tags:?}"
            );
            assert!(
                tags.iter().any(|(n, v)| n == "X-Egress-Rules"
                    && v.contains("link_mismatch=4")
                    && v.contains("html_only=1.5")),
                "{tags:?}"
            );
        }
        conn.close().await.unwrap();
    }
    d.stop().await;
}

#[tokio::test]
async fn too_big_and_too_many_recipients() {
    let mut config =
        egress_milter::config::Config::load(&common::config_path("content.yaml")).unwrap();
    config.content.max_message_size = 50_000;
    let d = common::start_with(config).await;
    let mut conn = d.client("10.0.0.1").await;
    common::envelope(&mut conn, "<app@example.com>", "<r@gmail.com>").await;
    conn.header("From", "app@example.com").await.unwrap();
    conn.eoh().await.unwrap();
    let s = conn.body(vec![b'x'; 60_000]).await.unwrap();
    assert_eq!(reply(&s), "552 5.3.4 Message size exceeds fixed limit");
    conn.abort().await.unwrap();
    let to: Vec<String> = (0..60).map(|i| format!("u{i}@example.net")).collect();
    let raw = format!(
        "{HEAD}Subject: hi\r\nCc: {}\r\n\r\nhello\r\n",
        to.join(", ")
    );
    let raw = raw.replace("To: r@gmail.com\r\n", "");
    let (got, _) = send(&mut conn, &raw).await;
    assert_eq!(got, "continue");
    conn.close().await.unwrap();
    d.stop().await;
}

/// An MTA that offers it (Postfix, Sendmail 8.14 and later) sends headers
/// without waiting for an answer to each; a message that outgrows
/// `max_message_size` in its headers is then refused at end of headers, and
/// the next message on the connection is judged afresh. An MTA that does not
/// offer it is answered on the header itself.
#[tokio::test]
async fn headers_past_the_size_limit() {
    let mut config =
        egress_milter::config::Config::load(&common::config_path("content.yaml")).unwrap();
    config.content.max_message_size = 50_000;
    let d = common::start_with(config).await;
    let big = "a".repeat(30_000);

    let mut conn = d.client("10.0.0.1").await;
    assert!(conn.negotiated_opts().contains(ProtoOpts::NOREPLY_HEADER));
    common::envelope(&mut conn, "<app@example.com>", "<r@gmail.com>").await;
    for (n, v) in [
        ("From", "app@example.com"),
        ("X-Big", big.as_str()),
        ("X-Big", big.as_str()),
    ] {
        assert_eq!(conn.header(n, v).await.unwrap(), Status::Noreply);
    }
    let s = conn.eoh().await.unwrap();
    assert_eq!(reply(&s), "552 5.3.4 Message size exceeds fixed limit");
    conn.abort().await.unwrap();
    let (got, _) = send(&mut conn, &format!("{HEAD}Subject: hi\r\n\r\nhello\r\n")).await;
    assert_eq!(got, "continue");
    conn.close().await.unwrap();

    let mut conn = TestConnection::configure()
        .available_actions(Actions::all())
        .available_opts(ProtoOpts::all() - ProtoOpts::NOREPLY_HEADER)
        .open_tcp(d.addr)
        .await
        .unwrap();
    let socket: std::net::SocketAddr = "10.0.0.1:40000".parse().unwrap();
    assert_eq!(conn.connect("c", socket).await.unwrap(), Status::Continue);
    assert!(!conn.negotiated_opts().contains(ProtoOpts::NOREPLY_HEADER));
    common::envelope(&mut conn, "<app@example.com>", "<r@gmail.com>").await;
    assert_eq!(
        conn.header("X-Big", big.as_str()).await.unwrap(),
        Status::Continue
    );
    let s = conn.header("X-Big", big.as_str()).await.unwrap();
    assert_eq!(reply(&s), "552 5.3.4 Message size exceeds fixed limit");
    conn.close().await.unwrap();
    d.stop().await;
}

#[tokio::test]
async fn internal_received_lines_are_scrubbed_and_listed_headers_removed() {
    let mut config =
        egress_milter::config::Config::load(&common::config_path("content.yaml")).unwrap();
    config.internal_networks = vec!["10.0.0.0/8".parse().unwrap()].into();
    config.remove_headers = vec!["X-Originating-IP".into(), "X-Mailer".into()];
    let d = common::start_with(config).await;
    let mut conn = d.client("10.0.0.1").await;
    let raw = format!(
        "Received: from app7.corp (app7.corp [10.9.8.7])\r\n\tby relay.corp with ESMTP id 1; Mon, 23 Nov 2026 01:00:01 +0000\r\n\
         Received: from partner.example.net (partner.example.net [198.51.100.9]) by app7.corp; Mon, 23 Nov 2026 01:00:00 +0000\r\n\
         Received: from build3 ([10.9.8.3]) by app7.corp; Mon, 23 Nov 2026 00:59:00 +0000\r\n\
         X-Originating-IP: [10.20.30.40]\r\nX-Mailer: a\r\nX-Mailer: b\r\n{HEAD}Subject: hi\r\n\r\nhello\r\n"
    );
    assert_eq!(
        reply(&mail(&mut conn, "<app@example.com>", None).await),
        "continue"
    );
    conn.rcpt(["<r@gmail.com>"]).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    for (n, v) in common::header_fields(head) {
        conn.header(n, v).await.unwrap();
    }
    conn.eoh().await.unwrap();
    conn.body(body.as_bytes().to_vec()).await.unwrap();
    let (actions, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    let edits: Vec<String> = actions
        .actions
        .iter()
        .filter_map(|a| match a {
            EomAction::DeleteHeader { name, index } => {
                Some(format!("delete {} {index}", name.to_string_lossy()))
            }
            EomAction::ChangeHeader { name, index, value } => Some(format!(
                "change {} {index} {}",
                name.to_string_lossy(),
                value.to_string_lossy()
            )),
            _ => None,
        })
        .collect();
    // The partner's hop names the internal app7.corp in its by-clause:
    // it goes too; relay.corp (*.corp) is redacted in the kept top line.
    assert_eq!(
        edits,
        [
            "delete Received 3",
            "delete Received 2",
            "change Received 1 from [redacted]\n\tby [redacted] with ESMTP id 1; Mon, 23 Nov 2026 01:00:01 +0000",
            "delete X-Originating-IP 1",
            "delete X-Mailer 2",
            "delete X-Mailer 1",
        ]
    );
    conn.close().await.unwrap();
    d.stop().await;
}

#[tokio::test]
async fn monitor_mode_logs_the_would_be_content_verdict() {
    let mut config =
        egress_milter::config::Config::load(&common::config_path("content.yaml")).unwrap();
    config.mode = egress_milter::config::Mode::Monitor;
    let d = common::start_with(config).await;
    let mut conn = d.client("10.0.0.1").await;
    let lying = r#"<a href="http://login.evil.example/">https://www.paypal.com/</a>"#;
    let raw = html(
        "You have won the lottery",
        "From: App <app@example.com>\r\nTo: r@gmail.com\r\n",
        lying,
    );
    let (got, _) = send(&mut conn, &raw).await;
    assert_eq!(got, "continue");
    let raw = multipart("x", &[text_part(), attachment("Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"a.exe\"", b"MZ")]);
    let (got, _) = send(&mut conn, &raw).await;
    assert_eq!(got, "continue");
    conn.close().await.unwrap();
    assert_eq!(common::decisions(&d.metrics(), "would_reject"), 2);
    d.stop().await;
}

#[tokio::test]
async fn a_client_cannot_set_our_score_headers() {
    let d = common::start("content.yaml").await;
    let mut conn = d.client("10.0.0.1").await;
    assert_eq!(
        reply(&mail(&mut conn, "<app@example.com>", None).await),
        "continue"
    );
    conn.rcpt(["<r@gmail.com>"]).await.unwrap();
    // A pre-set clean score, twice, on a message our rules tag (lottery).
    for (n, v) in [
        ("From", "app@example.com"),
        ("Date", "Mon, 23 Nov 2026 01:00:00 +0000"),
        ("Message-ID", "<1@example.com>"),
        ("Subject", "You have won the lottery"),
        ("X-Egress-Score", "0.0"),
        ("X-Egress-Rules", "none"),
        ("X-Egress-Score", "-5"),
    ] {
        conn.header(n, v).await.unwrap();
    }
    conn.eoh().await.unwrap();
    conn.body(b"hello\r\n".to_vec()).await.unwrap();
    let (actions, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    let order: Vec<String> = actions
        .actions
        .iter()
        .filter_map(|a| match a {
            EomAction::DeleteHeader { name, index } => {
                Some(format!("delete {} {index}", name.to_string_lossy()))
            }
            EomAction::InsertHeader { name, value, .. }
                if name.to_string_lossy().starts_with("X-Egress") =>
            {
                Some(format!(
                    "insert {} {}",
                    name.to_string_lossy(),
                    value.to_string_lossy()
                ))
            }
            _ => None,
        })
        .collect();
    // The client's go first (bottom up), then ours are added.
    assert_eq!(
        order[..3],
        [
            "delete X-Egress-Rules 1",
            "delete X-Egress-Score 2",
            "delete X-Egress-Score 1"
        ]
    );
    assert!(
        order[3..]
            .iter()
            .any(|o| o.starts_with("insert X-Egress-Score ")),
        "{order:?}"
    );
    conn.close().await.unwrap();
    d.stop().await;
}

/// The attachment rules hold whatever else is configured: under the shipped
/// `milter.yaml` (no DKIM key, no clamd, no rspamd: nothing else reads the
/// body) and under a minimal configuration, as under the suite's. A plain
/// text message is read whole when its body holds a uuencoded file.
#[tokio::test]
async fn attachment_rules_hold_under_the_shipped_and_a_minimal_config() {
    let shipped = egress_milter::config::Config::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("milter.yaml"),
    )
    .expect("the shipped milter.yaml loads");
    let minimal = "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\nclasses: [{ name: app, clients: [127.0.0.1] }]\n";
    let parse = |text: &str| {
        egress_milter::config::Config::parse(std::path::Path::new("minimal.yaml"), text)
            .expect("valid")
    };
    let lenient = format!("{minimal}attachments: {{ unreadable_archives: accept }}\n");
    let uuencoded = format!("{HEAD}Subject: invoice\r\n\r\nYour invoice, as agreed:\r\n\r\nbegin 644 invoice.exe\r\nM35H`\r\n`\r\nend\r\n");
    let plain = format!("{HEAD}Subject: hello\r\n\r\nWe begin at ten.\r\n");
    let base64_uu = format!("{HEAD}Subject: invoice\r\n\r\nAttached.\r\nbegin-base64 644 invoice.exe\r\nTVo=\r\n====\r\n");
    let secret = common::zip_patched(zip_with(&["secret.pdf"]), 1, 0);
    let encrypted = multipart(
        "locked",
        &[
            text_part(),
            attachment("Content-Type: application/zip; name=\"docs.zip\"", &secret),
        ],
    );
    let refused_exe = "550 5.7.1 Attachment type .exe not allowed";
    let unreadable =
        "550 5.7.1 Message has an archive that cannot be checked (encrypted entry: secret.pdf)";
    let configs = [
        ("shipped", shipped, unreadable),
        ("minimal", parse(minimal), unreadable),
        ("unreadable_archives: accept", parse(&lenient), "continue"),
    ];
    for (name, config, encrypted_reply) in configs {
        let d = common::start_with(config).await;
        for (what, raw, want) in [
            ("uuencoded exe in plain text", &uuencoded, refused_exe),
            (
                "base64 uuencoded exe in plain text",
                &base64_uu,
                refused_exe,
            ),
            ("plain text", &plain, "continue"),
            ("encrypted ZIP entry", &encrypted, encrypted_reply),
        ] {
            let mut conn = d.client("127.0.0.1").await;
            let (got, _) = send(&mut conn, raw).await;
            assert_eq!(got, want, "{name}: {what}");
            conn.close().await.unwrap();
        }
        d.stop().await;
    }
}
