//! End to end: swaks -> a real Postfix on loopback -> egress-milter -> a
//! sink. Asserts the SMTP replies the client saw and what reached the sink.

mod common;
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

    // Accepted: the application as itself, and an unknown client to a local
    // recipient.
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
    let t = run(
        stranger,
        "x@outside.test",
        "postmaster@example.com",
        "x@example.com",
        "to local",
    )
    .await
    .unwrap();
    assert!(queued(&t), "{t}");

    let mut subjects = Vec::new();
    for _ in 0..2 {
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
            ] {
                assert!(!head.contains(leak), "{leak} leaked:\n{head}");
            }
            assert!(
                head.contains("Received: from [redacted]\r\n\tby relay.corp")
                    || head.contains("Received: from [redacted] by relay.corp"),
                "{head}"
            );
            // Signed by the milter, as delivered: python3-dkim verifies
            // it, and not once the body is changed.
            assert!(m.data.starts_with("DKIM-Signature: "), "{}", m.data);
            common::assert_signed_s1(&m.data, &record);
        }
        subjects.push(subject);
    }
    subjects.sort();
    assert_eq!(subjects, vec!["authorised app", "to local"]);
    // The refused messages were never queued, so nothing else can arrive.
    assert!(sink.messages.try_recv().is_err());
    let log = pf.log();
    assert!(log.contains("milter-reject"), "{log}");
    drop(pf);
    d.stop().await;
}
