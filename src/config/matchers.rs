//! The overrides of the rate limits (and of each custom limit), indexed by
//! what their `match` names: a message's client, domain, address, class and
//! login find the overrides that match it by lookups, and the first of them
//! in the file's order wins, as if every override were read top to bottom.

use super::sets::{DomainMap, KeyMap, NetMap};
use super::{LimitKeys, Matcher};
use crate::address::{canonical_ip, Address};
use std::net::IpAddr;

/// Who a message is, as overrides match it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Who<'a> {
    pub ip: Option<IpAddr>,
    pub class: Option<&'a str>,
    pub login: Option<&'a str>,
    /// The sender, or the recipient for the limits keyed by recipient.
    pub address: Option<&'a Address>,
}

/// Where each matcher of a list is found.
#[derive(Clone, Debug, Default)]
pub struct MatcherIndex {
    networks: NetMap<usize>,
    domains: DomainMap<usize>,
    /// By the address's key ([`LimitKeys::address`]): one person, one key.
    addresses: KeyMap<String, usize>,
    /// A word matches the class of that name, or the login of that key.
    classes: KeyMap<String, usize>,
    logins: KeyMap<String, usize>,
}

impl MatcherIndex {
    /// The index of `matchers`, in their order, with addresses and logins
    /// spelt by `keys`.
    pub fn new<'m>(matchers: impl Iterator<Item = &'m Matcher>, keys: &LimitKeys) -> Self {
        let mut index = Self::default();
        for (i, m) in matchers.enumerate() {
            match m {
                Matcher::Network(n) => index.networks.insert(*n, i),
                Matcher::Domain(p) => index.domains.insert(p, i),
                Matcher::Address(a) => index.addresses.insert(keys.address(a), i),
                Matcher::Word(w) => {
                    index.classes.insert(w.clone(), i);
                    index.logins.insert(keys.login(w), i);
                }
            }
        }
        index
    }

    /// The positions of the matchers that match, in order.
    pub fn matching(&self, keys: &LimitKeys, who: &Who<'_>) -> Vec<usize> {
        let mut out = Vec::new();
        if let Some(ip) = who.ip {
            out.extend(self.networks.cover(canonical_ip(ip)));
        }
        if let Some(class) = who.class {
            out.extend(self.classes.get(class));
        }
        if let Some(login) = who.login {
            out.extend(self.logins.get(keys.login(login).as_str()));
        }
        if let Some(a) = who.address {
            if let Some(d) = a.domain.name() {
                out.extend(self.domains.matching(d));
            }
            out.extend(self.addresses.get(keys.address(a).as_str()));
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}
