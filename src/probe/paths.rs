//! The paths `probe` tries: the relay tricks (everything nmap's
//! `smtp-open-relay` tries, and more), forged senders, a spoofed From:, a
//! client mimicking an internal server, the class's own mail, and with a
//! login the submission paths.

use crate::address::{Domain, DomainPattern};
use crate::config::{Config, Entries};
use std::net::IpAddr;

/// A domain nobody owns (RFC 2606): relay attempts aim there.
pub const FOREIGN: &str = "relay-probe.example";

/// Relay attempts per SMTP session.
const RCPTS_PER_SESSION: usize = 6;

/// One SMTP transaction to try.
#[derive(Clone, Debug)]
pub struct ProbePath {
    pub name: String,
    /// Logged in (on the submission server).
    pub login: bool,
    pub helo: String,
    /// The envelope sender, without brackets ("" for `<>`).
    pub from: String,
    pub rcpts: Vec<String>,
    /// A relay attempt: every recipient is foreign.
    pub relay: bool,
    /// The message, sent only when every recipient is the operator's
    /// `--rcpt`; None: the transaction stops after RCPT TO (RSET).
    pub message: Option<Vec<u8>>,
}

/// The first exact domain of a list that can be read here.
fn first_domain(list: &Entries<DomainPattern>) -> Option<Domain> {
    let v = list.inline()?;
    v.iter()
        .find_map(|p| match p {
            DomainPattern::Exact(d) => Some(d.clone()),
            DomainPattern::Subdomains(_) => None,
        })
        .or_else(|| {
            v.iter().find_map(|p| match p {
                DomainPattern::Subdomains(d) => Domain::parse(&format!("mail.{d}")).ok(),
                DomainPattern::Exact(_) => None,
            })
        })
}

fn message(from_header: &str, to: &str, subject: &str, extra: &[String]) -> Vec<u8> {
    let mut m = String::new();
    for h in extra {
        m.push_str(h);
        m.push_str("\r\n");
    }
    m.push_str(&format!(
        "From: {from_header}\r\nTo: <{to}>\r\nSubject: egress-milter probe: {subject}\r\n\
         Date: Mon, 23 Nov 2026 00:00:00 +0000\r\nMessage-ID: <probe@egress-milter>\r\n\r\n\
         A message from `egress-milter probe`, sent only to the address its operator gave.\r\n"
    ));
    m.into_bytes()
}

/// Every path for a client at `client`, with the operator's `rcpt`, the
/// server's address (for the literals), and a login when given.
pub fn paths(
    config: &Config,
    client_class: Option<&crate::config::Class>,
    server_ip: IpAddr,
    rcpt: &str,
    helo: &str,
    login: Option<&str>,
) -> Vec<ProbePath> {
    let local = first_domain(&config.local_domains)
        .map_or_else(|| "example.com".to_string(), |d| d.to_string());
    let ip = match server_ip {
        IpAddr::V4(a) => format!("[{a}]"),
        IpAddr::V6(a) => format!("[IPv6:{a}]"),
    };
    let f = FOREIGN;
    let mut out = Vec::new();
    // The relay tricks, as nmap's smtp-open-relay tries them (MAIL FROM
    // variants, each with every RCPT TO), and more. No message is sent.
    let tricks: Vec<String> = vec![
        format!("relaytest@{f}"),
        format!("\"relaytest@{f}\""),
        format!("relaytest%{f}@{ip}"),
        format!("relaytest%{f}@{local}"),
        format!("\"relaytest%{f}\""),
        format!("relaytest@{f}@{ip}"),
        format!("\"relaytest@{f}\"@{ip}"),
        format!("relaytest@{f}@{local}"),
        format!("@{ip}:relaytest@{f}"),
        format!("@{local}:relaytest@{f}"),
        format!("{f}!relaytest"),
        format!("{f}!relaytest@{ip}"),
        format!("{f}!relaytest@{local}"),
        format!("\"relaytest@{f}\"@{local}"),
        format!("relaytest@{f}."),
        format!("relaytest@{}", f.to_uppercase()),
        "relaytest@[192.0.2.99]".to_string(),
        "relaytest@[IPv6:2001:db8::99]".to_string(),
    ];
    for sender in [
        String::new(),
        format!("antispam@{ip}"),
        format!("antispam@{local}"),
        format!("antispam@{f}"),
    ] {
        // A few recipients a session: an MTA slows a client down after
        // ten refusals (Postfix's smtpd_soft_error_limit) and drops it
        // after twenty.
        let parts = tricks.chunks(RCPTS_PER_SESSION).count();
        for (i, chunk) in tricks.chunks(RCPTS_PER_SESSION).enumerate() {
            out.push(ProbePath {
                name: format!("relay from <{sender}> ({}/{parts})", i + 1),
                login: false,
                helo: helo.to_string(),
                from: sender.clone(),
                rcpts: chunk.to_vec(),
                relay: true,
                message: None,
            });
        }
    }
    // The class's own mail (when the client is in one): a sender it may
    // use, a From: of ours, to the operator's address.
    let own = client_class.and_then(|c| {
        if let Some(Entries::Inline(list)) = &c.sender_addresses {
            return list.first().map(|a| a.to_string());
        }
        first_domain(&c.sender_domains).map(|d| format!("noreply@{d}"))
    });
    if let Some(sender) = &own {
        out.push(ProbePath {
            name: format!("the class's own mail from <{sender}>"),
            login: false,
            helo: helo.to_string(),
            from: sender.clone(),
            rcpts: vec![rcpt.to_string()],
            relay: false,
            message: Some(message(&format!("<{sender}>"), rcpt, "own mail", &[])),
        });
    }
    let sender = own.clone().unwrap_or_else(|| format!("news@{f}"));
    // Forged envelope senders: one of our executives, a foreign domain.
    for (name, forged) in [
        ("a forged sender of ours", format!("ceo@{local}")),
        ("a forged foreign sender", format!("service@{f}")),
    ] {
        out.push(ProbePath {
            name: format!("{name} <{forged}>"),
            login: false,
            helo: helo.to_string(),
            from: forged.clone(),
            rcpts: vec![rcpt.to_string()],
            relay: false,
            message: Some(message(&format!("<{forged}>"), rcpt, name, &[])),
        });
    }
    // A spoofed From: behind an acceptable envelope.
    out.push(ProbePath {
        name: "a spoofed From: \"PayPal\" <service@paypal.example>".into(),
        login: false,
        helo: helo.to_string(),
        from: sender.clone(),
        rcpts: vec![rcpt.to_string()],
        relay: false,
        message: Some(message(
            "\"PayPal\" <service@paypal.example>",
            rcpt,
            "spoofed From",
            &[],
        )),
    });
    out.push(ProbePath {
        name: format!("a From: of ours, <ceo@{local}>"),
        login: false,
        helo: helo.to_string(),
        from: sender.clone(),
        rcpts: vec![rcpt.to_string()],
        relay: false,
        message: Some(message(
            &format!("\"CEO\" <ceo@{local}>"),
            rcpt,
            "own-domain From",
            &[],
        )),
    });
    // Mimicking an internal server: an internal HELO and Received: line.
    let internal = config
        .internal_hostnames
        .iter()
        .find_map(|h| h.strip_prefix("*.").map(|s| format!("mailhost.{s}")))
        .unwrap_or_else(|| "mailhost.corp".into());
    out.push(ProbePath {
        name: format!("a client mimicking an internal server (HELO {internal})"),
        login: false,
        helo: internal.clone(),
        from: format!("noreply@{local}"),
        rcpts: vec![rcpt.to_string()],
            relay: false,
        message: Some(message(
            &format!("<noreply@{local}>"),
            rcpt,
            "internal-looking",
            &[format!(
                "Received: from build3.{i} ([10.9.8.3]) by {internal}; Mon, 23 Nov 2026 00:00:00 +0000",
                i = internal.split_once('.').map_or("corp", |(_, s)| s)
            )],
        )),
    });
    // Submission: with the login, its own address and another user's.
    if let Some(login) = login {
        let mine = if login.contains('@') {
            login.to_string()
        } else {
            format!("{login}@{local}")
        };
        out.push(ProbePath {
            name: format!("submission as {login}, from <{mine}>"),
            login: true,
            helo: helo.to_string(),
            from: mine.clone(),
            rcpts: vec![rcpt.to_string()],
            relay: false,
            message: Some(message(&format!("<{mine}>"), rcpt, "submission", &[])),
        });
        let other = format!("someone-else@{local}");
        out.push(ProbePath {
            name: format!("submission as {login}, from another user <{other}>"),
            login: true,
            helo: helo.to_string(),
            from: other.clone(),
            rcpts: vec![rcpt.to_string()],
            relay: false,
            message: Some(message(
                &format!("<{other}>"),
                rcpt,
                "submission as another",
                &[],
            )),
        });
        out.push(ProbePath {
            name: format!("submission as {login}, relaying to <relaytest@{f}>"),
            login: true,
            helo: helo.to_string(),
            from: mine.clone(),
            rcpts: vec![format!("relaytest@{f}")],
            relay: true,
            message: None,
        });
    }
    out
}
