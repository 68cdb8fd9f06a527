//! DKIM signing and verification, SPF of the sender for our egress IPs,
//! against a real DNS server on loopback. Signatures are verified with
//! mail-auth and with python3-dkim (an independent implementation).

use crate::common;
use common::{
    dns::{DnsServer, Rec},
    mail, reply,
};
use egress_milter::{config::Config, dkim::generate};
use indymilter_test::{EomAction, Status, TestConnection};
use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    time::{Duration, Instant},
};

struct Keys {
    dir: tempfile::TempDir,
    records: Vec<Rec>,
}

/// An RSA and an Ed25519 key for example.com, on disk (0600), and their
/// DNS records.
fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let mut records = Vec::new();
    for (alg, selector, name) in [
        ("rsa", "rsa1", "rsa1._domainkey.example.com"),
        ("ed25519", "ed1", "ed1._domainkey.example.com"),
    ] {
        let (pem, record) = generate(alg, 2048).unwrap();
        let path = dir.path().join(format!("{selector}.pem"));
        std::fs::write(&path, pem).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        records.push(Rec::Txt(name, record));
    }
    Keys { dir, records }
}

fn config(keys: &Keys, dns: &DnsServer, extra: &str) -> Config {
    let text = format!(
        "listen: inet:127.0.0.1:0
local_domains: [example.com, \"*.example.com\", example.org]
egress_ips: [203.0.113.10]
hostname: out1.example.com
classes:
  - {{ name: app, clients: [10.0.0.0/8], sender_domains: [example.com, \"*.example.com\", example.org, spf-fail.example.com] }}
dns: {{ nameservers: [\"{dns}\"], timeout: 1s }}
dkim:
  keys:
    - {{ domain: example.com, selector: rsa1, file: {dir}/rsa1.pem }}
    - {{ domain: example.com, selector: ed1, file: {dir}/ed1.pem }}
{extra}",
        dns = dns.addr,
        dir = keys.dir.path().display()
    );
    Config::parse(Path::new("t.yaml"), &text).unwrap_or_else(|e| panic!("{e}"))
}

const BODY: &str = "Hello,\r\n\r\nthis is the body.\r\n";

/// Sends one message and returns the final reply and the message as the
/// MTA would deliver it (inserted headers on top).
pub(crate) async fn send(
    conn: &mut TestConnection,
    from: &str,
    extra_headers: &[(&str, &str)],
) -> (String, String) {
    common::envelope(conn, "<app@example.com>", "<r@gmail.com>").await;
    let mut headers: Vec<(&str, &str)> = extra_headers.to_vec();
    headers.extend([
        ("From", from),
        ("To", "r@gmail.com"),
        ("Subject", "test\n\tfolded subject"),
        ("Date", "Mon, 23 Nov 2026 01:00:00 +0000"),
        ("Message-ID", "<1@example.com>"),
    ]);
    for (n, v) in &headers {
        let s = conn.header(*n, *v).await.unwrap();
        if s != Status::Noreply {
            return (reply(&s), String::new());
        }
    }
    let s = conn.eoh().await.unwrap();
    if s != Status::Continue {
        return (reply(&s), String::new());
    }
    assert_eq!(
        conn.body(BODY.as_bytes().to_vec()).await.unwrap(),
        Status::Continue
    );
    let (actions, status) = conn.eom().await.unwrap();
    let mut message = String::new();
    for a in &actions.actions {
        if let EomAction::InsertHeader {
            index: 0,
            name,
            value,
        } = a
        {
            let value = value.to_string_lossy().replace('\n', "\r\n");
            message.insert_str(0, &format!("{}: {}\r\n", name.to_string_lossy(), value));
        }
    }
    for (n, v) in &headers {
        message.push_str(&format!("{n}: {}\r\n", v.replace('\n', "\r\n")));
    }
    message.push_str("\r\n");
    message.push_str(BODY);
    (reply(&status), message)
}

async fn mail_auth_results(dns: &DnsServer, message: &str) -> Vec<String> {
    let settings = egress_milter::config::DnsSettings {
        nameservers: vec![dns.addr],
        timeout: Duration::from_secs(2),
    };
    let resolver = egress_milter::dns::resolver(&settings).unwrap();
    let parsed = mail_auth::AuthenticatedMessage::parse(message.as_bytes()).unwrap();
    resolver
        .verify_dkim(&parsed)
        .await
        .iter()
        .map(|o| format!("{:?}", o.result()))
        .collect()
}

/// python3-dkim verifies every signature, the keys from our records.
fn python_dkim(message: &str, keys: &Keys) -> bool {
    let records: Vec<(&str, &str)> = keys
        .records
        .iter()
        .filter_map(|r| match r {
            Rec::Txt(n, t) => Some((*n, t.as_str())),
            _ => None,
        })
        .collect();
    common::python_dkim(message, &records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signs_with_both_keys_and_independent_verifiers_agree() {
    let keys = keys();
    let dns = DnsServer::start(
        keys.records
            .iter()
            .map(|r| match r {
                Rec::Txt(n, t) => Rec::Txt(n, t.clone()),
                _ => unreachable!(),
            })
            .collect(),
    )
    .await;
    let d = common::start_with(config(&keys, &dns, "")).await;
    let mut conn = d.client("10.0.0.1").await;
    let (status, message) = send(&mut conn, "App <app@example.com>", &[]).await;
    assert_eq!(status, "continue");
    assert_eq!(message.matches("DKIM-Signature:").count(), 2, "{message}");
    assert!(message.contains("a=rsa-sha256") && message.contains("a=ed25519-sha256"));
    assert!(message.contains("c=relaxed/relaxed"));
    // From is oversigned.
    let h = message
        .split("h=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_ascii_lowercase();
    assert_eq!(h.matches("from").count(), 2, "{h}");

    assert_eq!(mail_auth_results(&dns, &message).await, ["Pass", "Pass"]);
    assert!(
        python_dkim(&message, &keys),
        "python3-dkim refused:\n{message}"
    );
    // Once the body changes, both refuse it.
    let tampered = message.replace("this is the body", "this is the b0dy");
    let results = mail_auth_results(&dns, &tampered).await;
    // (mail-auth calls a body hash mismatch "neutral": not a pass.)
    assert!(
        results.len() == 2 && results.iter().all(|r| r.contains("FailedBodyHashMatch")),
        "{results:?}"
    );
    assert!(!python_dkim(&tampered, &keys));

    // A subdomain is signed with its nearest parent's keys.
    let (status, message) = send(&mut conn, "<news@eu.example.com>", &[]).await;
    assert_eq!(status, "continue");
    assert_eq!(message.matches("d=example.com").count(), 2, "{message}");
    assert_eq!(mail_auth_results(&dns, &message).await, ["Pass", "Pass"]);
    // A local domain without keys leaves unsigned (on_unsigned: accept).
    let (status, message) = send(&mut conn, "<a@example.org>", &[]).await;
    assert_eq!(status, "continue");
    assert!(!message.contains("DKIM-Signature"), "{message}");
    conn.close().await.unwrap();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_existing_signatures_and_spf() {
    let keys = keys();
    let mut records: Vec<Rec> = keys
        .records
        .iter()
        .map(|r| match r {
            Rec::Txt(n, t) => Rec::Txt(n, t.clone()),
            _ => unreachable!(),
        })
        .collect();
    records.push(Rec::Txt(
        "example.com",
        "v=spf1 ip4:203.0.113.0/24 -all".into(),
    ));
    records.push(Rec::Txt(
        "spf-fail.example.com",
        "v=spf1 ip4:198.51.100.1 -all".into(),
    ));
    let mut dns = DnsServer::start(records).await;
    let extra = "  on_unsigned: tempfail\n  verify_existing: reject\n  max_signatures: 3\nspf: { check_egress: reject }\n";
    let d = common::start_with(config(&keys, &dns, extra)).await;
    let mut conn = d.client("10.0.0.1").await;

    // on_unsigned: tempfail for a local domain without a key.
    let (status, _) = send(&mut conn, "<a@example.org>", &[]).await;
    assert_eq!(status, "451 4.3.0 No DKIM signing key for example.org");

    // A message we signed, sent through again: its signatures verify.
    let (status, signed) = send(&mut conn, "<app@example.com>", &[]).await;
    assert_eq!(status, "continue");
    let head = signed.split("\r\n\r\n").next().unwrap();
    let sigs: Vec<(String, String)> = common::header_fields(head)
        .into_iter()
        .filter(|(n, _)| n == "DKIM-Signature")
        .collect();
    assert_eq!(sigs.len(), 2);
    let existing: Vec<(&str, &str)> = sigs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let (status, _) = send(&mut conn, "<app@example.com>", &existing).await;
    assert_eq!(status, "continue", "good existing signatures");
    // An application's signature over another body fails at the receiver:
    // refused.
    let forged: Vec<(&str, String)> = sigs
        .iter()
        .map(|(n, v)| (n.as_str(), v.replacen("bh=", "bh=AAAA", 1)))
        .collect();
    let forged: Vec<(&str, &str)> = forged.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, _) = send(&mut conn, "<app@example.com>", &forged[..1]).await;
    assert!(
        status.starts_with("550 5.7.20 DKIM signature of example.com does not verify"),
        "{status}"
    );
    // Too many signatures: refused without verifying any.
    let many = vec![existing[0]; 4];
    let (status, _) = send(&mut conn, "<app@example.com>", &many).await;
    assert_eq!(
        status,
        "550 5.7.20 Message carries 4 DKIM signatures, at most 3 are accepted"
    );

    // SPF: the sender domain lists our egress IP, or not.
    conn.abort().await.unwrap();
    assert_eq!(
        reply(&mail(&mut conn, "<a@example.com>", None).await),
        "continue"
    );
    conn.abort().await.unwrap();
    assert_eq!(
        reply(&mail(&mut conn, "<a@spf-fail.example.com>", None).await),
        "550 5.7.23 SPF of spf-fail.example.com does not authorise this gateway"
    );
    conn.abort().await.unwrap();
    // The DNS server goes away. Answers already cached (for their TTL)
    // still serve: example.com's SPF was looked up above.
    dns.stop().await;
    assert_eq!(
        reply(&mail(&mut conn, "<c@example.com>", None).await),
        "continue"
    );
    conn.abort().await.unwrap();
    // A domain never looked up: within the timeout, on_error (tempfail).
    let started = Instant::now();
    assert_eq!(
        reply(&mail(&mut conn, "<b@eu.example.com>", None).await),
        "451 4.3.0 Temporary policy failure"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    conn.close().await.unwrap();
    // DNS round trips in the metrics: five messages each had SPF at MAIL
    // FROM and verify_existing at end of message, four more MAIL FROMs had
    // SPF: 14. The one that found no server counted as a DNS failure.
    let metrics = d.metrics();
    assert!(
        metrics.contains("egress_backend_seconds_count{backend=\"dns\"} 14\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("egress_dns_failures_total 1\n"),
        "{metrics}"
    );
    d.stop().await;
}

#[tokio::test]
async fn key_problems_are_configuration_errors() {
    let dns = DnsServer::start(vec![]).await;
    let keys = keys();
    std::fs::write(keys.dir.path().join("rsa1.pem"), "not a key").unwrap();
    std::fs::set_permissions(
        keys.dir.path().join("ed1.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let text = format!(
        "listen: inet:127.0.0.1:0\nlocal_domains: [example.com]\ndkim:\n  keys:\n    - {{ domain: example.com, selector: rsa1, file: {d}/rsa1.pem }}\n    - {{ domain: example.com, selector: ed1, file: {d}/ed1.pem }}\n    - {{ domain: example.com, selector: gone, file: {d}/missing.pem }}\ndns: {{ nameservers: [\"{dns}\"] }}\n",
        d = keys.dir.path().display(),
        dns = dns.addr
    );
    let errs = Config::parse(Path::new("t.yaml"), &text).unwrap_err();
    let shown = errs.to_string();
    assert!(
        shown.contains("t.yaml:5: dkim.keys[0].file:") && shown.contains("no PEM private key"),
        "{shown}"
    );
    assert!(
        shown.contains("t.yaml:7: dkim.keys[2].file: cannot read"),
        "{shown}"
    );
    // The world-readable key is a warning, not an error.
    let ok = text
        .replace(
            &format!(
                "    - {{ domain: example.com, selector: rsa1, file: {}/rsa1.pem }}\n",
                keys.dir.path().display()
            ),
            "",
        )
        .replace(
            &format!(
                "    - {{ domain: example.com, selector: gone, file: {}/missing.pem }}\n",
                keys.dir.path().display()
            ),
            "",
        );
    let c = Config::parse(Path::new("t.yaml"), &ok).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.message.contains("readable by every user")),
        "{:?}",
        c.warnings
    );
}
