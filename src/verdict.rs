//! What a check decides: a [`Verdict`] (go on, refuse, hold, or could not
//! decide, with its [`Cause`]), and the header fields a passing message
//! gets. Every check answers in these terms; none touches a milter type or
//! builds a reply text outside `reply.rs`.

use crate::reply::Refusal;

/// What a check decided.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Verdict {
    /// Nothing against it: go on to the next check or stage.
    Continue,
    /// Refused, with the rule and the reply.
    Refuse(Refusal),
    /// The check could not decide (a backend failed or timed out), for the
    /// cause given: answered as `on_error` says.
    TempError(Cause),
    /// Accepted, but held for review (the milter's quarantine action).
    Hold(Hold),
}

/// A message to hold: which incident, and why, as the MTA records it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Hold {
    pub rule: crate::reply::Rule,
    /// The incident, `kind:key`.
    pub incident: String,
    pub reason: String,
    /// Logged and counted only (`incidents.action: monitor`, or an
    /// incident opened in monitor mode).
    pub monitor: bool,
}

/// Why a check could not decide: the backend that failed, what failed,
/// and the reply `on_error: tempfail` gives when the check has its own
/// (else the generic 451 4.3.0).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Cause {
    pub backend: Backend,
    pub detail: String,
    pub reply: Option<Refusal>,
}

/// What a check could not ask.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Backend {
    /// A list: inline, file, LDAP, or a callout to the mail store.
    Source,
    Dns,
    Rspamd,
    Clamd,
    /// The rate limiter (in process or Redis).
    Limiter,
    /// DKIM signing itself.
    Signer,
    /// The milter's own state (a bug, never the client's doing).
    Internal,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Dns => "dns",
            Self::Rspamd => "rspamd",
            Self::Clamd => "clamd",
            Self::Limiter => "limiter",
            Self::Signer => "signer",
            Self::Internal => "internal",
        }
    }
}

impl Cause {
    pub fn new(backend: Backend, detail: impl Into<String>) -> Self {
        Self {
            backend,
            detail: detail.into(),
            reply: None,
        }
    }

    /// A failure answered with this reply rather than the generic 451.
    pub fn replying(mut self, reply: Refusal) -> Self {
        self.reply = Some(reply);
        self
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl Verdict {
    /// A failure to decide.
    pub fn failed(backend: Backend, detail: impl Into<String>) -> Self {
        Self::TempError(Cause::new(backend, detail))
    }
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
