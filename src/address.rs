//! Domains, domain patterns and mail addresses, normalised once so that every
//! comparison elsewhere is a plain equality.
//!
//! Domains compare after IDNA to ASCII, in lower case and without a trailing
//! dot. Local parts compare in one canonical spelling (quoting undone where
//! it changes nothing: RFC 5322 §3.2.4 makes `"jim"` and `jim` the same
//! local part) and otherwise in the case the MTA gave them (RFC 5321 §2.4:
//! the local part is case-sensitive, and only the receiving host may fold
//! it). Rate limits count by [`Address::limit_key`], which folds the case
//! too: every mailbox provider treats `Jim@` and `jim@` as one mailbox, and
//! a budget must not be renewed by respelling an address.

use std::{fmt, net::IpAddr};

/// An IPv4 client seen over an IPv6 socket (`::ffff:10.1.2.3`) is that IPv4
/// client for every rule written with IPv4 addresses.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Default `ipv6_prefix`: a /64 is one site's or one host's (RFC 4291
/// §2.5.1 interface identifiers), and a host can take any address in it.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// A client's key, for limits and incidents alike: the IPv4 address (an
/// IPv4-mapped IPv6 one as IPv4), or the IPv6 network of `ipv6_prefix` bits
/// it lies in (`2001:db8:1:2::/64`; the address itself at 128), since a host
/// can take any address of its network.
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> String {
    match client_net(ip, ipv6_prefix) {
        IpAddr::V6(net) if ipv6_prefix < 128 => format!("{net}/{ipv6_prefix}"),
        other => other.to_string(),
    }
}

/// The address a client is counted under (see [`client_key`]): the IPv4
/// address, or the first address of its IPv6 network.
pub fn client_net(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match canonical_ip(ip) {
        IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, ipv6_prefix.min(128))
            .map_or(IpAddr::V6(v6), |n| IpAddr::V6(n.network())),
        v4 => v4,
    }
}

/// Each parent of a dotted name, nearest first: `a.b.example` gives
/// `b.example`, then `example`.
pub fn parents(name: &str) -> impl Iterator<Item = &str> {
    let mut rest = name;
    std::iter::from_fn(move || {
        let (_, parent) = rest.split_once('.')?;
        rest = parent;
        Some(parent)
    })
}

/// A domain name in its canonical form: IDNA A-labels, lower case, no
/// trailing dot.
#[derive(Clone, Debug, Eq, Hash, PartialEq, Ord, PartialOrd)]
pub struct Domain(String);

#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum DomainError {
    #[error("empty domain")]
    Empty,
    #[error("domain is longer than 253 characters")]
    TooLong,
    #[error("domain has an empty label")]
    EmptyLabel,
    #[error("domain label is longer than 63 characters")]
    LabelTooLong,
    #[error("domain is not a valid IDNA name")]
    Idna,
    #[error("domain label starts or ends with a hyphen")]
    Hyphen,
}

impl Domain {
    /// Parses a domain given as text (UTF-8 or ASCII, any case, optionally
    /// with one trailing dot).
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        Self::parse_bytes(input.as_bytes())
    }

    /// Parses a domain from raw bytes, as found in a header or an SMTP
    /// command (RFC 6531 allows UTF-8 there).
    pub fn parse_bytes(input: &[u8]) -> Result<Self, DomainError> {
        let input = input.strip_suffix(b".").unwrap_or(input);
        if input.is_empty() {
            return Err(DomainError::Empty);
        }
        let ascii = idna::domain_to_ascii_cow(input, idna::AsciiDenyList::STD3)
            .map_err(|_| DomainError::Idna)?;
        let ascii = ascii.to_ascii_lowercase();
        if ascii.len() > 253 {
            return Err(DomainError::TooLong);
        }
        for label in ascii.split('.') {
            if label.is_empty() {
                return Err(DomainError::EmptyLabel);
            }
            if label.len() > 63 {
                return Err(DomainError::LabelTooLong);
            }
            // RFC 5890 §2.3.1 LDH rule, which UTS 46 leaves unchecked.
            if label.starts_with('-') || label.ends_with('-') {
                return Err(DomainError::Hyphen);
            }
        }
        Ok(Self(ascii))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Each parent of the name, nearest first (see [`parents`]).
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        parents(&self.0)
    }

    /// True when `self` is a strict subdomain of `parent`.
    pub fn is_subdomain_of(&self, parent: &Domain) -> bool {
        self.0.len() > parent.0.len()
            && self.0.ends_with(parent.0.as_str())
            && self.0.as_bytes()[self.0.len() - parent.0.len() - 1] == b'.'
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A domain as written in the configuration: `example.com` matches exactly
/// that domain; `*.example.org` matches every subdomain of example.org at any
/// depth, but not example.org itself (list both to have both).
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum DomainPattern {
    Exact(Domain),
    Subdomains(Domain),
}

impl DomainPattern {
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        match input.strip_prefix("*.") {
            Some(parent) => Ok(Self::Subdomains(Domain::parse(parent)?)),
            None => Ok(Self::Exact(Domain::parse(input)?)),
        }
    }

    pub fn matches(&self, domain: &Domain) -> bool {
        match self {
            Self::Exact(d) => d == domain,
            Self::Subdomains(parent) => domain.is_subdomain_of(parent),
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(d) => write!(f, "{d}"),
            Self::Subdomains(d) => write!(f, "*.{d}"),
        }
    }
}

/// The domain part of an address: a name, or an address literal such as
/// `[192.0.2.1]`, which is never one of our domains.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub enum AddressDomain {
    Name(Domain),
    Literal(String),
}

impl AddressDomain {
    pub fn name(&self) -> Option<&Domain> {
        match self {
            Self::Name(d) => Some(d),
            Self::Literal(_) => None,
        }
    }
}

impl fmt::Display for AddressDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(d) => write!(f, "{d}"),
            Self::Literal(l) => write!(f, "[{l}]"),
        }
    }
}

/// A mail address: the local part in its canonical spelling (see
/// [`canonical_local`]), the domain canonical.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct Address {
    pub local: String,
    pub domain: AddressDomain,
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// The one spelling of a local part that means what `local` means.
///
/// A local part is a sequence of words joined by dots, each an atom or a
/// quoted string (RFC 5322 §3.4.1, with the obsolete `"a".b` form of
/// §4.4). Its meaning is the words' contents, quoted pairs undone, joined
/// by dots. That meaning is written as a dot-atom when it is one (RFC 5321
/// §4.1.2 asks senders to use the unquoted form whenever they can), else as
/// one quoted string in which only `"` and `\` are escaped. So `"jim"`,
/// `"j\im"` and `"j"."im"` are `jim` and `j.im`, while `"jim smith"` stays
/// quoted. A local part that is not a valid sequence of words is kept as
/// written: it then matches nothing but itself.
pub fn canonical_local(local: &str) -> String {
    if !local.contains(['"', '\\']) {
        return local.to_string();
    }
    let Some(meaning) = local_meaning(local) else {
        return local.to_string();
    };
    let dot_atom = !meaning.is_empty()
        && meaning
            .split('.')
            .all(|w| !w.is_empty() && w.chars().all(is_atext));
    if dot_atom {
        return meaning;
    }
    let mut quoted = String::with_capacity(meaning.len() + 2);
    quoted.push('"');
    for c in meaning.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// The contents of a local part's words joined by dots, or None when it is
/// not a sequence of atoms and quoted strings separated by single dots.
fn local_meaning(local: &str) -> Option<String> {
    let mut out = String::with_capacity(local.len());
    let mut chars = local.chars().peekable();
    loop {
        match chars.peek() {
            Some('"') => {
                chars.next();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => out.push(chars.next()?),
                        c => out.push(c),
                    }
                }
            }
            Some(_) => {
                let mut atom = false;
                while let Some(&c) = chars.peek() {
                    if c == '.' || c == '"' {
                        break;
                    }
                    if !is_atext(c) {
                        return None;
                    }
                    out.push(c);
                    atom = true;
                    chars.next();
                }
                if !atom {
                    return None;
                }
            }
            None => return None,
        }
        match chars.next() {
            None => return Some(out),
            Some('.') => out.push('.'),
            Some(_) => return None,
        }
    }
}

#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum AddressError {
    #[error("address has no @domain")]
    NoDomain,
    #[error("address has an empty local part")]
    EmptyLocal,
    #[error("address is not valid UTF-8")]
    Encoding,
    #[error("invalid domain: {0}")]
    Domain(#[from] DomainError),
}

impl Address {
    /// Parses `local@domain` (no angle brackets). The domain is whatever
    /// follows the last `@`: a domain cannot hold one, a quoted local part
    /// can.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let (local, domain) = input.rsplit_once('@').ok_or(AddressError::NoDomain)?;
        if local.is_empty() {
            return Err(AddressError::EmptyLocal);
        }
        let domain = match domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            Some(literal) => AddressDomain::Literal(literal.to_string()),
            None => AddressDomain::Name(Domain::parse(domain)?),
        };
        Ok(Self::new(local, domain))
    }

    /// An address from its parts, the local part put in its canonical
    /// spelling.
    pub fn new(local: &str, domain: AddressDomain) -> Self {
        Self {
            local: canonical_local(local),
            domain,
        }
    }

    /// The address as rate limits count it: canonical, and the local part
    /// in lower case.
    pub fn limit_key(&self) -> String {
        let local: String = self.local.chars().flat_map(char::to_lowercase).collect();
        format!("{local}@{}", self.domain)
    }

    /// Whether two addresses have one [`limit_key`](Self::limit_key),
    /// without building the keys (an override is matched against every
    /// message).
    pub fn same_limit_key(&self, other: &Address) -> bool {
        self.domain == other.domain
            && self
                .local
                .chars()
                .flat_map(char::to_lowercase)
                .eq(other.local.chars().flat_map(char::to_lowercase))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// An envelope address from MAIL FROM or RCPT TO.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum EnvelopeAddress {
    /// The null reverse-path `<>` (RFC 5321 §4.5.5: bounces).
    Null,
    Address(Address),
}

impl fmt::Display for EnvelopeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("<>"),
            Self::Address(a) => write!(f, "{a}"),
        }
    }
}

/// Parses the first argument of MAIL FROM or RCPT TO as the MTA passes it to
/// the milter: usually `<user@domain>`, possibly without brackets, possibly
/// with an RFC 5321 §4.1.2 source route (`<@a,@b:user@domain>`), which is
/// ignored as §C of RFC 5321 says.
pub fn parse_envelope(arg: &[u8]) -> Result<EnvelopeAddress, AddressError> {
    let arg = std::str::from_utf8(arg).map_err(|_| AddressError::Encoding)?;
    let arg = arg.trim();
    let inner = arg
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(arg);
    if inner.is_empty() {
        return Ok(EnvelopeAddress::Null);
    }
    let inner = match inner.strip_prefix('@') {
        Some(routed) => routed
            .split_once(':')
            .map(|(_, a)| a)
            .ok_or(AddressError::EmptyLocal)?,
        None => inner,
    };
    Address::parse(inner).map(EnvelopeAddress::Address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_canonical() {
        let d = Domain::parse("Example.COM.").unwrap();
        assert_eq!(d.as_str(), "example.com");
        assert_eq!(
            Domain::parse("bücher.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            Domain::parse("XN--BCHER-KVA.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
        assert_eq!(Domain::parse(""), Err(DomainError::Empty));
        assert_eq!(Domain::parse("."), Err(DomainError::Empty));
        assert!(Domain::parse("a..b").is_err());
        assert!(Domain::parse("a b.com").is_err());
        assert_eq!(Domain::parse("-bad-.com"), Err(DomainError::Hyphen));
        assert!(Domain::parse(&"a".repeat(64)).is_err());
    }

    #[test]
    fn patterns_match_subdomains_only_with_star() {
        let star = DomainPattern::parse("*.example.org").unwrap();
        let exact = DomainPattern::parse("example.org").unwrap();
        let d = |s| Domain::parse(s).unwrap();
        assert!(star.matches(&d("a.example.org")));
        assert!(star.matches(&d("b.a.EXAMPLE.org")));
        assert!(!star.matches(&d("example.org")));
        assert!(!star.matches(&d("badexample.org")));
        assert!(exact.matches(&d("example.org.")));
        assert!(!exact.matches(&d("a.example.org")));
    }

    #[test]
    fn local_parts_have_one_spelling() {
        let c = canonical_local;
        // Quoting that changes nothing is undone (RFC 5322 §3.2.4).
        assert_eq!(c("\"jim\""), "jim");
        assert_eq!(c("\"j\\im\""), "jim");
        assert_eq!(c("\"j\".\"im\""), "j.im");
        assert_eq!(c("\"j\".im"), "j.im");
        assert_eq!(c("\"first.last\""), "first.last");
        assert_eq!(c("\"Jim\""), "Jim");
        assert_eq!(c("\"jürgen\""), "jürgen");
        assert_eq!(c("jim"), "jim");
        // Quoting that is needed stays, in one form.
        assert_eq!(c("\"jim smith\""), "\"jim smith\"");
        assert_eq!(c("\"jim\\ smith\""), "\"jim smith\"");
        assert_eq!(c("jim.\"smith jr\""), "\"jim.smith jr\"");
        assert_eq!(c("\"a@b\""), "\"a@b\"");
        assert_eq!(c("\"a\\\"b\""), "\"a\\\"b\"");
        assert_eq!(c("\".jim\""), "\".jim\"");
        assert_eq!(c("\"j..im\""), "\"j..im\"");
        assert_eq!(c("\"\""), "\"\"");
        // Not a sequence of words: kept as written.
        assert_eq!(c("\"jim"), "\"jim");
        assert_eq!(c("\"ji\"m"), "\"ji\"m");
        assert_eq!(c("jim\\"), "jim\\");
        // Every spelling of one mailbox is one address, and one limit key.
        let spellings = [
            "<jim@example.com>",
            "<\"jim\"@example.com>",
            "<\"j\\im\"@Example.COM.>",
            "<@relay.test:\"jim\"@example.com>",
        ];
        for s in spellings {
            let EnvelopeAddress::Address(a) = parse_envelope(s.as_bytes()).unwrap() else {
                panic!("null")
            };
            assert_eq!(a.to_string(), "jim@example.com", "{s}");
            assert_eq!(a.limit_key(), "jim@example.com", "{s}");
        }
        let EnvelopeAddress::Address(a) = parse_envelope(b"<\"JIM\"@example.com>").unwrap() else {
            panic!("null")
        };
        assert_eq!(a.to_string(), "JIM@example.com");
        assert_eq!(a.limit_key(), "jim@example.com");
        let EnvelopeAddress::Address(b) = parse_envelope(b"<jim@EXAMPLE.com>").unwrap() else {
            panic!("null")
        };
        assert!(a.same_limit_key(&b) && b.same_limit_key(&a));
        let EnvelopeAddress::Address(c) = parse_envelope(b"<jimmy@example.com>").unwrap() else {
            panic!("null")
        };
        assert!(!a.same_limit_key(&c));
    }

    #[test]
    fn envelope_addresses() {
        let a = |s: &str| parse_envelope(s.as_bytes());
        assert_eq!(a("<>"), Ok(EnvelopeAddress::Null));
        assert_eq!(a(""), Ok(EnvelopeAddress::Null));
        let EnvelopeAddress::Address(x) = a("<Alice@Example.COM>").unwrap() else {
            panic!("null")
        };
        assert_eq!(x.local, "Alice");
        assert_eq!(x.domain.to_string(), "example.com");
        let EnvelopeAddress::Address(x) = a("<\"a@b\"@evil.com>").unwrap() else {
            panic!("null")
        };
        assert_eq!(x.domain.to_string(), "evil.com");
        let EnvelopeAddress::Address(x) = a("<@relay.net,@r2.net:bob@example.com>").unwrap() else {
            panic!("null")
        };
        assert_eq!(x.to_string(), "bob@example.com");
        let EnvelopeAddress::Address(x) = a("bob@[192.0.2.1]").unwrap() else {
            panic!("null")
        };
        assert_eq!(x.domain, AddressDomain::Literal("192.0.2.1".into()));
        assert_eq!(a("<bob>"), Err(AddressError::NoDomain));
        assert_eq!(a("<@example.com>"), Err(AddressError::EmptyLocal));
        assert!(a("<bob@>").is_err());
        assert_eq!(
            parse_envelope(b"<\xff@example.com>"),
            Err(AddressError::Encoding)
        );
    }
}
