//! The Prometheus endpoint of a running daemon: decisions, messages, open
//! connections and stage times, in the text format.

mod common;
use common::{mail, process::Running, reply};
use indymilter::Actions;
use indymilter_test::TestConnection;
use std::net::SocketAddr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_what_it_decides() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics) = (common::free_port(), common::free_port());
    let path = dir.path().join("milter.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:{port}\nlocal_domains: [example.com]\nmetrics: {{ listen: 127.0.0.1:{metrics} }}\n\
             classes: [{{ name: app, clients: [10.0.0.0/8], sender_domains: [example.com] }}]\n"
        ),
    )
    .unwrap();
    let d = Running::start(&path);
    d.wait_for("metrics endpoint listening");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut conn = TestConnection::configure()
        .available_actions(Actions::all())
        .open_tcp(addr)
        .await
        .unwrap();
    conn.connect("app", "10.0.0.5:1".parse::<SocketAddr>().unwrap())
        .await
        .unwrap();
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
    let exposed = shared.metrics.render(&shared);
    let families: Vec<&str> = exposed
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let re = regex::Regex::new(r"egress_[a-z_]+").unwrap();
    let mut queried = 0;
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
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

/// `egress_dkim_signatures_total`, which the dashboard charts, counts each
/// signature made, by domain and algorithm, and nothing for a message that
/// is not signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_the_signatures_it_makes() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, _) = egress_milter::dkim::generate("ed25519", 0).unwrap();
    let key = dir.path().join("e1.pem");
    std::fs::write(&key, pem).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (port, metrics) = (common::free_port(), common::free_port());
    let path = dir.path().join("milter.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:{port}\nlocal_domains: [example.com, example.org]\nmetrics: {{ listen: 127.0.0.1:{metrics} }}\n\
             classes: [{{ name: app, clients: [10.0.0.0/8], sender_domains: [example.com, example.org] }}]\n\
             dkim: {{ keys: [{{ domain: example.com, selector: e1, file: {} }}] }}\n",
            key.display()
        ),
    )
    .unwrap();
    let d = Running::start(&path);
    d.wait_for("metrics endpoint listening");
    let line = "egress_dkim_signatures_total{domain=\"example.com\",algorithm=\"ed25519\"}";
    assert!(!common::scrape(metrics).contains(line));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut conn = TestConnection::configure()
        .available_actions(Actions::all())
        .open_tcp(addr)
        .await
        .unwrap();
    conn.connect("app", "10.0.0.5:1".parse::<SocketAddr>().unwrap())
        .await
        .unwrap();
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
