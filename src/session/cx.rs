//! What a check sees of the session at a stage, and the one door through
//! which it decides: [`Cx::decide`].

use super::*;
use crate::config::{CheckMode, OnError};
use crate::sources::Lists;
use crate::verdict::Verdict;

/// A check's view of the session at one stage of one message.
pub(super) struct Cx<'a> {
    pub conn: &'a mut Connection,
    pub msg: &'a mut Message,
    pub stage: Stage,
    /// At RCPT TO: the recipient.
    pub rcpt: Option<&'a Rcpt>,
    /// At end of message: the whole message, when a check reads it.
    pub whole: Option<&'a Whole>,
    /// Whether a decision at this stage went against the message (a
    /// refusal monitor mode let through included), for the checks that
    /// only ask about what the others let pass.
    pub against: bool,
}

/// The recipient of RCPT TO.
pub(super) struct Rcpt {
    /// As the MTA passed it.
    pub raw: Vec<u8>,
    /// Parsed, or its raw text when it does not parse.
    pub parsed: Result<crate::address::EnvelopeAddress, String>,
}

impl Rcpt {
    pub fn address(&self) -> Option<&Address> {
        match &self.parsed {
            Ok(crate::address::EnvelopeAddress::Address(a)) => Some(a),
            _ => None,
        }
    }
}

/// The whole message at end of message.
pub(super) struct Whole {
    pub raw: bytes::Bytes,
    /// Where the body starts.
    pub head_len: usize,
    /// The DKIM-Signature headers it came with.
    pub signatures: usize,
}

impl Whole {
    pub fn body(&self) -> &[u8] {
        self.raw.get(self.head_len..).unwrap_or_default()
    }
}

/// How a verdict is judged: in the message's mode, always in monitor mode,
/// or under a check's own `off | warn | reject` mode; a failure answered
/// by the configuration's `on_error` or the check's own.
pub(super) struct Decision {
    verdict: Verdict,
    mode: How,
    on_error: Option<OnError>,
}

#[derive(Clone, Copy)]
enum How {
    Message,
    Monitor,
    Check(CheckMode),
}

impl From<Verdict> for Decision {
    fn from(verdict: Verdict) -> Self {
        Self {
            verdict,
            mode: How::Message,
            on_error: None,
        }
    }
}

impl Decision {
    /// Logged and counted, never refused: a shadow limit, a check in
    /// monitor mode of its own.
    pub fn monitor(mut self) -> Self {
        self.mode = How::Monitor;
        self
    }

    /// Under a check's `off | warn | reject` mode: `warn` logs a refusal
    /// as `warn` and lets the transaction go on.
    pub fn under(mut self, mode: CheckMode) -> Self {
        self.mode = How::Check(mode);
        self
    }

    /// A failure answered as this `on_error` says (a check's own).
    pub fn on_error(mut self, on_error: Option<OnError>) -> Self {
        self.on_error = on_error;
        self
    }
}

impl Cx<'_> {
    /// The one door to the answer: the verdict judged as `decision` says
    /// (monitor mode, a check's mode, `on_error`), logged, counted and
    /// recorded on the message. `Err` when the stage must refuse.
    pub fn decide(&mut self, decision: impl Into<Decision>) -> Flow {
        let d = decision.into();
        if d.verdict != Verdict::Continue {
            self.against = true;
        }
        let stage = self.stage;
        let on_error = d.on_error.unwrap_or(self.msg.config.on_error);
        let msg = Some(&mut *self.msg);
        match (d.mode, d.verdict) {
            (_, Verdict::Continue) | (How::Check(CheckMode::Off), _) => Ok(()),
            (How::Check(CheckMode::Warn), Verdict::Refuse(r)) => {
                self.conn
                    .log_decision(msg.as_deref(), stage, crate::log::Outcome::Warn, &r);
                Ok(())
            }
            (_, Verdict::TempError(cause)) => {
                tracing::warn!(
                    conn_id = self.conn.id,
                    stage = stage.as_str(),
                    backend = cause.backend.as_str(),
                    "{cause}"
                );
                let refusal = cause.reply.unwrap_or_else(crate::reply::internal_error);
                self.conn.failed(msg, stage, refusal, on_error)
            }
            (how, verdict) => {
                let forced = matches!(how, How::Monitor).then_some(Mode::Monitor);
                self.conn.settle(msg, stage, verdict, forced)
            }
        }
    }

    /// Records a line for `explain`, built only when tracing, from the
    /// message as it stands: nothing is made for a message not traced.
    pub fn note(&mut self, check: &'static str, outcome: impl FnOnce(&Message) -> String) {
        let msg = &*self.msg;
        self.conn.note(self.stage, check, || outcome(msg));
    }

    /// Whether the lookups a check makes are kept, for `explain`: what
    /// `Shared::lists` takes.
    pub fn recording(&self) -> bool {
        self.conn.trace.is_some()
    }

    /// Records the lookups a check made, for `explain`.
    pub fn noted_lookups(&mut self, lists: &Lists<'_>) {
        self.conn.note_lookups(self.stage, lists);
    }

    pub fn config(&self) -> Arc<Config> {
        self.msg.config.clone()
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.conn.shared.clone()
    }

    /// The message's class.
    pub fn class(&self) -> Option<&Class> {
        self.msg.class()
    }

    /// A header field added above every other at end of message.
    pub fn insert_header(&mut self, name: &'static str, value: String) {
        self.msg.changes.push(HeaderAction::Insert { name, value });
    }

    /// A change to the message's own headers at end of message.
    pub fn change_header(&mut self, edit: checks::headers::rules::Edit) {
        self.msg.changes.push(HeaderAction::Change(edit));
    }
}
