//! Loading and validating the configuration file.

#[test]
fn devices_and_huge_files_are_refused_not_read_forever() {
    let e = Config::load(Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; (MAX_CONFIG_SIZE + 1) as usize]).unwrap();
    let e = Config::load(&big).unwrap_err().to_string();
    assert!(e.contains("larger than"), "{e}");
    let text = "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\n\
                    dkim: { keys: [{ domain: example.com, selector: s, file: /dev/zero }] }\n";
    let e = Config::parse(Path::new("t.yaml"), text)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

use super::*;

fn parse(yaml: &str) -> Result<Config, ConfigErrors> {
    Config::parse(Path::new("test.yaml"), yaml)
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse("listen: inet:127.0.0.1:7357\nlocal_domains: [Example.COM.]\n").unwrap();
    assert_eq!(c.listen, Listen::Inet("127.0.0.1:7357".into()));
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.on_error, OnError::Tempfail);
    assert_eq!(c.unknown_clients, UnknownClients::RelayDeny);
    assert!(c.from_strict);
    assert_eq!(c.max_recipients, 100);
    assert_eq!(c.local_domains[0].to_string(), "example.com");
    assert_eq!(c.socket_mode, 0o660);
}

#[test]
fn errors_name_file_line_and_key() {
    let yaml = "\
listen: inet:127.0.0.1:7357
local_domains: [example.com]
classes:
  - name: app
    clients: [10.1.2.0/24, 10.1.2.0/33]
";
    let errs = parse(yaml).unwrap_err();
    assert_eq!(
        errs.to_string(),
        "test.yaml:5: classes[0].clients[1]: invalid network \"10.1.2.0/33\""
    );
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let yaml = "listen: inet:127.0.0.1:7357\nlocal_domains: [example.com]\nmod: monitor\n";
    let errs = parse(yaml).unwrap_err();
    assert_eq!(errs.0.len(), 1);
    assert_eq!(errs.0[0].line, 3);
    assert!(errs.0[0].message.contains("mod"), "{}", errs);
    let yaml = "listen: inet:127.0.0.1:7357\nlocal_domains: [example.com]\nclasses:\n  - name: a\n    auth: any\n    login_match: maybe\n";
    let errs = parse(yaml).unwrap_err();
    assert_eq!(errs.0[0].line, 6, "{errs}");
    assert_eq!(errs.0[0].key, "classes[0].login_match", "{errs}");
}

#[test]
fn socket_mode_quoted_or_not_and_sendmail_listen_form() {
    for mode in ["0640", "\"0640\"", "\"640\""] {
        let yaml = format!(
            "listen: inet:7357@127.0.0.1\nsocket_mode: {mode}\nlocal_domains: [example.com]\n"
        );
        let c = parse(&yaml).unwrap();
        assert_eq!(c.socket_mode, 0o640, "{mode}");
        assert_eq!(c.listen, Listen::Inet("127.0.0.1:7357".into()));
    }
    assert!(parse(
        "listen: inet:127.0.0.1:1\nsocket_mode: \"0980\"\nlocal_domains: [example.com]\n"
    )
    .is_err());
    let c = parse("listen: inet:[::1]:7357\nlocal_domains: [example.com]\n").unwrap();
    assert_eq!(c.listen, Listen::Inet("[::1]:7357".into()));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("12"), Some(Duration::from_secs(12)));
    assert_eq!(parse_duration("5x"), None);
    assert_eq!(parse_duration(""), None);
}
