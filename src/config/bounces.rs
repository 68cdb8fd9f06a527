//! `bounces`: the delivery-status notices that pass the milter are read,
//! and a recipient whose mail fails for good is refused at RCPT TO for a
//! while (Postfix passes its own bounces to the milter with
//! `internal_mail_filter_classes = bounce`).

use super::raw::Spanned;
use super::{Validator, NONZERO};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBounces {
    /// When a recipient is refused: after how many hard failures of its mailbox (a notice saying
    /// `Action: failed` with a `5.1.x` or `5.2.1` status), and for how long (default `{ after: 1,
    /// for: 30d }`). Other permanent failures (`5.7.1`: refused by policy, often because of our
    /// own reputation) are counted, never suppress.
    #[serde(default)]
    pub suppress: Option<Spanned<RawSuppress>>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSuppress {
    /// Hard failures before the recipient is refused (default 1).
    #[serde(default)]
    pub after: Option<Spanned<u32>>,
    /// How long it is refused (default `30d`).
    #[serde(default, rename = "for")]
    pub for_: Option<super::raw::Text>,
}

#[derive(Clone, Debug, Eq, PartialEq)]
pub struct BounceSettings {
    pub suppress_after: u32,
    pub suppress_for: Duration,
}

impl Default for BounceSettings {
    fn default() -> Self {
        Self {
            suppress_after: 1,
            suppress_for: Duration::from_secs(30 * 86_400),
        }
    }
}

impl Validator {
    pub(super) fn bounces(&mut self, raw: Option<&RawBounces>) -> Option<BounceSettings> {
        let raw = raw?;
        let mut out = BounceSettings::default();
        if let Some(s) = &raw.suppress {
            if let Some(a) = &s.value.after {
                if a.value == 0 {
                    self.error(
                        a.referenced.line(),
                        "bounces.suppress.after",
                        "must be at least 1",
                    );
                } else {
                    out.suppress_after = a.value;
                }
            }
            if let Some(f) = &s.value.for_ {
                if let Some(d) = self.duration("bounces.suppress.for", f, NONZERO) {
                    out.suppress_for = d;
                }
            }
        }
        Some(out)
    }
}
