//! Loading and validating the configuration file.

use super::reading::MAX_CONFIG_SIZE;
use super::*;

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
    assert_eq!(c.local_domains.to_string(), "example.com");
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

#[test]
fn incident_errors_name_file_line_and_key() {
    let yaml = "\
listen: inet:127.0.0.1:7357
local_domains: [example.com]
incidents:
  block_for: soon
  signals:
    - { name: spray, key: user, count: distinct_recipient_domains, above: 50 }
    - { name: surge, key: sender, count: messages, above_baseline: 10x }
    - { name: jump, key: sender, count: messages, above_baseline: half, min: 5/h }
    - { name: both, key: client, count: messages, above: 5/h, above_baseline: 2x, min: 1/h }
    - { name: floor, key: client, count: messages, above: 5/h, min: 1/h }
    - { name: ratio, key: sender, count: bounce_ratio, above: 20/h, min: 10/h }
    - { name: ratio2, key: sender, count: bounce_ratio, above: 20% }
  notify:
    webhook: { url: \"ftp://x\" }
    mail: { to: nobody, from: a@example.com, relay: \"127.0.0.1\" }
    max_per_hour: 0
admin: { listen: \"inet:127.0.0.1:9358\" }
";
    let errs = parse(yaml).unwrap_err().to_string();
    for want in [
        "test.yaml:4: incidents.block_for: expected a duration such as 30s, 10m or 2h, got \"soon\"",
        "test.yaml:6: incidents.signals[0].above: expected a count per period such as 50/h or 5/10m, got \"50\"",
        "test.yaml:7: incidents.signals[1].min: above_baseline needs min (e.g. 50/h)",
        "test.yaml:8: incidents.signals[2].above_baseline: expected a factor above 1 such as 10x, got \"half\"",
        "test.yaml:9: incidents.signals[3]: set above or above_baseline, not both",
        "test.yaml:10: incidents.signals[4]: min and learn go with above_baseline",
        "test.yaml:11: incidents.signals[5].above: bounce_ratio is a share: expected a percentage such as 20%, got \"20/h\"",
        "test.yaml:12: incidents.signals[6].min: bounce_ratio needs min (e.g. 50/h)",
        "test.yaml:14: incidents.notify.webhook.url: expected an http:// or https:// URL, got \"ftp://x\"",
        "test.yaml:15: incidents.notify.mail.to: expected an address",
        "test.yaml:15: incidents.notify.mail.relay: expected HOST:PORT, got \"127.0.0.1\"",
        "test.yaml:16: incidents.notify.max_per_hour: must be at least 1",
        "test.yaml:17: admin.listen: listening on TCP (127.0.0.1:9358) needs admin.token_file",
    ] {
        assert!(errs.contains(want), "missing {want:?} in\n{errs}");
    }
    // Unknown keys and values are refused by name, with their line.
    let errs = parse(
        "listen: inet:127.0.0.1:7357\nlocal_domains: [example.com]\nincidents:\n  signals: [{ name: x, key: login, count: messages, above: 1/h }]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        errs.starts_with("test.yaml:4: incidents.signals[0].key"),
        "{errs}"
    );
    let c = parse(
        "listen: inet:127.0.0.1:7357\nlocal_domains: [example.com]\nincidents:\n  signals: [{ name: s, key: sender, count: messages, above_baseline: 10x, min: 50/h }]\n",
    )
    .unwrap();
    assert_eq!(c.incidents.action, crate::config::IncidentAction::Hold);
    assert_eq!(c.incidents.block_for, Duration::from_secs(3600));
    assert_eq!(
        c.admin.listen,
        crate::config::AdminListen::Unix {
            path: "/run/egress-milter/admin.sock".into(),
            mode: 0o660,
            group: None,
        }
    );
}

#[test]
fn antivirus_and_hostname_errors_name_file_line_and_key() {
    let yaml = "\
listen: inet:127.0.0.1:7357
local_domains: [example.com]
antivirus:
  clamd: [\"unix:relative.ctl\", \"inet:127.0.0.1\"]
  timeout: never
  max_size: huge
  allow: [\"two words\"]
internal_hostnames: [\"*.corp.local\", \"a b\"]
";
    let errs = parse(yaml).unwrap_err().to_string();
    for want in [
        "test.yaml:4: antivirus.clamd[0]: expected unix:/PATH or inet:HOST:PORT, got \"unix:relative.ctl\"",
        "test.yaml:4: antivirus.clamd[1]: expected unix:/PATH or inet:HOST:PORT, got \"inet:127.0.0.1\"",
        "test.yaml:5: antivirus.timeout: expected a duration such as 30s, 10m or 2h, got \"never\"",
        "test.yaml:6: antivirus.max_size: invalid size \"huge\"",
        "test.yaml:7: antivirus.allow[0]: a signature name or pattern",
        "test.yaml:8: internal_hostnames[1]: expected a host name or *.suffix, got \"a b\"",
    ] {
        assert!(errs.contains(want), "missing {want:?} in\n{errs}");
    }
    let errs = parse("listen: inet:127.0.0.1:7357\nlocal_domains: [example.com]\nantivirus: { clamd: [\"unix:/run/clamav/clamd.ctl\"], action: delete }\n")
        .unwrap_err()
        .to_string();
    assert!(errs.starts_with("test.yaml:3: antivirus.action"), "{errs}");
    let c = parse("listen: inet:127.0.0.1:7357\nlocal_domains: [example.com]\nantivirus: { clamd: [\"unix:/run/clamav/clamd.ctl\"] }\n").unwrap();
    let av = c.antivirus.unwrap();
    assert_eq!(av.action, crate::config::VirusAction::Reject);
    assert_eq!(av.timeout, Duration::from_secs(10));
    assert_eq!(av.max_size, 25 << 20);
    assert!(c.internal_hostnames.contains(&"*.local".to_string()));
}

#[test]
fn admin_socket_group_is_looked_up() {
    let parse = |g: &str| {
        Config::parse(
            Path::new("t.yaml"),
            &format!("listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\nadmin:\n  socket_group: \"{g}\"\n"),
        )
    };
    let c = parse("root").unwrap();
    assert!(matches!(
        c.admin.listen,
        crate::config::AdminListen::Unix { group: Some(0), .. }
    ));
    let e = parse("no-such-group-here").unwrap_err().to_string();
    assert!(e.contains("t.yaml:4: admin.socket_group"), "{e}");
}

/// An unknown word or a number of the wrong kind does not stop the reading:
/// every one is reported at once, with what is expected, and a key set
/// aside leaves no error of its own (an emptied parent mapping).
#[test]
fn every_value_of_the_wrong_kind_at_once() {
    let text = "listen: inet:127.0.0.1:1
mode: enforcing
local_domains: [example.com]
recipients:
  max_per_message: -5
incidents:
  max_keys: lots
  action: holdit
rate_limits:
  messages_per_sender: 50/hourz
";
    let e = Config::parse(Path::new("t.yaml"), text).unwrap_err();
    let lines: Vec<String> =
        e.0.iter()
            .map(|e| format!("{}: {}: {}", e.line, e.key, e.message))
            .collect();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert!(
        lines[0].starts_with("2: mode: unknown variant `enforcing`"),
        "{lines:#?}"
    );
    assert_eq!(
        lines[1],
        "5: recipients.max_per_message: expected a whole number of 0 or more, got \"-5\""
    );
    assert_eq!(
        lines[2],
        "7: incidents.max_keys: expected a whole number of 0 or more, got \"lots\""
    );
    assert!(
        lines[3].starts_with("8: incidents.action: unknown variant `holdit`"),
        "{lines:#?}"
    );
    assert!(
        lines[4].starts_with("10: rate_limits.messages_per_sender"),
        "{lines:#?}"
    );
}
