//! Incidents through the real MTAs: a login that sprays through Postfix
//! has the message that opens the incident, and those after it, put in
//! Postfix's hold queue, none reaching the next hop until `postsuper -H`;
//! a client that floods Sendmail has its messages quarantined until
//! released.

use crate::common;
use common::{postfix::Postfix, sendmail::Sendmail, sink::Sink};

/// Sends one message through the MTA with swaks from `ip`, logged in
/// when a login is given; returns the queue id the MTA gave it.
fn submit(
    port: u16,
    ip: &str,
    login: Option<(&str, &str)>,
    from: &str,
    to: &str,
    subject: &str,
) -> String {
    let subject = format!("Subject: {subject}");
    common::postfix::submit(
        port,
        login,
        from,
        to,
        &["--local-interface", ip, "--header", &subject],
    )
}

/// The subjects of the next `want` messages the sink receives, waiting at
/// most `secs` seconds for each; then a second more for any unexpected one.
async fn delivered(sink: &mut Sink, want: usize, secs: u64) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < want {
        match sink.next(secs).await {
            Some(m) => got.push(m.subject()),
            None => break,
        }
    }
    while let Some(m) = sink.next(1).await {
        got.push(m.subject());
    }
    got.sort();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_holds_a_spraying_login_until_released() {
    let config = egress_milter::config::Config::parse(
        std::path::Path::new("incidents.yaml"),
        "listen: inet:127.0.0.1:0
local_domains: [example.com]
classes:
  - { name: staff, auth: any, sender_domains: [example.com] }
incidents:
  signals:
    - { name: spray, key: user, count: distinct_recipient_domains, above: 3/h }
",
    )
    .unwrap();
    let d = common::start_with(config).await;
    let mut sink = Sink::start().await;
    let pf = Postfix::start_with(
        "incidents",
        &format!("inet:{}", d.addr),
        sink.port,
        &[
            ("alice@example.com", "alice-pw"),
            ("bob@example.com", "bob-pw"),
        ],
    );
    let port = pf.smtp_port;
    let send =
        move |login: (&'static str, &'static str), to: &'static str, subject: &'static str| {
            tokio::task::spawn_blocking(move || {
                submit(port, "127.0.0.5", Some(login), login.0, to, subject)
            })
        };
    let alice = ("alice@example.com", "alice-pw");
    let bob = ("bob@example.com", "bob-pw");
    // Three domains: delivered.
    for (to, subject) in [
        ("x@d1.test", "a1"),
        ("x@d2.test", "a2"),
        ("x@d3.test", "a3"),
    ] {
        send(alice, to, subject).await.unwrap();
    }
    assert_eq!(delivered(&mut sink, 3, 10).await, ["a1", "a2", "a3"]);
    // The fourth domain opens the incident: held, and so is the next.
    let q4 = send(alice, "x@d4.test", "a4").await.unwrap();
    let q5 = send(alice, "x@d1.test", "a5").await.unwrap();
    // Bob is another login.
    send(bob, "x@d9.test", "b1").await.unwrap();
    assert_eq!(delivered(&mut sink, 1, 10).await, ["b1"]);
    let mut held: Vec<(String, String)> = pf.queue();
    held.sort();
    let mut want = vec![
        ("hold".to_string(), q4.clone()),
        ("hold".to_string(), q5.clone()),
    ];
    want.sort();
    assert_eq!(held, want, "{}", pf.log());
    assert!(
        pf.log()
            .contains(&format!("{q4}: milter-hold: END-OF-MESSAGE")),
        "{}",
        pf.log()
    );
    // Released: delivered.
    pf.command("postsuper", &["-H", &q4]);
    pf.command("postsuper", &["-H", &q5]);
    pf.command("postqueue", &["-f"]);
    assert_eq!(delivered(&mut sink, 2, 10).await, ["a4", "a5"]);
    assert!(pf.queue().is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendmail_quarantines_a_flooding_client_until_released() {
    // Sendmail relays for its own host only: the application is 127.0.0.1.
    let config = egress_milter::config::Config::parse(
        std::path::Path::new("incidents.yaml"),
        "listen: inet:127.0.0.1:0
local_domains: [example.com]
classes:
  - { name: app, clients: [127.0.0.1], sender_domains: [example.com] }
incidents:
  signals:
    - { name: volume, key: client, count: messages, above: 2/h }
",
    )
    .unwrap();
    let d = common::start_with(config).await;
    let mut sink = Sink::start().await;
    let sm = Sendmail::start(d.addr.port(), sink.port);
    let port = sm.smtp_port;
    let send = move |subject: &'static str| {
        tokio::task::spawn_blocking(move || {
            submit(
                port,
                "127.0.0.1",
                None,
                "app@example.com",
                "someone@gmail.test",
                subject,
            )
        })
    };
    send("m1").await.unwrap();
    send("m2").await.unwrap();
    assert_eq!(delivered(&mut sink, 2, 10).await, ["m1", "m2"]);
    let q3 = send("m3").await.unwrap();
    let q4 = send("m4").await.unwrap();
    assert!(delivered(&mut sink, 0, 1).await.is_empty());
    // Both in the quarantine, with the milter's reason.
    let listed = sm.command(&["-bp", "-qQ"]);
    assert!(listed.contains(&q3) && listed.contains(&q4), "{listed}");
    assert!(
        listed.contains("egress-milter incident client:127.0.0.1"),
        "{listed}"
    );
    // Released from quarantine and run: delivered.
    // The command `incidents show` prints for Sendmail, then a queue run.
    let release = egress_milter::incidents::sendmail_release(&[q3.clone(), q4.clone()]);
    let args: Vec<&str> = release.split_whitespace().skip(1).collect();
    let said = [sm.command(&args), sm.command(&["-q"])];
    assert_eq!(delivered(&mut sink, 2, 10).await, ["m3", "m4"], "{said:#?}");
    d.stop().await;
}
