//! Forgery forms, one table, over the milter socket: each case is a client
//! (address and SASL login), an envelope and the From: header(s) of one
//! message, and the reply the MTA must get (the first refusal, at whatever
//! stage, or "continue" through end of message). Config: tests/configs/policy.yaml
//! (crm-app 10.1.2.0/24 may send only as noreply@example.com with From: in
//! example.com; staff send as their login; everyone else is unknown).

use crate::common;
use common::{mail, message, reply};

struct Case {
    name: &'static str,
    ip: &'static str,
    login: Option<&'static str>,
    mail_from: &'static str,
    rcpt: &'static str,
    from: &'static [&'static str],
    expect: &'static str,
}

const APP: &str = "10.1.2.5";
const STAFF: &str = "192.0.2.80";
const STRANGER: &str = "198.51.100.7";
const NOT_OURS: &str = "550 5.7.1 From: domain";

const fn app(name: &'static str, from: &'static [&'static str], expect: &'static str) -> Case {
    Case {
        name,
        ip: APP,
        login: None,
        mail_from: "<noreply@example.com>",
        rcpt: "<someone@gmail.test>",
        from,
        expect,
    }
}

const fn env(
    name: &'static str,
    ip: &'static str,
    login: Option<&'static str>,
    mail_from: &'static str,
    expect: &'static str,
) -> Case {
    Case {
        name,
        ip,
        login,
        mail_from,
        rcpt: "<someone@gmail.test>",
        from: &["Shop <noreply@example.com>"],
        expect,
    }
}

const CASES: &[Case] = &[
    // The From: header, for an authorised envelope.
    app("plain, ours", &["noreply@example.com"], "continue"),
    app(
        "display name, ours",
        &["\"Shop\" <noreply@example.com>"],
        "continue",
    ),
    app(
        "domain in capitals",
        &["Shop <noreply@EXAMPLE.COM>"],
        "continue",
    ),
    app(
        "trailing dot on the domain",
        &["<noreply@example.com.>"],
        "continue",
    ),
    app(
        "folded header",
        &["Shop\r\n\t<noreply@example.com>"],
        "continue",
    ),
    app(
        "comments around ours",
        &["(shop) noreply(x)@(y)example.com"],
        "continue",
    ),
    app(
        "8-bit display name",
        &["\"J\u{fc}rgen\" <noreply@example.com>"],
        "continue",
    ),
    app("foreign domain", &["service@bank.example"], NOT_OURS),
    app(
        "our address as display name",
        &["\"noreply@example.com\" <evil@bank.example>"],
        NOT_OURS,
    ),
    app(
        "unquoted address as display name",
        &["noreply@example.com <evil@bank.example>"],
        NOT_OURS,
    ),
    app(
        "encoded-word display name",
        &["=?utf-8?q?noreply=40example.com?= <evil@bank.example>"],
        NOT_OURS,
    ),
    app(
        "base64 encoded-word display name",
        &["=?utf-8?b?bm9yZXBseUBleGFtcGxlLmNvbQ==?= <evil@bank.example>"],
        NOT_OURS,
    ),
    app(
        "our domain as a prefix",
        &["evil@example.com.bank.example"],
        NOT_OURS,
    ),
    app(
        "our domain as a suffix without dot",
        &["evil@badexample.com"],
        NOT_OURS,
    ),
    app(
        "comment naming us",
        &["evil@bank.example (noreply@example.com)"],
        NOT_OURS,
    ),
    app(
        "quoted local part with @",
        &["\"noreply@example.com\"@bank.example"],
        NOT_OURS,
    ),
    app(
        "obsolete source route",
        &["<@example.com:evil@bank.example>"],
        NOT_OURS,
    ),
    app("address literal", &["evil@[203.0.113.5]"], NOT_OURS),
    app(
        "Cyrillic homograph",
        &["noreply@ex\u{430}mple.com"],
        NOT_OURS,
    ),
    app(
        "punycode homograph",
        &["noreply@xn--exmple-4nf.com"],
        NOT_OURS,
    ),
    app("a parent of ours", &["noreply@com"], NOT_OURS),
    app(
        "a local subdomain the class may not use",
        &["news@mail.example.org"],
        NOT_OURS,
    ),
    app(
        "two mailboxes",
        &["noreply@example.com, evil@bank.example"],
        "550 5.7.1 From: header holds 2 mailboxes, one is allowed",
    ),
    app(
        "two From: headers",
        &["noreply@example.com", "evil@bank.example"],
        "550 5.7.1 Message has 2 From: headers, one is allowed",
    ),
    app(
        "two From: headers, both ours",
        &["noreply@example.com", "noreply@example.com"],
        "550 5.7.1 Message has 2 From: headers, one is allowed",
    ),
    app(
        "no From: header",
        &[],
        "550 5.6.0 Message has no From: header",
    ),
    app("empty From:", &[""], "550 5.6.0"),
    app(
        "empty group",
        &["undisclosed-recipients:;"],
        "550 5.7.1 From: header holds a group, not one mailbox",
    ),
    app(
        "group holding ours",
        &["team: noreply@example.com;"],
        "550 5.7.1 From: header holds a group, not one mailbox",
    ),
    app("null address", &["<>"], "550 5.6.0"),
    app("double @", &["evil@example.com@bank.example"], "550 5.6.0"),
    app(
        "unbalanced angle",
        &["Shop <noreply@example.com"],
        "550 5.6.0",
    ),
    app(
        "trailing garbage after the address",
        &["<noreply@example.com> evil@bank.example"],
        "550 5.6.0",
    ),
    // RFC 5322's obsolete list syntax allows empty elements: still exactly
    // one mailbox, ours.
    app("trailing comma", &["noreply@example.com,"], "continue"),
    app(
        "leading comma, then a foreign one",
        &[",evil@bank.example"],
        NOT_OURS,
    ),
    // The envelope sender.
    env(
        "app as itself",
        APP,
        None,
        "<noreply@example.com>",
        "continue",
    ),
    env(
        "app, domain in capitals",
        APP,
        None,
        "<noreply@EXAMPLE.COM>",
        "continue",
    ),
    env(
        "app, another address of ours",
        APP,
        None,
        "<ceo@example.com>",
        "550 5.7.1 Sender <ceo@example.com> not authorised for crm-app",
    ),
    env(
        "app, local part in capitals",
        APP,
        None,
        "<NoReply@example.com>",
        "550 5.7.1 Sender <NoReply@example.com> not authorised for crm-app",
    ),
    env(
        "app, foreign domain",
        APP,
        None,
        "<noreply@bank.example>",
        "550 5.7.1 Sender <noreply@bank.example> not authorised for crm-app",
    ),
    env("app, null sender", APP, None, "<>", "550 5.7.1"),
    env(
        "app, percent hack sender",
        APP,
        None,
        "<noreply%bank.example@example.com>",
        "550 5.7.1",
    ),
    env(
        "app, source-routed sender",
        APP,
        None,
        "<@bank.example:evil@bank.example>",
        "550 5.7.1",
    ),
    env(
        "app, unparsable sender",
        APP,
        None,
        "<noreply@@example.com>",
        "550 5.7.1",
    ),
    env(
        "staff as themselves",
        STAFF,
        Some("alice"),
        "<alice@example.com>",
        "continue",
    ),
    env(
        "staff as a colleague",
        STAFF,
        Some("alice"),
        "<bob@example.com>",
        "553 5.7.1 Sender <bob@example.com> not owned by user alice",
    ),
    env(
        "staff as the boss",
        STAFF,
        Some("alice"),
        "<ceo@example.com>",
        "553 5.7.1 Sender <ceo@example.com> not owned by user alice",
    ),
    env(
        "staff, foreign domain",
        STAFF,
        Some("alice"),
        "<alice@bank.example>",
        "550 5.7.1",
    ),
    env(
        "staff, local part in capitals",
        STAFF,
        Some("alice"),
        "<Alice@example.com>",
        "553 5.7.1",
    ),
    env(
        "stranger as us, to the world",
        STRANGER,
        None,
        "<noreply@example.com>",
        "554 5.7.1 Relay access denied",
    ),
    env(
        "stranger as anyone, to the world",
        STRANGER,
        None,
        "<x@outside.example>",
        "554 5.7.1 Relay access denied",
    ),
];

#[tokio::test]
async fn forgeries_get_their_verdicts() {
    assert!(CASES.len() >= 40, "{} cases", CASES.len());
    let d = common::start("policy.yaml").await;
    let mut wrong = Vec::new();
    for c in CASES {
        let mut conn = d.client(c.ip).await;
        let mut got = reply(&mail(&mut conn, c.mail_from, c.login).await);
        if got == "continue" {
            got = reply(&conn.rcpt([c.rcpt]).await.unwrap());
        }
        if got == "continue" {
            let headers: Vec<(&str, &str)> = c.from.iter().map(|f| ("From", *f)).collect();
            got = message(&mut conn, &headers).await;
        }
        let _ = conn.close().await;
        let ok = if c.expect == "continue" {
            got == "continue"
        } else {
            got.starts_with(c.expect)
        };
        if !ok {
            wrong.push(format!(
                "{}: expected {:?}, got {:?}",
                c.name, c.expect, got
            ));
        }
    }
    d.stop().await;
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
