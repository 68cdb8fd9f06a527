//! Asking a DNS blocklist (RFC 5782) about one address or domain, and reading its
//! answer right: an NXDOMAIN is clean; an address in 127.0.0.0/8 is a
//! listing, except the codes by which a list says it refused the query
//! (Spamhaus' `127.255.255.252` bad query, `.254` public or open
//! resolver, `.255` rate limited; the DBL's `127.0.1.255`); anything else,
//! a timeout or an answer outside 127.0.0.0/8 (a resolver that rewrites
//! NXDOMAIN), is an error that says nothing either way.

use crate::address::Domain;
use hickory_resolver::proto::rr::{RData, RecordType};
use mail_auth::MessageAuthenticator;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// What is watched: one of our addresses, or one of our domains.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum Target {
    Address(IpAddr),
    Domain(Domain),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(ip) => write!(f, "{ip}"),
            Self::Domain(d) => write!(f, "{d}"),
        }
    }
}

/// What a list said.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Answer {
    Clean,
    /// Listed, with the return codes.
    Listed(Vec<Ipv4Addr>),
    /// No answer to go by, and why.
    Error(String),
}

/// An address as DNSBLs key it: IPv4 octets reversed, IPv6 nibbles
/// reversed (RFC 5782).
pub fn reversed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut nibbles = Vec::with_capacity(32);
            for b in v6.octets().iter().rev() {
                nibbles.push(format!("{:x}", b & 0x0f));
                nibbles.push(format!("{:x}", b >> 4));
            }
            nibbles.join(".")
        }
    }
}

/// The zone a list is asked at: with a Spamhaus DQS key, `X.spamhaus.org`
/// is asked as `KEY.X.dq.spamhaus.net`.
pub fn zone(list: &Domain, dqs_key: Option<&str>) -> String {
    match (dqs_key, list.as_str().strip_suffix(".spamhaus.org")) {
        (Some(key), Some(name)) => format!("{key}.{name}.dq.spamhaus.net"),
        _ => list.to_string(),
    }
}

/// The name asked for a target on a list.
pub fn query_name(target: &Target, list: &Domain, dqs_key: Option<&str>) -> String {
    let zone = zone(list, dqs_key);
    match target {
        Target::Address(ip) => format!("{}.{zone}.", reversed(ip)),
        Target::Domain(d) => format!("{d}.{zone}."),
    }
}

/// Reads the addresses a list answered.
pub fn classify(codes: Vec<Ipv4Addr>) -> Answer {
    if codes.is_empty() {
        return Answer::Clean;
    }
    if let Some(bad) = codes.iter().find(|c| c.octets()[0] != 127) {
        return Answer::Error(format!(
            "answer {bad} is outside 127.0.0.0/8: the resolver rewrites answers, use one that does not (dns.nameservers)"
        ));
    }
    let refused = |c: &Ipv4Addr| {
        let o = c.octets();
        (o[1] == 255 && o[2] == 255) || (o[1] == 0 && o[2] == 1 && o[3] == 255)
    };
    if let Some(code) = codes.iter().find(|c| refused(c)) {
        let why = match code.octets() {
            [_, 255, 255, 252] => "the query was malformed (a typo in the list's name?)",
            [_, 255, 255, 254] => "the list refuses public and open resolvers: use your own resolver or a DQS key (dqs_key_file)",
            [_, 255, 255, 255] => "the list rate-limits this resolver: too many queries",
            [_, 0, 1, 255] => "the list takes domains, not addresses",
            _ => "the list refused the query",
        };
        return Answer::Error(format!("{code}: {why}"));
    }
    Answer::Listed(codes)
}

/// Asks `name` (A) afresh: a cached answer from an earlier period is
/// dropped first, so that each period asks the list once.
pub async fn ask(resolver: &MessageAuthenticator, name: &str) -> Answer {
    let r = resolver.resolver();
    r.clear_lookup_cache(name, RecordType::A);
    match r.lookup(name, RecordType::A).await {
        Ok(lookup) => classify(
            lookup
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect(),
        ),
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => Answer::Clean,
        Err(e) => Answer::Error(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn answers_are_read_right() {
        assert_eq!(classify(vec![]), Answer::Clean);
        assert_eq!(
            classify(vec![ip("127.0.0.2"), ip("127.0.0.11")]),
            Answer::Listed(vec![ip("127.0.0.2"), ip("127.0.0.11")])
        );
        for refused in [
            "127.255.255.252",
            "127.255.255.254",
            "127.255.255.255",
            "127.0.1.255",
        ] {
            assert!(
                matches!(classify(vec![ip(refused)]), Answer::Error(_)),
                "{refused}"
            );
        }
        // A refusal among listings is still no listing.
        assert!(matches!(
            classify(vec![ip("127.0.0.2"), ip("127.255.255.254")]),
            Answer::Error(_)
        ));
        assert!(matches!(
            classify(vec![ip("198.51.100.7")]),
            Answer::Error(_)
        ));
    }

    #[test]
    fn names_asked() {
        let zen = Domain::parse("zen.spamhaus.org").unwrap();
        let a = Target::Address("192.0.2.10".parse().unwrap());
        assert_eq!(query_name(&a, &zen, None), "10.2.0.192.zen.spamhaus.org.");
        assert_eq!(
            query_name(&a, &zen, Some("abc123")),
            "10.2.0.192.abc123.zen.dq.spamhaus.net."
        );
        let other = Domain::parse("bl.spamcop.net").unwrap();
        assert_eq!(
            query_name(&a, &other, Some("abc123")),
            "10.2.0.192.bl.spamcop.net."
        );
        let v6 = Target::Address("2001:db8::1".parse().unwrap());
        assert_eq!(
            query_name(&v6, &other, None),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.spamcop.net."
        );
        let d = Target::Domain(Domain::parse("example.com").unwrap());
        let dbl = Domain::parse("dbl.spamhaus.org").unwrap();
        assert_eq!(query_name(&d, &dbl, None), "example.com.dbl.spamhaus.org.");
    }
}
