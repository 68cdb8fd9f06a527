//! A configuration of twenty thousand classes, local domains and
//! overrides each, as a hosting provider writes one: `check-config` accepts
//! it, the daemon reloads to it on SIGHUP, and a client of the last class
//! is judged by that class (and a client of none as a stranger), its domain
//! by its override. (`cargo bench --bench scale` measures 100,000 entries
//! in a release build; the tests' build reads YAML far slower.)

use crate::common;
use common::{mail, process::Running, reply};
use indymilter::Actions;
use indymilter_test::TestConnection;
use std::fmt::Write as _;
use std::path::Path;

const CLASSES: usize = 20_000;

/// The n-th client network: a /28 in 10.0.0.0/8.
fn network(i: usize) -> String {
    let n = (i as u32) << 4;
    format!(
        "10.{}.{}.{}/28",
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

fn client(i: usize) -> String {
    let n = ((i as u32) << 4) + 5;
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

fn write_config(path: &Path, socket: &Path, classes: usize) {
    let mut y = format!(
        "listen: unix:{}\nsocket_mode: \"0640\"\nadmin: {{ listen: off }}\nlog: {{ format: json }}\nunknown_clients: reject\n",
        socket.display()
    );
    y.push_str("local_domains:\n");
    for i in 0..classes {
        let _ = writeln!(y, "  - customer{i}.example");
    }
    y.push_str("classes:\n");
    for i in 0..classes {
        let _ = writeln!(
            y,
            "  - {{ name: c{i}, clients: [\"{}\"], sender_domains: [customer{i}.example] }}",
            network(i)
        );
    }
    y.push_str("rate_limits:\n  messages_per_sender: 100/h\n  overrides:\n");
    for i in 0..classes {
        let _ = writeln!(
            y,
            "    - {{ match: \"@customer{i}.example\", messages_per_sender: {}/h }}",
            i + 1
        );
    }
    std::fs::write(path, y).unwrap();
}

async fn sender_reply(socket: &Path, ip: &str, sender: &str) -> String {
    let mut conn = TestConnection::configure()
        .available_actions(Actions::all())
        .open_unix(socket)
        .await
        .unwrap();
    let addr: std::net::SocketAddr = format!("{ip}:4000").parse().unwrap();
    conn.connect("app.test", addr).await.unwrap();
    let r = reply(&mail(&mut conn, sender, None).await);
    conn.close().await.unwrap();
    r
}

#[tokio::test]
async fn twenty_thousand_classes_domains_and_overrides_load_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("milter.sock");
    let config = dir.path().join("milter.yaml");
    write_config(&config, &socket, 10);
    let d = Running::start(&config);
    d.wait_for("egress-milter started");
    let last = CLASSES - 1;
    // Before the reload the last customer's client is a stranger.
    assert_eq!(
        sender_reply(
            &socket,
            &client(last),
            &format!("<a@customer{last}.example>")
        )
        .await,
        format!(
            "550 5.7.1 Client {} not authorised to send mail",
            client(last)
        )
    );

    write_config(&config, &socket, CLASSES);
    let checked = common::cli::with_config(&config, &["check-config"]);
    assert!(checked.ok(), "{}", checked.text());
    d.signal("-HUP");
    d.wait_for("configuration reloaded");

    // Its class now, by address among a hundred thousand networks, and
    // its own domain only.
    assert_eq!(
        sender_reply(
            &socket,
            &client(last),
            &format!("<a@customer{last}.example>")
        )
        .await,
        "continue"
    );
    assert_eq!(
        sender_reply(&socket, &client(last), "<a@customer7.example>").await,
        "550 5.7.1 Sender <a@customer7.example> not authorised for c19999"
    );
    assert_eq!(
        sender_reply(&socket, &client(7), "<a@customer7.example>").await,
        "continue"
    );
    // The override for customer 1's domain: a budget of 2 an hour.
    for _ in 0..2 {
        assert_eq!(
            sender_reply(&socket, &client(1), "<a@customer1.example>").await,
            "continue"
        );
    }
    assert!(sender_reply(&socket, &client(1), "<a@customer1.example>")
        .await
        .starts_with("451 4.7.1 Rate limit messages_per_sender exceeded for a@customer1.example"),);
    // Outside every network: a stranger still.
    assert_eq!(
        sender_reply(&socket, "192.0.2.9", "<a@customer1.example>").await,
        "550 5.7.1 Client 192.0.2.9 not authorised to send mail"
    );
}
