//! A file source: one entry per line, or `key value...` lines for a map;
//! `#` starts a comment. The whole file is checked before it is used: a
//! line that is not what the source is used for refuses the file, and a
//! running daemon keeps the contents it had.

use crate::address::{Address, Domain, DomainPattern};
use crate::config::{parse_network, Kind};
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::Path,
    time::SystemTime,
};

/// The largest file read: a million addresses fit.
pub const MAX_FILE_SIZE: u64 = 64 << 20;

/// A file's contents, indexed for the lookups its kind needs.
#[derive(Debug, Default, PartialEq)]
pub struct FileIndex {
    /// Addresses and logins as canonical text; domains in lower case.
    exact: HashSet<String>,
    /// `*.parent` entries of a domain list: the parents.
    subdomains: HashSet<String>,
    networks: super::sets::NetMap<()>,
    /// Login -> the addresses (or `@domain`s) it may send as.
    map: HashMap<String, Vec<String>>,
    /// Entries, for `selfcheck` and `cache show`.
    pub entries: usize,
}

/// Where the file was when read, to tell a change.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

impl Stamp {
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        })
    }
}

/// Why a file was refused: the line (0: the file as a whole) and what.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct FileError {
    pub line: u64,
    pub message: String,
}

/// Reads and checks a file for a source of `kind`.
pub fn load(path: &Path, kind: Kind) -> Result<(FileIndex, Stamp), FileError> {
    let whole = |e: std::io::Error| FileError {
        line: 0,
        message: format!("cannot read: {e}"),
    };
    let stamp = Stamp::of(path).map_err(whole)?;
    let bytes = crate::files::read_bounded(path, MAX_FILE_SIZE).map_err(whole)?;
    let text = String::from_utf8(bytes).map_err(|_| FileError {
        line: 0,
        message: "not UTF-8 text".into(),
    })?;
    Ok((parse(&text, kind)?, stamp))
}

/// Checks and indexes a file's text.
pub fn parse(text: &str, kind: Kind) -> Result<FileIndex, FileError> {
    let mut index = FileIndex::default();
    for (n, line) in text.lines().enumerate() {
        let line_no = n as u64 + 1;
        let content = line.split_once('#').map_or(line, |(c, _)| c).trim();
        if content.is_empty() {
            continue;
        }
        let mut words = content.split(|c: char| c.is_whitespace() || c == ',');
        let key = words.next().unwrap_or_default();
        let values: Vec<&str> = words.filter(|w| !w.is_empty()).collect();
        let fail = |message: String| FileError {
            line: line_no,
            message,
        };
        if kind != Kind::AddressMap && !values.is_empty() {
            return Err(fail(format!(
                "one entry per line expected, got \"{content}\""
            )));
        }
        match kind {
            Kind::Addresses => {
                let a = Address::parse(key)
                    .map_err(|e| fail(format!("invalid address \"{key}\": {e}")))?;
                index.exact.insert(a.to_string());
            }
            Kind::Domains => {
                match DomainPattern::parse(key)
                    .map_err(|e| fail(format!("invalid domain \"{key}\": {e}")))?
                {
                    DomainPattern::Exact(d) => index.exact.insert(d.to_string()),
                    DomainPattern::Subdomains(d) => index.subdomains.insert(d.to_string()),
                };
            }
            Kind::Networks => {
                let net =
                    parse_network(key).ok_or_else(|| fail(format!("invalid network \"{key}\"")))?;
                index.networks.insert(net, ());
            }
            Kind::AddressMap => {
                if values.is_empty() {
                    return Err(fail(format!(
                        "\"{key}\" names no address (expected \"login address...\")"
                    )));
                }
                let mut owned = Vec::with_capacity(values.len());
                for v in values {
                    owned.push(
                        owned_address(v).ok_or_else(|| fail(format!("invalid address \"{v}\"")))?,
                    );
                }
                index.map.entry(key.to_string()).or_default().extend(owned);
            }
        }
        index.entries += 1;
    }
    Ok(index)
}

/// An address a login may send as, in canonical text, or `@domain` for
/// every address of a domain.
pub fn owned_address(v: &str) -> Option<String> {
    match v.strip_prefix('@') {
        Some(d) => Domain::parse(d).ok().map(|d| format!("@{d}")),
        None => Address::parse(v).ok().map(|a| a.to_string()),
    }
}

impl FileIndex {
    /// Whether the list holds this key (an address's canonical text, a
    /// domain, a login of a map).
    pub fn contains(&self, key: &str) -> bool {
        self.exact.contains(key) || self.map.contains_key(key)
    }

    /// Whether a domain is listed, itself or under a `*.parent` entry.
    pub fn has_domain(&self, domain: &Domain) -> bool {
        self.exact.contains(domain.as_str())
            || domain.parents().any(|p| self.subdomains.contains(p))
    }

    /// The exact domains of a domain list, sorted.
    pub fn domains(&self) -> Vec<Domain> {
        let mut v: Vec<Domain> = self
            .exact
            .iter()
            .filter_map(|d| Domain::parse(d).ok())
            .collect();
        v.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        v
    }

    pub fn has_ip(&self, ip: IpAddr) -> bool {
        self.networks.holds(crate::address::canonical_ip(ip))
    }

    /// A map's values for a key.
    pub fn values(&self, key: &str) -> Option<&[String]> {
        self.map.get(key).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_maps() {
        let a = parse(
            "# senders\nnoreply@Example.COM\n\n\"billing\"@example.com  # quoted\n",
            Kind::Addresses,
        )
        .unwrap();
        assert!(a.contains("noreply@example.com"));
        assert!(a.contains("billing@example.com"));
        assert_eq!(a.entries, 2);

        let d = parse("example.com\n*.example.org\n", Kind::Domains).unwrap();
        let dom = |s: &str| Domain::parse(s).unwrap();
        assert!(d.has_domain(&dom("example.com")));
        assert!(d.has_domain(&dom("a.b.example.org")));
        assert!(!d.has_domain(&dom("example.org")));
        assert!(!d.has_domain(&dom("evilexample.org")));

        let n = parse("10.1.2.0/24\n10.9.9.9\n", Kind::Networks).unwrap();
        assert!(n.has_ip("10.1.2.200".parse().unwrap()));
        assert!(n.has_ip("10.9.9.9".parse().unwrap()));
        assert!(!n.has_ip("10.9.9.8".parse().unwrap()));

        let m = parse(
            "alice alice@example.com, a.smith@example.com\nbob @sales.example.com\nalice shared@example.com\n",
            Kind::AddressMap,
        )
        .unwrap();
        assert_eq!(
            m.values("alice").unwrap(),
            [
                "alice@example.com",
                "a.smith@example.com",
                "shared@example.com"
            ]
        );
        assert_eq!(m.values("bob").unwrap(), ["@sales.example.com"]);
        assert!(m.values("carol").is_none());
    }

    #[test]
    fn a_bad_line_refuses_the_file() {
        let cases: &[(&str, Kind, u64, &str)] = &[
            (
                "a@example.com\nnot-an-address\n",
                Kind::Addresses,
                2,
                "invalid address \"not-an-address\"",
            ),
            (
                "a@example.com b@example.com\n",
                Kind::Addresses,
                1,
                "one entry per line",
            ),
            (
                "example.com\nexa mple.com\n",
                Kind::Domains,
                2,
                "one entry per line",
            ),
            (
                "10.0.0.0/8\n10.1.2.7/24\n",
                Kind::Networks,
                2,
                "invalid network",
            ),
            ("alice\n", Kind::AddressMap, 1, "names no address"),
            (
                "alice a@example.com nope\n",
                Kind::AddressMap,
                1,
                "invalid address \"nope\"",
            ),
        ];
        for (text, kind, line, msg) in cases {
            let e = parse(text, *kind).unwrap_err();
            assert_eq!(e.line, *line, "{text}");
            assert!(e.message.contains(msg), "{text}: {}", e.message);
        }
    }
}
