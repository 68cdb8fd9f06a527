//! The `rate_limits` section: defaults, overrides, backend.

use super::raw::RawCustomLimit;
use super::raw::Spanned;
use super::raw::Text;
use super::redis::RawRedis;
use super::redis::RedisSettings;
use super::Validator;
use crate::address::{Address, DomainPattern};
use crate::rate::{parse_limit, Limit, LimitName, Rate};
use ipnet::IpNet;
use serde::Deserialize;

/// Rate limits. Each is a rate (`N/s`, `N/m`, `N/h`, `N/d`, `N/w`, a period of several units
/// such as `N/10m`, or `unlimited`); over one, the message gets a 4xx with the time to wait. A
/// refused attempt consumes no quota.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    /// `local` (default: counters in this process) or `redis` (shared by every gateway that
    /// uses the same Redis).
    #[serde(default)]
    pub backend: Option<super::Backend>,
    /// The Redis server of `backend: redis`.
    #[serde(default)]
    pub redis: RawRedis,
    /// Tracked (limit, key) pairs in the process (default 1000000, about 40 MB at most). A key
    /// whose budget is full again is forgotten (it holds nothing); at the cap, a new key makes
    /// room by forgetting the sampled key nearest to a full budget.
    #[serde(default)]
    pub max_keys: Option<Spanned<usize>>,
    /// An older spelling of `admin.listen: inet:IP:PORT` (which needs `admin.token_file`).
    #[serde(default)]
    pub admin_listen: Option<Text>,
    /// How addresses, logins and clients are spelt as keys, for every limit, override, incident
    /// and `limits show|reset`: one person, one key.
    #[serde(default)]
    pub keys: RawLimitKeys,
    /// Log a key once per window when it has used this share of a budget (e.g. `80%`; also per
    /// custom limit), and count it in `egress_limit_warnings_total`.
    #[serde(default)]
    pub warn_at: Option<Text>,
    /// With `warn_at`: tell the incidents' webhook or mail too (default false).
    #[serde(default)]
    pub warn_notify: Option<Spanned<bool>>,
    /// Limits of one's own, on any key (`client`, `client_network`, `sender`, `sender_domain`,
    /// `user`, `class`, `recipient`, `recipient_domain`, or a pair `a+b`) and count; `mode:
    /// monitor` to size one first.
    #[serde(default)]
    pub custom: Vec<RawCustomLimit>,
    /// Other budgets for some keys; for each limit, the first override that sets it wins. An
    /// override applies to every client, trusted classes included.
    #[serde(default)]
    pub overrides: Vec<RawOverride>,
    /// New connections per client IP (e.g. `60/m`), counted at connect: `421 4.7.0`.
    #[serde(default)]
    pub connections_per_client: Option<Text>,
    /// Connections open at once per client IP (a count, e.g. `20`), counted at connect.
    #[serde(default)]
    pub concurrent_per_client: Option<Text>,
    /// Messages per client IP, counted at MAIL FROM: `451 4.7.1`.
    #[serde(default)]
    pub messages_per_client: Option<Text>,
    /// Messages per envelope sender, counted at MAIL FROM.
    #[serde(default)]
    pub messages_per_sender: Option<Text>,
    /// Messages per SASL login, counted at MAIL FROM.
    #[serde(default)]
    pub messages_per_user: Option<Text>,
    /// Messages per recipient, counted at each RCPT TO.
    #[serde(default)]
    pub messages_per_recipient: Option<Text>,
    /// Recipients per envelope sender, counted at each RCPT TO.
    #[serde(default)]
    pub recipients_per_sender: Option<Text>,
}

/// How addresses, logins and clients are spelt as keys: one person, one key.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimitKeys {
    /// Local parts and logins in lower case (default true).
    #[serde(default)]
    pub fold_case: Option<bool>,
    /// The subaddress delimiters: the local part ends at the first of them, unless it starts
    /// with one (default `+`; empty for none).
    #[serde(default)]
    pub delimiter: Option<Text>,
    /// An IPv6 client is counted by its network of this many bits (default 64; 128 for each
    /// address).
    #[serde(default)]
    pub ipv6_prefix: Option<Spanned<u8>>,
    /// Domains whose local parts are compared without dots (as Gmail's), e.g. `[gmail.com,
    /// googlemail.com]` (default none).
    #[serde(default)]
    pub ignore_dots_for: Vec<Text>,
}

/// Other budgets for the keys `match` names.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    /// (required) An IP or network, an address or `@domain`, a class name or a login.
    #[serde(rename = "match")]
    pub matcher: Text,
    /// New connections per client IP (e.g. `60/m`), counted at connect: `421 4.7.0`.
    #[serde(default)]
    pub connections_per_client: Option<Text>,
    /// Connections open at once per client IP (a count, e.g. `20`), counted at connect.
    #[serde(default)]
    pub concurrent_per_client: Option<Text>,
    /// Messages per client IP, counted at MAIL FROM: `451 4.7.1`.
    #[serde(default)]
    pub messages_per_client: Option<Text>,
    /// Messages per envelope sender, counted at MAIL FROM.
    #[serde(default)]
    pub messages_per_sender: Option<Text>,
    /// Messages per SASL login, counted at MAIL FROM.
    #[serde(default)]
    pub messages_per_user: Option<Text>,
    /// Messages per recipient, counted at each RCPT TO.
    #[serde(default)]
    pub messages_per_recipient: Option<Text>,
    /// Recipients per envelope sender, counted at each RCPT TO.
    #[serde(default)]
    pub recipients_per_sender: Option<Text>,
}

/// The seven limits of a `rate_limits` section or of an override, in
/// `LimitName::ALL` order.
pub trait RawLimits {
    fn limits(&self) -> [&Option<Text>; 7];
}

macro_rules! raw_limits {
    ($t:ty) => {
        impl RawLimits for $t {
            fn limits(&self) -> [&Option<Text>; 7] {
                [
                    &self.connections_per_client,
                    &self.concurrent_per_client,
                    &self.messages_per_client,
                    &self.messages_per_sender,
                    &self.messages_per_user,
                    &self.messages_per_recipient,
                    &self.recipients_per_sender,
                ]
            }
        }
    };
}
raw_limits!(RawRateLimits);
raw_limits!(RawOverride);

#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Counters in this process.
    #[default]
    Local,
    /// Counters in Redis, shared by every gateway that uses it.
    Redis,
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
    pub(super) fn ipv6_prefix(&mut self, key: &str, p: super::raw::Spanned<u8>) -> u8 {
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
    /// Where each override's `match` is found (built with `keys`).
    pub override_index: super::matchers::MatcherIndex,
}

impl RateLimits {
    /// Indexes the overrides, and each custom limit's, by what they match,
    /// with the keys as they are now.
    pub fn index_overrides(&mut self) {
        use super::matchers::MatcherIndex;
        self.override_index =
            MatcherIndex::new(self.overrides.iter().map(|o| &o.matcher), &self.keys);
        for c in &mut self.custom {
            c.override_index = MatcherIndex::new(c.overrides.iter().map(|(m, _)| m), &self.keys);
        }
    }
}

/// Default `rate_limits.max_keys`: one million tracked (limit, key) pairs,
/// about 40 MB of counters at most (see the performance page of the manual).
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            backend: Backend::Local,
            redis: RedisSettings::default(),
            keys: LimitKeys::default(),
            warn_at: None,
            warn_notify: false,
            custom: Vec::new(),
            max_keys: DEFAULT_MAX_KEYS,
            defaults: LimitSet::default(),
            overrides: Vec::new(),
            override_index: Default::default(),
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
        out.redis = self.redis(&raw.redis);
        out.index_overrides();
        out
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
