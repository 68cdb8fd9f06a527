//! The `classes` section: who a client is (by address, by login), which
//! senders and From: domains it may use, and its mode.

use super::raw::Spanned;
use super::raw::{RawList, RawSourceRef, RawVerify, Text};
use super::sets::{KeyMap, NetMap};
use super::sources::{Entries, Kind, Verify};
use super::{Mode, Validator};
use crate::address::{Address, DomainPattern};
use ipnet::IpNet;
use serde::Deserialize;

/// One class of clients: who they are, and what they may send as.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClass {
    /// (required) One word, unique; it appears in replies, logs and metrics.
    pub name: Text,
    /// Client addresses and networks, IPv4 or IPv6. A list, or `{ source: NAME }`.
    #[serde(default)]
    pub clients: Option<RawList>,
    /// `any` (any SASL login) or a list of logins. With `clients`, both must match. A class
    /// needs at least one of the two.
    #[serde(default)]
    pub auth: Option<Spanned<RawAuth>>,
    /// The MAIL FROM domain must be one of these (default: `local_domains`). A list, or `{
    /// source: NAME }`.
    #[serde(default)]
    pub sender_domains: Option<RawList>,
    /// When set, MAIL FROM must be one of these addresses. A list, or `{ source: NAME }`.
    #[serde(default)]
    pub sender_addresses: Option<RawList>,
    /// When set, the From: domain must also be one of these. A list, or `{ source: NAME }`.
    #[serde(default)]
    pub from_domains: Option<RawList>,
    /// MAIL FROM must belong to the login: login `alice` owns `alice@` any sender domain; a
    /// login that is an address owns that address (default false; needs `auth`).
    #[serde(default)]
    pub login_match: bool,
    /// `{ source: NAME }`: each login's addresses it may send as (aliases, shared mailboxes,
    /// `@domain` for a whole domain), as Postfix's `smtpd_sender_login_maps`. When set,
    /// `login_match` consults it alone; a login it does not know owns nothing. Needs
    /// `login_match: true`.
    #[serde(default)]
    pub login_map: Option<RawSourceRef>,
    /// The envelope sender must exist: `{ source: NAME }`, or `{ callout: [HOST:PORT], timeout:
    /// 10s, helo: NAME, cache: { ttl: 24h, negative_ttl: 2h } }` to ask the internal mail store
    /// over SMTP. Refused with `550 5.1.7`; `451 4.1.7` when nothing could answer (`on_error`).
    #[serde(default)]
    pub verify_sender: Option<Spanned<RawVerify>>,
    /// May it send bounces, `MAIL FROM:<>` (default false)?
    #[serde(default)]
    pub allow_null_sender: bool,
    /// `enforce` or `monitor` for this class only (default: the global `mode`). A class in
    /// `monitor` mode records the senders it uses (learning mode: `egress-milter senders show
    /// NAME`).
    #[serde(default)]
    pub mode: Option<super::Mode>,
    /// `false`: this class's mail is not scanned (default true when `antivirus` is set).
    #[serde(default)]
    pub antivirus: Option<bool>,
}

/// `auth: any` or `auth: [alice, bob]`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum RawAuth {
    Keyword(String),
    Logins(Vec<String>),
}

#[derive(Clone, Debug, Eq, PartialEq)]
pub enum AuthMatch {
    /// Any authenticated client.
    Any,
    /// One of these SASL logins, compared exactly.
    Logins(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct Class {
    pub name: String,
    /// Matched against the client IP; empty inline means "any IP".
    pub clients: Entries<IpNet>,
    pub auth: Option<AuthMatch>,
    /// Defaults to `local_domains`.
    pub sender_domains: Entries<DomainPattern>,
    pub sender_addresses: Option<Entries<Address>>,
    pub from_domains: Option<Entries<DomainPattern>>,
    pub login_match: bool,
    /// The source that maps a login to the addresses it may send as.
    pub login_map: Option<String>,
    /// The envelope sender must exist.
    pub verify_sender: Option<Verify>,
    pub allow_null_sender: bool,
    pub mode: Option<Mode>,
    /// Scanned by clamd when `antivirus` is configured (default true).
    pub antivirus: bool,
}

impl Validator {
    pub(super) fn class(
        &mut self,
        key: &str,
        raw: RawClass,
        local_domains: &Entries<DomainPattern>,
    ) -> Class {
        let line = raw.name.referenced.line();
        if raw.name.value.is_empty() || raw.name.value.chars().any(|c| c.is_whitespace()) {
            self.error(line, format!("{key}.name"), "must be a non-empty word");
        }
        let clients = match &raw.clients {
            Some(c) => self.network_list(&format!("{key}.clients"), c),
            None => Entries::Inline(Default::default()),
        };
        let auth = raw.auth.as_ref().and_then(|a| match &a.value {
            RawAuth::Keyword(k) if k == "any" => Some(AuthMatch::Any),
            RawAuth::Keyword(k) => {
                self.error(
                    a.referenced.line(),
                    format!("{key}.auth"),
                    format!("expected \"any\" or a list of logins, got \"{k}\""),
                );
                None
            }
            RawAuth::Logins(l) if l.is_empty() || l.iter().any(|s| s.is_empty()) => {
                self.error(
                    a.referenced.line(),
                    format!("{key}.auth"),
                    "list of logins must not be empty nor hold an empty login",
                );
                None
            }
            RawAuth::Logins(l) => Some(AuthMatch::Logins(l.clone())),
        });
        if raw.clients.as_ref().is_none_or(RawList::is_empty_inline) && raw.auth.is_none() {
            self.error(
                line,
                key,
                "a class needs \"clients\" or \"auth\" (or both) to match anything",
            );
        }
        let sender_domains = match &raw.sender_domains {
            Some(d) => self.domain_list(&format!("{key}.sender_domains"), d),
            None => local_domains.clone(),
        };
        let from_domains = raw
            .from_domains
            .as_ref()
            .map(|d| self.domain_list(&format!("{key}.from_domains"), d));
        let sender_addresses = raw.sender_addresses.as_ref().map(|list| {
            let list = match list {
                RawList::Items(items) => items,
                RawList::Source(name) => {
                    return Entries::Source(self.source_ref(
                        &format!("{key}.sender_addresses"),
                        name,
                        Kind::Addresses,
                    ))
                }
            };
            let mut out = Vec::new();
            for (j, a) in list.iter().enumerate() {
                let k = format!("{key}.sender_addresses[{j}]");
                match Address::parse(&a.value) {
                    Ok(addr) => {
                        // Checked here when both lists are inline; at
                        // MAIL FROM both are asked anyway.
                        let allowed = match &sender_domains {
                            Entries::Inline(domains) => {
                                addr.domain.name().is_some_and(|d| domains.matches(d))
                            }
                            Entries::Source(_) => true,
                        };
                        if !allowed {
                            self.error(
                                a.referenced.line(),
                                k,
                                format!("\"{}\" is not in the class's sender_domains", a.value),
                            );
                        }
                        out.push(addr);
                    }
                    Err(e) => self.error(
                        a.referenced.line(),
                        k,
                        format!("invalid address \"{}\": {e}", a.value),
                    ),
                }
            }
            Entries::Inline(out.into())
        });
        let login_map = raw
            .login_map
            .as_ref()
            .map(|m| self.source_ref(&format!("{key}.login_map"), &m.source, Kind::AddressMap));
        if login_map.is_some() && !raw.login_match {
            self.error(
                raw.login_map
                    .as_ref()
                    .map_or(line, |m| m.source.referenced.line()),
                format!("{key}.login_map"),
                "login_map is what login_match consults: set login_match: true",
            );
        }
        let verify_sender = raw
            .verify_sender
            .as_ref()
            .and_then(|v| self.verify(&format!("{key}.verify_sender"), v));
        if raw.login_match && raw.auth.is_none() {
            self.error(
                line,
                format!("{key}.login_match"),
                "login_match needs \"auth\": a class matched by IP alone has no login",
            );
        }
        Class {
            name: raw.name.value,
            clients,
            auth,
            sender_domains,
            sender_addresses,
            from_domains,
            login_match: raw.login_match,
            login_map,
            verify_sender,
            allow_null_sender: raw.allow_null_sender,
            mode: raw.mode,
            antivirus: raw.antivirus.unwrap_or(true),
        }
    }
}

/// The classes in their order, and an index of who each one matches: the
/// classes that can match a client are found by its address and its login
/// (never by reading every class), then judged in order, so the first class
/// that matches wins as if every class were read top to bottom.
#[derive(Clone, Debug, Default)]
pub struct Classes {
    list: Vec<Class>,
    /// Classes by the networks of their inline `clients`.
    by_network: NetMap<usize>,
    /// Classes with no inline `clients` (matched by login alone) by each
    /// login of their `auth` list.
    by_login: KeyMap<String, usize>,
    /// Classes that must always be asked: `clients` from a source, or
    /// matched by any login alone (`auth: any` without `clients`).
    always: Vec<usize>,
}

impl Classes {
    pub fn new(list: Vec<Class>) -> Self {
        let mut by_network = NetMap::default();
        let mut by_login = KeyMap::default();
        let mut always = Vec::new();
        for (i, c) in list.iter().enumerate() {
            match (&c.clients, &c.auth) {
                (Entries::Inline(nets), _) if !nets.is_empty() => {
                    for n in nets.iter() {
                        by_network.insert(*n, i);
                    }
                }
                (Entries::Inline(_), Some(AuthMatch::Logins(logins))) => {
                    for l in logins {
                        by_login.insert(l.clone(), i);
                    }
                }
                _ => always.push(i),
            }
        }
        Self {
            list,
            by_network,
            by_login,
            always,
        }
    }

    /// Changes each class, then indexes them again.
    pub fn edit(&mut self, f: impl FnMut(&mut Class)) {
        let mut list = std::mem::take(&mut self.list);
        list.iter_mut().for_each(f);
        *self = Self::new(list);
    }

    /// Keeps the classes `keep` says, then indexes them again.
    pub fn retain(&mut self, keep: impl FnMut(&Class) -> bool) {
        let mut list = std::mem::take(&mut self.list);
        list.retain(keep);
        *self = Self::new(list);
    }

    /// The positions of the classes that may match this client, in order,
    /// each once: a superset of those that do.
    pub fn candidates(&self, ip: Option<std::net::IpAddr>, login: Option<&str>) -> Vec<usize> {
        let mut out: Vec<usize> = self.always.clone();
        if let Some(ip) = ip {
            out.extend(self.by_network.cover(ip).copied());
        }
        if let Some(login) = login {
            out.extend(self.by_login.get(login).copied());
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl std::ops::Deref for Classes {
    type Target = [Class];
    fn deref(&self) -> &[Class] {
        &self.list
    }
}

impl<'a> IntoIterator for &'a Classes {
    type Item = &'a Class;
    type IntoIter = std::slice::Iter<'a, Class>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}
