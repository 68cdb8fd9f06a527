//! `rate_limits.custom`: limits beside the seven named ones, each on a key
//! (or a pair of keys) and a counter of its own:
//!
//! ```yaml
//! rate_limits:
//!   custom:
//!     - { name: tenant_msgs, key: sender_domain, count: messages, rate: 1000/h }
//!     - name: gentle_with_gmail
//!       key: recipient_domain
//!       count: recipients
//!       rate: 300/m
//!       overrides: [{ match: "@gmail.com", rate: 100/m }]
//! ```

use super::limits::Matcher;
use super::raw::{RawCustomLimit, Text};
use super::Validator;
use crate::rate::{parse_limit, Limit, LimitName, Rate};
use std::fmt;

/// One part of a custom limit's key.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum KeyPart {
    Client,
    /// The client's /24 (IPv4) or /64 (IPv6).
    ClientNetwork,
    Sender,
    SenderDomain,
    User,
    Class,
    Recipient,
    RecipientDomain,
}

impl KeyPart {
    const ALL: [(&'static str, KeyPart); 8] = [
        ("client", KeyPart::Client),
        ("client_network", KeyPart::ClientNetwork),
        ("sender", KeyPart::Sender),
        ("sender_domain", KeyPart::SenderDomain),
        ("user", KeyPart::User),
        ("class", KeyPart::Class),
        ("recipient", KeyPart::Recipient),
        ("recipient_domain", KeyPart::RecipientDomain),
    ];

    fn parse(s: &str) -> Option<KeyPart> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == s.trim())
            .map(|(_, k)| *k)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }

    /// Known only at RCPT TO.
    pub fn per_recipient(self) -> bool {
        matches!(self, KeyPart::Recipient | KeyPart::RecipientDomain)
    }

    fn of_sender(self) -> bool {
        matches!(self, KeyPart::Sender | KeyPart::SenderDomain)
    }
}

/// What a custom limit counts.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Counter {
    /// Each message, at MAIL FROM; with a recipient key, once per message
    /// for each recipient key at RCPT TO.
    Messages,
    /// Each accepted recipient, at RCPT TO.
    Recipients,
    /// Null-sender messages, at MAIL FROM (per recipient key: at RCPT TO).
    Bounces,
    /// The message's size, at end of message (once per recipient key).
    Bytes,
    /// Recipients not yet seen for the key in the window, at RCPT TO.
    DistinctRecipients,
}

impl Counter {
    const ALL: [(&'static str, Counter); 5] = [
        ("messages", Counter::Messages),
        ("recipients", Counter::Recipients),
        ("bounces", Counter::Bounces),
        ("bytes", Counter::Bytes),
        ("distinct_recipients", Counter::DistinctRecipients),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("?", |(n, _)| n)
    }
}

/// A custom limit, validated.
#[derive(Clone, Debug)]
pub struct CustomLimit {
    /// Interned: see [`crate::rate::intern`].
    pub name: &'static str,
    /// One part, or a pair (`user+recipient_domain`).
    pub key: Vec<KeyPart>,
    pub count: Counter,
    /// None: unlimited unless an override sets a rate.
    pub rate: Option<Rate>,
    /// The first that matches wins; its rate (None: unlimited).
    pub overrides: Vec<(Matcher, Option<Rate>)>,
    /// Where each override's `match` is found (built with the limits' keys:
    /// [`super::RateLimits::index_overrides`]).
    pub override_index: super::matchers::MatcherIndex,
    /// `mode: monitor`: counted and logged as `would_tempfail`, never
    /// refused (a shadow limit), while the other limits enforce.
    pub monitor: bool,
    /// Its own `warn_at`, in thousandths.
    pub warn_at: Option<u16>,
}

impl CustomLimit {
    /// Judged at RCPT TO.
    pub fn per_recipient(&self) -> bool {
        self.count != Counter::Bytes
            && (matches!(
                self.count,
                Counter::Recipients | Counter::DistinctRecipients
            ) || self.key.iter().any(|k| k.per_recipient()))
    }

    /// Judged at MAIL FROM.
    pub fn per_message(&self) -> bool {
        self.count != Counter::Bytes && !self.per_recipient()
    }

    /// Keyed by a domain alone (`sender_domain` or `recipient_domain`).
    pub fn keyed_by_domain(&self) -> bool {
        matches!(
            self.key.as_slice(),
            [KeyPart::SenderDomain | KeyPart::RecipientDomain]
        )
    }
}

impl fmt::Display for CustomLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key: Vec<&str> = self.key.iter().map(|k| k.as_str()).collect();
        write!(
            f,
            "{} ({} per {})",
            self.name,
            self.count.as_str(),
            key.join("+")
        )
    }
}

impl Validator {
    pub(super) fn custom_limits(&mut self, raw: &[RawCustomLimit]) -> Vec<CustomLimit> {
        let mut out: Vec<CustomLimit> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let at = format!("rate_limits.custom[{i}]");
            let line = r.name.referenced.line();
            let name = r.name.value.trim();
            let valid_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !valid_name {
                self.error(
                    line,
                    format!("{at}.name"),
                    format!(
                        "expected a name of lower-case letters, digits, _ and -, got \"{name}\""
                    ),
                );
                continue;
            }
            if LimitName::ALL.iter().any(|n| n.as_str() == name)
                || out.iter().any(|c| c.name == name)
            {
                self.error(
                    line,
                    format!("{at}.name"),
                    format!("\"{name}\" is already a limit's name"),
                );
                continue;
            }
            let Some(key) = self.custom_key(&format!("{at}.key"), &r.key) else {
                continue;
            };
            let count = match Counter::ALL
                .iter()
                .find(|(n, _)| *n == r.count.value.trim())
            {
                Some((_, c)) => *c,
                None => {
                    let names: Vec<&str> = Counter::ALL.iter().map(|(n, _)| *n).collect();
                    self.error(
                        r.count.referenced.line(),
                        format!("{at}.count"),
                        format!(
                            "expected one of {}, got \"{}\"",
                            names.join(", "),
                            r.count.value
                        ),
                    );
                    continue;
                }
            };
            if count == Counter::Bounces && key.iter().any(|k| k.of_sender()) {
                self.error(
                    r.key.referenced.line(),
                    format!("{at}.key"),
                    "a bounce has no sender: count bounces per client, client_network, user, class or recipient",
                );
                continue;
            }
            if count == Counter::DistinctRecipients && key.iter().any(|k| k.per_recipient()) {
                self.error(
                    r.key.referenced.line(),
                    format!("{at}.key"),
                    "distinct recipients are counted per sender, client, user or class, not per recipient",
                );
                continue;
            }
            let rate = self.custom_rate(&format!("{at}.rate"), &r.rate, count);
            let mut overrides = Vec::new();
            for (j, o) in r.overrides.iter().enumerate() {
                let ok = format!("{at}.overrides[{j}]");
                let rate = self.custom_rate(&format!("{ok}.rate"), &o.rate, count);
                if let (Some(m), Some(rate)) =
                    (self.matcher(&format!("{ok}.match"), &o.matcher), rate)
                {
                    overrides.push((m, rate));
                }
            }
            let warn_at = r
                .warn_at
                .as_ref()
                .and_then(|w| self.warn_level(&format!("{at}.warn_at"), w));
            if let Some(rate) = rate {
                out.push(CustomLimit {
                    warn_at,
                    name: crate::rate::intern(name),
                    key,
                    count,
                    rate,
                    overrides,
                    override_index: Default::default(),
                    monitor: r
                        .mode
                        .as_ref()
                        .is_some_and(|m| m.value == super::Mode::Monitor),
                });
            }
        }
        out
    }

    /// `client`, `sender_domain`, or a pair `user+recipient_domain`.
    fn custom_key(&mut self, at: &str, raw: &Text) -> Option<Vec<KeyPart>> {
        let parts: Vec<&str> = raw.value.split('+').collect();
        let mut key = Vec::new();
        for p in &parts {
            match KeyPart::parse(p) {
                Some(k) if !key.contains(&k) => key.push(k),
                _ => {
                    let names: Vec<&str> = KeyPart::ALL.iter().map(|(n, _)| *n).collect();
                    self.error(
                        raw.referenced.line(),
                        at,
                        format!(
                            "expected one of {} or a pair of them joined by +, got \"{}\"",
                            names.join(", "),
                            raw.value
                        ),
                    );
                    return None;
                }
            }
        }
        if key.len() > 2 {
            self.error(
                raw.referenced.line(),
                at,
                format!("at most a pair of keys, got \"{}\"", raw.value),
            );
            return None;
        }
        Some(key)
    }

    /// A rate, or unlimited: Some(None). Bytes are a size per period
    /// (`500MB/d`, `2GiB/w`).
    fn custom_rate(&mut self, at: &str, raw: &Text, count: Counter) -> Option<Option<Rate>> {
        let parsed = if count == Counter::Bytes {
            let bytes = raw.value.split_once('/').and_then(|(n, per)| {
                let n = super::parse_size(n)?;
                Some(format!("{n}/{per}"))
            });
            match bytes {
                Some(b) => parse_limit(&b),
                None if raw.value.trim().eq_ignore_ascii_case("unlimited") => Ok(Limit::Unlimited),
                None => {
                    self.error(
                        raw.referenced.line(),
                        at,
                        format!(
                            "invalid byte rate \"{}\" (expected a size per period such as 500MB/d, 2GiB/w, or unlimited)",
                            raw.value
                        ),
                    );
                    return None;
                }
            }
        } else {
            parse_limit(&raw.value)
        };
        match parsed {
            Ok(Limit::Rate(r)) => Some(Some(r)),
            Ok(Limit::Unlimited) => Some(None),
            Err(e) => {
                self.error(raw.referenced.line(), at, e.to_string());
                None
            }
        }
    }
}
