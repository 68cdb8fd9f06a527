//! `egress-milter selfcheck` against a DNS server on loopback serving a
//! good domain, a broken one, reverse DNS and a blocklist zone.

use crate::common;
use common::{
    dns::{DnsServer, Rec},
    process::BIN,
};
use egress_milter::dkim::generate;
use std::{os::unix::fs::PermissionsExt, process::Command};

fn run(config: &std::path::Path) -> (i32, String) {
    let out = common::cli::with_config(config, &["selfcheck"]);
    (out.code, out.text())
}

/// The result column of the row for (check, subject).
fn result(out: &str, check: &str, subject: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(&format!("{check:<12} {subject} ")))
        .map(|l| {
            let after = &l[l.find(subject).unwrap() + subject.len()..];
            after.split_whitespace().next().unwrap_or("").to_string()
        })
        .unwrap_or_else(|| panic!("no row {check} {subject} in:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_what_receivers_will_see() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, record) = generate("ed25519", 2048).unwrap();
    let key = dir.path().join("ed1.pem");
    std::fs::write(&key, pem).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, other_record) = generate("ed25519", 2048).unwrap();
    let mut includes = Vec::new();
    for i in 0..11 {
        includes.push(format!("include:i{i}.broken.example"));
    }
    let dns = DnsServer::start(vec![
        Rec::Txt("example.com", "v=spf1 ip4:203.0.113.0/24 -all".into()),
        Rec::Txt(
            "_dmarc.example.com",
            "v=DMARC1; p=reject; rua=mailto:d@example.com".into(),
        ),
        Rec::Txt("ed1._domainkey.example.com", record),
        Rec::Txt("ed2._domainkey.example.com", other_record),
        Rec::Txt(
            "broken.example",
            format!("v=spf1 {} -all", includes.join(" ")),
        ),
        Rec::Txt("_dmarc.broken.example", "v=DMARC1; p=none".into()),
        Rec::A("out1.example.com", [203, 0, 113, 10]),
        Rec::Ptr("10.113.0.203.in-addr.arpa", "out1.example.com"),
        Rec::Ptr("11.113.0.203.in-addr.arpa", "elsewhere.example.net"),
        Rec::A("11.113.0.203.bl.test", [127, 0, 0, 2]),
    ])
    .await;
    let ed2 = dir.path().join("ed2.pem");
    std::fs::write(&ed2, generate("ed25519", 2048).unwrap().0).unwrap();
    std::fs::set_permissions(&ed2, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("milter.yaml");
    let write = |domains: &str, egress: &str, keys: &str| {
        std::fs::write(
            &config,
            format!(
                "listen: inet:127.0.0.1:1\nlocal_domains: [{domains}]\negress_ips: [{egress}]\nhostname: out1.example.com\n\
                 dns: {{ nameservers: [\"{}\"], timeout: 2s }}\nselfcheck: {{ dnsbl: [bl.test] }}\ndkim:\n  keys:\n{keys}",
                dns.addr
            ),
        )
        .unwrap();
    };
    let good_key = format!(
        "    - {{ domain: example.com, selector: ed1, file: {} }}\n",
        key.display()
    );
    let wrong_key = format!(
        "    - {{ domain: example.com, selector: ed2, file: {} }}\n",
        ed2.display()
    );

    // All good: exit 0.
    write("example.com", "203.0.113.10", &good_key);
    let (code, out) = run(&config);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        result(&out, "spf", "example.com for 203.0.113.10"),
        "ok",
        "{out}"
    );
    assert_eq!(
        result(&out, "dkim", "ed1._domainkey.example.com"),
        "ok",
        "{out}"
    );
    assert!(out.contains("p=reject"), "{out}");
    assert_eq!(result(&out, "ptr", "203.0.113.10"), "ok", "{out}");
    assert_eq!(result(&out, "hostname", "out1.example.com"), "ok", "{out}");
    assert_eq!(
        result(&out, "dnsbl", "203.0.113.10 on bl.test"),
        "ok",
        "{out}"
    );

    // Everything that can go wrong: exit 1, a fix for each.
    write(
        "example.com, broken.example, nothing.example",
        "203.0.113.10, 203.0.113.11",
        &(good_key.clone() + &wrong_key),
    );
    let (code, out) = run(&config);
    assert_eq!(code, 1, "{out}");
    assert_eq!(result(&out, "spf", "example.com for 203.0.113.11"), "ok");
    assert_eq!(
        result(&out, "spf lookups", "broken.example"),
        "FAIL",
        "{out}"
    );
    assert!(out.contains("11 DNS lookups, the limit is 10"), "{out}");
    assert_eq!(result(&out, "spf", "nothing.example"), "FAIL");
    assert!(
        out.contains(
            "fix: publish nothing.example. TXT \"v=spf1 ip4:203.0.113.10 ip4:203.0.113.11 -all\""
        ),
        "{out}"
    );
    assert_eq!(result(&out, "dmarc", "_dmarc.nothing.example"), "FAIL");
    assert_eq!(result(&out, "dmarc", "_dmarc.broken.example"), "WARN");
    assert_eq!(result(&out, "dkim", "ed2._domainkey.example.com"), "FAIL");
    assert!(
        out.contains("published key is not our private key's"),
        "{out}"
    );
    assert_eq!(result(&out, "ptr", "203.0.113.11"), "FAIL");
    assert!(out.contains("does not resolve back"), "{out}");
    assert_eq!(result(&out, "dnsbl", "203.0.113.11 on bl.test"), "FAIL");
    assert!(out.contains("listed (127.0.0.2)"), "{out}");
}

/// With DNS down (a resolver that never answers), every check says DNS
/// failed, the reverse DNS one too (not "no PTR record"), and progress
/// shows on stderr while the checks wait out the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_down_is_said_as_such() {
    // Bound, never read: queries go unanswered.
    let (udp, tcp, addr) = common::dns::udp_and_tcp().await;
    let port = addr.port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("milter.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: inet:127.0.0.1:1
local_domains: [example.com]
hostname: out1.example.com
egress_ips: [203.0.113.10]
dns: {{ nameservers: [\"127.0.0.1:{port}\"], timeout: 200ms }}
selfcheck: {{ dnsbl: [] }}
"
        ),
    )
    .unwrap();
    let out = common::cli::output(
        Command::new(BIN)
            .args(["selfcheck", "--config"])
            .arg(&config),
    );
    let stdout = out.stdout.clone();
    let stderr = out.stderr.clone();
    assert_eq!(Some(out.code), Some(1), "{stdout}{stderr}");
    let ptr = stdout
        .lines()
        .find(|l| l.starts_with("ptr"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(ptr.contains("DNS lookup failed"), "{ptr}");
    assert!(!stdout.contains("no PTR record"), "{stdout}");
    assert!(
        stderr.contains("selfcheck: host name and reverse DNS"),
        "{stderr}"
    );
    drop((udp, tcp));
}
