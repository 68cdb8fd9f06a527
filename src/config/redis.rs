//! `rate_limits.redis`: the shared store of the gateways (counters,
//! incidents, caches), by URL or through Sentinel, with TLS and ACL.

use super::raw::Spanned;
use super::raw::Text;
use super::Validator;
use serde::Deserialize;
use std::time::Duration;

/// The Redis server that the gateways share (limits, incidents, caches), by `url` or through
/// `sentinel`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://HOST:PORT`, `rediss://HOST:PORT` (TLS) or `unix:///PATH` (default
    /// `redis://127.0.0.1:6379`). A password in the URL is an error: use `password_file`.
    #[serde(default)]
    pub url: Option<Text>,
    /// Prefix of every key written (default `egress:`).
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// When Redis fails: `local` (default), `accept` or `tempfail`. An open incident stays
    /// enforced whatever this says.
    #[serde(default)]
    pub on_failure: Option<super::OnFailure>,
    /// The longest wait for one request (default `250ms`).
    #[serde(default)]
    pub timeout: Option<Text>,
    /// How long a gateway's open connections count without being renewed: after it, a dead
    /// gateway's stop counting (default `60s`). A connection's place, given back, is kept
    /// 100 ms for the client's next connection, and counts meanwhile.
    #[serde(default)]
    pub lease: Option<Text>,
    /// How much of a limit a gateway may take ahead for a busy key, as a share of the limit's
    /// count, `0%` to `10%` (default `1%`, at most 64 messages): for a key whose budget stays
    /// at most half used, a gateway charges that many more in the same call and spends them in
    /// process for up to a second, so a busy sender costs one Redis round trip per few
    /// messages. They are charged in Redis before they are spent: the gateways together never
    /// pass a limit, and may reach it early by at most that share for each gateway. `0%`: every
    /// check in Redis.
    #[serde(default)]
    pub reserve: Option<Text>,
    /// For `rediss://`: the authority that signed Redis's certificate (default: the system's).
    #[serde(default)]
    pub ca_file: Option<Text>,
    /// An ACL user.
    #[serde(default)]
    pub username: Option<Text>,
    /// A file whose first line is the password.
    #[serde(default)]
    pub password_file: Option<Text>,
    /// Instead of `url`: the sentinels that name the master. The master is asked of them again
    /// after every failure, so a promoted replica is found without a restart.
    #[serde(default)]
    pub sentinel: Option<Spanned<RawSentinel>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    /// (required) The sentinels, `HOST:PORT` or `redis[s]://HOST:PORT`, all with TLS or all
    /// without.
    pub nodes: Vec<Text>,
    /// (required) The name the sentinels monitor the master by.
    pub master_name: Text,
    /// The sentinels' own ACL user, if they ask for one.
    #[serde(default)]
    pub username: Option<Text>,
    /// A file whose first line is the sentinels' password.
    #[serde(default)]
    pub password_file: Option<Text>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, schemars::JsonSchema)]
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
    /// `reserve`, in thousandths of a limit's count.
    pub reserve: u16,
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

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "egress:".into(),
            on_failure: OnFailure::Local,
            timeout: DEFAULT_REDIS_TIMEOUT,
            lease: DEFAULT_REDIS_LEASE,
            reserve: DEFAULT_REDIS_RESERVE,
            ca_pem: None,
            username: None,
            password: None,
            sentinel: None,
        }
    }
}

/// Default `rate_limits.redis.timeout`: Redis answers in well under a
/// millisecond on a LAN; 250 ms means it is in trouble, and the MTA should
/// not wait longer for a verdict.
const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// Default `rate_limits.redis.reserve`: 1% of a limit's count.
const DEFAULT_REDIS_RESERVE: u16 = 10;

/// Default `rate_limits.redis.lease`: renewed every third of it.
const DEFAULT_REDIS_LEASE: Duration = Duration::from_secs(60);

impl Validator {
    pub(super) fn redis(&mut self, r: &RawRedis) -> RedisSettings {
        let mut out = RedisSettings::default();
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
            out.url = url.value.clone();
        }
        if let Some(sentinel) = &r.sentinel {
            if let Some(url) = &r.url {
                self.error(
                    url.referenced.line(),
                    "rate_limits.redis.url",
                    "give either a url or sentinel, not both: with sentinel, the sentinels name the master",
                );
            }
            out.sentinel = self.sentinel(sentinel);
        }
        if let Some(ca) = &r.ca_file {
            match crate::files::read_bounded(std::path::Path::new(&ca.value), 1 << 20) {
                Ok(pem)
                    if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") =>
                {
                    out.ca_pem = Some(pem);
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
            let tls = match &out.sentinel {
                Some(s) => s.tls(),
                None => out.url.starts_with("rediss://"),
            };
            if !tls {
                self.error(
                    ca.referenced.line(),
                    "rate_limits.redis.ca_file",
                    "a CA file is for TLS: the url (or the sentinels) must start with rediss://",
                );
            }
        }
        out.username = r.username.as_ref().map(|u| u.value.clone());
        out.password = r
            .password_file
            .as_ref()
            .and_then(|p| self.secret_file("rate_limits.redis.password_file", p));
        if let Some(p) = &r.key_prefix {
            out.key_prefix = p.clone();
        }
        out.on_failure = r.on_failure.unwrap_or_default();
        if let Some(t) = &r.timeout {
            out.timeout = self
                .duration("rate_limits.redis.timeout", t, super::NONZERO)
                .unwrap_or(DEFAULT_REDIS_TIMEOUT);
        }
        if let Some(t) = &r.lease {
            out.lease = self
                .duration("rate_limits.redis.lease", t, super::NONZERO)
                .unwrap_or(DEFAULT_REDIS_LEASE);
        }
        if let Some(t) = &r.reserve {
            let pct = t
                .value
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok());
            match pct {
                Some(p) if (0.0..=10.0).contains(&p) => out.reserve = (p * 10.0).round() as u16,
                _ => self.error(
                    t.referenced.line(),
                    "rate_limits.redis.reserve",
                    format!("expected a share from 0% to 10%, got \"{}\"", t.value),
                ),
            }
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
}
