//! The `rate_limits` section: defaults, overrides, backend.

use super::raw::{RawLimits, RawRateLimits, RawSentinel, Text};
use super::Validator;
use crate::address::{Address, DomainPattern};
use crate::rate::{parse_limit, Limit, LimitName, Rate};
use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Counters in this process.
    #[default]
    Local,
    /// Counters in Redis, shared by every gateway that uses it.
    Redis,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Fall back to in-process counters until Redis answers again.
    #[default]
    Local,
    /// Let the message through unlimited.
    Accept,
    /// Answer 451 4.3.0 so the client retries.
    Tempfail,
}

/// One limit's setting.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Setting {
    Unlimited,
    Rate(Rate),
    /// `concurrent_per_client`: open connections at once.
    Count(u32),
}

/// The seven limits, each set or not, in `LimitName::ALL` order.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct LimitSet([Option<Setting>; 7]);

impl LimitSet {
    pub fn get(&self, name: LimitName) -> Option<Setting> {
        LimitName::ALL
            .iter()
            .position(|n| *n == name)
            .and_then(|i| self.0[i])
    }

    pub fn set(&mut self, name: LimitName, setting: Setting) {
        if let Some(i) = LimitName::ALL.iter().position(|n| *n == name) {
            self.0[i] = Some(setting);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
}

/// What an override matches.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Matcher {
    /// An IP or a CIDR network: the client.
    Network(IpNet),
    /// `@domain` (or `@*.domain`): the sender's domain, or the recipient's
    /// for `messages_per_recipient`.
    Domain(DomainPattern),
    /// An address: the sender, or the recipient for `messages_per_recipient`.
    Address(Address),
    /// A word: a class name or a SASL login.
    Word(String),
}

#[derive(Clone, Debug)]
pub struct Override {
    pub matcher: Matcher,
    pub limits: LimitSet,
}

#[derive(Clone, Debug, Eq, PartialEq)]
pub struct RedisSettings {
    pub url: String,
    pub key_prefix: String,
    pub on_failure: OnFailure,
    pub timeout: Duration,
    /// How long a gateway's count of a connection lives in Redis without
    /// being renewed: the time after which a dead gateway's connections stop
    /// counting.
    pub lease: Duration,
    /// `rediss://`: the authority that signed Redis's certificate (PEM),
    /// when not one the system trusts.
    pub ca_pem: Option<Vec<u8>>,
    /// An ACL user, and the password read from `password_file`.
    pub username: Option<String>,
    pub password: Option<super::sources::Secret>,
    /// The master that Sentinel names, instead of `url`.
    pub sentinel: Option<SentinelSettings>,
}

/// `rate_limits.redis.sentinel`: the sentinels to ask, and the name they
/// know the master by. The gateways ask them again whenever the master
/// fails, so they find a promoted replica by themselves.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct SentinelSettings {
    /// `redis://HOST:PORT` (or `rediss://` for TLS), one per sentinel.
    pub nodes: Vec<String>,
    pub master_name: String,
    /// The sentinels' own ACL user and password (`sentinel auth-user` /
    /// `requirepass` on the sentinels), when they ask for one.
    pub username: Option<String>,
    pub password: Option<super::sources::Secret>,
}

impl SentinelSettings {
    /// TLS to the sentinels and to the master they name.
    pub fn tls(&self) -> bool {
        self.nodes.iter().any(|n| n.starts_with("rediss://"))
    }
}

/// How addresses and logins are spelt as limit keys, so that one person
/// has one budget: `W1@`, `w1@` and `w1+news@` are one sender, `GINA` and
/// `gina` one login. Like Postfix's `recipient_delimiter`: the local part
/// ends at the first of the delimiter characters (unless it starts with
/// one).
///
/// Incidents key by the same functions, so that a person is one key for
/// both.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct LimitKeys {
    /// Local parts and logins compared in lower case.
    pub fold_case: bool,
    /// Subaddress delimiter characters (none: no subaddresses).
    pub delimiters: String,
    /// IPv6 clients are one key per prefix of this length.
    pub ipv6_prefix: u8,
    /// Domains whose mailboxes ignore dots in the local part
    /// (`j.ohn@gmail.com` is `john@gmail.com`).
    pub ignore_dots_for: Vec<crate::address::Domain>,
}

pub use crate::address::DEFAULT_IPV6_PREFIX;

impl Default for LimitKeys {
    fn default() -> Self {
        Self {
            fold_case: true,
            delimiters: "+".into(),
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            ignore_dots_for: Vec::new(),
        }
    }
}

impl super::Validator {
    /// An IPv6 prefix length for keys: 1 to 128.
    pub(super) fn ipv6_prefix(&mut self, key: &str, p: serde_saphyr::Spanned<u8>) -> u8 {
        if (1..=128).contains(&p.value) {
            p.value
        } else {
            self.error(
                p.referenced.line(),
                key,
                format!(
                    "expected a prefix length from 1 to 128 (64: one key per /64), got {}",
                    p.value
                ),
            );
            DEFAULT_IPV6_PREFIX
        }
    }
}

impl RateLimits {
    /// The warning level of a check's limit: its own `warn_at`, else the
    /// global one.
    pub fn warn_level(&self, name: crate::rate::LimitId) -> Option<u16> {
        let own = match name {
            crate::rate::LimitId::Custom(n) => self
                .custom
                .iter()
                .find(|c| c.name == n)
                .and_then(|c| c.warn_at),
            crate::rate::LimitId::Named(_) => None,
        };
        own.or(self.warn_at)
    }
}

impl LimitKeys {
    /// The local part as keys spell it, at its domain.
    fn local<'a>(
        &self,
        local: &'a str,
        domain: &crate::address::AddressDomain,
    ) -> std::borrow::Cow<'a, str> {
        let base = match local
            .char_indices()
            .find(|(_, c)| self.delimiters.contains(*c))
        {
            Some((i, _)) if i > 0 => &local[..i],
            _ => local,
        };
        let dots = base.contains('.')
            && domain
                .name()
                .is_some_and(|d| self.ignore_dots_for.contains(d));
        let fold = self.fold_case && base.chars().any(char::is_uppercase);
        if !dots && !fold {
            return std::borrow::Cow::Borrowed(base);
        }
        std::borrow::Cow::Owned(
            base.chars()
                .filter(|c| !(dots && *c == '.'))
                .flat_map(|c| {
                    let lower: Vec<char> = if fold {
                        c.to_lowercase().collect()
                    } else {
                        vec![c]
                    };
                    lower
                })
                .collect(),
        )
    }

    /// An address's key: `local@domain`, the domain canonical.
    pub fn address(&self, a: &Address) -> String {
        format!("{}@{}", self.local(&a.local, &a.domain), a.domain)
    }

    /// Whether two addresses have one key.
    pub fn same_address(&self, a: &Address, b: &Address) -> bool {
        a.domain == b.domain && self.local(&a.local, &a.domain) == self.local(&b.local, &b.domain)
    }

    /// A client's key (see [`crate::address::client_key`]).
    pub fn client(&self, ip: std::net::IpAddr) -> String {
        crate::address::client_key(ip, self.ipv6_prefix)
    }

    /// A login's key.
    pub fn login(&self, login: &str) -> String {
        if self.fold_case {
            login.chars().flat_map(char::to_lowercase).collect()
        } else {
            login.to_string()
        }
    }

    /// Whether two logins have one key.
    pub fn same_login(&self, a: &str, b: &str) -> bool {
        if self.fold_case {
            a.chars()
                .flat_map(char::to_lowercase)
                .eq(b.chars().flat_map(char::to_lowercase))
        } else {
            a == b
        }
    }
}

#[derive(Clone, Debug)]
pub struct RateLimits {
    pub keys: LimitKeys,
    /// `warn_at`, in thousandths of a budget, for every limit without its
    /// own.
    pub warn_at: Option<u16>,
    /// Warnings also go out as notices, through `incidents.notify`.
    pub warn_notify: bool,
    pub custom: Vec<super::CustomLimit>,
    pub backend: Backend,
    pub redis: RedisSettings,
    pub max_keys: usize,
    pub defaults: LimitSet,
    pub overrides: Vec<Override>,
}

/// Default `rate_limits.max_keys`: one million tracked (limit, key) pairs,
/// about 40 MB of counters at most (see the README's figures).
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;
/// Default `rate_limits.redis.timeout`: Redis answers in well under a
/// millisecond on a LAN; 250 ms means it is in trouble, and the MTA should
/// not wait longer for a verdict.
const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// Default `rate_limits.redis.lease`: renewed every third of it.
const DEFAULT_REDIS_LEASE: Duration = Duration::from_secs(60);

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            backend: Backend::Local,
            redis: RedisSettings {
                url: "redis://127.0.0.1:6379".into(),
                key_prefix: "egress:".into(),
                on_failure: OnFailure::Local,
                timeout: DEFAULT_REDIS_TIMEOUT,
                lease: DEFAULT_REDIS_LEASE,
                ca_pem: None,
                username: None,
                password: None,
                sentinel: None,
            },
            keys: LimitKeys::default(),
            warn_at: None,
            warn_notify: false,
            custom: Vec::new(),
            max_keys: DEFAULT_MAX_KEYS,
            defaults: LimitSet::default(),
            overrides: Vec::new(),
        }
    }
}

impl Validator {
    pub(super) fn rate_limits(&mut self, raw: RawRateLimits) -> RateLimits {
        let mut out = RateLimits {
            backend: raw.backend.unwrap_or_default(),
            ..RateLimits::default()
        };
        out.defaults = self.limit_set("rate_limits", &raw);
        out.warn_at = raw
            .warn_at
            .as_ref()
            .and_then(|w| self.warn_level("rate_limits.warn_at", w));
        out.warn_notify = raw.warn_notify.as_ref().is_some_and(|w| w.value);
        out.custom = self.custom_limits(&raw.custom);
        if let Some(f) = raw.keys.fold_case {
            out.keys.fold_case = f;
        }
        if let Some(p) = raw.keys.ipv6_prefix {
            out.keys.ipv6_prefix = self.ipv6_prefix("rate_limits.keys.ipv6_prefix", p);
        }
        for (i, d) in raw.keys.ignore_dots_for.iter().enumerate() {
            match crate::address::Domain::parse(&d.value) {
                Ok(domain) => out.keys.ignore_dots_for.push(domain),
                Err(e) => self.error(
                    d.referenced.line(),
                    format!("rate_limits.keys.ignore_dots_for[{i}]"),
                    format!("\"{}\": {e}", d.value),
                ),
            }
        }
        if let Some(d) = &raw.keys.delimiter {
            if d.value.chars().any(|c| {
                c.is_alphanumeric() || c.is_whitespace() || c.is_control() || "@\"\\".contains(c)
            }) {
                self.error(
                    d.referenced.line(),
                    "rate_limits.keys.delimiter",
                    format!(
                        "expected subaddress delimiter characters such as \"+\" or \"+-\" (no letters, digits, spaces, @, quotes or backslashes), got \"{}\"",
                        d.value
                    ),
                );
            } else {
                out.keys.delimiters = d.value.clone();
            }
        }
        for (i, o) in raw.overrides.iter().enumerate() {
            let key = format!("rate_limits.overrides[{i}]");
            let limits = self.limit_set(&key, o);
            if limits.is_empty() {
                self.error(
                    o.matcher.referenced.line(),
                    &key,
                    "an override must set at least one limit",
                );
            }
            if let Some(matcher) = self.matcher(&format!("{key}.match"), &o.matcher) {
                out.overrides.push(Override { matcher, limits });
            }
        }
        if let Some(n) = raw.max_keys {
            if n.value < 1000 {
                self.error(
                    n.referenced.line(),
                    "rate_limits.max_keys",
                    "must be at least 1000",
                );
            } else {
                out.max_keys = n.value;
            }
        }
        let r = &raw.redis;
        if let Some(url) = &r.url {
            if !(url.value.starts_with("redis://")
                || url.value.starts_with("rediss://")
                || url.value.starts_with("unix://")
                || url.value.starts_with("redis+unix://"))
            {
                self.error(
                    url.referenced.line(),
                    "rate_limits.redis.url",
                    format!(
                        "expected redis://HOST:PORT or unix:///PATH, got \"{}\"",
                        url.value
                    ),
                );
            }
            if let Ok(info) = redis::IntoConnectionInfo::into_connection_info(url.value.as_str()) {
                if info.redis_settings().password().is_some() {
                    self.error(
                        url.referenced.line(),
                        "rate_limits.redis.url",
                        "a password in the URL: put it in a file named by rate_limits.redis.password_file (and the user in username)",
                    );
                }
            }
            out.redis.url = url.value.clone();
        }
        if let Some(sentinel) = &r.sentinel {
            if let Some(url) = &r.url {
                self.error(
                    url.referenced.line(),
                    "rate_limits.redis.url",
                    "give either a url or sentinel, not both: with sentinel, the sentinels name the master",
                );
            }
            out.redis.sentinel = self.sentinel(sentinel);
        }
        if let Some(ca) = &r.ca_file {
            match crate::files::read_bounded(std::path::Path::new(&ca.value), 1 << 20) {
                Ok(pem)
                    if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") =>
                {
                    out.redis.ca_pem = Some(pem);
                }
                Ok(_) => self.error(
                    ca.referenced.line(),
                    "rate_limits.redis.ca_file",
                    format!("{} holds no PEM certificate", ca.value),
                ),
                Err(e) => self.error(
                    ca.referenced.line(),
                    "rate_limits.redis.ca_file",
                    format!("cannot read {}: {e}", ca.value),
                ),
            }
            let tls = match &out.redis.sentinel {
                Some(s) => s.tls(),
                None => out.redis.url.starts_with("rediss://"),
            };
            if !tls {
                self.error(
                    ca.referenced.line(),
                    "rate_limits.redis.ca_file",
                    "a CA file is for TLS: the url (or the sentinels) must start with rediss://",
                );
            }
        }
        out.redis.username = r.username.as_ref().map(|u| u.value.clone());
        out.redis.password = r
            .password_file
            .as_ref()
            .and_then(|p| self.secret_file("rate_limits.redis.password_file", p));
        if let Some(p) = &r.key_prefix {
            out.redis.key_prefix = p.clone();
        }
        out.redis.on_failure = r.on_failure.unwrap_or_default();
        if let Some(t) = &r.timeout {
            out.redis.timeout = self
                .duration("rate_limits.redis.timeout", t, super::NONZERO)
                .unwrap_or(DEFAULT_REDIS_TIMEOUT);
        }
        if let Some(t) = &r.lease {
            out.redis.lease = self
                .duration("rate_limits.redis.lease", t, super::NONZERO)
                .unwrap_or(DEFAULT_REDIS_LEASE);
        }
        out
    }

    /// `rate_limits.redis.sentinel`: its nodes as URLs (a bare `HOST:PORT`
    /// is `redis://HOST:PORT`), all with TLS or all without.
    fn sentinel(&mut self, raw: &Spanned<RawSentinel>) -> Option<SentinelSettings> {
        let line = raw.referenced.line();
        let mut nodes = Vec::new();
        for node in &raw.value.nodes {
            let v = node.value.trim();
            let url = if v.contains("://") {
                v.to_string()
            } else {
                format!("redis://{v}")
            };
            let key = "rate_limits.redis.sentinel.nodes";
            let parsed = redis::IntoConnectionInfo::into_connection_info(url.as_str());
            match parsed {
                Ok(info)
                    if (url.starts_with("redis://") || url.starts_with("rediss://"))
                        && url.rsplit_once(':').is_some_and(|(_, p)| {
                            p.trim_end_matches('/').parse::<u16>().is_ok()
                        }) =>
                {
                    if info.redis_settings().password().is_some() {
                        self.error(
                            node.referenced.line(),
                            key,
                            "a password in the URL: put it in a file named by rate_limits.redis.sentinel.password_file",
                        );
                    }
                    nodes.push(url);
                }
                _ => self.error(
                    node.referenced.line(),
                    key,
                    format!("expected HOST:PORT or redis[s]://HOST:PORT, got \"{v}\""),
                ),
            }
        }
        if raw.value.nodes.is_empty() {
            self.error(
                line,
                "rate_limits.redis.sentinel.nodes",
                "list at least one sentinel (three, on separate machines, for a quorum)",
            );
        }
        let tls = nodes.iter().filter(|n| n.starts_with("rediss://")).count();
        if tls != 0 && tls != nodes.len() {
            self.error(
                line,
                "rate_limits.redis.sentinel.nodes",
                "some sentinels with rediss:// and some without: use TLS for all or none",
            );
        }
        let master_name = raw.value.master_name.value.trim().to_string();
        if master_name.is_empty() || master_name.contains(char::is_whitespace) {
            self.error(
                raw.value.master_name.referenced.line(),
                "rate_limits.redis.sentinel.master_name",
                format!(
                    "expected one word, the name the sentinels monitor the master by (`sentinel monitor NAME ...`), got \"{}\"",
                    raw.value.master_name.value
                ),
            );
        }
        let password = raw
            .value
            .password_file
            .as_ref()
            .and_then(|p| self.secret_file("rate_limits.redis.sentinel.password_file", p));
        Some(SentinelSettings {
            nodes,
            master_name,
            username: raw.value.username.as_ref().map(|u| u.value.clone()),
            password,
        })
    }

    /// `80%`: in thousandths, between 1% and 99%.
    pub(super) fn warn_level(&mut self, key: &str, t: &Text) -> Option<u16> {
        let v = t.value.trim();
        let pct = v
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok());
        match pct {
            Some(p) if (1.0..=99.0).contains(&p) => Some((p * 10.0).round() as u16),
            _ => {
                self.error(
                    t.referenced.line(),
                    key,
                    format!("expected a percentage between 1% and 99%, such as 80%, got \"{v}\""),
                );
                None
            }
        }
    }

    fn limit_set(&mut self, key: &str, raw: &impl RawLimits) -> LimitSet {
        let mut set = LimitSet::default();
        for (name, value) in LimitName::ALL.iter().zip(raw.limits()) {
            let Some(v) = value else { continue };
            let k = format!("{key}.{name}");
            let line = v.referenced.line();
            if *name == LimitName::ConcurrentPerClient {
                let s = v.value.trim();
                if s.eq_ignore_ascii_case("unlimited") || s.starts_with('-') {
                    set.set(*name, Setting::Unlimited);
                } else {
                    match s.parse::<u32>() {
                        Ok(n) if n > 0 => set.set(*name, Setting::Count(n)),
                        _ => self.error(
                            line,
                            k,
                            format!(
                                "expected a number of connections or unlimited, got \"{}\"",
                                v.value
                            ),
                        ),
                    }
                }
                continue;
            }
            match parse_limit(&v.value) {
                Ok(Limit::Unlimited) => set.set(*name, Setting::Unlimited),
                Ok(Limit::Rate(r)) => set.set(*name, Setting::Rate(r)),
                Err(e) => self.error(line, k, e.to_string()),
            }
        }
        set
    }

    pub(super) fn matcher(&mut self, key: &str, raw: &Text) -> Option<Matcher> {
        let s = raw.value.trim();
        let line = raw.referenced.line();
        let bad = |v: &mut Self, why: String| {
            v.error(line, key, why);
            None
        };
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            return Some(Matcher::Network(IpNet::from(ip)));
        }
        if s.contains('/') {
            return match s.parse::<IpNet>() {
                Ok(n) if n.trunc() == n => Some(Matcher::Network(n)),
                _ => bad(self, format!("invalid network \"{s}\"")),
            };
        }
        if let Some(domain) = s.strip_prefix('@') {
            return match DomainPattern::parse(domain) {
                Ok(d) => Some(Matcher::Domain(d)),
                Err(e) => bad(self, format!("invalid domain \"{s}\": {e}")),
            };
        }
        if s.contains('@') {
            return match Address::parse(s) {
                Ok(a) => Some(Matcher::Address(a)),
                Err(e) => bad(self, format!("invalid address \"{s}\": {e}")),
            };
        }
        if s.is_empty() || s.contains(char::is_whitespace) {
            return bad(self, format!("expected an IP, a network, @domain, an address, a class name or a login, got \"{s}\""));
        }
        Some(Matcher::Word(s.to_string()))
    }
}
