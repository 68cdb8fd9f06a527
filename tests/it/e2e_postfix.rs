//! End to end: swaks -> a real Postfix on loopback -> egress-milter -> a
//! sink. Asserts the SMTP replies the client saw and what reached the sink.

use crate::common;
use common::{
    postfix::{self, swaks, Postfix},
    sink::Sink,
};

/// The line swaks shows for the server's reply to the refused command.
fn refused_with(transcript: &str, reply: &str) -> bool {
    transcript
        .lines()
        .any(|l| l.starts_with("<** ") && l[4..].starts_with(reply))
}

fn queued(transcript: &str) -> bool {
    transcript
        .lines()
        .any(|l| l.starts_with("<-  250") && l.contains("queued as"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_with_the_milter() {
    // The scenario's config, plus a DKIM key made for this run.
    let keydir = tempfile::tempdir().unwrap();
    let (pem, record) = egress_milter::dkim::generate("rsa", 2048).unwrap();
    let key = keydir.path().join("s1.pem");
    std::fs::write(&key, pem).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(common::config_path("e2e.yaml")).unwrap()
        + &format!(
            "dkim:\n  keys:\n    - {{ domain: example.com, selector: s1, file: {} }}\n",
            key.display()
        );
    let config =
        egress_milter::config::Config::parse(std::path::Path::new("e2e.yaml"), &text).unwrap();
    let d = common::start_with(config).await;
    let mut sink = Sink::start().await;
    let pf = Postfix::start("policy", &format!("inet:{}", d.addr), sink.port);
    let app = "127.0.0.2";
    let stranger = "127.0.0.9";

    // swaks blocks; the milter shares this runtime, so run it aside.
    let port = pf.smtp_port;
    let run = |ip: &'static str,
               from: &'static str,
               to: &'static str,
               hfrom: &'static str,
               subj: &'static str| {
        tokio::task::spawn_blocking(move || swaks(port, ip, from, to, hfrom, subj))
    };

    // Refused: a forged envelope sender.
    let t = run(
        app,
        "ceo@example.com",
        "someone@gmail.test",
        "ceo@example.com",
        "forged sender",
    )
    .await
    .unwrap();
    assert!(
        refused_with(
            &t,
            "550 5.7.1 Sender <ceo@example.com> not authorised for crm-app"
        ),
        "{t}"
    );
    // Refused: a spoofed From: header, after DATA.
    let t = run(
        app,
        "noreply@example.com",
        "someone@gmail.test",
        "\"PayPal\" <service@paypal.test>",
        "spoofed from",
    )
    .await
    .unwrap();
    assert!(
        refused_with(&t, "550 5.7.1 From: domain paypal.test not authorised"),
        "{t}"
    );
    // Refused: headers past max_message_size (64 KB here). Postfix sends
    // them without waiting for an answer to each; the refusal comes at end
    // of headers, after DATA.
    let pad: Vec<String> = (0..40)
        .map(|i| format!("X-Pad-{i}: {}", "p".repeat(1_900)))
        .collect();
    let t = tokio::task::spawn_blocking(move || {
        postfix::swaks_with(
            port,
            app,
            "noreply@example.com",
            "someone@gmail.test",
            "noreply@example.com",
            "big headers",
            &pad,
        )
    })
    .await
    .unwrap();
    assert!(
        refused_with(&t, "552 5.3.4 Message size exceeds fixed limit"),
        "{t}"
    );
    // Refused: an unknown client trying to relay.
    let t = run(
        stranger,
        "x@outside.test",
        "victim@gmail.test",
        "x@example.com",
        "open relay",
    )
    .await
    .unwrap();
    assert!(refused_with(&t, "554 5.7.1 Relay access denied"), "{t}");

    // Accepted: the application as itself.
    let t = run(
        app,
        "noreply@example.com",
        "someone@gmail.test",
        "Shop <noreply@example.com>",
        "authorised app",
    )
    .await
    .unwrap();
    assert!(queued(&t), "{t}\n{}", pf.log());
    // Accepted: inbound mail from strangers to our domains, whatever their
    // From: (strict relay judges only mail that leaves), bounces included.
    let inbound = [
        (
            "someone@outside.test",
            "user@example.com",
            "Someone <someone@outside.test>",
            "inbound",
        ),
        (
            "<>",
            "user@example.com",
            "MAILER-DAEMON@mx.outside.test",
            "inbound bounce",
        ),
        (
            "news@lists.outside.test",
            "staff@dept.example.org",
            "News <news@lists.outside.test>",
            "inbound to a subdomain",
        ),
        (
            "billing@saas.test",
            "user@example.com",
            "Billing <billing@example.com>",
            "inbound as our domain",
        ),
    ];
    for (from, to, hfrom, subject) in inbound {
        let t = run(stranger, from, to, hfrom, subject).await.unwrap();
        assert!(queued(&t), "{subject}: {t}\n{}", pf.log());
    }

    let mut subjects = Vec::new();
    for _ in 0..5 {
        let m = sink
            .next(60)
            .await
            .unwrap_or_else(|| panic!("nothing delivered: {}", pf.log()));
        let subject = m.subject();
        if subject == "authorised app" {
            assert_eq!(m.mail_from, "<noreply@example.com>");
            assert_eq!(m.rcpt_to, vec!["<someone@gmail.test>".to_string()]);
            // Scrubbed: no internal address of the hops before the gateway
            // leaves, the header that carried one is removed, the topmost
            // internal hop is kept but redacted. (Postfix does not show a
            // milter its own Received: line; see the README.)
            let head = m.data.split("\r\n\r\n").next().unwrap_or("");
            for leak in [
                "10.9.8.7",
                "10.9.8.3",
                "10.20.30.40",
                "X-Originating-IP",
                "build3",
                // Internal host names (*.corp) go too, wherever they stand.
                "app7.corp",
                "relay.corp",
            ] {
                assert!(!head.contains(leak), "{leak} leaked:\n{head}");
            }
            assert!(
                head.contains("Received: from [redacted]\r\n\tby [redacted]")
                    || head.contains("Received: from [redacted] by [redacted]"),
                "{head}"
            );
            // Signed by the milter, as delivered: python3-dkim verifies
            // it, and not once the body is changed.
            assert!(m.data.starts_with("DKIM-Signature: "), "{}", m.data);
            common::assert_signed_s1(&m.data, &record);
        } else {
            // Inbound mail is never signed with our key, not even when
            // its From: claims our domain.
            assert!(!m.data.contains("DKIM-Signature:"), "{subject}: {}", m.data);
        }
        if subject == "inbound bounce" {
            assert_eq!(m.mail_from, "<>");
        }
        subjects.push(subject);
    }
    subjects.sort();
    assert_eq!(
        subjects,
        vec![
            "authorised app",
            "inbound",
            "inbound as our domain",
            "inbound bounce",
            "inbound to a subdomain"
        ]
    );
    // The refused messages were never queued, so nothing else can arrive.
    assert!(sink.messages.try_recv().is_err());
    let log = pf.log();
    assert!(log.contains("milter-reject"), "{log}");
    drop(pf);
    d.stop().await;
}

/// `from_header.inbound_own_domain: reject`: inbound mail whose From:
/// claims one of our domains is refused after DATA; other inbound mail
/// passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_refuses_inbound_mail_as_our_domain_when_asked() {
    let text = std::fs::read_to_string(common::config_path("e2e.yaml"))
        .unwrap()
        .replace(
            "from_header: { strict: true }",
            "from_header: { strict: true, inbound_own_domain: reject }",
        );
    let config =
        egress_milter::config::Config::parse(std::path::Path::new("e2e.yaml"), &text).unwrap();
    let d = common::start_with(config).await;
    let mut sink = Sink::start().await;
    let pf = Postfix::start("inbound", &format!("inet:{}", d.addr), sink.port);
    let port = pf.smtp_port;
    let run = |from: &'static str, to: &'static str, hfrom: &'static str, subj: &'static str| {
        tokio::task::spawn_blocking(move || swaks(port, "127.0.0.9", from, to, hfrom, subj))
    };
    for (hfrom, to) in [
        ("\"The CEO\" <ceo@example.com>", "user@example.com"),
        ("it@dept.example.org", "user@example.com"),
        ("a@outside.test, ceo@example.com", "user@example.com"),
    ] {
        let t = run("x@outside.test", to, hfrom, "spoof").await.unwrap();
        let domain = if hfrom.contains("dept.") {
            "dept.example.org"
        } else {
            "example.com"
        };
        assert!(
            refused_with(
                &t,
                &format!("550 5.7.1 From: domain {domain} may not be used from outside")
            ),
            "{hfrom}: {t}"
        );
    }
    let t = run(
        "x@outside.test",
        "user@example.com",
        "x@outside.test",
        "genuine",
    )
    .await
    .unwrap();
    assert!(queued(&t), "{t}");
    let m = sink.next(60).await.expect("delivered");
    assert_eq!(m.subject(), "genuine");
    assert!(sink.messages.try_recv().is_err());
    drop(pf);
    d.stop().await;
}

/// Over TCP, Postfix sends the DATA macros alone (egress-milter does not
/// ask for DATA) and gets no reply; its next small write, the headers, is
/// held by Nagle until that packet is ACKed. A milter whose kernel delays
/// the ACK makes every message wait ~40 ms (as libmilter milters do). The
/// summary line's `elapsed_ms` runs from MAIL FROM to end of message, so a
/// stall shows in it on every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_waits_for_a_delayed_ack_over_tcp() {
    let (d, port, _dir) = common::delayed_ack::daemon();
    let sink = Sink::start().await;
    let pf = Postfix::start("tcp-ack", &format!("inet:127.0.0.1:{port}"), sink.port);
    common::delayed_ack::send(pf.smtp_port, 200).await;
    common::delayed_ack::assert_no_stall(&d, 200);
    drop(pf);
}

/// The value of `key` in a log line as a logfmt parser reads it.
fn logfmt_value(line: &str, key: &str) -> Option<String> {
    logfmt::parse(line)
        .into_iter()
        .find(|p| p.key == key)
        .and_then(|p| p.val)
}

/// Relay traffic (port 25) and submission (587) reach the milter on two
/// smtpd listeners: the summary line tells them apart by `daemon=ADDR:PORT`
/// (the milter asks Postfix for `{daemon_port}`), and both the decision
/// and the summary line parse with a logfmt parser, the reply whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tell_submission_from_relay_and_parse_as_logfmt() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = dir.path().join("milter.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: inet:127.0.0.1:{port}
local_domains: [example.com]
classes:
  - {{ name: app, clients: [127.0.0.2], sender_domains: [example.com] }}
admin: {{ listen: off }}
"
        ),
    )
    .unwrap();
    let d = common::process::Running::start(&config);
    d.wait_for("egress-milter started");
    let sink = Sink::start().await;
    let pf = Postfix::start("logs", &format!("inet:127.0.0.1:{port}"), sink.port);
    let (relay, submission) = (pf.smtp_port, pf.submission_port);
    let t = tokio::task::spawn_blocking(move || {
        swaks(
            relay,
            "127.0.0.2",
            "noreply@example.com",
            "someone@gmail.test",
            "noreply@example.com",
            "relay",
        )
    })
    .await
    .unwrap();
    assert!(queued(&t), "{t}");
    let summary = d.wait_for("egress_milter::summary");
    assert_eq!(
        logfmt_value(&summary, "daemon").as_deref(),
        Some(format!("127.0.0.1:{relay}").as_str()),
        "{summary}"
    );
    let t = tokio::task::spawn_blocking(move || {
        swaks(
            submission,
            "127.0.0.2",
            "ceo@evil.test",
            "someone@gmail.test",
            "ceo@evil.test",
            "submission",
        )
    })
    .await
    .unwrap();
    let refusal = "550 5.7.1 Sender <ceo@evil.test> not authorised for app";
    assert!(refused_with(&t, refusal), "{t}");
    let decision = d.wait_for("egress_milter::decision");
    assert_eq!(
        logfmt_value(&decision, "reply").as_deref(),
        Some(refusal),
        "{decision}"
    );
    assert_eq!(
        logfmt_value(&decision, "rule").as_deref(),
        Some("sender_domains"),
        "{decision}"
    );
    let summary = d.wait_for("egress_milter::summary");
    assert_eq!(
        logfmt_value(&summary, "daemon").as_deref(),
        Some(format!("127.0.0.1:{submission}").as_str()),
        "{summary}"
    );
    assert_eq!(
        logfmt_value(&summary, "reply").as_deref(),
        Some(refusal),
        "{summary}"
    );
    drop(pf);
}
