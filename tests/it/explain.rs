//! `egress-milter explain`, run as an administrator runs it: the checks one
//! by one, the final reply, the header changes, and the exit status.

use crate::common;

fn explain(config: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = common::cli::with_config(config, &[&["explain"], args].concat());
    (out.code, out.text())
}

fn line<'a>(out: &'a str, stage: &str, check: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some(stage) && l[stage.len()..].trim_start().starts_with(check)
        })
        .collect()
}

#[test]
fn explains_each_check_the_reply_and_the_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, _) = egress_milter::dkim::generate("ed25519", 0).unwrap();
    let key = dir.path().join("e1.pem");
    std::fs::write(&key, pem).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = dir.path().join("milter.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: inet:127.0.0.1:1
local_domains: [example.com]
classes:
  - {{ name: crm-app, clients: [10.1.2.0/24], sender_addresses: [noreply@example.com] }}
  - {{ name: staff, auth: any, login_match: true }}
internal_networks: [10.0.0.0/8]
headers: {{ strip_internal_received: true, remove: [X-Originating-IP] }}
rate_limits: {{ messages_per_sender: 50/h }}
dkim: {{ keys: [{{ domain: example.com, selector: e1, file: {} }}] }}
",
            key.display()
        ),
    )
    .unwrap();

    // A good message from the application: accepted, signed, scrubbed.
    let eml = dir.path().join("good.eml");
    std::fs::write(
        &eml,
        "Received: from build3.corp ([10.9.8.3]) by app7.corp; Mon, 23 Nov 2026 01:00:00 +0000\n\
         X-Originating-IP: [10.20.30.40]\n\
         From: Shop <noreply@example.com>\nTo: someone@example.net\nSubject: Order\n\
         Date: Mon, 23 Nov 2026 01:00:00 +0000\nMessage-ID: <1@example.com>\n\nThanks.\n",
    )
    .unwrap();
    let (code, out) = explain(
        &config,
        &[
            "--client",
            "10.1.2.3",
            "--from",
            "noreply@example.com",
            "--rcpt",
            "someone@example.net",
            eml.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        line(&out, "mail", "class"),
        ["mail     class                    crm-app (matched by client address)"]
    );
    assert!(line(&out, "mail", "rate limits")[0]
        .contains("messages_per_sender (key noreply@example.com)"));
    assert!(line(&out, "eoh", "From: header")[0].contains("domain example.com is ours"));
    assert!(line(&out, "eom", "DKIM signing")[0].contains("signed: d=example.com s=e1"));
    assert!(out.contains("result: accept\n"), "{out}");
    assert!(
        out.contains("  add     DKIM-Signature: v=1; a=ed25519-sha256;"),
        "{out}"
    );
    assert!(
        out.contains("  change  Received #1: from [redacted]"),
        "{out}"
    );
    assert!(out.contains("  remove  X-Originating-IP #1"), "{out}");

    // A forged From: is refused at end of headers, with the reply.
    let forged = dir.path().join("forged.eml");
    std::fs::write(
        &forged,
        "From: \"Bank\" <service@bank.example>\nSubject: x\n\nClick.\n",
    )
    .unwrap();
    let (code, out) = explain(
        &config,
        &[
            "--client",
            "10.1.2.3",
            "--from",
            "noreply@example.com",
            "--rcpt",
            "someone@example.net",
            forged.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "eoh", "decision")[0]
        .ends_with("reject (from_header): 550 5.7.1 From: domain bank.example not authorised"));
    assert!(out.contains("result: 550 5.7.1 From: domain bank.example not authorised  (at eoh)"));
    assert!(
        !out.contains("DKIM signing"),
        "nothing after the refusal: {out}"
    );

    // A logged-in user sending as someone else; the minimal message.
    let (code, out) = explain(
        &config,
        &[
            "--client",
            "192.0.2.9",
            "--auth",
            "alice",
            "--from",
            "bob@example.com",
            "--rcpt",
            "x@example.net,y@example.net",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "mail", "class")[0].contains("staff (matched by login)"));
    assert!(
        out.contains(
            "result: 553 5.7.1 Sender <bob@example.com> not owned by user alice  (at mail)"
        ),
        "{out}"
    );

    // An unknown client: relaying refused per recipient, a local one kept,
    // and the message accepted for it (inbound mail: its From: is not
    // judged by strict relay).
    let (code, out) = explain(
        &config,
        &[
            "--client",
            "192.0.2.7",
            "--from",
            "x@outside.example",
            "--rcpt",
            "victim@gmail.test",
            "--rcpt",
            "postmaster@example.com",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("RCPT TO:<victim@gmail.test>  554 5.7.1 Relay access denied"));
    assert!(out.contains("RCPT TO:<postmaster@example.com>  accepted"));

    // Inbound mail from a stranger, its From: someone else's: accepted,
    // the From: header not judged by strict relay, nothing signed.
    let inbound = dir.path().join("inbound.eml");
    std::fs::write(
        &inbound,
        "From: Someone <someone@outside.example>\nSubject: hello\n\nHi.\n",
    )
    .unwrap();
    let (code, out) = explain(
        &config,
        &[
            "--client",
            "192.0.2.7",
            "--from",
            "someone@outside.example",
            "--rcpt",
            "postmaster@example.com",
            inbound.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        line(&out, "eoh", "From: header")[0]
            .contains("not checked: inbound mail (inbound_own_domain: accept)"),
        "{out}"
    );
    assert!(!out.contains("DKIM-Signature"), "{out}");

    // A broken configuration: exit 2 with the file, line and key.
    std::fs::write(
        &config,
        "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\nmode: loud\n",
    )
    .unwrap();
    let (code, out) = explain(
        &config,
        &[
            "--client",
            "10.1.2.3",
            "--from",
            "a@example.com",
            "--rcpt",
            "b@example.net",
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("milter.yaml:3: mode"), "{out}");
}

#[test]
fn shows_each_incident_signal_against_its_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("milter.yaml");
    std::fs::write(
        &config,
        "listen: inet:127.0.0.1:1
local_domains: [example.com]
classes:
  - { name: staff, auth: any, sender_domains: [example.com] }
incidents:
  signals:
    - { name: spray, key: user, count: distinct_recipient_domains, above: 1/h }
    - { name: surge, key: sender, count: messages, above_baseline: 10x, min: 50/h }
    - { name: volume, key: client, count: recipients, above: 2000/h }
",
    )
    .unwrap();
    let (code, out) = explain(
        &config,
        &[
            "--client",
            "192.0.2.10",
            "--auth",
            "alice@example.com",
            "--from",
            "alice@example.com",
            "--rcpt",
            "a@one.test",
            "--rcpt",
            "b@two.test",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("incident signals"), "{out}");
    // The spray crosses with this very message: it would be held.
    assert!(
        out.contains("result: accept, held for review (egress-milter incident user:alice@example.com (spray)"),
        "{out}"
    );
    let row = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_string()
    };
    let spray = row("spray");
    assert!(spray.contains("user:alice@example.com"), "{spray}");
    assert!(
        spray.contains("2 distinct_recipient_domains in 1h (threshold 1/h)")
            && spray.ends_with("-> opens an incident"),
        "{spray}"
    );
    let surge = row("surge");
    assert!(
        surge.contains("sender:alice@example.com")
            && surge.contains("usual volume still being learnt"),
        "{surge}"
    );
    let volume = row("volume");
    assert!(
        volume.contains("client:192.0.2.10  2 recipients in 1h (threshold 2000/h)")
            && !volume.contains("opens"),
        "{volume}"
    );
}

/// `explain --offline` asks nothing of the network: with a clamd that does
/// not answer, `explain` reports the failure (on_error: tempfail), and
/// `explain --offline` judges the policy alone.
#[test]
fn offline_asks_nothing_of_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("milter.yaml");
    let dead = common::free_port();
    std::fs::write(
        &config,
        format!(
            "listen: inet:127.0.0.1:1
local_domains: [example.com]
classes: [{{ name: app, clients: [10.1.2.0/24], sender_domains: [example.com] }}]
antivirus: {{ clamd: [\"inet:127.0.0.1:{dead}\"], timeout: 1s }}
"
        ),
    )
    .unwrap();
    let args = [
        "--client",
        "10.1.2.5",
        "--from",
        "app@example.com",
        "--rcpt",
        "x@example.net",
    ];
    let (code, out) = explain(&config, &args);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("451 4.3.0"), "{out}");
    let mut offline = args.to_vec();
    offline.push("--offline");
    let (code, out) = explain(&config, &offline);
    assert_eq!(code, 0, "{out}");
}

/// A recipient suppressed after hard bounces: `explain` reads the list the
/// daemon keeps (without changing it) and says why it is refused.
#[test]
fn explains_a_suppressed_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 86_400;
    let list = format!(
        "{{\"ghost@example.org\": {{\"hard\": 2, \"status\": \"5.1.1\", \"first\": 0, \"last\": 0, \"until\": {until}}}}}"
    );
    std::fs::write(dir.path().join("suppressions.json"), &list).unwrap();
    let config = dir.path().join("milter.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: inet:127.0.0.1:1
local_domains: [example.com]
classes:
  - {{ name: app, clients: [10.1.2.0/24], sender_domains: [example.com] }}
incidents: {{ state_dir: {} }}
bounces: {{}}
",
            dir.path().display()
        ),
    )
    .unwrap();
    let (code, out) = explain(
        &config,
        &[
            "--client",
            "10.1.2.3",
            "--from",
            "app@example.com",
            "--rcpt",
            "Ghost@example.org",
            "--offline",
        ],
    );
    assert_eq!(code, 1, "{out}");
    let why = line(&out, "rcpt", "suppressed");
    assert!(
        why.first()
            .is_some_and(|l| l.contains("ghost@example.org: 2 hard failure(s), last 5.1.1")),
        "{out}"
    );
    assert!(
        out.contains("550 5.1.1 Recipient <Ghost@example.org> bounced (5.1.1)"),
        "{out}"
    );
    // Read, not written.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("suppressions.json")).unwrap(),
        list
    );
}
