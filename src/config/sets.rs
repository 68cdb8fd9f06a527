//! Configured lists as indexes, built when the configuration is read: what a
//! message asks of a list (does it hold this client, this domain, this
//! address; which entries match it) is answered by lookups, not by a scan,
//! so that a message costs the same against ten entries as against a
//! hundred thousand.
//!
//! - networks in a prefix trie (the `prefix-trie` crate), one per address
//!   family: the networks that hold an address are found along its bits;
//! - domain patterns in two hash maps, exact names and the parents of
//!   `*.parent` patterns: a domain is looked up, then each of its parents;
//! - addresses in a hash set of their canonical form.
//!
//! A list keeps its entries in order beside the index ([`Set`] reads as the
//! slice it was written as); maps keep, for each key, the positions of the
//! entries that hold it, so that "the first entry that matches" keeps its
//! meaning (see [`NetMap::cover`], [`DomainMap::matching`]).

use crate::address::{Address, Domain, DomainPattern};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::IpAddr;
use std::{fmt, ops::Deref, sync::Arc};

/// What an entry of a list is looked up by.
pub trait Indexed: Sized {
    type Index: Clone + Default + Send + Sync;
    fn index(items: &[Self]) -> Self::Index;
}

/// A list as written, in order, and its index; shared when copied (a
/// class's `sender_domains` is `local_domains` unless it says otherwise).
/// A short list has no index: reading it is as quick, and a hundred
/// thousand classes of one network each do not each carry one.
pub struct Set<T: Indexed> {
    inner: Arc<(Vec<T>, Option<T::Index>)>,
}

/// Lists longer than this are indexed.
const SHORT: usize = 8;

impl<T: Indexed> Clone for Set<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Indexed> Set<T> {
    pub fn new(items: Vec<T>) -> Self {
        let index = (items.len() > SHORT).then(|| T::index(&items));
        Self {
            inner: Arc::new((items, index)),
        }
    }

    fn index(&self) -> Option<&T::Index> {
        self.inner.1.as_ref()
    }
}

impl<T: Indexed> Default for Set<T> {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl<T: Indexed> From<Vec<T>> for Set<T> {
    fn from(items: Vec<T>) -> Self {
        Self::new(items)
    }
}

impl<T: Indexed> Deref for Set<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.inner.0
    }
}

impl<T: Indexed + PartialEq> PartialEq for Set<T> {
    fn eq(&self, other: &Self) -> bool {
        self.inner.0 == other.inner.0
    }
}

impl<T: Indexed + Eq> Eq for Set<T> {}

impl<T: Indexed + fmt::Debug> fmt::Debug for Set<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.0.fmt(f)
    }
}

impl Indexed for IpNet {
    type Index = NetMap<()>;
    fn index(items: &[Self]) -> NetMap<()> {
        let mut map = NetMap::default();
        for n in items {
            map.insert(*n, ());
        }
        map
    }
}

impl Set<IpNet> {
    /// Whether a network of the list holds the address (already canonical:
    /// an IPv4-mapped IPv6 address as IPv4).
    pub fn holds(&self, ip: IpAddr) -> bool {
        match self.index() {
            Some(index) => index.holds(ip),
            None => self.iter().any(|n| n.contains(&ip)),
        }
    }
}

impl Indexed for DomainPattern {
    type Index = DomainMap<()>;
    fn index(items: &[Self]) -> DomainMap<()> {
        let mut map = DomainMap::default();
        for p in items {
            map.insert(p, ());
        }
        map
    }
}

impl Set<DomainPattern> {
    /// Whether a pattern of the list matches the domain.
    pub fn matches(&self, domain: &Domain) -> bool {
        match self.index() {
            Some(index) => index.matching(domain).next().is_some(),
            None => self.iter().any(|p| p.matches(domain)),
        }
    }
}

impl Indexed for Address {
    type Index = HashSet<Address>;
    fn index(items: &[Self]) -> HashSet<Address> {
        items.iter().cloned().collect()
    }
}

impl Set<Address> {
    /// Whether the list holds the address (both canonical).
    pub fn has(&self, address: &Address) -> bool {
        match self.index() {
            Some(index) => index.contains(address),
            None => self.contains(address),
        }
    }
}

/// Networks, each with the values of the entries that name it.
#[derive(Clone, Debug, PartialEq)]
pub struct NetMap<T> {
    v4: PrefixMap<Ipv4Net, Vec<T>>,
    v6: PrefixMap<Ipv6Net, Vec<T>>,
}

impl<T> Default for NetMap<T> {
    fn default() -> Self {
        Self {
            v4: PrefixMap::new(),
            v6: PrefixMap::new(),
        }
    }
}

impl<T> NetMap<T> {
    pub fn insert(&mut self, net: IpNet, value: T) {
        match net.trunc() {
            IpNet::V4(n) => push(&mut self.v4, n, value),
            IpNet::V6(n) => push(&mut self.v6, n, value),
        }
    }

    /// The values of every network that holds the address, shortest
    /// network first.
    pub fn cover(&self, ip: IpAddr) -> impl Iterator<Item = &T> {
        let (v4, v6) = match ip {
            IpAddr::V4(a) => (Some(self.v4.cover(&Ipv4Net::from(a))), None),
            IpAddr::V6(a) => (None, Some(self.v6.cover(&Ipv6Net::from(a)))),
        };
        let v4 = v4.into_iter().flatten().flat_map(|(_, v)| v);
        let v6 = v6.into_iter().flatten().flat_map(|(_, v)| v);
        v4.chain(v6)
    }

    /// Whether a network holds the address.
    pub fn holds(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.get_lpm(&Ipv4Net::from(a)).is_some(),
            IpAddr::V6(a) => self.v6.get_lpm(&Ipv6Net::from(a)).is_some(),
        }
    }
}

fn push<P: prefix_trie::Prefix, T>(map: &mut PrefixMap<P, Vec<T>>, net: P, value: T) {
    match map.get_mut(&net) {
        Some(values) => values.push(value),
        None => {
            map.insert(net, vec![value]);
        }
    }
}

/// Domain patterns, each with the values of the entries that name it.
#[derive(Clone, Debug)]
pub struct DomainMap<T> {
    exact: HashMap<String, Vec<T>>,
    /// `*.parent` patterns, by the parent.
    parents: HashMap<String, Vec<T>>,
}

impl<T> Default for DomainMap<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            parents: HashMap::new(),
        }
    }
}

impl<T> DomainMap<T> {
    pub fn insert(&mut self, pattern: &DomainPattern, value: T) {
        let (map, d) = match pattern {
            DomainPattern::Exact(d) => (&mut self.exact, d),
            DomainPattern::Subdomains(d) => (&mut self.parents, d),
        };
        map.entry(d.as_str().to_string()).or_default().push(value);
    }

    /// The values of every pattern that matches the domain: the exact name
    /// first, then `*.parent` patterns from the nearest parent up.
    pub fn matching<'a>(&'a self, domain: &'a Domain) -> impl Iterator<Item = &'a T> + 'a {
        let exact = self.exact.get(domain.as_str()).into_iter().flatten();
        let parents = domain
            .parents()
            .filter_map(|p| self.parents.get(p))
            .flatten();
        exact.chain(parents)
    }
}

/// Values by a key of text: addresses and logins in their canonical
/// spelling, class names.
#[derive(Clone, Debug)]
pub struct KeyMap<K, T> {
    map: HashMap<K, Vec<T>>,
}

impl<K, T> Default for KeyMap<K, T> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash, T> KeyMap<K, T> {
    pub fn insert(&mut self, key: K, value: T) {
        self.map.entry(key).or_default().push(value);
    }

    pub fn get<Q>(&self, key: &Q) -> impl Iterator<Item = &T>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.get(key).into_iter().flatten()
    }
}

/// Host names as `internal_hostnames` writes them, `*.suffix` or exact, in
/// lower case: a name is looked up, then each of its parents.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostPatterns {
    list: Vec<String>,
    exact: HashSet<String>,
    suffixes: HashSet<String>,
}

impl HostPatterns {
    pub fn new(list: Vec<String>) -> Self {
        let mut exact = HashSet::new();
        let mut suffixes = HashSet::new();
        for p in &list {
            match p.strip_prefix("*.") {
                Some(s) => suffixes.insert(s.to_string()),
                None => exact.insert(p.clone()),
            };
        }
        Self {
            list,
            exact,
            suffixes,
        }
    }

    /// Whether a pattern matches the name (lower case, no trailing dot).
    pub fn matches(&self, name: &str) -> bool {
        self.exact.contains(name)
            || crate::address::parents(name).any(|p| self.suffixes.contains(p))
    }
}

impl Deref for HostPatterns {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short lists are read, long ones looked up: both answer as reading
    /// every entry does, for networks (overlapping, IPv6), domains (exact,
    /// `*.parent`, a parent alone) and addresses.
    #[test]
    fn short_and_long_lists_answer_as_reading_them() {
        for n in [2, 40] {
            let mut nets: Vec<IpNet> = (0..n)
                .map(|i| format!("10.{i}.0.0/16").parse().unwrap())
                .collect();
            nets.push("10.1.2.0/24".parse().unwrap());
            nets.push("2001:db8::/32".parse().unwrap());
            let set = Set::new(nets.clone());
            for ip in [
                "10.1.2.3",
                "10.0.9.9",
                "10.200.0.1",
                "11.0.0.1",
                "2001:db8::1",
                "2001:db9::1",
            ] {
                let ip: IpAddr = ip.parse().unwrap();
                assert_eq!(
                    set.holds(ip),
                    nets.iter().any(|x| x.contains(&ip)),
                    "{n} {ip}"
                );
            }
            let mut patterns: Vec<DomainPattern> = (0..n)
                .map(|i| DomainPattern::parse(&format!("d{i}.example")).unwrap())
                .collect();
            patterns.push(DomainPattern::parse("*.corp.example").unwrap());
            let set = Set::new(patterns.clone());
            for d in [
                "d1.example",
                "x.d1.example",
                "a.b.corp.example",
                "corp.example",
                "example",
                "d99999.example",
            ] {
                let d = Domain::parse(d).unwrap();
                assert_eq!(
                    set.matches(&d),
                    patterns.iter().any(|p| p.matches(&d)),
                    "{n} {d}"
                );
            }
            let addresses: Vec<Address> = (0..n)
                .map(|i| Address::parse(&format!("a{i}@example.com")).unwrap())
                .collect();
            let set = Set::new(addresses.clone());
            for a in [
                "a1@example.com",
                "A1@Example.COM",
                "a1@example.org",
                "b@example.com",
            ] {
                let a = Address::parse(a).unwrap();
                assert_eq!(set.has(&a), addresses.contains(&a), "{n} {a}");
            }
        }
    }

    #[test]
    fn host_patterns_match_names_and_their_parents() {
        let h = HostPatterns::new(vec!["*.corp".into(), "localhost".into()]);
        assert!(h.matches("a.b.corp"));
        assert!(h.matches("localhost"));
        assert!(!h.matches("corp"));
        assert!(!h.matches("a.localhost"));
        assert!(!h.matches("corp.example"));
    }
}
