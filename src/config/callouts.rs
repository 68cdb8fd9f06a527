//! `verify_callouts`: every callout this gateway makes to the mail stores
//! (`verify_recipients`, a class's `verify_sender`), all together, under
//! one rate. A stranger's 100 RCPTs then cannot make 100 sessions at the
//! store, which is how gateways end up on backscatter lists.

use super::raw::Text;
use super::Validator;
use crate::rate::{parse_limit, Limit, Rate};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCallouts {
    /// The most callouts this gateway makes, all together (default `60/m`; `unlimited` lifts
    /// the cap). A lookup beyond it is not asked, and follows `on_error` as a store that cannot
    /// answer does; a cached answer is never capped.
    #[serde(default)]
    pub rate: Option<Text>,
}

/// Default `verify_callouts.rate`: a callout a second on average, with a
/// burst of 60.
pub const DEFAULT_CALLOUT_RATE: Rate = Rate {
    count: 60,
    period: Duration::from_secs(60),
};

impl Validator {
    /// The cap; None when unlimited.
    pub(super) fn callouts(&mut self, raw: Option<&RawCallouts>) -> Option<Rate> {
        let Some(t) = raw.and_then(|r| r.rate.as_ref()) else {
            return Some(DEFAULT_CALLOUT_RATE);
        };
        match parse_limit(&t.value) {
            Ok(Limit::Unlimited) => None,
            Ok(Limit::Rate(r)) => Some(r),
            Err(e) => {
                self.error(t.referenced.line(), "verify_callouts.rate", e.to_string());
                Some(DEFAULT_CALLOUT_RATE)
            }
        }
    }
}
