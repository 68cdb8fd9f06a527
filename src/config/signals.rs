//! The signals of the `incidents` section: what is counted per key, over
//! which window, and the threshold that opens an incident.

use super::raw::{Spanned, Text};
use super::Validator;
use crate::rate::{parse_limit, Limit, Rate};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const DEFAULT_LEARN: Duration = Duration::from_secs(24 * 3600);

/// One signal: a count per key over a sliding window, and the threshold that opens an incident:
/// `above` a fixed rate, or `above_baseline` a factor over the key's usual count.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSignal {
    /// (required) One word; it names the incidents it opens, in logs and metrics.
    pub name: Text,
    /// (required) What is counted per: `client`, `user`, `sender` or `class`.
    pub key: Spanned<super::KeyKind>,
    /// (required) What is counted.
    pub count: Spanned<super::Count>,
    /// A count per period (`50/h`, `5/10m`): more opens an incident. For `bounce_ratio`, a
    /// share of the recipients sent (`20%`).
    #[serde(default)]
    pub above: Option<Text>,
    /// A factor (`10x`) over the key's usual count per period of `min`, learnt as it runs.
    #[serde(default)]
    pub above_baseline: Option<Text>,
    /// With `above_baseline`: the period and the least count (`20/h`) that can open an
    /// incident, however small the usual count. With `bounce_ratio`: the period, and the
    /// recipients sent in it before the ratio is judged.
    #[serde(default)]
    pub min: Option<Text>,
    /// With `above_baseline`: how long a key's usual count is learnt before it is judged
    /// (default `24h`).
    #[serde(default)]
    pub learn: Option<Text>,
}

/// What a signal counts per: the client IP, the SASL login, the envelope
/// sender, or the client's class.
#[derive(
    Clone,
    Copy,
    Debug,
    Deserialize,
    Eq,
    Hash,
    Ord,
    PartialEq,
    PartialOrd,
    Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Client,
    User,
    Sender,
    Class,
}

impl KeyKind {
    pub const ALL: [KeyKind; 4] = [
        KeyKind::Client,
        KeyKind::User,
        KeyKind::Sender,
        KeyKind::Class,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Client => "client",
            KeyKind::User => "user",
            KeyKind::Sender => "sender",
            KeyKind::Class => "class",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What a signal counts.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Count {
    /// Messages accepted.
    Messages,
    /// Recipients of accepted messages.
    Recipients,
    /// Distinct recipient addresses of accepted messages.
    DistinctRecipients,
    /// Distinct recipient domains of accepted messages.
    DistinctRecipientDomains,
    /// Our own permanent refusals: forged senders and From:, relay
    /// attempts, spam, banned attachments.
    Refusals,
    /// Recipients the MTA itself rejected (unknown users, dead domains).
    MtaRejectedRecipients,
    /// Hard bounces (`bounces`): recipients a delivery-status notice says
    /// failed for good, counted against the sender the notice goes back
    /// to, and the login and client that recently sent as it.
    HardBounces,
    /// Hard bounces per recipient of accepted messages (`above: 20%`,
    /// with `min: 50/h`: the window, and the recipients sent in it before
    /// the ratio is judged).
    BounceRatio,
}

impl Count {
    pub fn as_str(self) -> &'static str {
        match self {
            Count::Messages => "messages",
            Count::Recipients => "recipients",
            Count::DistinctRecipients => "distinct_recipients",
            Count::DistinctRecipientDomains => "distinct_recipient_domains",
            Count::Refusals => "refusals",
            Count::MtaRejectedRecipients => "mta_rejected_recipients",
            Count::HardBounces => "hard_bounces",
            Count::BounceRatio => "bounce_ratio",
        }
    }

    /// Whether the count is of distinct values (a sketch, not a sum).
    pub fn distinct(self) -> bool {
        matches!(
            self,
            Count::DistinctRecipients | Count::DistinctRecipientDomains
        )
    }
}

/// When a signal fires.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    /// Above this many per period (a sliding window of the period).
    Above(Rate),
    /// Above `factor` times the key's usual volume per `min.period`, learnt
    /// over time, and above `min` in any case; judged only once the key has
    /// been seen for `learn`.
    Baseline {
        factor: f64,
        min: Rate,
        learn: Duration,
    },
    /// `bounce_ratio`: above this share (0.2 for `20%`) of the recipients
    /// sent in `min.period`, once at least `min.count` were sent.
    Ratio { above: f64, min: Rate },
}

impl Threshold {
    /// The window the count is taken over.
    pub fn window(&self) -> Duration {
        match self {
            Threshold::Above(r) => r.period,
            Threshold::Baseline { min, .. } | Threshold::Ratio { min, .. } => min.period,
        }
    }

    /// The least count that can cross it: `above`'s count, a baseline's
    /// `min`.
    pub fn floor(&self) -> u64 {
        match self {
            Threshold::Above(r) => r.count,
            Threshold::Baseline { min, .. } => min.count,
            // The fewest bounces that can cross it.
            Threshold::Ratio { above, min } => ((min.count as f64 * above).ceil() as u64).max(1),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub name: String,
    pub key: KeyKind,
    pub count: Count,
    pub threshold: Threshold,
}

impl Validator {
    pub(super) fn signal(&mut self, key: &str, raw: RawSignal) -> Option<Signal> {
        let line = raw.name.referenced.line();
        let name = raw.name.value.trim().to_string();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            self.error(
                line,
                format!("{key}.name"),
                "must be a word (letters, digits, _ and -)",
            );
        }
        let threshold = match (&raw.above, &raw.above_baseline) {
            (Some(a), None) if raw.count.value == Count::BounceRatio => {
                let share = a
                    .value
                    .trim()
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<f64>().ok())
                    .filter(|p| p.is_finite() && *p > 0.0 && *p < 100.0);
                let Some(share) = share else {
                    self.error(
                        a.referenced.line(),
                        format!("{key}.above"),
                        format!("bounce_ratio is a share: expected a percentage such as 20%, got \"{}\"", a.value),
                    );
                    return None;
                };
                let Some(min) = &raw.min else {
                    self.error(
                        line,
                        format!("{key}.min"),
                        "bounce_ratio needs min (e.g. 50/h): the window, and the recipients sent in it before the ratio is judged",
                    );
                    return None;
                };
                let min = self.signal_rate(&format!("{key}.min"), min)?;
                Threshold::Ratio {
                    above: share / 100.0,
                    min,
                }
            }
            (None, Some(_)) if raw.count.value == Count::BounceRatio => {
                self.error(
                    line,
                    key,
                    "bounce_ratio takes above (a percentage) and min, not above_baseline",
                );
                return None;
            }
            (Some(a), None) => {
                if raw.min.is_some() || raw.learn.is_some() {
                    self.error(
                        line,
                        key,
                        "min and learn go with above_baseline (or min with bounce_ratio), not with above",
                    );
                }
                Threshold::Above(self.signal_rate(&format!("{key}.above"), a)?)
            }
            (None, Some(b)) => {
                let factor = b
                    .value
                    .trim()
                    .strip_suffix(['x', 'X'])
                    .and_then(|f| f.trim().parse::<f64>().ok())
                    .filter(|f| f.is_finite() && *f > 1.0);
                let Some(factor) = factor else {
                    self.error(
                        b.referenced.line(),
                        format!("{key}.above_baseline"),
                        format!("expected a factor above 1 such as 10x, got \"{}\"", b.value),
                    );
                    return None;
                };
                let Some(min) = &raw.min else {
                    self.error(
                        line,
                        format!("{key}.min"),
                        "above_baseline needs min (e.g. 50/h): the floor, and the window",
                    );
                    return None;
                };
                let min = self.signal_rate(&format!("{key}.min"), min)?;
                let learn = match &raw.learn {
                    Some(l) => self.duration(&format!("{key}.learn"), l, min.period)?,
                    None => DEFAULT_LEARN,
                };
                Threshold::Baseline { factor, min, learn }
            }
            (Some(_), Some(_)) => {
                self.error(line, key, "set above or above_baseline, not both");
                return None;
            }
            (None, None) => {
                self.error(
                    line,
                    key,
                    "set above (e.g. 50/h) or above_baseline (e.g. 10x)",
                );
                return None;
            }
        };
        Some(Signal {
            name,
            key: raw.key.value,
            count: raw.count.value,
            threshold,
        })
    }

    fn signal_rate(&mut self, key: &str, raw: &Text) -> Option<Rate> {
        match parse_limit(&raw.value) {
            Ok(Limit::Rate(r)) => Some(r),
            _ => {
                self.error(
                    raw.referenced.line(),
                    key,
                    format!(
                        "expected a count per period such as 50/h or 5/10m, got \"{}\"",
                        raw.value
                    ),
                );
                None
            }
        }
    }
}
