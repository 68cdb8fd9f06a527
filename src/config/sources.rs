//! The `sources` section: named lookups (a file, an LDAP directory) that
//! stand wherever a list or a map is taken, with their caches; and the
//! sender and recipient verification settings that use them.

use super::list_file::{self as file, FileIndex, Stamp};
use super::raw::Spanned;
use super::raw::{RawCache, RawLdap, RawList, RawSource, RawVerify, Text};
use super::sets::{Indexed, Set};
use super::Validator;
use indexmap::IndexMap;
use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

/// What a source holds, as the places that use it need it.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Kind {
    Addresses,
    Domains,
    Networks,
    /// Login -> the addresses it may send as.
    AddressMap,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Addresses => "addresses",
            Kind::Domains => "domains",
            Kind::Networks => "networks",
            Kind::AddressMap => "a login map",
        })
    }
}

/// A list written inline, or the name of the source that holds it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Entries<T: Indexed> {
    Inline(Set<T>),
    Source(String),
}

impl<T: Indexed> Entries<T> {
    /// The inline entries, when the list is written in the file.
    pub fn inline(&self) -> Option<&[T]> {
        match self {
            Entries::Inline(v) => Some(v),
            Entries::Source(_) => None,
        }
    }
}

impl<T: Indexed + fmt::Display> fmt::Display for Entries<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entries::Inline(v) => {
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                Ok(())
            }
            Entries::Source(name) => write!(f, "source {name}"),
        }
    }
}

/// How long answers are kept, and how many.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct CacheSettings {
    /// For an entry found.
    pub ttl: Duration,
    /// For a key not found.
    pub negative_ttl: Duration,
    pub max_entries: u64,
}

impl CacheSettings {
    /// A directory lookup: like Postfix's proxymap users expect, minutes.
    pub const SOURCE: Self = Self {
        ttl: Duration::from_secs(600),
        negative_ttl: Duration::from_secs(60),
        max_entries: 100_000,
    };
    /// A callout: Exim's defaults (a day found, two hours not found).
    pub const CALLOUT: Self = Self {
        ttl: Duration::from_secs(86_400),
        negative_ttl: Duration::from_secs(7_200),
        max_entries: 100_000,
    };
}

/// A secret read from a file: never printed.
#[derive(Clone, Eq, PartialEq)]
pub struct Secret(pub String);

impl Validator {
    /// A secret's file: its first line. An unreadable file is an error
    /// naming the key.
    pub(super) fn secret_file(&mut self, key: &str, p: &Text) -> Option<Secret> {
        let path = PathBuf::from(&p.value);
        match crate::files::read_bounded(&path, 4096) {
            Ok(b) => {
                let s = String::from_utf8_lossy(&b);
                Some(Secret(
                    s.lines().next().unwrap_or_default().trim_end().to_string(),
                ))
            }
            Err(e) => {
                self.error(
                    p.referenced.line(),
                    key,
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum LdapScope {
    Base,
    One,
    Sub,
}

#[derive(Clone, Debug, Eq, PartialEq)]
pub struct LdapSettings {
    /// Tried in order; the one that answered last is tried first.
    pub urls: Vec<String>,
    pub bind_dn: Option<String>,
    pub password: Option<Secret>,
    pub base: String,
    /// With `%s` standing for the key, escaped as RFC 4515 says.
    pub filter: String,
    /// The attributes whose values a map returns; none for a list.
    pub attributes: Vec<String>,
    pub scope: LdapScope,
    /// For one server: connecting, binding and searching.
    pub timeout: Duration,
    pub starttls: bool,
    /// Trusted certificate authorities (PEM) for ldaps:// and StartTLS;
    /// the system's when unset.
    pub ca_file: Option<PathBuf>,
}

pub const DEFAULT_LDAP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub enum SourceBackend {
    /// The file's contents as read when the configuration was loaded; the
    /// daemon reads it again when it changes.
    File {
        path: PathBuf,
        contents: Arc<FileIndex>,
        stamp: Option<Stamp>,
    },
    Ldap(LdapSettings),
}

impl PartialEq for SourceBackend {
    /// Two file sources are the same source when they read the same file.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SourceBackend::File { path: a, .. }, SourceBackend::File { path: b, .. }) => a == b,
            (SourceBackend::Ldap(a), SourceBackend::Ldap(b)) => a == b,
            _ => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SourceSettings {
    pub name: String,
    pub kind: Kind,
    pub backend: SourceBackend,
    pub cache: CacheSettings,
}

/// How an address is verified to exist.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum VerifyBy {
    /// The address is in this source (of addresses).
    Source(String),
    /// The mail store says so, asked over SMTP.
    Callout(CalloutSettings),
}

#[derive(Clone, Debug, Eq, PartialEq)]
pub struct CalloutSettings {
    /// HOST:PORT of the internal mail stores, tried in order.
    pub hosts: Vec<String>,
    /// For one host, the whole dialogue.
    pub timeout: Duration,
    /// The name we give in EHLO.
    pub helo: String,
}

pub const DEFAULT_CALLOUT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Verify {
    pub by: VerifyBy,
    /// For callouts (a source has its own cache).
    pub cache: CacheSettings,
}

/// A place that names a source, to check it exists and holds what the
/// place needs.
pub(super) struct SourceUse {
    pub name: String,
    pub kind: Kind,
    pub key: String,
    pub line: u64,
}

impl Validator {
    /// Records that `key` takes its entries from a source.
    fn use_source(&mut self, key: &str, name: &Text, kind: Kind) -> String {
        self.source_uses.push(SourceUse {
            name: name.value.clone(),
            kind,
            key: key.to_string(),
            line: name.referenced.line(),
        });
        name.value.clone()
    }

    /// A list of domain patterns, inline or from a source.
    pub(super) fn domain_list(
        &mut self,
        key: &str,
        raw: &RawList,
    ) -> Entries<crate::address::DomainPattern> {
        match raw {
            RawList::Items(items) => Entries::Inline(self.domains(key, items).into()),
            RawList::Source(name) => Entries::Source(self.use_source(key, name, Kind::Domains)),
        }
    }

    pub(super) fn network_list(&mut self, key: &str, raw: &RawList) -> Entries<ipnet::IpNet> {
        match raw {
            RawList::Items(items) => {
                let mut out = Vec::new();
                for (j, c) in items.iter().enumerate() {
                    match super::parse_network(&c.value) {
                        Some(n) => out.push(n),
                        None => self.error(
                            c.referenced.line(),
                            format!("{key}[{j}]"),
                            format!("invalid network \"{}\"", c.value),
                        ),
                    }
                }
                Entries::Inline(out.into())
            }
            RawList::Source(name) => Entries::Source(self.use_source(key, name, Kind::Networks)),
        }
    }

    /// A source of addresses or a login map, named by `{ source: NAME }`.
    pub(super) fn source_ref(&mut self, key: &str, name: &Text, kind: Kind) -> String {
        self.use_source(key, name, kind)
    }

    /// `verify_sender` or `verify_recipients`.
    pub(super) fn verify(&mut self, key: &str, raw: &Spanned<RawVerify>) -> Option<Verify> {
        let line = raw.referenced.line();
        let r = &raw.value;
        let cache = self.cache(
            &format!("{key}.cache"),
            r.cache.as_ref(),
            CacheSettings::CALLOUT,
        );
        let by = match (&r.source, &r.callout) {
            (Some(name), None) => {
                if r.timeout.is_some() || r.helo.is_some() {
                    self.error(line, key, "timeout and helo are for a callout");
                }
                VerifyBy::Source(self.use_source(&format!("{key}.source"), name, Kind::Addresses))
            }
            (None, Some(hosts)) => {
                let mut out = Vec::new();
                for (i, h) in hosts.iter().enumerate() {
                    let v = h.value.trim();
                    let ok = v.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok()
                    });
                    if ok {
                        out.push(v.to_string());
                    } else {
                        self.error(
                            h.referenced.line(),
                            format!("{key}.callout[{i}]"),
                            format!("expected HOST:PORT of an internal mail store, got \"{v}\""),
                        );
                    }
                }
                if hosts.is_empty() {
                    self.error(
                        line,
                        format!("{key}.callout"),
                        "at least one mail store is needed",
                    );
                }
                let timeout = r
                    .timeout
                    .as_ref()
                    .and_then(|t| self.duration(&format!("{key}.timeout"), t, super::NONZERO))
                    .unwrap_or(DEFAULT_CALLOUT_TIMEOUT);
                let helo = r.helo.as_ref().map(|h| h.value.clone());
                VerifyBy::Callout(CalloutSettings {
                    hosts: out,
                    timeout,
                    helo: helo.unwrap_or_default(),
                })
            }
            _ => {
                self.error(
                    line,
                    key,
                    "expected { source: NAME } or { callout: [HOST:PORT] }",
                );
                return None;
            }
        };
        Some(Verify { by, cache })
    }

    fn cache(
        &mut self,
        key: &str,
        raw: Option<&RawCache>,
        default: CacheSettings,
    ) -> CacheSettings {
        let mut out = default;
        let Some(raw) = raw else { return out };
        if let Some(t) = &raw.ttl {
            if let Some(d) = self.duration(&format!("{key}.ttl"), t, super::NONZERO) {
                out.ttl = d;
            }
        }
        if let Some(t) = &raw.negative_ttl {
            if let Some(d) = self.duration(&format!("{key}.negative_ttl"), t, super::NONZERO) {
                out.negative_ttl = d;
            }
        }
        if let Some(n) = &raw.max_entries {
            if n.value == 0 {
                self.error(
                    n.referenced.line(),
                    format!("{key}.max_entries"),
                    "must be at least 1",
                );
            } else {
                out.max_entries = n.value;
            }
        }
        out
    }

    /// The declared sources, each given the kind its uses need; every use
    /// names a declared source.
    pub(super) fn sources(
        &mut self,
        raw: IndexMap<String, Spanned<RawSource>>,
    ) -> Vec<SourceSettings> {
        let uses = std::mem::take(&mut self.source_uses);
        for u in &uses {
            if !raw.contains_key(&u.name) {
                self.error(
                    u.line,
                    &u.key,
                    format!("no source named \"{}\" in sources", u.name),
                );
            }
        }
        let mut out = Vec::new();
        for (name, spanned) in raw {
            let line = spanned.referenced.line();
            let key = format!("sources.{name}");
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == ':') {
                self.error(
                    line,
                    &key,
                    "a source name is a word without spaces or colons",
                );
            }
            let mut kinds = uses.iter().filter(|u| u.name == name);
            let kind = match kinds.next() {
                None => {
                    self.warn(line, &key, "declared but used nowhere");
                    continue;
                }
                Some(first) => {
                    if let Some(other) = kinds.find(|u| u.kind != first.kind) {
                        self.error(
                            other.line,
                            &other.key,
                            format!(
                                "source \"{name}\" holds {} for {}, and cannot hold {} too",
                                first.kind, first.key, other.kind
                            ),
                        );
                    }
                    first.kind
                }
            };
            let r = spanned.value;
            let cache = self.cache(
                &format!("{key}.cache"),
                r.cache.as_ref(),
                CacheSettings::SOURCE,
            );
            let backend = match (r.file, r.ldap) {
                (Some(path), None) => {
                    let p = PathBuf::from(&path.value);
                    match file::load(&p, kind) {
                        Ok((index, stamp)) => SourceBackend::File {
                            path: p,
                            contents: Arc::new(index),
                            stamp: Some(stamp),
                        },
                        Err(e) => {
                            self.file_error(
                                &p,
                                e.line,
                                &format!("{key}.file"),
                                &e.message,
                                path.referenced.line(),
                            );
                            continue;
                        }
                    }
                }
                (None, Some(ldap)) => match self.ldap(&key, &ldap, kind) {
                    Some(l) => SourceBackend::Ldap(l),
                    None => continue,
                },
                _ => {
                    self.error(line, &key, "a source is { file: PATH } or { ldap: {...} }");
                    continue;
                }
            };
            out.push(SourceSettings {
                name,
                kind,
                backend,
                cache,
            });
        }
        out
    }

    /// An error in a file the configuration names: that file and its line
    /// when the line is known, else the configuration's line.
    fn file_error(
        &mut self,
        path: &std::path::Path,
        line: u64,
        key: &str,
        message: &str,
        config_line: u64,
    ) {
        if line == 0 {
            self.error(config_line, key, format!("{}: {message}", path.display()));
        } else {
            self.errors.push(super::ConfigError {
                file: path.to_path_buf(),
                line,
                key: key.to_string(),
                message: message.to_string(),
            });
        }
    }

    fn ldap(&mut self, key: &str, raw: &RawLdap, kind: Kind) -> Option<LdapSettings> {
        let k = format!("{key}.ldap");
        let line = raw.base.referenced.line();
        let url_line = raw.url.referenced.line();
        let mut urls = Vec::new();
        for (i, u) in raw.url.value.0.iter().enumerate() {
            let v = u.trim();
            let ok =
                (v.starts_with("ldap://") || v.starts_with("ldaps://")) && url_host(v).is_some();
            if ok {
                urls.push(v.to_string());
            } else {
                self.error(
                    url_line,
                    format!("{k}.url[{i}]"),
                    format!("expected ldap://HOST[:PORT] or ldaps://HOST[:PORT], got \"{v}\""),
                );
            }
        }
        if raw.url.value.0.is_empty() {
            self.error(
                url_line,
                format!("{k}.url"),
                "at least one server is needed",
            );
        }
        let password = raw
            .password_file
            .as_ref()
            .and_then(|p| self.secret_file(&format!("{k}.password_file"), p));
        if password.is_some() && raw.bind_dn.is_none() {
            self.error(line, format!("{k}.bind_dn"), "a password needs a bind_dn");
        }
        let filter = raw.filter.value.clone();
        if !filter.contains("%s") {
            self.error(
                raw.filter.referenced.line(),
                format!("{k}.filter"),
                "the filter must hold %s, where the key goes",
            );
        } else if ldap3::parse_filter(filter.replace("%s", "x")).is_err() {
            self.error(
                raw.filter.referenced.line(),
                format!("{k}.filter"),
                format!("invalid LDAP filter \"{filter}\""),
            );
        }
        let mut attributes: Vec<String> = Vec::new();
        if let Some(a) = &raw.attribute {
            attributes.push(a.value.clone());
        }
        attributes.extend(raw.attributes.iter().map(|a| a.value.clone()));
        if kind == Kind::AddressMap && attributes.is_empty() {
            self.error(
                line,
                format!("{k}.attribute"),
                "a login map needs the attribute that holds the addresses (e.g. mail)",
            );
        }
        let scope = match raw.scope.as_ref().map(|s| s.value.as_str()) {
            None | Some("sub") => LdapScope::Sub,
            Some("one") => LdapScope::One,
            Some("base") => LdapScope::Base,
            Some(other) => {
                self.error(
                    raw.scope.as_ref().map_or(line, |s| s.referenced.line()),
                    format!("{k}.scope"),
                    format!("expected sub, one or base, got \"{other}\""),
                );
                LdapScope::Sub
            }
        };
        let timeout = raw
            .timeout
            .as_ref()
            .and_then(|t| self.duration(&format!("{k}.timeout"), t, super::NONZERO))
            .unwrap_or(DEFAULT_LDAP_TIMEOUT);
        let ca_file = raw.ca_file.as_ref().map(|c| PathBuf::from(&c.value));
        if let Some(p) = &ca_file {
            if let Err(e) = crate::files::read_bounded(p, 1 << 20) {
                self.error(
                    raw.ca_file.as_ref().map_or(line, |c| c.referenced.line()),
                    format!("{k}.ca_file"),
                    format!("cannot read {}: {e}", p.display()),
                );
            }
        }
        Some(LdapSettings {
            urls,
            bind_dn: raw.bind_dn.as_ref().map(|b| b.value.clone()),
            password,
            base: raw.base.value.clone(),
            filter,
            attributes,
            scope,
            timeout,
            starttls: raw.starttls.unwrap_or(false),
            ca_file,
        })
    }
}

/// The host of an ldap:// URL, when it has one.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let host_port = rest.split('/').next()?;
    (!host_port.is_empty()).then_some(host_port)
}

/// Reads the raw list forms: `[a, b]` or `{ source: NAME }`.
impl RawList {
    pub fn is_empty_inline(&self) -> bool {
        matches!(self, RawList::Items(v) if v.is_empty())
    }
}
