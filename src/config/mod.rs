//! Configuration: the YAML file (see `raw`) validated into typed values.
//!
//! Loading is two-phase. serde reads the file and refuses unknown keys; then
//! every semantic check runs and collects all its errors, each with the file,
//! the line and the dotted key, so one run of `check-config` lists every
//! mistake at once.

mod admin;
mod antivirus;
mod bounces;
mod callouts;
mod classes;
mod console;
mod content;
mod custom_limits;
mod document;
mod headers;
mod incidents;
mod limits;
pub mod list_file;
mod listen;
mod mail_auth;
mod matchers;
mod raw;
mod reading;
mod redis;
mod reputation;
mod restart;
mod rotation;
mod sets;
mod signals;
mod sources;

pub use admin::{AdminListen, AdminSettings, DEFAULT_ADMIN_SOCKET};
pub use antivirus::{AntivirusSettings, Clamd, VirusAction};
pub use bounces::BounceSettings;
pub use classes::{AuthMatch, Class, Classes};
pub use console::{console_users_file, ConsoleListen, ConsoleMta, ConsoleSettings, ConsoleTls};
pub use content::{
    parse_size, ContentSettings, CustomRule, RspamdSettings, RuleWeights, UnreadableArchives,
};
pub use custom_limits::{Counter, CustomLimit, KeyPart};
pub use document::schema;
pub use incidents::{IncidentAction, IncidentSettings, MailNotify, Notify, Webhook};
pub use limits::{Backend, LimitKeys, LimitSet, Matcher, Override, RateLimits, Setting};
pub use listen::Listen;
pub use mail_auth::{CheckMode, DkimSettings, DnsSettings, OnUnsigned, SignMode};
pub use matchers::{MatcherIndex, Who};
pub use reading::{ConfigError, ConfigErrors};
pub use redis::{OnFailure, RedisSettings, SentinelSettings};
pub use reputation::{OnListed, ReputationSettings};
pub use restart::{restart_needed, RestartKey, RESTART_KEYS};
pub use rotation::{
    parse_tsig_key, Publish, Reveal, Rfc2136Settings, RotationSettings, SealKey, TsigKey,
};
pub use sets::{DomainMap, HostPatterns, Indexed, KeyMap, NetMap, Set};
pub use signals::{Count, KeyKind, Signal, Threshold};
pub use sources::{
    CacheSettings, CalloutSettings, Entries, Kind, LdapScope, LdapSettings, SourceBackend,
    SourceSettings, Verify, VerifyBy,
};

use crate::address::DomainPattern;
use document::RawConfig;
use ipnet::IpNet;
use raw::Text;
use serde::Deserialize;
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse what policy forbids.
    #[default]
    Enforce,
    /// Refuse nothing; log and count what would have been refused.
    Monitor,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// `451 4.3.0`: the client retries later, nothing is lost.
    #[default]
    Tempfail,
    /// Let the message through when a check itself fails.
    Accept,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnknownClients {
    /// Clients in no class may send only to `local_domains`.
    #[default]
    RelayDeny,
    /// Clients in no class may not send at all.
    Reject,
}

/// `from_header.inbound_own_domain`: what becomes of inbound mail (from a
/// client in no class) whose From: claims one of our own domains.
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InboundOwnDomain {
    /// Let it in: newsletters, ticket systems and other third parties
    /// legitimately send to our users as our domains.
    #[default]
    Accept,
    /// Refuse it: the classic spoof of a colleague or the CEO.
    Reject,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `key=value` fields after the message, one line per event.
    #[default]
    Text,
    /// One JSON object per line, the fields as its members.
    Json,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub listen: Listen,
    pub socket_mode: u32,
    pub mode: Mode,
    pub on_error: OnError,
    pub local_domains: Entries<DomainPattern>,
    pub classes: Classes,
    /// The named lookups, each with the kind its uses need.
    pub sources: Vec<SourceSettings>,
    /// Inbound mail (from a client in no class) to `local_domains`: the
    /// recipient must exist.
    pub verify_recipients: Option<Verify>,
    /// `verify_callouts.rate`: every callout of this gateway together;
    /// None: unlimited.
    pub verify_callouts: Option<crate::rate::Rate>,
    pub unknown_clients: UnknownClients,
    pub from_strict: bool,
    pub from_max_length: usize,
    pub inbound_own_domain: InboundOwnDomain,
    pub max_recipients: usize,
    pub log_format: LogFormat,
    pub max_connections: usize,
    pub milter_timeout: Duration,
    pub rate_limits: RateLimits,
    /// The addresses our mail leaves from (SPF, self-check).
    pub egress_ips: Vec<IpAddr>,
    /// This gateway's public host name (self-check).
    pub hostname: Option<crate::address::Domain>,
    pub dkim: DkimSettings,
    pub spf_check_egress: CheckMode,
    pub dns: DnsSettings,
    pub content: ContentSettings,
    /// Networks whose addresses must not leave in Received: lines.
    pub internal_networks: Set<IpNet>,
    /// Host names scrubbing treats as internal: `*.suffix` or an exact
    /// name, lower case.
    pub internal_hostnames: HostPatterns,
    pub strip_internal_received: bool,
    /// Headers removed from every message (names as configured).
    pub remove_headers: Vec<String>,
    /// Where Prometheus scrapes the metrics; off when unset.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub admin: AdminSettings,
    pub incidents: IncidentSettings,
    /// Virus scanning through clamd, when configured.
    pub antivirus: Option<AntivirusSettings>,
    pub dnsbl: Vec<crate::address::Domain>,
    /// The watch of our own reputation, when configured.
    pub reputation: Option<ReputationSettings>,
    /// Bounces read, dead recipients suppressed, when configured.
    pub bounces: Option<BounceSettings>,
    /// The web console, when configured.
    pub console: Option<ConsoleSettings>,
    /// What deserves attention but does not stop the configuration.
    pub warnings: Vec<ConfigError>,
}

/// Default `socket_mode`: the MTA's group may connect, others may not.
const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// Default `recipients.max_per_message`: Postfix's own
/// `smtpd_recipient_limit` is 1000; a gateway for applications and staff
/// rarely needs more than 100 per message, and bulk senders get an override.
const DEFAULT_MAX_RECIPIENTS: usize = 100;
/// Default `from_header.max_length`: a From: header is a handful of
/// mailboxes; 16 KiB leaves room for any legitimate one and bounds the
/// memory a hostile client can make us keep per message.
const DEFAULT_FROM_MAX_LENGTH: usize = 16 * 1024;
/// Default `milter.max_connections`: one milter connection per SMTP session
/// and per local submission. Postfix's default_process_limit is 100 per
/// service, and a gateway runs several services (25, 587, cleanup for local
/// mail); a connection over the limit waits for a free slot, and Postfix
/// gives up after milter_connect_timeout (30 s) with milter_default_action.
/// Each connection costs a few KiB, so the limit is generous.
const DEFAULT_MAX_CONNECTIONS: usize = 1000;
/// Default `milter.timeout`: same as libmilter, whose documentation advises
/// not to decrease it.
const DEFAULT_MILTER_TIMEOUT: Duration = Duration::from_secs(7210);

impl Config {
    /// The mode that applies to a class (its own, else the global one).
    pub fn mode_for(&self, class: Option<&Class>) -> Mode {
        class.and_then(|c| c.mode).unwrap_or(self.mode)
    }
}

impl Validator {
    fn new(path: &Path) -> Self {
        Self {
            file: path.to_path_buf(),
            errors: Vec::new(),
            warnings: Vec::new(),
            source_uses: Vec::new(),
        }
    }
}

struct Validator {
    file: PathBuf,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    /// Every place that names a source, checked once all are known.
    source_uses: Vec<sources::SourceUse>,
}

impl Validator {
    fn warn(&mut self, line: u64, key: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            file: self.file.clone(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    fn error(&mut self, line: u64, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// A duration (`250ms`, `30s`, `5m`, `2h`, `1d`) of at least `min`;
    /// an error naming `key` otherwise. Every duration key is read here.
    pub(super) fn duration(&mut self, key: &str, t: &Text, min: Duration) -> Option<Duration> {
        let message = match parse_duration(&t.value) {
            Some(d) if d >= min => return Some(d),
            Some(_) if min <= NONZERO => "must be more than 0".to_string(),
            Some(_) if min.subsec_millis() == 0 => format!("must be at least {}s", min.as_secs()),
            Some(_) => format!("must be at least {}ms", min.as_millis()),
            None => format!(
                "expected a duration such as 30s, 10m or 2h, got \"{}\"",
                t.value
            ),
        };
        self.error(t.referenced.line(), key, message);
        None
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let listen = self.listen(&raw.listen);
        let socket_mode = raw
            .socket_mode
            .as_ref()
            .and_then(|m| self.file_mode("socket_mode", m))
            .unwrap_or(DEFAULT_SOCKET_MODE);
        let local_domains = self.domain_list("local_domains", &raw.local_domains);
        if raw.local_domains.is_empty_inline() {
            self.error(1, "local_domains", "at least one local domain is needed");
        }
        let mut classes: Vec<Class> = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, c) in raw.classes.into_iter().enumerate() {
            let key = format!("classes[{i}]");
            if !names.insert(c.name.value.clone()) {
                self.error(
                    c.name.referenced.line(),
                    format!("{key}.name"),
                    format!("class name \"{}\" is used twice", c.name.value),
                );
            }
            let class = self.class(&key, c, &local_domains);
            classes.push(class);
        }
        let classes = Classes::new(classes);
        let max_recipients = self.at_least(
            raw.recipients.max_per_message,
            "recipients.max_per_message",
            1,
            DEFAULT_MAX_RECIPIENTS,
        );
        // RFC 5322 §2.1.1: a line may hold 998 characters; no shorter limit
        // makes sense for a header.
        let from_max_length = self.at_least(
            raw.from_header.max_length,
            "from_header.max_length",
            998,
            DEFAULT_FROM_MAX_LENGTH,
        );
        let max_connections = self.at_least(
            raw.milter.max_connections,
            "milter.max_connections",
            1,
            DEFAULT_MAX_CONNECTIONS,
        );
        let verify_recipients = raw
            .verify_recipients
            .as_ref()
            .and_then(|v| self.verify("verify_recipients", v));
        let verify_callouts = self.callouts(raw.verify_callouts.as_ref());
        let bounces = self.bounces(raw.bounces.as_ref());
        let console = self.console(raw.console.as_ref());
        let sources = self.sources(raw.sources);
        let admin = self.admin(&raw.admin, raw.rate_limits.admin_listen.as_ref());
        let incidents = self.incidents(raw.incidents);
        let antivirus = self.antivirus(raw.antivirus);
        let warn_notify = raw
            .rate_limits
            .warn_notify
            .as_ref()
            .map(|w| w.referenced.line());
        let rate_limits = self.rate_limits(raw.rate_limits);
        if let (Some(line), true) = (warn_notify, rate_limits.warn_notify) {
            if incidents.notify.webhook.is_none() && incidents.notify.mail.is_none() {
                self.error(
                    line,
                    "rate_limits.warn_notify",
                    "warnings are sent through incidents.notify, which sets no webhook and no mail",
                );
            }
        }
        let mut internal_networks = Vec::new();
        for (i, n) in raw.internal_networks.iter().enumerate() {
            match parse_network(&n.value) {
                Some(net) => internal_networks.push(net),
                None => self.error(
                    n.referenced.line(),
                    format!("internal_networks[{i}]"),
                    format!("invalid network \"{}\"", n.value),
                ),
            }
        }
        let content = self.content(&raw.content, &raw.attachments);
        let rotation_line = raw.dkim.rotation.as_ref().map(|r| r.referenced.line());
        let mut auth = self.mail_auth(mail_auth::MailAuthInput {
            egress: raw.egress_ips,
            hostname: raw.hostname,
            dkim: raw.dkim,
            spf: raw.spf,
            dns: raw.dns,
            selfcheck: raw.selfcheck,
        });
        if let (Backend::Redis, Some(r), Some(line)) = (
            rate_limits.backend,
            auth.dkim.rotation.as_mut(),
            rotation_line,
        ) {
            self.share_rotation(r, line);
        }
        let signing_domains = auth
            .dkim
            .keys
            .iter()
            .map(|k| k.domain.clone())
            .chain(auth.dkim.rotation.iter().flat_map(|r| r.domains.clone()))
            .collect();
        let reputation = self.reputation(
            raw.reputation.as_ref(),
            &auth.egress_ips,
            signing_domains,
            &classes,
        );
        let internal_hostnames = self.internal_hostnames(raw.internal_hostnames.as_deref());
        let remove_headers = self.remove_headers(&raw.headers.remove, &auth.dkim.headers);
        let metrics_listen = raw
            .metrics
            .listen
            .as_ref()
            .and_then(|l| match l.value.parse() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.error(
                        l.referenced.line(),
                        "metrics.listen",
                        format!("expected IP:PORT, got \"{}\"", l.value),
                    );
                    None
                }
            });
        let milter_timeout = raw
            .milter
            .timeout
            .as_ref()
            .and_then(|t| self.duration("milter.timeout", t, NONZERO))
            .unwrap_or(DEFAULT_MILTER_TIMEOUT);
        Config {
            path: self.file.clone(),
            listen,
            socket_mode,
            mode: raw.mode.map(|m| m.value).unwrap_or_default(),
            on_error: raw.on_error.unwrap_or_default(),
            local_domains,
            classes,
            sources,
            verify_recipients,
            verify_callouts,
            unknown_clients: raw.unknown_clients.unwrap_or_default(),
            from_strict: raw.from_header.strict.unwrap_or(true),
            from_max_length,
            inbound_own_domain: raw.from_header.inbound_own_domain.unwrap_or_default(),
            max_recipients,
            log_format: raw.log.format.unwrap_or_default(),
            max_connections,
            milter_timeout,
            rate_limits,
            egress_ips: auth.egress_ips,
            hostname: auth.hostname,
            dkim: auth.dkim,
            spf_check_egress: auth.spf_check_egress,
            dns: auth.dns,
            content,
            internal_networks: internal_networks.into(),
            internal_hostnames: HostPatterns::new(internal_hostnames),
            strip_internal_received: raw.headers.strip_internal_received.unwrap_or(true),
            remove_headers,
            metrics_listen,
            admin,
            incidents,
            antivirus,
            dnsbl: auth.dnsbl,
            reputation,
            bounces,
            console,
            warnings: std::mem::take(&mut self.warnings),
        }
    }

    /// A count that must be at least `min`; `default` when absent or wrong.
    fn at_least(
        &mut self,
        raw: Option<raw::Spanned<usize>>,
        key: &str,
        min: usize,
        default: usize,
    ) -> usize {
        match raw {
            Some(n) if n.value < min => {
                self.error(n.referenced.line(), key, format!("must be at least {min}"));
                default
            }
            Some(n) => n.value,
            None => default,
        }
    }

    /// An octal file mode such as "0660".
    fn file_mode(&mut self, key: &str, raw: &Text) -> Option<u32> {
        match u32::from_str_radix(raw.value.trim_start_matches("0o"), 8) {
            Ok(mode) if mode <= 0o777 => Some(mode),
            _ => {
                self.error(
                    raw.referenced.line(),
                    key,
                    format!("invalid octal file mode \"{}\"", raw.value),
                );
                None
            }
        }
    }

    fn domains(&mut self, key: &str, raw: &[Text]) -> Vec<DomainPattern> {
        let mut out = Vec::with_capacity(raw.len());
        for (i, d) in raw.iter().enumerate() {
            match DomainPattern::parse(&d.value) {
                Ok(p) => out.push(p),
                Err(e) => self.error(
                    d.referenced.line(),
                    format!("{key}[{i}]"),
                    format!("invalid domain \"{}\": {e}", d.value),
                ),
            }
        }
        out
    }
}

/// A network (`10.1.2.0/24`) or a single address (`10.1.3.7`, taken as /32
/// or /128). Host bits set under the prefix are refused: `10.1.2.7/24` is a
/// typo more often than an intent.
/// An address or a network, IPv4-mapped IPv6 written as the IPv4 it is
/// (clients are compared in that form: `::ffff:10.0.0.0/104` is
/// `10.0.0.0/8`).
pub(crate) fn parse_network(s: &str) -> Option<IpNet> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(IpNet::from(crate::address::canonical_ip(ip)));
    }
    let net = s.parse::<IpNet>().ok()?;
    if net.trunc() != net {
        return None;
    }
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, n.prefix_len() - 96)
                .ok()
                .map(IpNet::V4),
            None => Some(net),
        },
        _ => Some(net),
    }
}

/// The least a duration that must not be zero can be.
pub(super) const NONZERO: Duration = Duration::from_millis(1);

/// `30s`, `5m`, `2h`, `1d`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests;
