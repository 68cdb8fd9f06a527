//! How receivers authenticate our mail, and what the self-check asks of
//! DNS: the `dkim`, `spf`, `dns` and `selfcheck` sections, and
//! `egress_ips` / `hostname`.

use super::raw::Spanned;
use super::raw::{RawSelfcheck, Text};
use super::{Validator, NONZERO};
use crate::address::{Domain, DomainPattern};
use crate::dkim::{DkimKey, DEFAULT_HEADERS};
use serde::Deserialize;
use std::{
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::Arc,
    time::Duration,
};

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDkim {
    /// The signing keys, one per domain and selector.
    #[serde(default)]
    pub keys: Vec<RawDkimKey>,
    /// `from_domain` (default: sign with the keys of the From: domain, or of its nearest parent
    /// that has keys) or `off`.
    #[serde(default)]
    pub sign: Option<super::SignMode>,
    /// The headers signed (default: those RFC 6376 recommends, From: among them, each once more
    /// than present so that none can be added).
    #[serde(default)]
    pub headers: Option<Vec<String>>,
    /// A From: in a local domain that has no key: `accept` (default) or `tempfail`.
    #[serde(default)]
    pub on_unsigned: Option<super::OnUnsigned>,
    /// Signatures already on a message: `off` (default), `warn` or `reject` (`550 5.7.20`) when
    /// one does not verify.
    #[serde(default)]
    pub verify_existing: Option<super::CheckMode>,
    /// More signatures than this on a message are refused (default 5).
    #[serde(default)]
    pub max_signatures: Option<Spanned<usize>>,
    /// Keys made, published and replaced by the daemon itself (off when absent).
    #[serde(default)]
    pub rotation: Option<Spanned<super::rotation::RawRotation>>,
}

/// One DKIM key.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDkimKey {
    /// (required) The signing domain (`d=`).
    pub domain: Text,
    /// (required) The selector (`s=`): its record is `SELECTOR._domainkey.DOMAIN`.
    pub selector: Text,
    /// (required) The private key, PEM: RSA of 2048 bits or more, or Ed25519 (`egress-milter
    /// dkim-keygen` makes one).
    pub file: Text,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSpf {
    /// Would the MAIL FROM domain's SPF pass for `egress_ips`? `off` (default), `warn` or
    /// `reject` (`550 5.7.23`).
    #[serde(default)]
    pub check_egress: Option<super::CheckMode>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// Resolvers, `IP` or `IP:PORT` (default: those of /etc/resolv.conf).
    #[serde(default)]
    pub nameservers: Vec<Text>,
    /// The longest wait for an answer (default `5s`).
    #[serde(default)]
    pub timeout: Option<Text>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignMode {
    /// Sign with the key of the From: domain or its nearest parent.
    #[default]
    FromDomain,
    /// Sign nothing; the keys are still read when the configuration loads, and
    /// `selfcheck` still compares them with DNS.
    Off,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnUnsigned {
    /// A local From: domain without a key leaves unsigned.
    #[default]
    Accept,
    /// It is tempfailed (451 4.3.0) until a key is configured.
    Tempfail,
}

/// off | warn | reject, for checks that can only log or refuse.
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckMode {
    #[default]
    Off,
    Warn,
    Reject,
}

#[derive(Clone, Debug)]
pub struct DkimSettings {
    pub keys: Vec<Arc<DkimKey>>,
    pub sign: SignMode,
    pub headers: Vec<String>,
    pub on_unsigned: OnUnsigned,
    pub verify_existing: CheckMode,
    pub max_signatures: usize,
    pub rotation: Option<super::RotationSettings>,
}

#[derive(Clone, Debug, Eq, PartialEq)]
pub struct DnsSettings {
    /// Empty: the system's resolvers.
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
}

/// Default `dkim.max_signatures`: a message rarely carries more than two
/// (an ESP's and the author's); verifying each costs a DNS lookup and a
/// signature check, so more are not verified.
const DEFAULT_MAX_SIGNATURES: usize = 5;
/// Default `dns.timeout`: the MTA waits on the milter while we wait on DNS.
const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// The public DNSBLs a receiver is most likely to consult.
pub const DEFAULT_DNSBL: &[&str] = &[
    "zen.spamhaus.org",
    "bl.spamcop.net",
    "b.barracudacentral.org",
];

/// The raw sections `mail_auth` validates.
pub(super) struct MailAuthInput {
    pub egress: Vec<Text>,
    pub hostname: Option<Text>,
    pub dkim: RawDkim,
    pub spf: RawSpf,
    pub dns: RawDns,
    pub selfcheck: RawSelfcheck,
}

pub struct MailAuthSettings {
    pub egress_ips: Vec<IpAddr>,
    pub hostname: Option<Domain>,
    pub dkim: DkimSettings,
    pub spf_check_egress: CheckMode,
    pub dns: DnsSettings,
    pub dnsbl: Vec<Domain>,
}

impl Validator {
    pub(super) fn mail_auth(&mut self, raw: MailAuthInput) -> MailAuthSettings {
        let MailAuthInput {
            egress,
            hostname,
            dkim,
            spf,
            dns,
            selfcheck,
        } = raw;
        let hostname = hostname.as_ref();
        let mut egress_ips = Vec::new();
        for (i, ip) in egress.iter().enumerate() {
            match ip.value.parse::<IpAddr>() {
                Ok(a) => egress_ips.push(a),
                Err(_) => self.error(
                    ip.referenced.line(),
                    format!("egress_ips[{i}]"),
                    format!("invalid IP address \"{}\"", ip.value),
                ),
            }
        }
        let hostname = hostname.and_then(|h| match Domain::parse(&h.value) {
            Ok(d) if d.as_str().contains('.') => Some(d),
            _ => {
                self.error(
                    h.referenced.line(),
                    "hostname",
                    format!("\"{}\" is not a fully qualified host name", h.value),
                );
                None
            }
        });
        let spf_check_egress = spf.check_egress.unwrap_or_default();
        if spf_check_egress != CheckMode::Off && egress_ips.is_empty() {
            self.error(
                1,
                "spf.check_egress",
                "needs egress_ips: the addresses our mail leaves from",
            );
        }
        let mut keys = Vec::new();
        for (i, k) in dkim.keys.iter().enumerate() {
            let key = format!("dkim.keys[{i}]");
            let line = k.file.referenced.line();
            let domain = match Domain::parse(&k.domain.value) {
                Ok(d) => d,
                Err(e) => {
                    self.error(
                        k.domain.referenced.line(),
                        format!("{key}.domain"),
                        format!("invalid domain \"{}\": {e}", k.domain.value),
                    );
                    continue;
                }
            };
            let selector_ok = !k.selector.value.is_empty()
                && k.selector.value.split('.').all(|l| {
                    !l.is_empty()
                        && l.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                });
            if !selector_ok {
                self.error(
                    k.selector.referenced.line(),
                    format!("{key}.selector"),
                    format!("invalid selector \"{}\"", k.selector.value),
                );
                continue;
            }
            let path = self.resolve_path(&k.file.value);
            if let Ok(meta) = std::fs::metadata(&path) {
                if meta.permissions().mode() & 0o004 != 0 {
                    self.warn(
                        line,
                        format!("{key}.file"),
                        format!("{} is readable by every user: chmod o-r", path.display()),
                    );
                }
            }
            match DkimKey::load(domain, k.selector.value.clone(), &path) {
                Ok(loaded) => keys.push(Arc::new(loaded)),
                Err(e) => self.error(line, format!("{key}.file"), e.to_string()),
            }
        }
        let headers = match dkim.headers {
            Some(h) if !h.iter().any(|x| x.eq_ignore_ascii_case("from")) => {
                self.error(1, "dkim.headers", "must include From (RFC 6376 §5.4)");
                DEFAULT_HEADERS.iter().map(|s| s.to_string()).collect()
            }
            Some(h) => h,
            None => DEFAULT_HEADERS.iter().map(|s| s.to_string()).collect(),
        };
        let max_signatures = match dkim.max_signatures {
            Some(n) if n.value == 0 => {
                self.error(
                    n.referenced.line(),
                    "dkim.max_signatures",
                    "must be at least 1",
                );
                DEFAULT_MAX_SIGNATURES
            }
            Some(n) => n.value,
            None => DEFAULT_MAX_SIGNATURES,
        };
        let mut nameservers = Vec::new();
        for (i, ns) in dns.nameservers.iter().enumerate() {
            let parsed = ns
                .value
                .parse::<SocketAddr>()
                .or_else(|_| ns.value.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
            match parsed {
                Ok(sa) => nameservers.push(sa),
                Err(_) => self.error(
                    ns.referenced.line(),
                    format!("dns.nameservers[{i}]"),
                    format!("expected IP or IP:PORT, got \"{}\"", ns.value),
                ),
            }
        }
        let timeout = dns
            .timeout
            .as_ref()
            .and_then(|t| self.duration("dns.timeout", t, NONZERO))
            .unwrap_or(DEFAULT_DNS_TIMEOUT);
        let dnsbl = match &selfcheck.dnsbl {
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, z)| match DomainPattern::parse(&z.value) {
                    Ok(DomainPattern::Exact(d)) => Some(d),
                    _ => {
                        self.error(
                            z.referenced.line(),
                            format!("selfcheck.dnsbl[{i}]"),
                            format!("invalid zone \"{}\"", z.value),
                        );
                        None
                    }
                })
                .collect(),
            None => DEFAULT_DNSBL
                .iter()
                .filter_map(|z| Domain::parse(z).ok())
                .collect(),
        };
        let rotation = dkim.rotation.as_ref().and_then(|r| self.rotation(r));
        MailAuthSettings {
            egress_ips,
            hostname,
            dkim: DkimSettings {
                keys,
                sign: dkim.sign.unwrap_or_default(),
                headers,
                on_unsigned: dkim.on_unsigned.unwrap_or_default(),
                verify_existing: dkim.verify_existing.unwrap_or_default(),
                max_signatures,
                rotation,
            },
            spf_check_egress,
            dns: DnsSettings {
                nameservers,
                timeout,
            },
            dnsbl,
        }
    }

    /// A relative key path is taken from the configuration file's directory.
    pub(super) fn resolve_path(&self, p: &str) -> std::path::PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(path)
        }
    }
}
