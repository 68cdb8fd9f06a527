//! The `antivirus` section: the clamd sockets a message is scanned
//! through, and what a virus, or a scan that could not be made, means.

use super::raw::Text;
use super::{parse_size, OnError, Validator, NONZERO};
use serde::{Deserialize, Serialize};
use std::{path::PathBuf, time::Duration};

/// Virus scanning with clamd. The message is streamed with INSTREAM over sessions kept open
/// between scans.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAntivirus {
    /// (required) clamd sockets, `unix:/PATH` (Debian: `unix:/run/clamav/clamd.ctl`) or
    /// `inet:HOST:PORT`, tried in order; one that fails is skipped for `backoff`.
    pub clamd: Vec<Text>,
    /// The longest one clamd may take (default `10s`).
    #[serde(default)]
    pub timeout: Option<Text>,
    /// A virus found: `reject` (default, `550 5.7.1 Message contains a virus`), `hold`,
    /// `tempfail` (`451 4.7.1`) or `monitor`.
    #[serde(default)]
    pub action: Option<super::VirusAction>,
    /// Signature names or patterns (`*`, `?`) let through and logged.
    #[serde(default)]
    pub allow: Vec<Text>,
    /// No verdict (no clamd answered, clamd's ERROR, a message over `max_size`): `tempfail` or
    /// `accept` (default: the global `on_error`).
    #[serde(default)]
    pub on_error: Option<super::OnError>,
    /// Larger messages are not scanned, and follow `on_error` (default `25MB`).
    #[serde(default)]
    pub max_size: Option<Text>,
    /// How long a clamd that failed is skipped (default `30s`).
    #[serde(default)]
    pub backoff: Option<Text>,
}

/// What a virus found means for the message.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum VirusAction {
    /// `550 5.7.1 Message contains a virus (<signature>)`.
    #[default]
    Reject,
    /// Accepted and held for review (the quarantine action).
    Hold,
    /// `451 4.7.1 Message contains a virus (<signature>)`.
    Tempfail,
    /// Logged only.
    Monitor,
}

/// A clamd socket.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Clamd {
    Unix(PathBuf),
    /// HOST:PORT.
    Inet(String),
}

impl std::fmt::Display for Clamd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Clamd::Unix(p) => write!(f, "unix:{}", p.display()),
            Clamd::Inet(a) => write!(f, "inet:{a}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AntivirusSettings {
    /// Tried in order; one that failed is skipped for a back-off.
    pub clamd: Vec<Clamd>,
    /// The longest a scan may take, connection included.
    pub timeout: Duration,
    pub action: VirusAction,
    /// Signature names, or patterns with `*` and `?`, treated as clean.
    pub allow: Vec<String>,
    /// When no clamd could scan: None follows the global `on_error`.
    pub on_error: Option<OnError>,
    /// Larger messages are not sent (clamd's `StreamMaxLength`, 25 MB by
    /// default): they follow `on_error`, as a scan that could not be made.
    pub max_size: usize,
    /// A clamd that failed is skipped for this long.
    pub backoff: Duration,
}

pub const DEFAULT_AV_BACKOFF: Duration = Duration::from_secs(30);
pub const DEFAULT_AV_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_AV_MAX_SIZE: usize = 25 << 20;

impl AntivirusSettings {
    /// Whether a signature is in `allow`.
    pub fn allowed(&self, signature: &str) -> bool {
        self.allow.iter().any(|p| glob(p, signature))
    }
}

/// `*` and `?` patterns, case-sensitive as clamd names its signatures.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // The classic two-pointer match with backtracking on the last `*`.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

impl Validator {
    pub(super) fn antivirus(&mut self, raw: Option<RawAntivirus>) -> Option<AntivirusSettings> {
        let raw = raw?;
        let mut clamd = Vec::new();
        for (i, c) in raw.clamd.iter().enumerate() {
            if let Some(s) = self.clamd(&format!("antivirus.clamd[{i}]"), c) {
                clamd.push(s);
            }
        }
        if raw.clamd.is_empty() {
            self.error(1, "antivirus.clamd", "at least one clamd socket is needed");
        }
        let timeout = raw
            .timeout
            .as_ref()
            .and_then(|t| self.duration("antivirus.timeout", t, NONZERO))
            .unwrap_or(DEFAULT_AV_TIMEOUT);
        let backoff = raw
            .backoff
            .as_ref()
            .and_then(|t| self.duration("antivirus.backoff", t, Duration::ZERO))
            .unwrap_or(DEFAULT_AV_BACKOFF);
        let max_size = match &raw.max_size {
            Some(t) => parse_size(&t.value).unwrap_or_else(|| {
                self.error(
                    t.referenced.line(),
                    "antivirus.max_size",
                    format!("invalid size \"{}\" (expected e.g. 25MB)", t.value),
                );
                DEFAULT_AV_MAX_SIZE
            }),
            None => DEFAULT_AV_MAX_SIZE,
        };
        let mut allow = Vec::new();
        for (i, a) in raw.allow.iter().enumerate() {
            let v = a.value.trim();
            if v.is_empty() || v.chars().any(char::is_whitespace) {
                self.error(
                    a.referenced.line(),
                    format!("antivirus.allow[{i}]"),
                    "a signature name or pattern (Eicar-*), without spaces",
                );
            } else {
                allow.push(v.to_string());
            }
        }
        Some(AntivirusSettings {
            clamd,
            timeout,
            action: raw.action.unwrap_or_default(),
            allow,
            on_error: raw.on_error,
            max_size,
            backoff,
        })
    }

    fn clamd(&mut self, key: &str, raw: &Text) -> Option<Clamd> {
        let v = raw.value.trim();
        if let Some(path) = v.strip_prefix("unix:") {
            if path.starts_with('/') {
                return Some(Clamd::Unix(PathBuf::from(path)));
            }
        } else if let Some(addr) = v.strip_prefix("inet:") {
            let ok = addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if ok {
                return Some(Clamd::Inet(addr.to_string()));
            }
        }
        self.error(
            raw.referenced.line(),
            key,
            format!("expected unix:/PATH or inet:HOST:PORT, got \"{v}\""),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn patterns() {
        assert!(glob(
            "Heuristics.Phishing.*",
            "Heuristics.Phishing.Email.SpoofedDomain"
        ));
        assert!(glob("Eicar-Signature", "Eicar-Signature"));
        assert!(glob("*.UNOFFICIAL", "Egress.Test.EICAR.UNOFFICIAL"));
        assert!(glob("Win.Test.?", "Win.Test.1"));
        assert!(!glob("Eicar", "Eicar-Signature"));
        assert!(!glob("Heuristics.*", "Win.Trojan.Agent"));
        assert!(glob("*", ""));
    }
}
