//! Policy checks, one per module. Each is a function over the facts of the
//! transaction and the configuration, returning a [`Verdict`] (and, for the
//! checks that tag or sign, the header fields a passing message gets); none
//! touches a milter type or builds a reply text outside `reply.rs`. The
//! checks that ask a backend (DNS, rspamd) are async and answer in the same
//! shape, with [`Verdict::TempError`] when the backend could not.

pub mod antivirus;
pub mod class;
pub mod content;
pub mod dkim;
pub mod from_header;
pub mod headers;
pub mod incident;
pub mod rate;
pub mod recipients;
pub mod relay;
pub mod rspamd;
pub mod sender;
pub mod spf;
pub mod verify;

use crate::reply::Refusal;

/// What a check decided.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Verdict {
    /// Nothing against it: go on to the next check or stage.
    Continue,
    /// Refused, with the rule and the reply.
    Refuse(Refusal),
    /// The check could not decide (a backend failed or timed out), for the
    /// reason given: answered as `on_error` says.
    TempError(String),
    /// Accepted, but held for review (the milter's quarantine action).
    Hold(Hold),
}

/// A message to hold: which incident, and why, as the MTA records it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Hold {
    pub rule: &'static str,
    /// The incident, `kind:key`.
    pub incident: String,
    pub reason: String,
    /// Logged and counted only (`incidents.action: monitor`, or an
    /// incident opened in monitor mode).
    pub monitor: bool,
}

/// A header field added at the top of a message that passes: a tag or a
/// signature.
pub type Tag = (&'static str, String);

impl Verdict {
    /// Runs `next` only when `self` lets the transaction continue.
    pub fn and_then(self, next: impl FnOnce() -> Verdict) -> Verdict {
        match self {
            Verdict::Continue => next(),
            refused => refused,
        }
    }
}

impl From<Option<Refusal>> for Verdict {
    fn from(r: Option<Refusal>) -> Self {
        r.map_or(Verdict::Continue, Verdict::Refuse)
    }
}
