//! `egress-milter probe` against a real Postfix with the milter: every path
//! as predicted; then the same Postfix misconfigured three ways, each
//! mismatch reported and named.

use crate::common;
use common::{postfix::Postfix, process::BIN, sink::Sink, Daemon};
use std::{path::PathBuf, process::Command};

/// The scenario: an application server (127.0.0.2) that sends as
/// noreply@example.com, staff who log in, every other client unknown.
fn scenario() -> String {
    std::fs::read_to_string(common::config_path("e2e.yaml"))
        .expect("e2e.yaml")
        .replace(
            "    sender_addresses: [noreply@example.com]\n",
            "    sender_addresses: [noreply@example.com]\n  - name: staff\n    auth: any\n    login_match: true\n",
        )
}

const RCPT: &str = "ops@example.com";

struct Probe {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Probe {
    /// The probe's copy of the configuration: the scenario, with `listen`
    /// where the milter under test listens.
    fn new(milter: std::net::SocketAddr) -> Probe {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("milter.yaml");
        let text = scenario().replace(
            "listen: inet:127.0.0.1:0",
            &format!("listen: inet:{milter}"),
        );
        std::fs::write(&config, text).expect("probe config");
        std::fs::write(dir.path().join("password"), "alice-pw\n").expect("password");
        Probe { dir, config }
    }

    /// Runs the probe from `source` (with alice's login when asked); its
    /// exit code and report.
    async fn run(&self, smtp_port: u16, source: &str, login: bool) -> (i32, String) {
        let mut cmd = Command::new(BIN);
        cmd.arg("probe")
            .arg("--config")
            .arg(&self.config)
            .args(["--server", &format!("127.0.0.1:{smtp_port}")])
            .args(["--rcpt", RCPT, "--source", source, "--timeout", "30s"]);
        if login {
            cmd.args(["--submission", &format!("127.0.0.1:{smtp_port}")])
                .args(["--login", "alice@example.com", "--password-file"])
                .arg(self.dir.path().join("password"));
        }
        let out = tokio::task::spawn_blocking(move || common::cli::output(&mut cmd))
            .await
            .expect("probe task");
        (out.code, out.text())
    }
}

async fn milter() -> Daemon {
    let config =
        egress_milter::config::Config::parse(std::path::Path::new("probe.yaml"), &scenario())
            .expect("scenario config");
    common::start_with(config).await
}

/// Lines of the report that name a path with its status.
fn path_lines<'a>(report: &'a str, status: &str) -> Vec<&'a str> {
    report
        .lines()
        .filter(|l| l.starts_with(&format!("{status} ")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_configured_gateway_answers_every_path_as_predicted() {
    let d = milter().await;
    let mut sink = Sink::start().await;
    let pf = Postfix::start_with(
        "probe-ok",
        &format!("inet:{}", d.addr),
        sink.port,
        &[("alice@example.com", "alice-pw")],
    );
    let probe = Probe::new(d.addr);

    // From the application server, with a login for the submission paths.
    let (code, report) = probe.run(pf.smtp_port, "127.0.0.2", true).await;
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("probing as client 127.0.0.2"), "{report}");
    assert!(path_lines(&report, "MISMATCH").is_empty(), "{report}");
    let ok = path_lines(&report, "ok");
    // Every nmap relay trick from every sender, the class's own mail,
    // forged senders, spoofed From:, an internal mimic, submission.
    assert!(ok.len() >= 20, "{report}");
    for name in [
        "relay from <>",
        "relay from <antispam@[127.0.0.1]>",
        "the class's own mail from <noreply@example.com>",
        "a forged sender of ours <ceo@example.com>",
        "a spoofed From:",
        "a client mimicking an internal server",
        "submission as alice@example.com, from <alice@example.com>",
        "submission as alice@example.com, from another user",
    ] {
        assert!(
            ok.iter().any(|l| l.contains(name)),
            "no path {name:?}: {report}"
        );
    }
    assert!(
        report.contains("[MAIL FROM refused: 550 5.7.1 Sender <ceo@example.com> not authorised"),
        "{report}"
    );
    assert!(!report.contains("What it means"), "{report}");

    // From an unknown client: every relay trick refused by the milter.
    let (code, report) = probe.run(pf.smtp_port, "127.0.0.9", false).await;
    assert_eq!(code, 0, "{report}");
    assert!(path_lines(&report, "MISMATCH").is_empty(), "{report}");
    assert!(
        report.contains("relay from <antispam@example.com> (1/3)  [6 of 6 recipients refused]"),
        "{report}"
    );

    // Only the operator's address ever got a message.
    let mut delivered = Vec::new();
    while let Some(m) = sink.next(15).await {
        delivered.push(m);
    }
    assert!(delivered.len() >= 2, "{delivered:?}");
    for m in &delivered {
        assert_eq!(m.rcpt_to, vec![format!("<{RCPT}>")], "{m:?}");
    }
    drop(pf);
    d.stop().await;
}

/// Postfix guards relaying itself (only example.com may be relayed to,
/// only the application server may relay) but the milter was taken out of
/// smtpd_milters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_the_milter_is_named() {
    let d = milter().await;
    let sink = Sink::start().await;
    let pf = Postfix::start_custom(
        "probe-nomilter",
        &format!("inet:{}", d.addr),
        sink.port,
        &[],
        "smtpd_milters =\nnon_smtpd_milters =\nrelay_domains = example.com\n\
         smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n\
         smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n\
         mynetworks = 127.0.0.2/32\n",
    );
    let probe = Probe::new(d.addr);
    // From outside, Postfix's own relay rule answers where the milter
    // would: as predicted, and said so.
    let (code, report) = probe.run(pf.smtp_port, "127.0.0.9", false).await;
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains(
            "72 refusal(s) came from the MTA's own restrictions before the milter was asked"
        ),
        "{report}"
    );
    // From the application server, forged senders and From: go through.
    let (code, report) = probe.run(pf.smtp_port, "127.0.0.2", false).await;
    assert_eq!(code, 1, "{report}");
    let bad = path_lines(&report, "MISMATCH");
    for name in [
        "a forged sender of ours <ceo@example.com>",
        "a spoofed From:",
        "relay from <>",
    ] {
        assert!(bad.iter().any(|l| l.contains(name)), "{name}: {report}");
    }
    assert!(
        report.contains("MAIL FROM: expected \"550 5.7.1 Sender <ceo@example.com> not authorised for crm-app\", got accepted"),
        "{report}"
    );
    assert!(
        report.contains("THE MILTER WAS NOT CONSULTED: it answers at inet:"),
        "{report}"
    );
    assert!(!report.contains("OPEN RELAY"), "{report}");
    drop(pf);
    d.stop().await;
}

/// The milter stopped, and Postfix told to accept when it can't reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_milter_with_default_action_accept_is_named() {
    let d = milter().await;
    let addr = d.addr;
    let sink = Sink::start().await;
    let pf = Postfix::start_custom(
        "probe-accept",
        &format!("inet:{addr}"),
        sink.port,
        &[],
        "milter_default_action = accept\n",
    );
    d.stop().await;
    let probe = Probe::new(addr);
    let (code, report) = probe.run(pf.smtp_port, "127.0.0.9", false).await;
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("THE MILTER IS DOWN AND THE MTA ACCEPTS WITHOUT IT"),
        "{report}"
    );
    assert!(
        report.contains("milter_default_action = accept"),
        "{report}"
    );
    // Postfix relays for every loopback client: the milter was the guard.
    assert!(report.contains("OPEN RELAY"), "{report}");
    drop(pf);
}

/// `mynetworks` covers the probe's address and `permit_mynetworks` lets it
/// relay, while the milter is not consulted: an open relay for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_relay_through_mynetworks_is_named() {
    let d = milter().await;
    let sink = Sink::start().await;
    let pf = Postfix::start_custom(
        "probe-openrelay",
        &format!("inet:{}", d.addr),
        sink.port,
        &[],
        "smtpd_milters =\nmynetworks = 127.0.0.0/8\n",
    );
    let probe = Probe::new(d.addr);
    let (code, report) = probe.run(pf.smtp_port, "127.0.0.9", false).await;
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("OPEN RELAY: the gateway accepted "),
        "{report}"
    );
    assert!(report.contains("permit_mynetworks"), "{report}");
    assert!(
        path_lines(&report, "MISMATCH")
            .iter()
            .any(|l| l.contains("relay from <> (1/3)")),
        "{report}"
    );
    assert!(report.contains("THE MILTER WAS NOT CONSULTED"), "{report}");
    drop(pf);
    d.stop().await;
}

/// An unknown option or an unreadable password file: exit 2 and why.
#[test]
fn bad_arguments_exit_2() {
    let out = common::cli::output(
        Command::new(BIN)
            .args(["probe", "--config"])
            .arg(common::config_path("e2e.yaml"))
            .args(["--server", "127.0.0.1:1", "--rcpt", RCPT])
            .args(["--login", "a", "--password-file", "/nonexistent/pw"]),
    );
    assert_eq!(Some(out.code), Some(2));
    assert!(
        out.stderr.clone().contains("cannot read /nonexistent/pw"),
        "{}",
        out.stderr.clone()
    );
}
