//! The console in a real browser (headless Chromium over WebDriver): an
//! administrator logs in, sees the mail a real Postfix held for an
//! incident, releases one (it reaches the next hop), deletes another, and
//! follows the one-click link of the notice mail to release the rest.
//! Screenshots of the pages go to target/console-screenshots/.

use crate::common;
use crate::console::{config, files, held_ids, STAFF};
use common::browser::Browser;
use common::postfix::submit;
use common::{postfix::Postfix, process::Running, sink::Sink};
use fantoccini::Locator;

/// The notice mail's text, quoted-printable undone.
fn unquoted(data: &str) -> String {
    data.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_releases_and_deletes_held_mail_and_follows_the_notice_link() {
    let f = files();
    let (milter_port, console_port) = (common::free_port(), common::free_port());
    let mut sink = Sink::start().await;
    let mut postmaster = Sink::start().await;
    let pf = Postfix::start_with(
        "console-browser",
        &format!("inet:127.0.0.1:{milter_port}"),
        sink.port,
        &[("alice@example.com", "alice-pw")],
    );
    let cfg = config(
        &f,
        milter_port,
        console_port,
        "http://127.0.0.1:9/unused",
        STAFF,
        &format!("  postfix_config: {}\n", pf.dir.display()),
    );
    // The notice goes by mail, to the postmaster's sink.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "webhook: { url: \"http://127.0.0.1:9/unused\" }",
        &format!(
            "mail: {{ to: postmaster@example.com, from: egress-milter@example.com, relay: \"127.0.0.1:{}\" }}",
            postmaster.port
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    let daemon = Running::start(&cfg);
    daemon.wait_for("console listening");
    let port = pf.smtp_port;
    let alice = Some(("alice@example.com", "alice-pw"));
    let send = |to: &'static str, subject: &'static str| {
        tokio::task::spawn_blocking(move || {
            submit(
                port,
                alice,
                "alice@example.com",
                to,
                &["--header", &format!("Subject: {subject}")],
            )
        })
    };
    send("x@d1.test", "first").await.unwrap();
    assert_eq!(
        sink.next(10).await.map(|m| m.subject()).as_deref(),
        Some("first")
    );
    let q2 = send("x@d2.test", "second").await.unwrap();
    let q3 = send("x@d3.test", "third").await.unwrap();
    let q4 = send("x@d4.test", "fourth").await.unwrap();
    let notice = postmaster.next(15).await.expect("the notice mail");
    let text = unquoted(&notice.data);
    let link = text
        .split_whitespace()
        .find(|w| w.starts_with(&format!("http://127.0.0.1:{console_port}/l/")))
        .unwrap_or_else(|| panic!("no link in the notice: {text}"))
        .to_string();
    assert!(text.contains("Release its held mail"), "{text}");

    let b = Browser::start().await;
    let c = &b.client;
    let base = format!("http://127.0.0.1:{console_port}");
    c.goto(&format!("{base}/held")).await.unwrap();
    // Sent to the login.
    assert_eq!(c.current_url().await.unwrap().path(), "/login");
    b.screenshot("login").await;
    b.type_in(Locator::Id("user"), "alice").await;
    b.type_in(Locator::Id("password"), "alice-password").await;
    b.click(Locator::Id("login")).await;
    // The form's POST, then the redirect: wait for the page it leads to.
    let open = b.text(Locator::Id("open")).await;
    assert!(open.contains("user:alice@example.com"), "{open}");
    assert_eq!(c.current_url().await.unwrap().path(), "/incidents");
    b.screenshot("incidents").await;

    c.goto(&format!("{base}/held")).await.unwrap();
    for q in [&q2, &q3, &q4] {
        let row = b.text(Locator::Id(&format!("held-{q}"))).await;
        assert!(row.contains("incident user:alice@example.com"), "{row}");
    }
    b.screenshot("held").await;
    // Release the second from its page.
    b.click(Locator::LinkText(&q2)).await;
    let subject = b.text(Locator::Id("subject")).await;
    assert_eq!(subject, "second");
    b.screenshot("message").await;
    b.click(Locator::Id("release")).await;
    let result = b.text(Locator::Id("result")).await;
    assert_eq!(result, format!("Done: released {q2}"));
    b.screenshot("released").await;
    assert_eq!(
        sink.next(10).await.map(|m| m.subject()).as_deref(),
        Some("second")
    );
    // Delete the third.
    c.goto(&format!("{base}/held/{q3}")).await.unwrap();
    b.click(Locator::Id("delete")).await;
    let result = b.text(Locator::Id("result")).await;
    assert_eq!(result, format!("Done: deleted {q3}"));
    assert_eq!(held_ids(&pf), std::slice::from_ref(&q4));

    // The notice's link, in a fresh browser with no session: a page that
    // asks, and the click that does it.
    let fresh = Browser::start().await;
    fresh.client.goto(&link).await.unwrap();
    let page = fresh.client.source().await.unwrap();
    assert!(page.contains(&q4), "{page}");
    assert!(
        page.contains("held for review (incident)"),
        "why it was held: {page}"
    );
    fresh.screenshot("link").await;
    assert!(
        sink.next(1).await.is_none(),
        "opening the link released nothing"
    );
    fresh.click(Locator::Id("confirm")).await;
    let result = fresh.text(Locator::Id("result")).await;
    assert_eq!(result, format!("Done: released {q4}"));
    assert_eq!(
        sink.next(10).await.map(|m| m.subject()).as_deref(),
        Some("fourth")
    );
    // Back in the console: the audit log says who did what.
    c.goto(&format!("{base}/audit")).await.unwrap();
    let audit = b.text(Locator::Id("audit")).await;
    assert!(audit.contains("alice release"), "{audit}");
    assert!(audit.contains("alice delete"), "{audit}");
    assert!(audit.contains("link release"), "{audit}");
    b.screenshot("audit").await;
    fresh.client.clone().close().await.unwrap();
    b.client.clone().close().await.unwrap();
}
