//! The Prometheus endpoint of a running daemon: decisions, messages, open
//! connections and stage times, in the text format.

use crate::common;
use common::{mail, process::Running, reply};
use indymilter::Actions;
use indymilter_test::TestConnection;
use std::net::SocketAddr;

/// The daemon (the real binary) with its metrics endpoint on a free port;
/// `rest` is the configuration after `listen` and `metrics`. Returns the
/// daemon, its milter port and its metrics port.
fn start(dir: &std::path::Path, rest: &str) -> (Running, u16, u16) {
    let (port, metrics) = (common::free_port(), common::free_port());
    let path = dir.join("milter.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:{port}\nmetrics: {{ listen: 127.0.0.1:{metrics} }}\n{rest}"
        ),
    )
    .unwrap();
    let d = Running::start(&path);
    d.wait_for("metrics endpoint listening");
    (d, port, metrics)
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `dir/rotated` as a gateway sharing rotated keys through Redis leaves
/// it: an RSA key of example.com made active from four seconds on, its
/// private key beside; `dir/secret` the sealing key. The moment.
fn seed_rotated_key(dir: &std::path::Path) -> u64 {
    use egress_milter::rotation::{ring, store::Store};
    std::fs::write(
        dir.join("secret"),
        "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=\n",
    )
    .unwrap();
    let store = Store::open(&dir.join("rotated")).unwrap();
    let (pem, record) = egress_milter::dkim::generate("rsa", 2048).unwrap();
    let switch = now_s() + 4;
    let key = ring::Key {
        domain: "example.com".into(),
        algorithm: ring::Algorithm::Rsa,
        selector: "rsa20261205".into(),
        state: ring::State::Active,
        created: switch - 60,
        since: switch,
        record,
        waiting: None,
        late: false,
        revealed: None,
    };
    store.write_key(&key, &pem).unwrap();
    let ring = ring::Ring {
        keys: vec![key],
        ..Default::default()
    };
    store.save(&ring, &store.lock().unwrap()).unwrap();
    switch
}

/// An Ed25519 DKIM key, written to `dir` with mode 0600.
fn ed25519_key(dir: &std::path::Path) -> std::path::PathBuf {
    let (pem, _) = egress_milter::dkim::generate("ed25519", 0).unwrap();
    let key = dir.join("e1.pem");
    std::fs::write(&key, pem).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    key
}

/// A milter connection to the daemon on `port`, connect sent for `ip`.
async fn client(port: u16, ip: &str) -> TestConnection {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = TestConnection::configure()
        .available_actions(Actions::all())
        .open_tcp(addr)
        .await
        .unwrap();
    c.connect("client", format!("{ip}:1").parse::<SocketAddr>().unwrap())
        .await
        .unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_what_it_decides() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, port, metrics) = start(
        dir.path(),
        "local_domains: [example.com]\n\
         classes: [{ name: app, clients: [10.0.0.0/8], sender_domains: [example.com] }]\n",
    );
    let mut conn = client(port, "10.0.0.5").await;
    assert!(reply(&mail(&mut conn, "<x@evil.com>", None).await).starts_with("550 5.7.1"));
    let open = common::scrape(metrics);
    assert!(open.starts_with("HTTP/1.1 200 OK"), "{open}");
    assert!(open.contains("\negress_open_connections 1\n"), "{open}");
    conn.close().await.unwrap();
    let body = common::scrape(metrics);
    for line in [
        "egress_decisions_total{stage=\"mail\",rule=\"sender_domains\",class=\"app\",verdict=\"reject\"} 1",
        "egress_messages_total{verdict=\"reject\"} 1",
        "egress_stage_seconds_count{stage=\"mail\"} 1",
        "# TYPE egress_stage_seconds histogram",
    ] {
        assert!(body.contains(line), "{line} missing:\n{body}");
    }
}

/// Every metric the shipped Grafana dashboard queries is one the daemon
/// exposes (a renamed metric would leave a panel silently empty), and the
/// file is a dashboard Grafana can import.
#[test]
fn dashboard_queries_exposed_metrics() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana-dashboard.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dash["title"], "egress-milter");
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let config = egress_milter::config::Config::parse(
        std::path::Path::new("inline.yaml"),
        "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\n",
    )
    .unwrap();
    let shared = egress_milter::Shared::new(config);
    let exposed = shared.metrics_text();
    let families: Vec<&str> = exposed
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let re = regex::Regex::new(r"egress_[a-z_]+").unwrap();
    let mut queried = 0;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for m in re.find_iter(expr) {
                let name = m.as_str();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                assert!(
                    families.contains(&family),
                    "panel {:?} queries {name}, which is not exposed ({families:?})",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 14, "{queried}");
    // Every family exposed is on some panel.
    for family in &families {
        assert!(text.contains(family), "{family} is on no panel");
    }
}

/// The shipped alert rules: valid for Prometheus (`promtool check
/// rules`), firing as their unit tests say (`promtool test rules`:
/// a listing at once, a wrong record after 30 minutes), and querying only
/// metrics the daemon exposes.
#[test]
fn alert_rules_check_and_fire() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let local = root.join("target/prometheus-root/usr/bin/promtool");
    let promtool = if local.exists() {
        local
    } else {
        std::path::PathBuf::from("promtool")
    };
    for args in [
        ["check", "rules", "packaging/prometheus-alerts.yml"],
        ["test", "rules", "tests/prometheus/alerts-test.yml"],
    ] {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(root)
            .output()
            .expect("promtool: run scripts/test.sh, which unpacks it");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let config = egress_milter::config::Config::parse(
        std::path::Path::new("inline.yaml"),
        "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\n",
    )
    .unwrap();
    let exposed = egress_milter::Shared::new(config).metrics_text();
    let rules = std::fs::read_to_string(root.join("packaging/prometheus-alerts.yml")).unwrap();
    let re = regex::Regex::new(r"egress_[a-z_]+").unwrap();
    let mut n = 0;
    for m in re.find_iter(&rules) {
        assert!(
            exposed.contains(&format!("# TYPE {} ", m.as_str())),
            "the rules query {}, which is not exposed",
            m.as_str()
        );
        n += 1;
    }
    assert!(n >= 4);
}

/// `egress_dkim_signatures_total`, which the dashboard charts, counts each
/// signature made, by domain and algorithm, and nothing for a message that
/// is not signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_the_signatures_it_makes() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_key(dir.path());
    let (_d, port, metrics) = start(
        dir.path(),
        &format!(
            "local_domains: [example.com, example.org]\n\
             classes: [{{ name: app, clients: [10.0.0.0/8], sender_domains: [example.com, example.org] }}]\n\
             dkim: {{ keys: [{{ domain: example.com, selector: e1, file: {} }}] }}\n",
            key.display()
        ),
    );
    let line = "egress_dkim_signatures_total{domain=\"example.com\",algorithm=\"ed25519\"}";
    assert!(!common::scrape(metrics).contains(line));
    let mut conn = client(port, "10.0.0.5").await;
    // Two messages from example.com are signed; one from example.org, which
    // has no key, is not.
    for from in ["a@example.com", "b@example.com", "c@example.org"] {
        common::envelope(&mut conn, &format!("<{from}>"), "<x@example.net>").await;
        assert_eq!(
            common::message(&mut conn, &[("From", from), ("Subject", "s")]).await,
            "continue"
        );
    }
    conn.close().await.unwrap();
    let body = common::scrape(metrics);
    assert!(body.contains(&format!("\n{line} 2\n")), "{body}");
    assert_eq!(
        body.matches("egress_dkim_signatures_total{").count(),
        1,
        "{body}"
    );
}

/// The samples of an exposition that a dashboard query's selector picks
/// (`name{label="v",label=~"re",label!~"re"}`; `instance` is Prometheus's
/// own label and matches everything here), summed.
fn selected(exposition: &str, selector: &str) -> f64 {
    let (name, matchers) = match selector.split_once('{') {
        Some((n, m)) => (n, m.trim_end_matches('}')),
        None => (selector, ""),
    };
    let matcher = regex::Regex::new(r#"(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)""#).unwrap();
    let wanted: Vec<(String, String, regex::Regex)> = matcher
        .captures_iter(matchers)
        .filter(|c| &c[1] != "instance")
        .map(|c| {
            let re = regex::Regex::new(&format!("^(?:{})$", c[3].replace("\\\\", "\\"))).unwrap();
            (c[1].to_string(), c[2].to_string(), re)
        })
        .collect();
    let label = regex::Regex::new(r#"(\w+)="([^"]*)""#).unwrap();
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            (metric == name).then_some(())?;
            let have: Vec<(&str, &str)> = label
                .captures_iter(labels)
                .map(|c| (c.get(1).unwrap().as_str(), c.get(2).unwrap().as_str()))
                .collect();
            let ok = wanted.iter().all(|(k, op, re)| {
                let v = have.iter().find(|(hk, _)| hk == k).map_or("", |(_, v)| *v);
                match op.as_str() {
                    "=" | "=~" => re.is_match(v),
                    _ => !re.is_match(v),
                }
            });
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Every selector a panel of the shipped Grafana dashboard charts moves
/// under the traffic that should move it: messages accepted (signed),
/// refused, refused by a rate limit, refused only in monitor mode; a Redis
/// that is down (failures, decisions taken locally, local keys); DNS that
/// does not answer; an open connection; an incident opened, its message
/// held and the postmaster told. A metric that is declared but
/// never updated leaves its panel flat and fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_charted_metric_moves_under_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_key(dir.path());
    // Nothing listens on this: Redis is down.
    let dead_redis = common::free_port();
    // DNS is down (stopped), until the end: then a list names our egress
    // address, and our DMARC record is seen.
    let bind = common::bind::Bind::start_zones(&[
        ("example.com", "_dmarc IN TXT \"v=DMARC1; p=reject\""),
        ("list.test", ""),
    ]);
    bind.pause(true);
    let dead_dns = bind.port;
    // The second message from 10.0.0.5 opens an incident (held, told).
    let mut hook = common::webhook::Webhook::start(200).await;
    // Inbound mail is verified by a callout to this store; the second
    // callout is over the cap.
    let store = common::sink::Sink::start().await;
    // Every message is scanned; one carries the EICAR test file.
    let clamd = common::clamd::Clamd::start();
    // The class's sender domains come from a file: every MAIL FROM is a
    // lookup in it.
    let ours = dir.path().join("ours.txt");
    std::fs::write(&ours, "example.com\n").unwrap();
    // A rotated key the gateways switch to a few seconds in (as last
    // mirrored from Redis, which is down): pending until that moment,
    // then active; its age grows.
    let switch = seed_rotated_key(dir.path());
    // An administrator acts in the console.
    let users = dir.path().join("console.users");
    common::console::add_user(&users, "alice", "admin", "alice-password");
    let console_port = common::free_port();
    let (d, port, metrics) = start(
        dir.path(),
        &format!(
            "on_error: accept
local_domains: [example.com]
egress_ips: [192.0.2.10]
classes:
  - {{ name: trial, clients: [10.9.0.0/16], mode: monitor }}
  - {{ name: app, clients: [10.0.0.0/8], sender_domains: {{ source: ours }} }}
sources:
  ours: {{ file: {} }}
rate_limits:
  backend: redis
  redis: {{ url: \"redis://127.0.0.1:{dead_redis}\", on_failure: local }}
  messages_per_sender: 2/h
  # The first message leaves the sender's budget half spent: a warning.
  warn_at: 50%
  # The second is over this shadow limit: a would-be tempfail.
  custom: [{{ name: shadow_sender, key: sender, count: messages, rate: 1/h, mode: monitor }}]
dkim:
  keys: [{{ domain: example.com, selector: e1, file: {} }}]
  rotation: {{ domains: [example.com], key_dir: \"{dir}/rotated\", secret_file: \"{dir}/secret\" }}
spf: {{ check_egress: warn }}
dns: {{ nameservers: [\"127.0.0.1:{dead_dns}\"], timeout: 300ms }}
incidents:
  # Past 100 keys a signal makes room: the wide one by forgetting a small
  # count, the narrow one (every key past half its threshold) by leaving
  # the new key uncounted.
  max_keys: 100
  signals:
    - {{ name: volume, key: client, count: messages, above: 1/h }}
    - {{ name: probes, key: sender, count: refusals, above: 1/h }}
    - {{ name: wide, key: sender, count: refusals, above: 100/h }}
  notify: {{ webhook: {{ url: \"{}\" }} }}
antivirus: {{ clamd: [\"inet:127.0.0.1:{}\"] }}
reputation: {{ every: 1s, domains: [example.com], ip_lists: [list.test], domain_lists: [] }}
verify_recipients: {{ callout: [\"127.0.0.1:{}\"] }}
verify_callouts: {{ rate: 1/h }}
bounces: {{ suppress: {{ after: 1 }} }}
console: {{ listen: \"127.0.0.1:{console_port}\", users_file: {} }}
",
            ours.display(),
            key.display(),
            hook.url(),
            clamd.port,
            store.port,
            users.display(),
            dir = dir.path().display(),
        ),
    );
    let before = common::scrape(metrics);
    // The rotated key as mirrored (Redis down): pending while its moment
    // is ahead, active from it on.
    let state =
        "egress_dkim_key_state{domain=\"example.com\",selector=\"rsa20261205\",algorithm=\"rsa\"}";
    let (seen, at) = common::until(
        std::time::Duration::from_secs(10),
        "the rotated key shown",
        || {
            let at = now_s();
            common::scrape(metrics)
                .lines()
                .find_map(|l| l.strip_prefix(state).map(|v| (v.trim().to_string(), at)))
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await;
    if at < switch {
        assert_eq!(seen, "0", "pending before its moment");
    }
    let mut conn = client(port, "10.0.0.5").await;
    let during = common::scrape(metrics);
    // Two messages accepted and signed, the third over messages_per_sender.
    for _ in 0..2 {
        common::envelope(&mut conn, "<a@example.com>", "<x@example.net>").await;
        assert_eq!(
            common::message(&mut conn, &[("From", "a@example.com")]).await,
            "continue"
        );
    }
    let r = reply(&mail(&mut conn, "<a@example.com>", None).await);
    assert!(
        r.starts_with("451 4.7.1 Rate limit messages_per_sender"),
        "{r}"
    );
    conn.abort().await.unwrap();
    // Refused: a sender the class may not use; then 101 more, one each:
    // past incidents.max_keys.
    let r = reply(&mail(&mut conn, "<x@evil.test>", None).await);
    assert!(r.starts_with("550 5.7.1"), "{r}");
    for i in 0..101 {
        let r = reply(&mail(&mut conn, &format!("<p{i}@evil.test>"), None).await);
        assert!(r.starts_with("550 5.7.1"), "{r}");
    }
    conn.close().await.unwrap();
    // A virus.
    let mut conn = client(port, "10.1.0.5").await;
    common::envelope(&mut conn, "<v@example.com>", "<x@example.net>").await;
    for (name, value) in [("From", "v@example.com"), ("Subject", "eicar")] {
        conn.header(name, value).await.unwrap();
    }
    conn.eoh().await.unwrap();
    conn.body(format!("{}\r\n", common::clamd::EICAR))
        .await
        .unwrap();
    let (_, s) = conn.eom().await.unwrap();
    assert!(
        reply(&s).starts_with("550 5.7.1 Message contains a virus"),
        "{}",
        reply(&s)
    );
    conn.close().await.unwrap();
    // Inbound mail: one callout made, the next capped (on_error: accept).
    let mut conn = client(port, "192.0.2.50").await;
    assert_eq!(
        reply(&mail(&mut conn, "<someone@example.net>", None).await),
        "continue"
    );
    for rcpt in ["<a1@example.com>", "<a2@example.com>"] {
        assert_eq!(reply(&conn.rcpt([rcpt]).await.unwrap()), "continue");
    }
    conn.close().await.unwrap();
    // A remote server's notice that one of our recipients is gone.
    let mut conn = client(port, "192.0.2.50").await;
    assert_eq!(reply(&mail(&mut conn, "<>", None).await), "continue");
    assert_eq!(
        reply(&conn.rcpt(["<a@example.com>"]).await.unwrap()),
        "continue"
    );
    for (name, value) in [
        ("From", "MAILER-DAEMON@mx.example.org"),
        ("MIME-Version", "1.0"),
        (
            "Content-Type",
            "multipart/report; report-type=delivery-status; boundary=\"B\"",
        ),
    ] {
        conn.header(name, value).await.unwrap();
    }
    conn.eoh().await.unwrap();
    conn.body(
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n\
         Final-Recipient: rfc822; x@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--B--\r\n",
    )
    .await
    .unwrap();
    let (_, s) = conn.eom().await.unwrap();
    assert_eq!(reply(&s), "continue");
    conn.close().await.unwrap();
    // Refused only in monitor mode.
    let mut conn = client(port, "10.9.0.5").await;
    common::envelope(&mut conn, "<x@evil.test>", "<x@example.net>").await;
    conn.close().await.unwrap();
    assert!(hook.next(10).await.is_some(), "the incident is told");
    let sent = |m: &str| {
        common::counted(
            m,
            "egress_incident_notifications_total",
            &[("result", "sent")],
        )
    };
    for _ in 0..100 {
        if sent(&common::scrape(metrics)) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The sender's budget reset in the console (tried).
    let mut console = common::console::Http::new(console_port);
    assert_eq!(console.login("alice", "alice-password").await.status, 303);
    let csrf = console.get("/limits").await.input("csrf");
    let r = console
        .act(&csrf, "reset", "limit:messages_per_sender:a@example.com")
        .await;
    // Redis is down here: said, not claimed done (and counted).
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("Not done: redis"), "{}", r.body);
    // DNS answers again, and the list names our address.
    bind.pause(false);
    bind.update_zone(
        "list.test",
        "update add 10.2.0.192.list.test. 1 A 127.0.0.2",
    );
    let waited = std::time::Instant::now();
    while !common::scrape(metrics)
        .contains("egress_reputation_listed{target=\"192.0.2.10\",list=\"list.test\"} 1")
    {
        if waited.elapsed() > std::time::Duration::from_secs(40) {
            let log: Vec<String> = d
                .rest_of_log()
                .into_iter()
                .filter(|l| l.contains("reputation") || l.contains("dns"))
                .collect();
            panic!(
                "not listed within 40s:\n{}\n{}",
                log.join("\n"),
                bind.query_log()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    eprintln!("listed after {:?}", waited.elapsed());
    // A reload, which doubles the callout cap.
    let path = dir.path().join("milter.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("rate: 1/h", "rate: 2/h")).unwrap();
    d.signal("-HUP");
    d.wait_for("configuration reloaded");
    // (Past the rotated key's moment; bounded: it was a few seconds on.)
    while now_s() <= switch {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after = common::scrape(metrics);
    assert!(
        after.contains(&format!("{state} 1")),
        "active from its moment:\n{after}"
    );

    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana-dashboard.json"
    ))
    .unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let selector = regex::Regex::new(r"egress_[a-z_]+(\{[^}]*\})?").unwrap();
    let mut checked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for m in selector.find_iter(expr) {
                let s = m.as_str();
                let (b, du, a) = (
                    selected(&before, s),
                    selected(&during, s),
                    selected(&after, s),
                );
                assert!(
                    du != b || a != b,
                    "panel {:?}: {s} never moved ({b} before, {du} during, {a} after)\n{after}",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 23, "{checked}");
}
