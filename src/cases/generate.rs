//! `egress-milter test --generate`: a starter cases file derived from the
//! configuration itself. For each class, a message it may send and each
//! thing it may not (a foreign envelope domain, an address off its list,
//! another user's address, a null sender, a forged From:, a second From:,
//! a group in From:, one recipient too many); for unknown clients, the
//! relay tricks and inbound mail to each local domain. The answers
//! expected are the ones the configuration's rules imply, written from the
//! rules (the reply texts are the daemon's own), never by running the
//! policy: the administrator reads them and keeps them.
//!
//! The file is offline (no SPF, rspamd, clamd or callouts: their answers
//! are the network's, not the configuration's) and every case is fresh
//! (no rate limit carries over from one case to the next).

use crate::address::{Address, Domain, DomainPattern};
use crate::config::{AuthMatch, Class, Config, Entries, InboundOwnDomain, SignMode};
use crate::config::{SourceBackend, UnknownClients, VerifyBy};
use crate::reply::{self, Refusal};
use crate::state::Shared;
use std::{fmt::Write as _, net::IpAddr};

/// A domain no configuration here calls its own.
const FOREIGN: &str = "foreign.example";
/// Addresses of the documentation ranges: strangers.
const STRANGERS: [&str; 3] = ["192.0.2.1", "198.51.100.1", "203.0.113.1"];

/// One generated case, ready to be written.
struct Gen {
    name: String,
    client: IpAddr,
    login: Option<String>,
    from: String,
    rcpt: Vec<String>,
    headers: Option<Vec<String>>,
    /// accept / the refusal, and its stage.
    expect: Result<(), (Refusal, &'static str)>,
    rcpt_expect: Vec<(String, String)>,
    signed_by: Option<String>,
    /// The class runs in monitor mode: refusals are expected as would-be.
    monitor: bool,
}

/// YAML's double-quoted scalar (JSON's escaping is valid in it).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn write_case(out: &mut String, g: &Gen) {
    let _ = writeln!(out, "  - name: {}", q(&g.name));
    let _ = writeln!(out, "    client: {}", q(&g.client.to_string()));
    if let Some(l) = &g.login {
        let _ = writeln!(out, "    login: {}", q(l));
    }
    let _ = writeln!(out, "    from: {}", q(&g.from));
    let rcpts: Vec<String> = g.rcpt.iter().map(|r| q(r)).collect();
    let _ = writeln!(out, "    rcpt: [{}]", rcpts.join(", "));
    if let Some(h) = &g.headers {
        let _ = writeln!(out, "    headers:");
        for f in h {
            let _ = writeln!(out, "      - {}", q(f));
        }
    }
    let _ = writeln!(out, "    fresh: true");
    let _ = writeln!(out, "    expect:");
    match &g.expect {
        Ok(()) => {
            let _ = writeln!(out, "      result: accept");
        }
        Err((r, _)) if g.monitor => {
            let _ = writeln!(out, "      result: accept   # monitor mode");
            let _ = writeln!(out, "      would: {}", q(&r.reply.to_string()));
        }
        Err((r, stage)) => {
            let result = if r.reply.is_permanent() {
                "reject"
            } else {
                "tempfail"
            };
            let _ = writeln!(out, "      result: {result}");
            let _ = writeln!(out, "      reply: {}", q(&r.reply.to_string()));
            let _ = writeln!(out, "      stage: {stage}");
        }
    }
    if g.monitor {
        for (_, a) in &g.rcpt_expect {
            let _ = writeln!(out, "      would: {}", q(a));
        }
    } else if !g.rcpt_expect.is_empty() {
        let _ = writeln!(out, "      rcpt:");
        for (r, a) in &g.rcpt_expect {
            let _ = writeln!(out, "        {}: {}", q(r), q(a));
        }
    }
    if let Some(d) = &g.signed_by {
        let _ = writeln!(out, "      signed_by: {}", q(d));
    }
}

/// The exact domains of a list, when it can be read here (inline, or a
/// file source); None for a directory.
fn exact_domains(list: &Entries<DomainPattern>, config: &Config) -> Option<Vec<Domain>> {
    let patterns: Vec<DomainPattern> = match list {
        Entries::Inline(v) => v.to_vec(),
        Entries::Source(name) => match &config.sources.iter().find(|s| &s.name == name)?.backend {
            SourceBackend::File { contents, .. } => contents
                .domains()
                .into_iter()
                .map(DomainPattern::Exact)
                .collect(),
            SourceBackend::Ldap(_) => return None,
        },
    };
    Some(
        patterns
            .iter()
            .filter_map(|p| match p {
                DomainPattern::Exact(d) => Some(d.clone()),
                DomainPattern::Subdomains(parent) => Domain::parse(&format!("mail.{parent}")).ok(),
            })
            .collect(),
    )
}

/// Whether a domain is in a list that can be read here (None: unknown).
fn listed(list: &Entries<DomainPattern>, d: &Domain, config: &Config) -> Option<bool> {
    match list {
        Entries::Inline(v) => Some(v.matches(d)),
        Entries::Source(_) => exact_domains(list, config).map(|ds| ds.iter().any(|x| x == d)),
    }
}

/// Candidate client addresses of a class: the first host of each network.
fn candidates(class: &Class) -> Vec<IpAddr> {
    let Entries::Inline(nets) = &class.clients else {
        return Vec::new();
    };
    if nets.is_empty() {
        return STRANGERS.iter().filter_map(|s| s.parse().ok()).collect();
    }
    nets.iter()
        .map(|n| {
            let first = n.network();
            if n.prefix_len() == n.max_prefix_len() {
                return first;
            }
            match first {
                IpAddr::V4(a) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a).wrapping_add(1))),
                IpAddr::V6(a) => {
                    IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a).wrapping_add(1)))
                }
            }
        })
        .collect()
}

/// The starter cases file, and notes on what could not be generated.
pub async fn generate(config: &Config) -> String {
    let shared = Shared::new(super::offline_config(config.clone(), true));
    shared.sources.go_offline();
    let lists = shared.lists(false);
    let mut cases: Vec<Gen> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let foreign_rcpt = format!("someone@{FOREIGN}");

    for class in &config.classes {
        let login = match &class.auth {
            None => None,
            Some(AuthMatch::Any) => Some("user1".to_string()),
            Some(AuthMatch::Logins(l)) => l.first().cloned(),
        };
        // A client address this class, and no class above it, matches.
        let mut client = None;
        for ip in candidates(class) {
            let got = crate::class::resolve(config, &lists, Some(ip), login.as_deref())
                .await
                .ok()
                .flatten();
            if got.is_some_and(|(_, c)| c.name == class.name) {
                client = Some(ip);
                break;
            }
        }
        let Some(client) = client else {
            notes.push(format!(
                "class {}: no client address found that this class (and no class above it) matches",
                class.name
            ));
            continue;
        };
        let Some(sender_domains) = exact_domains(&class.sender_domains, config) else {
            notes.push(format!(
                "class {}: its sender_domains are in a directory",
                class.name
            ));
            continue;
        };
        // A sender the class may use.
        let sender: Option<Address> = match (&class.sender_addresses, class.login_match) {
            (Some(Entries::Inline(list)), _) => list.first().cloned(),
            (Some(Entries::Source(_)), _) => None,
            (None, true) if class.login_map.is_some() => None,
            (None, true) => login.as_deref().and_then(|l| {
                if l.contains('@') {
                    Address::parse(l).ok()
                } else {
                    sender_domains
                        .first()
                        .and_then(|d| Address::parse(&format!("{l}@{d}")).ok())
                }
            }),
            (None, false) => sender_domains
                .first()
                .and_then(|d| Address::parse(&format!("noreply@{d}")).ok()),
        };
        let Some(sender) = sender else {
            notes.push(format!(
                "class {}: its senders come from a source or a login map: write its cases by hand",
                class.name
            ));
            continue;
        };
        let sender_domain = sender.domain.name().cloned();
        // A From: the class may write: the sender's, if allowed.
        let from_ok = |d: &Domain| -> Option<bool> {
            let local = if config.from_strict {
                listed(&config.local_domains, d, config)?
            } else {
                true
            };
            let narrowed = match &class.from_domains {
                Some(fd) => listed(fd, d, config)?,
                None => true,
            };
            Some(local && narrowed)
        };
        let header_from: Option<Address> = match &sender_domain {
            Some(d) if from_ok(d) == Some(true) => Some(sender.clone()),
            _ => class
                .from_domains
                .as_ref()
                .and_then(|fd| exact_domains(fd, config))
                .unwrap_or_default()
                .into_iter()
                .chain(exact_domains(&config.local_domains, config).unwrap_or_default())
                .find(|d| from_ok(d) == Some(true))
                .and_then(|d| Address::parse(&format!("noreply@{d}")).ok()),
        };
        let judged_from = config.from_strict || class.from_domains.is_some();
        let monitor = config.mode_for(Some(class)) == crate::config::Mode::Monitor;
        let mut push = |name: &str,
                        from: &str,
                        rcpt: Vec<String>,
                        headers: Option<Vec<String>>,
                        expect,
                        rcpt_expect,
                        signed_by| {
            cases.push(Gen {
                name: format!("{}: {name}", class.name),
                client,
                login: login.clone(),
                from: from.to_string(),
                rcpt,
                headers,
                expect,
                rcpt_expect,
                signed_by,
                monitor,
            });
        };
        let headers_from = |from: &str| {
            Some(vec![
                format!("From: {from}"),
                format!("To: <{foreign_rcpt}>"),
                "Subject: egress-milter generated case".to_string(),
                "Date: Mon, 23 Nov 2026 00:00:00 +0000".to_string(),
                "Message-ID: <generated@egress-milter>".to_string(),
            ])
        };
        // The message it may send.
        if let Some(hf) = &header_from {
            let hd = hf.domain.name().cloned();
            let keys = hd
                .as_ref()
                .map(|d| crate::dkim::keys_for(&config.dkim.keys, d))
                .unwrap_or_default();
            let signs = config.dkim.sign != SignMode::Off;
            let (expect, signed_by) = match (&hd, keys.first()) {
                (Some(_), Some(k)) if signs => (Ok(()), Some(k.domain.to_string())),
                (Some(d), None)
                    if signs && config.dkim.on_unsigned == crate::config::OnUnsigned::Tempfail =>
                {
                    (Err((reply::no_dkim_key(d.as_str()), "eom")), None)
                }
                _ => (
                    Ok(()),
                    (signs && !config.dkim.keys.is_empty()).then(String::new),
                ),
            };
            push(
                "may send",
                &sender.to_string(),
                vec![foreign_rcpt.clone()],
                headers_from(&format!("<{hf}>")),
                expect,
                Vec::new(),
                signed_by,
            );
        } else {
            notes.push(format!(
                "class {}: no From: domain it may use was found",
                class.name
            ));
        }
        // A foreign envelope domain.
        let foreign_sender = format!("{}@{FOREIGN}", sender.local);
        if let Ok(fd) = Domain::parse(FOREIGN) {
            if listed(&class.sender_domains, &fd, config) == Some(false) {
                push(
                    "a foreign envelope domain",
                    &foreign_sender,
                    vec![foreign_rcpt.clone()],
                    None,
                    Err((
                        reply::sender_not_authorised(
                            reply::Rule::SenderDomains,
                            &foreign_sender,
                            &class.name,
                        ),
                        "mail",
                    )),
                    Vec::new(),
                    None,
                );
            }
        }
        // An address off the class's list, or another user's.
        if let (Some(Entries::Inline(list)), Some(d)) = (&class.sender_addresses, &sender_domain) {
            let off = format!("not-listed@{d}");
            if Address::parse(&off).is_ok_and(|a| !list.contains(&a)) {
                push(
                    "an address not in sender_addresses",
                    &off,
                    vec![foreign_rcpt.clone()],
                    None,
                    Err((
                        reply::sender_not_authorised(
                            reply::Rule::SenderAddresses,
                            &off,
                            &class.name,
                        ),
                        "mail",
                    )),
                    Vec::new(),
                    None,
                );
            }
        }
        if class.login_match && class.login_map.is_none() && class.sender_addresses.is_none() {
            if let (Some(l), Some(d)) = (&login, &sender_domain) {
                let other = format!("someone-else@{d}");
                push(
                    "another user's address",
                    &other,
                    vec![foreign_rcpt.clone()],
                    None,
                    Err((reply::sender_not_owned(&other, l), "mail")),
                    Vec::new(),
                    None,
                );
            }
        }
        if !class.allow_null_sender {
            push(
                "a null sender",
                "",
                vec![foreign_rcpt.clone()],
                None,
                Err((reply::null_sender(&class.name), "mail")),
                Vec::new(),
                None,
            );
        }
        if judged_from && header_from.is_some() {
            let ok_from = header_from
                .as_ref()
                .map(|a| format!("<{a}>"))
                .unwrap_or_default();
            let sender_text = sender.to_string();
            let forged = format!("\"Service\" <service@{FOREIGN}>");
            push(
                "a forged From:",
                &sender_text,
                vec![foreign_rcpt.clone()],
                headers_from(&forged),
                Err((reply::from_domain_not_authorised(FOREIGN), "eoh")),
                Vec::new(),
                None,
            );
            let mut two = headers_from(&ok_from).unwrap_or_default();
            two.push(format!("From: {ok_from}"));
            push(
                "a second From: header",
                &sender_text,
                vec![foreign_rcpt.clone()],
                Some(two),
                Err((reply::several_from_headers(2), "eoh")),
                Vec::new(),
                None,
            );
            push(
                "a group in From:",
                &sender_text,
                vec![foreign_rcpt.clone()],
                headers_from("undisclosed-recipients:;"),
                Err((reply::from_group(), "eoh")),
                Vec::new(),
                None,
            );
        }
        // One recipient too many, unless a recipient rate limit of the
        // class would stop the message first.
        let n = config.max_recipients + 1;
        let rcpt_limit = Address::parse(&format!("r1@{FOREIGN}")).ok().map(|r| {
            crate::session::checks::rate::rules::recipient(
                &config.rate_limits,
                &crate::session::checks::rate::rules::Facts {
                    ip: Some(client),
                    class: Some(&class.name),
                    login: login.as_deref(),
                    sender: Some(&sender),
                    rcpt: Some(&r),
                    bounce: false,
                },
                &[],
            )
            .iter()
            // Keyed by the sender, so spent by each recipient (a limit
            // keyed by the recipient is spent once by each of them).
            .filter(|c| c.name == crate::limiter::LimitName::RecipientsPerSender)
            .map(|c| c.rate.count)
            .min()
        });
        let limited = matches!(rcpt_limit, Some(Some(c)) if c < n as u64);
        if limited {
            notes.push(format!(
                "class {}: a recipient rate limit below {n}: no \"one recipient too many\" case",
                class.name
            ));
        }
        if config.max_recipients <= 1000 && header_from.is_some() && !limited {
            let rcpts: Vec<String> = (1..=n).map(|i| format!("r{i}@{FOREIGN}")).collect();
            let last = rcpts[n - 1].clone();
            push(
                "one recipient too many",
                &sender.to_string(),
                rcpts,
                None,
                Ok(()),
                vec![(last, reply::too_many_recipients().reply.to_string())],
                None,
            );
        }
    }

    // Unknown clients.
    let mut stranger = None;
    for s in STRANGERS {
        let Ok(ip) = s.parse::<IpAddr>() else {
            continue;
        };
        let got = crate::class::resolve(config, &lists, Some(ip), None).await;
        if matches!(got, Ok(None)) {
            stranger = Some(ip);
            break;
        }
    }
    let local = exact_domains(&config.local_domains, config).unwrap_or_default();
    match (stranger, local.first()) {
        (None, _) => notes.push(
            "no documentation address is free of every class: no unknown-client cases".into(),
        ),
        (_, None) => notes.push("local_domains are in a directory: no unknown-client cases".into()),
        (Some(ip), Some(l)) => {
            let news = format!("news@{FOREIGN}");
            let unknown = |name: String, rcpt: &str, expect, headers| Gen {
                name,
                client: ip,
                login: None,
                from: news.clone(),
                rcpt: vec![rcpt.to_string()],
                headers,
                expect,
                rcpt_expect: Vec::new(),
                signed_by: None,
                monitor: config.mode == crate::config::Mode::Monitor,
            };
            if config.unknown_clients == UnknownClients::Reject {
                cases.push(unknown(
                    "unknown client: refused at MAIL FROM".into(),
                    &format!("postmaster@{l}"),
                    Err((reply::client_not_authorised(&ip.to_string()), "mail")),
                    None,
                ));
            } else {
                let verified = matches!(
                    config.verify_recipients.as_ref().map(|v| &v.by),
                    Some(VerifyBy::Source(_))
                );
                if verified {
                    notes.push("verify_recipients asks a source: inbound cases name postmaster, which must exist there".into());
                }
                for d in local.iter().take(20) {
                    cases.push(unknown(
                        format!("inbound mail to {d}"),
                        &format!("postmaster@{d}"),
                        Ok(()),
                        Some(vec![
                            format!("From: <{news}>"),
                            format!("To: <postmaster@{d}>"),
                            "Subject: egress-milter generated case".into(),
                            "Date: Mon, 23 Nov 2026 00:00:00 +0000".into(),
                            "Message-ID: <generated-in@egress-milter>".into(),
                        ]),
                    ));
                }
                cases.push(unknown(
                    "our domain with a trailing dot is ours".into(),
                    &format!("postmaster@{l}."),
                    Ok(()),
                    None,
                ));
                cases.push(unknown(
                    "our domain in capitals is ours".into(),
                    &format!("postmaster@{}", l.as_str().to_uppercase()),
                    Ok(()),
                    None,
                ));
                let tricks = [
                    ("a foreign recipient", format!("victim@{FOREIGN}")),
                    (
                        "a foreign recipient with a trailing dot",
                        format!("victim@{FOREIGN}."),
                    ),
                    ("percent hack", format!("victim%{FOREIGN}@{l}")),
                    ("bang path", format!("{FOREIGN}!victim@{l}")),
                    (
                        "quoted @ in the local part",
                        format!("\"victim@{FOREIGN}\"@{l}"),
                    ),
                    ("source route", format!("@{l}:victim@{FOREIGN}")),
                    ("an IPv4 literal", "victim@[192.0.2.99]".to_string()),
                    ("an IPv6 literal", "victim@[IPv6:2001:db8::99]".to_string()),
                    ("a double @", format!("victim@{FOREIGN}@{l}")),
                ];
                for (name, rcpt) in tricks {
                    cases.push(unknown(
                        format!("relay: {name}"),
                        &rcpt,
                        Err((reply::relay_denied(), "rcpt")),
                        None,
                    ));
                }
                if config.inbound_own_domain == InboundOwnDomain::Reject {
                    cases.push(unknown(
                        format!("inbound mail claiming {l} in From:"),
                        &format!("postmaster@{l}"),
                        Err((reply::from_domain_from_outside(l.as_str()), "eoh")),
                        Some(vec![
                            format!("From: \"CEO\" <ceo@{l}>"),
                            "Subject: urgent".into(),
                        ]),
                    ));
                }
            }
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Cases generated by `egress-milter test --generate` from {}.\n\
         # The answers are what the configuration's rules imply: read them, keep\n\
         # what is right, and run `egress-milter test --config {} FILE` in CI.\n\
         # offline: SPF, rspamd, clamd and callouts are not asked; every case is\n\
         # fresh: rate limits start full for each.",
        config.path.display(),
        config.path.display()
    );
    for n in &notes {
        let _ = writeln!(out, "# note: {n}");
    }
    let _ = writeln!(out, "offline: true\ncases:");
    for g in &cases {
        write_case(&mut out, g);
    }
    out
}
