//! `egress-milter test`: the shipped cases file passes against the shipped
//! milter.yaml, and a planted change fails named cases with a readable
//! diff; `--generate` yields cases that pass on every test configuration,
//! and each generated refusal fails once the rule it covers is removed.

use crate::common;
use std::path::Path;

fn root(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Runs `egress-milter test ARGS`: exit code and output.
fn test(args: &[&str]) -> (i32, String) {
    let out = common::cli::run(&[&["test"], args].concat());
    (out.code, out.text())
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_shipped_cases_pass_and_a_planted_change_fails_them() {
    let config = root("milter.yaml");
    let cases = root("packaging/cases.yaml");
    let (code, out) = test(&["--config", path(&config), path(&cases)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("23 case(s): 23 passed, 0 failed"), "{out}");

    // Staff may send as anyone of ours: the two ownership cases fail, and
    // say how.
    let dir = tempfile::tempdir().unwrap();
    let planted = dir.path().join("milter.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("    login_match: true"));
    std::fs::write(
        &planted,
        text.replace("    login_match: true", "    login_match: false"),
    )
    .unwrap();
    let (code, out) = test(&["--config", path(&planted), path(&cases)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "FAIL  alice may not send as bob\n        reply:  expected \"553 5.7.1 Sender <bob@example.com> not owned by user alice\", got none\n        stage:  expected mail, got -\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("FAIL  a login that is an address owns that address only"),
        "{out}"
    );
    assert!(out.contains("ok    alice sends as herself"), "{out}");
    assert!(out.contains("23 case(s): 21 passed, 2 failed"), "{out}");

    // A cases file with a mistake names the file and the line.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "cases:\n  - name: x\n    client: 10.0.0.1\n    form: a@example.com\n",
    )
    .unwrap();
    let (code, out) = test(&["--config", path(&config), path(&bad)]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("bad.yaml:4:") && out.contains("form"), "{out}");
}

#[test]
fn generated_cases_pass_on_every_test_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let mut configs = vec![root("milter.yaml")];
    for name in ["content.yaml", "e2e.yaml", "policy.yaml", "rate.yaml"] {
        configs.push(common::config_path(name));
    }
    for config in configs {
        let (code, generated) = test(&["--config", path(&config), "--generate"]);
        assert_eq!(code, 0, "{generated}");
        let file = dir.path().join("generated.yaml");
        std::fs::write(&file, &generated).unwrap();
        let (code, out) = test(&["--config", path(&config), path(&file)]);
        assert_eq!(code, 0, "{}:\n{out}\n{generated}", config.display());
        let n = out.lines().filter(|l| l.starts_with("ok    ")).count();
        assert!(n >= 15, "{}: only {n} cases\n{out}", config.display());
    }
}

#[test]
fn each_generated_refusal_fails_without_its_rule() {
    let dir = tempfile::tempdir().unwrap();
    let config = root("milter.yaml");
    let (code, generated) = test(&["--config", path(&config), "--generate"]);
    assert_eq!(code, 0, "{generated}");
    let cases = dir.path().join("generated.yaml");
    std::fs::write(&cases, &generated).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    // (what is changed, into what, the case that must then fail)
    let removals = [
        (
            "    sender_addresses: [noreply@example.com]",
            "",
            "crm-app: an address not in sender_addresses",
        ),
        (
            "    login_match: true",
            "    login_match: false",
            "staff: another user's address",
        ),
        (
            "    allow_null_sender: false",
            "    allow_null_sender: true",
            "crm-app: a null sender",
        ),
        ("  strict: true", "  strict: false", "local: a forged From:"),
        (
            "  max_per_message: 100",
            "  max_per_message: 200",
            "crm-app: one recipient too many",
        ),
        (
            "local_domains: [example.com, \"*.example.com\"]",
            "local_domains: [example.com, \"*.example.com\", foreign.example]",
            "relay: a foreign recipient",
        ),
        (
            "local_domains: [example.com, \"*.example.com\"]",
            "local_domains: [example.com, \"*.example.com\", foreign.example]",
            "local: a foreign envelope domain",
        ),
        (
            "unknown_clients: relay_deny",
            "unknown_clients: reject",
            "inbound mail to example.com",
        ),
    ];
    for (from, to, case) in removals {
        assert!(text.contains(from), "{from}");
        let changed = dir.path().join("changed.yaml");
        std::fs::write(&changed, text.replacen(from, to, 1)).unwrap();
        let (code, out) = test(&["--config", path(&changed), path(&cases)]);
        assert_eq!(code, 1, "{from} -> {to}:\n{out}");
        assert!(
            out.contains(&format!("FAIL  {case}\n")),
            "{from} -> {to}: {case} passed:\n{out}"
        );
    }
}
