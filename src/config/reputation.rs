//! `reputation`: the daemon watches its own egress addresses and domains
//! on DNS blocklists, and the records receivers judge it by, tells on
//! change, and may pause the mail of some classes while it is listed.

use super::raw::{Spanned, Text};
use super::{Classes, Validator};
use crate::address::Domain;
use serde::Deserialize;
use std::{net::IpAddr, time::Duration};

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawReputation {
    /// How often every address and domain is looked up on every list, and the records are
    /// checked (default `15m`; the watch is off when `reputation` is absent). Each list is asked
    /// at most once per address per period, the queries spread over the period.
    #[serde(default)]
    pub every: Option<Text>,
    /// The addresses watched, IPv4 and IPv6 (default: `egress_ips`).
    #[serde(default)]
    pub addresses: Option<Vec<Text>>,
    /// The domains watched on `domain_lists` and for record drift (default: the domains of
    /// `dkim.keys` and `dkim.rotation`).
    #[serde(default)]
    pub domains: Option<Vec<Text>>,
    /// The address lists (DNSBL zones) asked for every address (default `zen.spamhaus.org`,
    /// `b.barracudacentral.org`, `bl.spamcop.net`).
    #[serde(default)]
    pub ip_lists: Option<Vec<Text>>,
    /// The domain lists (DBL-style zones) asked for every domain (default `dbl.spamhaus.org`).
    #[serde(default)]
    pub domain_lists: Option<Vec<Text>>,
    /// A file holding a Spamhaus Data Query Service key: the `*.spamhaus.org` lists are then
    /// asked as `KEY.LIST.dq.spamhaus.net`, which answers any resolver (the public mirrors refuse
    /// public and open resolvers).
    #[serde(default)]
    pub dqs_key_file: Option<Text>,
    /// What a listing does besides the notice.
    #[serde(default)]
    pub on_listed: Option<Spanned<RawOnListed>>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOnListed {
    /// `notify` (default: the notice only), `hold` (the mail of `classes` is accepted and held
    /// for review) or `tempfail` (refused with `451 4.7.1 Sending paused`), while any watched
    /// address or domain is listed.
    #[serde(default)]
    pub action: Option<OnListed>,
    /// The classes paused (default: every class). Inbound mail (from clients in no class) is
    /// never paused.
    #[serde(default)]
    pub classes: Option<Vec<Text>>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnListed {
    /// A notice, nothing more.
    #[default]
    Notify,
    /// The mail of the named classes is held for review.
    Hold,
    /// The mail of the named classes is refused for now (451 4.7.1).
    Tempfail,
}

/// The watch as configured.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ReputationSettings {
    pub every: Duration,
    pub addresses: Vec<IpAddr>,
    pub domains: Vec<Domain>,
    pub ip_lists: Vec<Domain>,
    pub domain_lists: Vec<Domain>,
    /// The Spamhaus DQS key, when one is configured.
    pub dqs_key: Option<String>,
    pub action: OnListed,
    /// The classes `action` pauses; empty: every class.
    pub classes: Vec<String>,
}

const DEFAULT_EVERY: Duration = Duration::from_secs(15 * 60);
/// Below this, a warning: the lists' fair-use terms.
const MIN_POLITE_EVERY: Duration = Duration::from_secs(5 * 60);
const DEFAULT_IP_LISTS: [&str; 3] = [
    "zen.spamhaus.org",
    "b.barracudacentral.org",
    "bl.spamcop.net",
];
const DEFAULT_DOMAIN_LISTS: [&str; 1] = ["dbl.spamhaus.org"];

impl Validator {
    /// The watch, or None when `reputation` is absent.
    pub(super) fn reputation(
        &mut self,
        raw: Option<&Spanned<RawReputation>>,
        egress_ips: &[IpAddr],
        signing_domains: Vec<Domain>,
        classes: &Classes,
    ) -> Option<ReputationSettings> {
        let spanned = raw?;
        let line = spanned.referenced.line();
        let raw = &spanned.value;
        let every = raw
            .every
            .as_ref()
            .and_then(|t| self.duration("reputation.every", t, Duration::from_secs(1)))
            .unwrap_or(DEFAULT_EVERY);
        if let Some(t) = raw.every.as_ref().filter(|_| every < MIN_POLITE_EVERY) {
            self.warn(
                t.referenced.line(),
                "reputation.every",
                "under 5m: public lists rate-limit resolvers that ask this often (127.255.255.255), and listings rarely change faster",
            );
        }
        let addresses = match &raw.addresses {
            Some(list) => {
                let mut out: Vec<IpAddr> = Vec::new();
                for (i, a) in list.iter().enumerate() {
                    match a.value.parse::<IpAddr>() {
                        Ok(ip) if !out.contains(&ip) => out.push(ip),
                        Ok(_) => {}
                        Err(_) => self.error(
                            a.referenced.line(),
                            format!("reputation.addresses[{i}]"),
                            format!("invalid IP address \"{}\"", a.value),
                        ),
                    }
                }
                out
            }
            None => egress_ips.to_vec(),
        };
        let domains = match &raw.domains {
            Some(list) => self.exact_domains("reputation.domains", list),
            None => {
                let mut d = signing_domains;
                d.dedup();
                d
            }
        };
        if addresses.is_empty() && domains.is_empty() {
            self.error(
                line,
                "reputation.addresses",
                "nothing to watch: list the addresses (egress_ips is empty) or the domains",
            );
        }
        let lists = |v: &mut Self, key: &str, raw: &Option<Vec<Text>>, default: &[&str]| match raw {
            Some(list) => v.exact_domains(key, list),
            None => default
                .iter()
                .filter_map(|d| Domain::parse(d).ok())
                .collect(),
        };
        let ip_lists = lists(
            self,
            "reputation.ip_lists",
            &raw.ip_lists,
            &DEFAULT_IP_LISTS,
        );
        let domain_lists = lists(
            self,
            "reputation.domain_lists",
            &raw.domain_lists,
            &DEFAULT_DOMAIN_LISTS,
        );
        let dqs_key = raw.dqs_key_file.as_ref().and_then(|f| self.dqs_key(f));
        let (action, classes) = match &raw.on_listed {
            Some(o) => {
                let mut names = Vec::new();
                for (i, c) in o.value.classes.iter().flatten().enumerate() {
                    if !classes.iter().any(|k| k.name == c.value) {
                        self.error(
                            c.referenced.line(),
                            format!("reputation.on_listed.classes[{i}]"),
                            format!("no class is named \"{}\"", c.value),
                        );
                    } else {
                        names.push(c.value.clone());
                    }
                }
                let action = o.value.action.unwrap_or_default();
                if action == OnListed::Notify && o.value.classes.is_some() {
                    self.error(
                        o.referenced.line(),
                        "reputation.on_listed.classes",
                        "classes are paused by action: hold or tempfail; notify pauses nothing",
                    );
                }
                (action, names)
            }
            None => (OnListed::Notify, Vec::new()),
        };
        Some(ReputationSettings {
            every,
            addresses,
            domains,
            ip_lists,
            domain_lists,
            dqs_key,
            action,
            classes,
        })
    }

    /// A list of domains, each parsed, none twice.
    fn exact_domains(&mut self, key: &str, list: &[Text]) -> Vec<Domain> {
        let mut out: Vec<Domain> = Vec::new();
        for (i, d) in list.iter().enumerate() {
            match Domain::parse(&d.value) {
                Ok(domain) if !out.contains(&domain) => out.push(domain),
                Ok(_) => {}
                Err(e) => self.error(
                    d.referenced.line(),
                    format!("{key}[{i}]"),
                    format!("invalid domain \"{}\": {e}", d.value),
                ),
            }
        }
        out
    }

    /// The DQS key: one line of letters and digits.
    fn dqs_key(&mut self, f: &Text) -> Option<String> {
        let path = self.resolve_path(&f.value);
        let read = crate::files::read_bounded(&path, 4096)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|b| {
                let key = String::from_utf8_lossy(&b).trim().to_ascii_lowercase();
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()) {
                    Ok(key)
                } else {
                    Err(format!(
                        "{}: expected the DQS key (letters and digits) on one line",
                        path.display()
                    ))
                }
            });
        match read {
            Ok(k) => Some(k),
            Err(e) => {
                self.error(f.referenced.line(), "reputation.dqs_key_file", e);
                None
            }
        }
    }
}
