//! The one place where a verdict becomes the answer to the MTA: monitor
//! mode and `on_error` applied, the decision line logged and counted, the
//! refusal recorded on the message, and the message ended once, with its
//! summary line.

use super::*;
use crate::log::{self, Outcome};
use crate::reply::{self, Rule};
use crate::verdict::Verdict;

/// How a stage's checks went: `Err` carries the reply refusing what the
/// stage judges; the refusal is recorded on the message, and the stage ends
/// it (see [`Connection::finish`]).
pub(super) type Flow<T = ()> = Result<T, Reply>;

impl Connection {
    /// An internal failure in a stage: answered as `on_error` says, ending
    /// the message if the answer refuses it.
    pub fn internal_error(&mut self, stage: Stage) -> Answer {
        self.fail_stage(stage, reply::internal_error())
    }

    /// The MTA sent a command out of order, which the milter library does
    /// not hand to a stage: answered as `on_error` says, since nothing can
    /// be judged of it.
    pub fn out_of_order(&mut self, command: &'static str) -> Answer {
        tracing::warn!(
            conn_id = self.id,
            command,
            "MTA sent a milter command out of order"
        );
        self.fail_stage(Stage::of_command(command), reply::out_of_order())
    }

    /// A stage that could not run: answered as `on_error` says.
    fn fail_stage(&mut self, stage: Stage, refusal: Refusal) -> Answer {
        let mut msg = self.message.take();
        let on_error = msg
            .as_ref()
            .map_or_else(|| self.shared.config().on_error, |m| m.config.on_error);
        let flow = self.failed(msg.as_deref_mut(), stage, refusal, on_error);
        self.message = msg;
        self.finish(flow)
    }

    /// The door out of a stage: a refusal recorded on the message ends it,
    /// here and nowhere else.
    pub(super) fn finish(&mut self, flow: Flow) -> Answer {
        match flow {
            Ok(()) => Answer::Continue,
            Err(reply) => {
                if self.message.as_ref().is_some_and(|m| m.refused.is_some()) {
                    self.end_message(Ending::Refused);
                }
                Answer::Refuse(reply)
            }
        }
    }

    /// A check could not decide: answered as this `on_error` says.
    pub(super) fn failed(
        &mut self,
        msg: Option<&mut Message>,
        stage: Stage,
        refusal: Refusal,
        on_error: crate::config::OnError,
    ) -> Flow {
        self.shared.metrics.error();
        match on_error {
            crate::config::OnError::Accept => {
                self.log_decision(msg.as_deref(), stage, Outcome::ErrorAccepted, &refusal);
                Ok(())
            }
            crate::config::OnError::Tempfail => {
                self.log_decision(msg.as_deref(), stage, Outcome::Tempfail, &refusal);
                Err(record(msg, stage, refusal))
            }
        }
    }

    /// Applies the mode (the message's, or one forced) to a verdict and
    /// logs the decision: a refusal in monitor mode lets the transaction
    /// go on; a failed check is answered as `on_error` says.
    pub(super) fn settle(
        &mut self,
        mut msg: Option<&mut Message>,
        stage: Stage,
        verdict: Verdict,
        forced: Option<Mode>,
    ) -> Flow {
        let mode = forced.unwrap_or_else(|| self.mode(msg.as_deref()));
        let refusal = match verdict {
            Verdict::Continue => return Ok(()),
            Verdict::TempError(cause) => {
                tracing::warn!(
                    conn_id = self.id,
                    stage = stage.as_str(),
                    backend = cause.backend.as_str(),
                    "{cause}"
                );
                let refusal = cause.reply.unwrap_or_else(reply::internal_error);
                let on_error = msg
                    .as_ref()
                    .map_or_else(|| self.shared.config().on_error, |m| m.config.on_error);
                return self.failed(msg, stage, refusal, on_error);
            }
            Verdict::Hold(hold) => {
                self.hold(msg, stage, hold, mode);
                return Ok(());
            }
            Verdict::Refuse(refusal) => refusal,
        };
        let permanent = refusal.reply.is_permanent();
        if permanent && refusal.rule != Rule::Incident {
            checks::incident::observe_refusal(self, msg.as_deref());
        }
        if mode == Mode::Monitor {
            let outcome = if permanent {
                Outcome::WouldReject
            } else {
                Outcome::WouldTempfail
            };
            self.log_decision(msg.as_deref(), stage, outcome, &refusal);
            if let Some(m) = msg.as_mut() {
                m.would = Some((stage, refusal));
            }
            return Ok(());
        }
        let outcome = if permanent {
            Outcome::Reject
        } else {
            Outcome::Tempfail
        };
        self.log_decision(msg.as_deref(), stage, outcome, &refusal);
        Err(record(msg, stage, refusal))
    }

    /// The mode the message (or, before MAIL FROM, the connection) is
    /// judged in.
    pub(super) fn mode(&self, msg: Option<&Message>) -> Mode {
        match msg {
            Some(m) => m.config.mode_for(m.class()),
            // Before MAIL FROM (connect): the mode of the class the client
            // IP alone matched, else the global one.
            None => self.connect_mode,
        }
    }

    /// A message to hold for review: recorded, so that end of message
    /// quarantines it (or, in monitor mode, only says it would have).
    fn hold(
        &mut self,
        msg: Option<&mut Message>,
        stage: Stage,
        hold: crate::verdict::Hold,
        mode: Mode,
    ) {
        let monitor = hold.monitor || mode == Mode::Monitor;
        let outcome = if monitor {
            Outcome::WouldHold
        } else {
            Outcome::Hold
        };
        self.log(
            msg.as_deref(),
            stage,
            outcome,
            hold.rule,
            None,
            &hold.incident,
        );
        if let Some(m) = msg {
            if monitor {
                m.would_hold = Some((stage, hold));
            } else {
                m.hold = Some((stage, hold));
            }
        }
    }

    pub(super) fn log_decision(
        &mut self,
        msg: Option<&Message>,
        stage: Stage,
        outcome: Outcome,
        refusal: &Refusal,
    ) {
        let incident = match (msg, refusal.rule) {
            (Some(m), Rule::Incident) => m.incident.as_ref().map(|i| i.name()),
            _ => None,
        };
        self.log(
            msg,
            stage,
            outcome,
            refusal.rule,
            Some(&refusal.reply),
            incident.as_deref().unwrap_or("-"),
        );
    }

    fn log(
        &mut self,
        msg: Option<&Message>,
        stage: Stage,
        outcome: Outcome,
        rule: Rule,
        reply: Option<&Reply>,
        incident: &str,
    ) {
        self.note(stage, "decision", || match reply {
            Some(r) => format!("{} ({rule}): {r}", outcome.as_str()),
            None => format!("{} ({rule}): {incident}", outcome.as_str()),
        });
        let class = match msg {
            Some(m) => m.class().map_or("-", |c| c.name.as_str()),
            None => self.connect_class.as_deref().unwrap_or("-"),
        };
        self.shared
            .metrics
            .decision(stage.as_str(), rule.as_str(), class, outcome.as_str());
        log::decision(&log::Decision {
            queue_id: msg.and_then(|m| m.queue_id.as_deref()).unwrap_or("-"),
            conn_id: self.id,
            stage: stage.as_str(),
            outcome,
            rule,
            reply,
            incident,
            client_ip: self.client(),
            class,
            sender: msg.map_or("-", |m| m.sender.as_str()),
            auth: msg.and_then(|m| m.login.as_deref()).unwrap_or("-"),
            rcpt_count: msg.map_or(0, |m| m.rcpt_accepted),
        });
    }

    /// Logs the summary line of the current message and forgets it (taken,
    /// so it is summarised once). A recorded refusal decides the verdict;
    /// else `ending`, how the message ended.
    pub(super) fn end_message(&mut self, ending: Ending) {
        let Some(msg) = self.message.take() else {
            return;
        };
        // The verdict, the stage that decided it and the refusal behind it.
        let (verdict, stage, refusal) = if let Some((stage, r)) = &msg.refused {
            (Final::of(&r.reply), Some(*stage), Some(r))
        } else if ending == Ending::Aborted && msg.rcpt_accepted == 0 && msg.rcpt_refused > 0 {
            // Every recipient refused: the message is refused as its last
            // recipient was.
            let last = msg.last_rcpt_refusal.as_ref();
            let verdict = last.map_or(Final::Reject, |r| Final::of(&r.reply));
            (verdict, Some(Stage::Rcpt), last)
        } else {
            match ending {
                Ending::Accepted => match (&msg.hold, &msg.would, &msg.would_hold) {
                    (Some((stage, _)), ..) => (Final::Hold, Some(*stage), None),
                    (None, Some((stage, w)), _) if w.reply.is_permanent() => {
                        (Final::WouldReject, Some(*stage), Some(w))
                    }
                    (None, Some((stage, w)), _) => (Final::WouldTempfail, Some(*stage), Some(w)),
                    (None, None, Some((stage, _))) => (Final::WouldHold, Some(*stage), None),
                    (None, None, None) => (Final::Accept, Some(Stage::Eom), None),
                },
                Ending::Aborted | Ending::Refused => (Final::Aborted, None, None),
            }
        };
        let incident = msg.incident.as_ref().map(|i| i.name());
        self.shared.metrics.message(verdict.as_str());
        if let Some(class) = msg.class() {
            if msg.config.mode_for(Some(class)) == Mode::Monitor {
                self.shared.learned.record(
                    &class.name,
                    msg.sender_address.as_ref(),
                    msg.from_address.as_ref(),
                    crate::incidents::now_ms() / 1000,
                );
            }
        }
        let summary = log::Summary {
            queue_id: msg.queue_id.as_deref().unwrap_or("-"),
            conn_id: self.id,
            client_ip: self.client(),
            helo: self.helo.as_deref().unwrap_or("-"),
            daemon: self.daemon.as_deref().unwrap_or("-"),
            class: msg.class().map_or("-", |c| c.name.as_str()),
            sender: &msg.sender,
            auth: msg.login.as_deref().unwrap_or("-"),
            rcpt_count: msg.rcpt_accepted,
            stage: stage.map_or("-", Stage::as_str),
            verdict: verdict.as_str(),
            rule: match (verdict, &msg.hold, &msg.would_hold) {
                (Final::Hold, Some((_, h)), _) | (Final::WouldHold, _, Some((_, h))) => {
                    h.rule.as_str()
                }
                _ => refusal.map_or("-", |r| r.rule.as_str()),
            },
            reply: refusal.map(|r| r.reply.to_string()),
            incident: incident.as_deref().unwrap_or("-"),
            dkim: &msg.summary.dkim,
            content: &msg.summary.content,
            antivirus: &msg.summary.antivirus,
            elapsed: msg.started.elapsed(),
            milter_us: (msg.busy + self.stage_started.map_or(Duration::ZERO, |t| t.elapsed()))
                .as_micros(),
        };
        log::summary(&summary);
        self.remember(&msg, &summary);
    }
}

impl Connection {
    /// The message's decision, and why it was held, as the console shows
    /// them (nothing when there is no console).
    fn remember(&self, msg: &Message, summary: &log::Summary<'_>) {
        let history = &self.shared.history;
        if !history.enabled() {
            return;
        }
        let at = crate::incidents::now_ms() / 1000;
        history.decision(crate::history::DecisionLine {
            at,
            queue_id: summary.queue_id.to_string(),
            client_ip: summary.client_ip.to_string(),
            class: summary.class.to_string(),
            sender: summary.sender.to_string(),
            auth: summary.auth.to_string(),
            rcpt_count: summary.rcpt_count,
            stage: summary.stage.to_string(),
            verdict: summary.verdict.to_string(),
            rule: summary.rule.to_string(),
            reply: summary.reply.clone().unwrap_or_else(|| "-".into()),
            incident: summary.incident.to_string(),
        });
        if let (Some((_, hold)), "hold", Some(queue_id)) =
            (&msg.hold, summary.verdict, &msg.queue_id)
        {
            history.held(crate::history::HeldNote {
                queue_id: queue_id.clone(),
                at,
                client_ip: summary.client_ip.to_string(),
                class: summary.class.to_string(),
                auth: summary.auth.to_string(),
                sender: summary.sender.to_string(),
                recipients: msg.rcpts.clone(),
                rule: hold.rule.as_str().to_string(),
                incident: hold.incident.clone(),
                reason: hold.reason.clone(),
            });
        }
    }
}

/// Records a refusal on the message: the one that ends it, or, at RCPT TO,
/// the last recipient's. Returns its reply.
fn record(msg: Option<&mut Message>, stage: Stage, refusal: Refusal) -> Reply {
    let reply = refusal.reply.clone();
    if let Some(m) = msg {
        if stage.ends_message() {
            m.refused = Some((stage, refusal));
        } else {
            m.last_rcpt_refusal = Some(refusal);
        }
    }
    reply
}

/// How the message ended.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum Ending {
    /// End of message reached and nothing refused it.
    Accepted,
    /// RSET, a new MAIL FROM, a lost connection.
    Aborted,
    /// A stage refused it; the refusal is recorded on the message.
    Refused,
}

/// A message's final verdict, as its summary line and the metrics show it.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Final {
    Accept,
    Reject,
    Tempfail,
    /// Monitor mode let through what would have been refused.
    WouldReject,
    WouldTempfail,
    /// Accepted and held for review (an open incident).
    Hold,
    WouldHold,
    Aborted,
}

impl Final {
    /// The verdict of a refusal with this reply.
    fn of(reply: &Reply) -> Self {
        if reply.is_permanent() {
            Final::Reject
        } else {
            Final::Tempfail
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Final::Accept => "accept",
            Final::Reject => "reject",
            Final::Tempfail => "tempfail",
            Final::WouldReject => "would_reject",
            Final::WouldTempfail => "would_tempfail",
            Final::Hold => "hold",
            Final::WouldHold => "would_hold",
            Final::Aborted => "aborted",
        }
    }
}
