//! The `classes` section: who a client is (by address, by login), which
//! senders and From: domains it may use, and its mode.

use super::raw::{RawAuth, RawClass};
use super::{parse_network, Mode, Validator};
use crate::address::{Address, DomainPattern};
use ipnet::IpNet;

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
    /// Matched against the client IP; empty means "any IP".
    pub clients: Vec<IpNet>,
    pub auth: Option<AuthMatch>,
    /// Defaults to `local_domains`.
    pub sender_domains: Vec<DomainPattern>,
    pub sender_addresses: Option<Vec<Address>>,
    pub from_domains: Option<Vec<DomainPattern>>,
    pub login_match: bool,
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
        local_domains: &[DomainPattern],
    ) -> Class {
        let line = raw.name.referenced.line();
        if raw.name.value.is_empty() || raw.name.value.chars().any(|c| c.is_whitespace()) {
            self.error(line, format!("{key}.name"), "must be a non-empty word");
        }
        let mut clients = Vec::new();
        for (j, c) in raw.clients.iter().flatten().enumerate() {
            match parse_network(&c.value) {
                Some(n) => clients.push(n),
                None => self.error(
                    c.referenced.line(),
                    format!("{key}.clients[{j}]"),
                    format!("invalid network \"{}\"", c.value),
                ),
            }
        }
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
        if raw.clients.as_ref().is_none_or(|c| c.is_empty()) && raw.auth.is_none() {
            self.error(
                line,
                key,
                "a class needs \"clients\" or \"auth\" (or both) to match anything",
            );
        }
        let sender_domains = match &raw.sender_domains {
            Some(d) => self.domains(&format!("{key}.sender_domains"), d),
            None => local_domains.to_vec(),
        };
        let from_domains = raw
            .from_domains
            .as_ref()
            .map(|d| self.domains(&format!("{key}.from_domains"), d));
        let sender_addresses = raw.sender_addresses.as_ref().map(|list| {
            let mut out = Vec::new();
            for (j, a) in list.iter().enumerate() {
                let k = format!("{key}.sender_addresses[{j}]");
                match Address::parse(&a.value) {
                    Ok(addr) => {
                        let allowed = addr
                            .domain
                            .name()
                            .is_some_and(|d| crate::address::any_matches(&sender_domains, d));
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
            out
        });
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
            allow_null_sender: raw.allow_null_sender,
            mode: raw.mode,
            antivirus: raw.antivirus.unwrap_or(true),
        }
    }
}
