//! The `incidents` section: the signals that reveal a compromised account
//! or host, what happens to its mail while an incident is open, and who is
//! told.

use super::raw::Spanned;
use super::raw::Text;
use super::signals::{RawSignal, Signal};
use super::Validator;
use crate::address::Address;
use serde::{Deserialize, Serialize};
use std::{path::PathBuf, time::Duration};

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIncidents {
    /// What happens to every new message from a key with an open incident, the one that
    /// opened it included: `hold` (default: Postfix's hold queue, Sendmail's quarantine;
    /// nothing lost, nothing leaves, the client sees success), `tempfail` (`451 4.7.1 Sending
    /// from KEY is suspended`), `reject` (`550 5.7.1`) or `monitor` (logged and notified
    /// only).
    #[serde(default)]
    pub action: Option<Spanned<super::IncidentAction>>,
    /// How long an incident stays open (default `1h`), extended while its signal keeps firing.
    #[serde(default)]
    pub block_for: Option<Text>,
    /// Where open incidents (`incidents.json`) and learning mode's senders (`senders.json`) are
    /// kept across restarts. With `rate_limits.backend: redis`, signals and incidents live in
    /// Redis, shared by every gateway, and those last seen open there are kept here too
    /// (`incidents-seen.json`), to hold their keys' mail while Redis does not answer.
    #[serde(default)]
    pub state_dir: Option<Text>,
    /// Keys tracked per signal in the process (default 10000); to make room the smallest counts
    /// go first, never one past half its threshold.
    #[serde(default)]
    pub max_keys: Option<Spanned<usize>>,
    /// An IPv6 client is one incident key per network of this many bits (default 64).
    #[serde(default)]
    pub ipv6_prefix: Option<Spanned<u8>>,
    /// What opens an incident (none until listed): each signal counts per key over the window
    /// of its threshold. Mail from clients in no class is not counted. Start in monitor mode
    /// (`mode: monitor` or `action: monitor`), read the incident lines, and set each threshold
    /// above the busiest honest key.
    #[serde(default)]
    pub signals: Vec<RawSignal>,
    /// Who is told, once when an incident opens and once when it closes: a webhook, a mail, or
    /// both, at most `max_per_hour` notices.
    #[serde(default)]
    pub notify: RawNotify,
}

/// Who is told of incidents.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// An HTTP POST of a JSON document.
    #[serde(default)]
    pub webhook: Option<RawWebhook>,
    /// A plain-text mail through an SMTP relay.
    #[serde(default)]
    pub mail: Option<RawMailNotify>,
    /// The most notices in an hour, webhook and mail together (default 20).
    #[serde(default)]
    pub max_per_hour: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// (required) The URL posted to.
    pub url: Text,
    /// The longest wait for an answer (default `5s`); a failure is retried.
    #[serde(default)]
    pub timeout: Option<Text>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMailNotify {
    /// (required) The postmaster's address.
    pub to: Text,
    /// (required) The sender of the notices.
    pub from: Text,
    /// (required) The SMTP relay, `HOST:PORT`.
    pub relay: Text,
    /// The longest wait for the relay (default `10s`).
    #[serde(default)]
    pub timeout: Option<Text>,
}

/// What happens to a message from a key with an open incident.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum IncidentAction {
    /// Accepted, with the milter's quarantine action: Postfix's hold
    /// queue, Sendmail's quarantine. Nothing is lost, nothing leaves.
    #[default]
    Hold,
    /// `451 4.7.1 Sending from <key> is suspended`.
    Tempfail,
    /// `550 5.7.1 Sending from <key> is suspended`.
    Reject,
    /// Logged and notified only.
    Monitor,
}

impl IncidentAction {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentAction::Hold => "hold",
            IncidentAction::Tempfail => "tempfail",
            IncidentAction::Reject => "reject",
            IncidentAction::Monitor => "monitor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Hold, Self::Tempfail, Self::Reject, Self::Monitor]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    pub url: String,
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MailNotify {
    pub to: Address,
    pub from: Address,
    /// HOST:PORT of an SMTP relay that accepts the mail without
    /// authentication (the local MTA, typically).
    pub relay: String,
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Notify {
    pub webhook: Option<Webhook>,
    pub mail: Option<MailNotify>,
    /// Notifications sent per hour at most, all incidents together.
    pub max_per_hour: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IncidentSettings {
    pub action: IncidentAction,
    pub block_for: Duration,
    /// Where the local backend keeps open incidents across restarts.
    pub state_dir: Option<PathBuf>,
    /// Keys tracked per signal in this process, at most.
    pub max_keys: usize,
    /// IPv6 clients are one `client` key per prefix of this length (a host
    /// rotating its address within its /64 stays one key).
    pub ipv6_prefix: u8,
    pub signals: Vec<Signal>,
    pub notify: Notify,
}

pub const DEFAULT_BLOCK_FOR: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_KEYS: usize = 10_000;
pub const DEFAULT_MAX_NOTIFICATIONS: u32 = 20;

impl Default for IncidentSettings {
    fn default() -> Self {
        Self {
            action: IncidentAction::Hold,
            block_for: DEFAULT_BLOCK_FOR,
            state_dir: None,
            max_keys: DEFAULT_MAX_KEYS,
            ipv6_prefix: crate::address::DEFAULT_IPV6_PREFIX,
            signals: Vec::new(),
            notify: Notify {
                webhook: None,
                mail: None,
                max_per_hour: DEFAULT_MAX_NOTIFICATIONS,
            },
        }
    }
}

impl Validator {
    pub(super) fn incidents(&mut self, raw: RawIncidents) -> IncidentSettings {
        let mut out = IncidentSettings::default();
        if let Some(a) = raw.action {
            out.action = a.value;
        }
        if let Some(d) = &raw.block_for {
            out.block_for = self
                .duration("incidents.block_for", d, Duration::from_secs(1))
                .unwrap_or(DEFAULT_BLOCK_FOR);
        }
        if let Some(dir) = &raw.state_dir {
            if dir.value.starts_with('/') {
                out.state_dir = Some(PathBuf::from(&dir.value));
            } else {
                self.error(
                    dir.referenced.line(),
                    "incidents.state_dir",
                    format!("must be an absolute path, got \"{}\"", dir.value),
                );
            }
        }
        if let Some(n) = raw.max_keys {
            if n.value < 100 {
                self.error(
                    n.referenced.line(),
                    "incidents.max_keys",
                    "must be at least 100",
                );
            } else {
                out.max_keys = n.value;
            }
        }
        if let Some(p) = raw.ipv6_prefix {
            out.ipv6_prefix = self.ipv6_prefix("incidents.ipv6_prefix", p);
        }
        for (i, s) in raw.signals.into_iter().enumerate() {
            let key = format!("incidents.signals[{i}]");
            if let Some(signal) = self.signal(&key, s) {
                if out.signals.iter().any(|o| o.name == signal.name) {
                    self.error(
                        1,
                        format!("{key}.name"),
                        format!("\"{}\" names two signals", signal.name),
                    );
                }
                out.signals.push(signal);
            }
        }
        out.notify = self.notify(raw.notify);
        out
    }

    fn notify(&mut self, raw: RawNotify) -> Notify {
        let mut out = IncidentSettings::default().notify;
        if let Some(n) = raw.max_per_hour {
            if n.value == 0 {
                self.error(
                    n.referenced.line(),
                    "incidents.notify.max_per_hour",
                    "must be at least 1 (leave notify out to send none)",
                );
            } else {
                out.max_per_hour = n.value;
            }
        }
        if let Some(w) = raw.webhook {
            let line = w.url.referenced.line();
            if !(w.url.value.starts_with("http://") || w.url.value.starts_with("https://")) {
                self.error(
                    line,
                    "incidents.notify.webhook.url",
                    format!(
                        "expected an http:// or https:// URL, got \"{}\"",
                        w.url.value
                    ),
                );
            }
            let timeout = match &w.timeout {
                Some(t) => self
                    .duration(
                        "incidents.notify.webhook.timeout",
                        t,
                        Duration::from_millis(100),
                    )
                    .unwrap_or(Duration::from_secs(5)),
                None => Duration::from_secs(5),
            };
            out.webhook = Some(Webhook {
                url: w.url.value,
                timeout,
            });
        }
        if let Some(m) = raw.mail {
            let address = |v: &mut Self, t: &Text, key: &str| match Address::parse(t.value.trim()) {
                Ok(a) => Some(a),
                Err(_) => {
                    v.error(
                        t.referenced.line(),
                        key,
                        format!(
                            "expected an address such as postmaster@example.com, got \"{}\"",
                            t.value
                        ),
                    );
                    None
                }
            };
            let to = address(self, &m.to, "incidents.notify.mail.to");
            let from = address(self, &m.from, "incidents.notify.mail.from");
            let relay_ok = m
                .relay
                .value
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !relay_ok {
                self.error(
                    m.relay.referenced.line(),
                    "incidents.notify.mail.relay",
                    format!("expected HOST:PORT, got \"{}\"", m.relay.value),
                );
            }
            let timeout = match &m.timeout {
                Some(t) => self
                    .duration(
                        "incidents.notify.mail.timeout",
                        t,
                        Duration::from_millis(100),
                    )
                    .unwrap_or(Duration::from_secs(10)),
                None => Duration::from_secs(10),
            };
            if let (Some(to), Some(from), true) = (to, from, relay_ok) {
                out.mail = Some(MailNotify {
                    to,
                    from,
                    relay: m.relay.value,
                    timeout,
                });
            }
        }
        out
    }
}
