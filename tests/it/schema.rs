//! `milter.schema.json`: made from the types that read the configuration,
//! kept in step with them, and accepted by a standard JSON Schema validator
//! (python3-jsonschema, draft 2020-12, over YAML 1.2 as ruamel.yaml reads
//! it) for the shipped `milter.yaml`, while
//! an unknown key or an unknown word is refused, as the daemon refuses it.

use crate::common;
use std::path::Path;

fn root(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The validator's complaints about a configuration text, empty when it
/// conforms. The YAML is read by ruamel.yaml as YAML 1.2 (as editors'
/// language servers read it: `off` is a word, not false), independently of
/// the daemon's own reader.
fn complaints(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = common::cli::output(
        std::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(
                "import json, sys, jsonschema\n\
                 from ruamel.yaml import YAML\n\
                 schema = json.load(open(sys.argv[1]))\n\
                 jsonschema.Draft202012Validator.check_schema(schema)\n\
                 doc = YAML(typ='safe', pure=True).load(open(sys.argv[2]))\n\
                 for e in jsonschema.Draft202012Validator(schema).iter_errors(doc):\n\
                 \x20   print(e.json_path, e.message)\n",
            )
            .arg(root("milter.schema.json"))
            .arg(&file),
    );
    assert!(out.ok(), "python3-jsonschema: {}", out.text());
    out.stdout
}

#[test]
fn the_shipped_schema_is_the_one_the_code_makes() {
    let out = common::cli::run(&["config-schema"]);
    assert!(out.ok(), "{}", out.text());
    let shipped = std::fs::read_to_string(root("milter.schema.json")).unwrap();
    assert!(
        out.stdout == shipped,
        "milter.schema.json is stale: run `egress-milter config-schema > milter.schema.json`"
    );
}

/// The configuration reference (the book's page, `milter.yaml(5)`) and
/// the schema are made from the code: a shipped copy that differs fails.
#[test]
fn the_documents_made_from_the_code_are_current() {
    let out = common::cli::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_egress-milter-docs"))
            .args(["--check", "--root"])
            .arg(env!("CARGO_MANIFEST_DIR")),
    );
    assert!(out.ok(), "{}", out.text());
    // And it notices a stale one.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("packaging")).unwrap();
    std::fs::copy(
        root("packaging/milter.yaml.in"),
        dir.path().join("packaging/milter.yaml.in"),
    )
    .unwrap();
    let out = common::cli::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_egress-milter-docs"))
            .args(["--check", "--root"])
            .arg(dir.path()),
    );
    assert!(
        !out.ok()
            && out.stderr.contains("packaging/man/milter.yaml.5")
            && out.stderr.contains(" milter.yaml"),
        "{}",
        out.text()
    );
    let page = std::fs::read_to_string(root("docs/src/configuration.md")).unwrap();
    assert!(page.contains("### `classes[].sender_domains`"), "{page}");
}

#[test]
fn the_shipped_configuration_conforms_and_names_its_schema() {
    let text = std::fs::read_to_string(root("milter.yaml")).unwrap();
    assert!(
        text.starts_with("# yaml-language-server: $schema=milter.schema.json\n"),
        "editors find the schema beside the file"
    );
    assert_eq!(complaints(&text), "");
    // The test configurations the daemon accepts conform too.
    for name in ["content.yaml", "e2e.yaml", "policy.yaml", "rate.yaml"] {
        let path = common::config_path(name);
        let text = std::fs::read_to_string(&path).unwrap();
        egress_milter::config::Config::parse(&path, &text).expect("the daemon accepts it");
        assert_eq!(complaints(&text), "", "{name}");
    }
}

#[test]
fn unknown_keys_and_words_are_refused_as_the_daemon_refuses_them() {
    let base = "listen: inet:127.0.0.1:7357\nlocal_domains: [example.com]\n";
    for (extra, want) in [
        ("colour: blue\n", "'colour' was unexpected"),
        (
            "classes:\n  - { name: app, clients: [10.0.0.0/8], sender_domain: [example.com] }\n",
            "'sender_domain' was unexpected",
        ),
        ("mode: enforcing\n", "$.mode"),
        (
            "rate_limits: { backend: memcached }\n",
            "$.rate_limits.backend",
        ),
        ("local_domains_extra: { source: x }\n", "was unexpected"),
    ] {
        let text = format!("{base}{extra}");
        let said = complaints(&text);
        assert!(said.contains(want), "{extra:?}: {said}");
        assert!(
            egress_milter::config::Config::parse(Path::new("t.yaml"), &text).is_err(),
            "the daemon refuses {extra:?} too"
        );
    }
    // A list is inline or a source, nothing else.
    let said = complaints(&format!(
        "{base}classes:\n  - {{ name: app, clients: {{ file: x }} }}\n"
    ));
    assert!(said.contains("$.classes[0].clients"), "{said}");
}
