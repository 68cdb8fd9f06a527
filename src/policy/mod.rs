//! Policy checks, one per module. Each is a plain function over the facts of
//! the transaction and the configuration, returning a [`Verdict`]; none
//! touches a socket or a milter type.

pub mod class;
pub mod dkim;
pub mod from_header;
pub mod headers;
pub mod rate;
pub mod recipients;
pub mod relay;
pub mod sender;
pub mod spf;

use crate::reply::Refusal;

/// What a check decided.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Verdict {
    /// Nothing against it: go on to the next check or stage.
    Continue,
    /// Refused, with the rule and the reply.
    Refuse(Refusal),
}

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
