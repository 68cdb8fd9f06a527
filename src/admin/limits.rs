//! `limits show|reset KEY [--limit NAME]`: a key's budgets under each
//! limit that counts it, or all of them full again.

use super::Answer;
use crate::address::Address;
use crate::config::{Config, Setting};
use crate::limiter::{LimitId, LimitName, Rate};
use crate::session::checks::rate::rules::{setting, Facts};
use crate::state::Shared;
use serde::{Deserialize, Serialize};
use std::{fmt::Write as _, net::IpAddr};

/// A `limits` request. KEY is a client IP, an address, a domain, a
/// network or a login, or `KIND:KEY` to say which.
#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limits {
    /// Per limit: the rate, the budget left, the time until it is full.
    Show { key: String, limit: Option<String> },
    /// A full budget again under every limit (or `limit`).
    Reset { key: String, limit: Option<String> },
}

/// The limits that key on this kind of key, each with every rate the
/// configuration can give it (its counters live under each), and the rate
/// that applies to the key by itself.
fn limits_for(
    config: &Config,
    key: &str,
    ip: Option<IpAddr>,
    class: Option<&str>,
) -> Vec<(LimitId, Rate, bool)> {
    let limits = &config.rate_limits;
    let address = Address::parse(key).ok();
    let names: &[LimitName] = if ip.is_some() {
        &[
            LimitName::ConnectionsPerClient,
            LimitName::MessagesPerClient,
        ]
    } else if address.is_some() {
        &[
            LimitName::MessagesPerSender,
            LimitName::RecipientsPerSender,
            LimitName::MessagesPerRecipient,
        ]
    } else {
        &[LimitName::MessagesPerUser]
    };
    let facts = Facts {
        ip,
        login: (ip.is_none() && address.is_none()).then_some(key),
        sender: address.as_ref(),
        rcpt: address.as_ref(),
        // An IP's class, when a class matches by IP alone.
        class,
        bounce: false,
    };
    let mut out = Vec::new();
    for &name in names {
        let own = match setting(limits, name, &facts) {
            Some(Setting::Rate(r)) => Some(r),
            _ => None,
        };
        let all = std::iter::once(limits.defaults.get(name))
            .chain(limits.overrides.iter().map(|o| o.limits.get(name)));
        for s in all {
            if let Some(Setting::Rate(r)) = s {
                if !out.iter().any(|(n, x, _)| *n == name && *x == r) {
                    out.push((name.into(), r, own == Some(r)));
                }
            }
        }
    }
    // Custom limits: every rate each can have; a limit whose key is of
    // this kind shows even when full.
    for c in &limits.custom {
        let kind_fits = custom_key_fits(c, key, ip.is_some(), address.is_some());
        let rates = std::iter::once(c.rate).chain(c.overrides.iter().map(|(_, r)| *r));
        for r in rates.flatten() {
            let id = LimitId::Custom(c.name);
            if !out.iter().any(|(n, x, _)| *n == id && *x == r) {
                out.push((id, r, kind_fits && c.rate == Some(r)));
            }
        }
    }
    out
}

/// The key's kind when it is written `KIND:KEY` (client, network, sender,
/// recipient, user, domain), checked against the key; None for a bare key,
/// whose kind is guessed from its form. An IPv6 address is a bare key.
fn key_kind(text: &str) -> Result<(Option<&'static str>, &str), String> {
    if text.parse::<IpAddr>().is_ok() || text.parse::<ipnet::IpNet>().is_ok() {
        return Ok((None, text));
    }
    let Some((kind, key)) = text.split_once(':') else {
        return Ok((None, text));
    };
    const KINDS: &[&str] = &["client", "network", "sender", "recipient", "user", "domain"];
    let Some(kind) = KINDS.iter().copied().find(|k| *k == kind) else {
        return Err(format!(
            "unknown key kind \"{kind}\" in \"{text}\" (KIND:KEY, KIND one of {})",
            KINDS.join(", ")
        ));
    };
    let fits = match kind {
        "client" => key.parse::<IpAddr>().is_ok(),
        "network" => key.parse::<ipnet::IpNet>().is_ok(),
        "sender" | "recipient" => Address::parse(key).is_ok(),
        "domain" => crate::address::Domain::parse(key).is_ok(),
        _ => !key.is_empty(),
    };
    if fits {
        Ok((Some(kind), key))
    } else {
        Err(format!("\"{key}\" is not a {kind} key"))
    }
}

/// Whether `key` looks like a key of this custom limit: an IP for
/// `client`, a network for `client_network`, an address, a domain, a pair
/// joined by `+`, else a login or a class.
fn custom_key_fits(c: &crate::config::CustomLimit, key: &str, ip: bool, address: bool) -> bool {
    use crate::config::KeyPart;
    if c.key.len() == 2 {
        return key.contains('+');
    }
    match c.key.first() {
        Some(KeyPart::Client) => ip,
        Some(KeyPart::ClientNetwork) => key.contains('/'),
        Some(KeyPart::Sender | KeyPart::Recipient) => address,
        Some(KeyPart::SenderDomain | KeyPart::RecipientDomain) => {
            !ip && !address && key.contains('.') && !key.contains('/')
        }
        Some(KeyPart::User | KeyPart::Class) => !ip && !address,
        None => false,
    }
}

pub(super) async fn answer(shared: &Shared, request: Limits) -> Answer {
    let (reset, key, only) = match &request {
        Limits::Show { key, limit } => (false, key.trim(), limit.as_deref()),
        Limits::Reset { key, limit } => (true, key.trim(), limit.as_deref()),
    };
    if key.is_empty() {
        return Answer::error("no key given");
    }
    let config = shared.config();
    let (kind, key) = match key_kind(key) {
        Ok(k) => k,
        Err(e) => return Answer::error(e),
    };
    let ip = key.parse::<IpAddr>().ok();
    // Keys are stored as the policy writes them: IPs canonical, addresses
    // and logins as `rate_limits.keys` spells them.
    let keys = &config.rate_limits.keys;
    // A dotted word is a domain for the limits keyed by domain, and a login
    // (spelt as `rate_limits.keys` says) for the others.
    let mut domain_key = None;
    let key = match (key.parse::<IpAddr>(), Address::parse(key)) {
        (Ok(ip), _) => keys.client(ip),
        (_, Ok(a)) => keys.address(&a),
        _ => match (
            key.parse::<ipnet::IpNet>(),
            crate::address::Domain::parse(key),
        ) {
            // A client_network key: canonical.
            (Ok(net), _) => net.trunc().to_string(),
            (_, Ok(domain)) if key.contains('.') && kind != Some("user") => {
                domain_key = Some(domain.to_string());
                if kind == Some("domain") {
                    domain.to_string()
                } else {
                    keys.login(key)
                }
            }
            _ => keys.login(key),
        },
    };
    // An IP's class, when a class matches by IP alone.
    let class = match ip {
        Some(ip) => crate::class::resolve(&config, &shared.lists(false), Some(ip), None)
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let class = class.map(|(_, c)| c.name.as_str());
    let mut limits = limits_for(&config, &key, ip, class);
    if let Some(name) = only {
        let known = |n: &str| {
            LimitName::ALL.iter().any(|l| l.as_str() == n)
                || config.rate_limits.custom.iter().any(|c| c.name == n)
        };
        if !known(name) {
            let mut names: Vec<&str> = LimitName::ALL.iter().map(|l| l.as_str()).collect();
            names.extend(config.rate_limits.custom.iter().map(|c| c.name));
            return Answer::error(format!(
                "no limit named \"{name}\" (the limits are {})",
                names.join(", ")
            ));
        }
        limits.retain(|(id, _, _)| id.as_str() == name);
        // A client's open connections are counted apart (below).
        let open_connections = name == "concurrent_per_client" && ip.is_some();
        if limits.is_empty() && !open_connections {
            return Answer::error(format!("{name} does not count keys like \"{key}\""));
        }
    }
    // Each limit's counters under its own spelling of the key.
    let by_domain = |id: &LimitId| {
        config
            .rate_limits
            .custom
            .iter()
            .any(|c| LimitId::Custom(c.name) == *id && c.keyed_by_domain())
    };
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, (id, _, _)) in limits.iter().enumerate() {
        let k = match &domain_key {
            Some(d) if by_domain(id) => d.as_str(),
            _ => key.as_str(),
        };
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(i),
            None => groups.push((k, vec![i])),
        }
    }
    let limiter = &shared.limiter;
    let pairs_of = |idx: &[usize]| -> Vec<(LimitId, Rate)> {
        idx.iter().map(|&i| (limits[i].0, limits[i].1)).collect()
    };
    if reset {
        for (k, idx) in &groups {
            if let Err(e) = limiter.reset(&pairs_of(idx), k).await {
                return Answer::error(e.to_string());
            }
        }
        return Answer::Ok(format!(
            "reset {key}: {} counters full again\n",
            limits.len()
        ));
    }
    let mut budgets: Vec<Option<crate::limiter::Budget>> = vec![None; limits.len()];
    for (k, idx) in &groups {
        match limiter.show(&pairs_of(idx), k).await {
            Ok(b) => {
                for (&i, b) in idx.iter().zip(b) {
                    budgets[i] = Some(b);
                }
            }
            Err(e) => return Answer::error(e.to_string()),
        }
    }
    let budgets: Vec<crate::limiter::Budget> = budgets.into_iter().flatten().collect();
    let mut out = format!(
        "{:<24} {:>10} {:>10} {:>10}\n",
        "limit", "rate", "remaining", "full in"
    );
    for ((_, _, own), b) in limits.iter().zip(&budgets) {
        // Rates from overrides that do not apply to the key are shown only
        // when they hold something.
        if !own && b.full_in.is_zero() {
            continue;
        }
        let _ = writeln!(
            out,
            "{:<24} {:>10} {:>10} {:>9}s",
            b.name.as_str(),
            b.rate.to_string(),
            b.remaining,
            b.full_in.as_secs_f64().ceil() as u64
        );
    }
    if let Some(ip) = ip.filter(|_| only.is_none_or(|n| n == "concurrent_per_client")) {
        let net = crate::address::client_net(ip, config.rate_limits.keys.ipv6_prefix);
        if let Ok(n) = limiter.open_connections(net).await {
            let facts = Facts {
                ip: Some(ip),
                class,
                ..Facts::default()
            };
            let cap = match setting(&config.rate_limits, LimitName::ConcurrentPerClient, &facts) {
                Some(Setting::Count(c)) => c.to_string(),
                _ => "unlimited".into(),
            };
            let _ = writeln!(
                out,
                "{:<24} {:>10} {:>10}",
                "concurrent_per_client",
                cap,
                format!("{n} open")
            );
        }
    }
    Answer::Ok(out)
}
