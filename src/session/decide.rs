//! The one place where a verdict becomes the answer to the MTA: monitor
//! mode and `on_error` applied, the decision line logged and counted, the
//! message ended with its summary line.

use super::*;

impl Connection {
    /// An internal failure in a stage: answers as `on_error` says, and ends
    /// the message if the answer refuses it.
    pub fn internal_error(&mut self, stage: &'static str) -> Answer {
        self.failed(stage, crate::reply::internal_error())
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
        self.failed(command, crate::reply::out_of_order())
    }

    /// A stage could not decide: answers as `on_error` says, and ends the
    /// message if the answer refuses it.
    pub(super) fn failed(&mut self, stage: &'static str, refusal: Refusal) -> Answer {
        let config = self
            .message
            .as_ref()
            .map_or_else(|| self.shared.config(), |m| m.config.clone());
        self.shared.stats.count_error();
        match config.on_error {
            crate::config::OnError::Accept => {
                self.log_decision(stage, Outcome::ErrorAccepted, &refusal);
                Answer::Continue
            }
            crate::config::OnError::Tempfail => {
                self.log_decision(stage, Outcome::Tempfail, &refusal);
                if let Some(msg) = self.message.as_mut() {
                    msg.refused = Some((stage, refusal.clone()));
                }
                self.end_message(Ending::Refused(Final::Tempfail));
                Answer::Refuse(refusal.reply)
            }
        }
    }

    /// Applies the mode to a verdict, logs the decision, and tells the MTA.
    /// `ends_message`: a refusal at this stage ends the message (MAIL FROM,
    /// end of headers), as opposed to refusing one recipient.
    pub(super) fn settle(
        &mut self,
        stage: &'static str,
        verdict: Verdict,
        ends_message: bool,
    ) -> Answer {
        let Verdict::Refuse(refusal) = verdict else {
            return Answer::Continue;
        };
        let mode = match &self.message {
            Some(m) => m.config.mode_for(m.class()),
            // Before MAIL FROM (connect): the mode of the class the client
            // IP alone matched, else the global one.
            None => self.connect_mode,
        };
        let permanent = refusal.reply.is_permanent();
        if mode == Mode::Monitor {
            let outcome = if permanent {
                Outcome::WouldReject
            } else {
                Outcome::WouldTempfail
            };
            self.shared.stats.count(outcome);
            self.log_decision(stage, outcome, &refusal);
            if let Some(msg) = self.message.as_mut() {
                msg.would = Some((stage, refusal));
            }
            return Answer::Continue;
        }
        let outcome = if permanent {
            Outcome::Reject
        } else {
            Outcome::Tempfail
        };
        self.shared.stats.count(outcome);
        self.log_decision(stage, outcome, &refusal);
        let reply = refusal.reply.clone();
        if let Some(msg) = self.message.as_mut() {
            if ends_message {
                msg.refused = Some((stage, refusal));
            } else {
                msg.last_rcpt_refusal = Some(refusal);
            }
        }
        if ends_message {
            self.end_message(Ending::Refused(Final::of(&reply)));
        }
        Answer::Refuse(reply)
    }

    /// A check with an `off | warn | reject` mode: warn logs the refusal as
    /// `warn` and lets the transaction go on.
    pub(super) fn settle_check(
        &mut self,
        stage: &'static str,
        verdict: Verdict,
        mode: CheckMode,
        ends_message: bool,
    ) -> Answer {
        match (mode, verdict) {
            (CheckMode::Off, _) | (_, Verdict::Continue) => Answer::Continue,
            (CheckMode::Warn, Verdict::Refuse(r)) => {
                self.log_decision(stage, Outcome::Warn, &r);
                Answer::Continue
            }
            (CheckMode::Reject, v) => self.settle(stage, v, ends_message),
        }
    }

    pub(super) fn log_decision(
        &mut self,
        stage: &'static str,
        outcome: Outcome,
        refusal: &Refusal,
    ) {
        if self.trace.is_some() {
            let shown = format!("{} ({}): {}", outcome.as_str(), refusal.rule, refusal.reply);
            self.note(stage, "decision", || shown);
        }
        let msg = self.message.as_ref();
        let class = match msg {
            Some(m) => m.class().map_or("-", |c| c.name.as_str()),
            None => self.connect_class.as_deref().unwrap_or("-"),
        };
        self.shared
            .metrics
            .decision(stage, refusal.rule, class, outcome.as_str());
        log::decision(&log::Decision {
            queue_id: msg.and_then(|m| m.queue_id.as_deref()).unwrap_or("-"),
            conn_id: self.id,
            stage,
            outcome,
            rule: refusal.rule,
            reply: &refusal.reply,
            client_ip: self.client(),
            class,
            sender: msg.map_or("-", |m| m.sender.as_str()),
            auth: msg.and_then(|m| m.login.as_deref()).unwrap_or("-"),
            rcpt_count: msg.map_or(0, |m| m.rcpt_accepted),
        });
    }

    /// Logs the summary line of the current message and forgets it (taken,
    /// so it is summarised once). `ending` is how the stage ended it, which
    /// decides the verdict when no refusal was recorded.
    pub(super) fn end_message(&mut self, ending: Ending) {
        let Some(msg) = self.message.take() else {
            return;
        };
        // The verdict, the stage that decided it and the refusal behind it.
        let (verdict, stage, refusal) = if let Some((stage, r)) = &msg.refused {
            (Final::of(&r.reply), *stage, Some(r))
        } else if ending == Ending::Aborted && msg.rcpt_accepted == 0 && msg.rcpt_refused > 0 {
            (Final::Reject, "rcpt", msg.last_rcpt_refusal.as_ref())
        } else {
            match ending {
                Ending::Accepted => match &msg.would {
                    Some((stage, w)) if w.reply.is_permanent() => {
                        (Final::WouldReject, *stage, Some(w))
                    }
                    Some((stage, w)) => (Final::WouldTempfail, *stage, Some(w)),
                    None => (Final::Accept, "eom", None),
                },
                Ending::Aborted => (Final::Aborted, "-", None),
                Ending::Refused(f) => (f, "-", None),
            }
        };
        if matches!(
            verdict,
            Final::Accept | Final::WouldReject | Final::WouldTempfail
        ) {
            self.shared.stats.count(Outcome::Accept);
        }
        let verdict = verdict.as_str();
        self.shared.metrics.message(verdict);
        log::summary(&log::Summary {
            queue_id: msg.queue_id.as_deref().unwrap_or("-"),
            conn_id: self.id,
            client_ip: self.client(),
            helo: self.helo.as_deref().unwrap_or("-"),
            daemon: self.daemon.as_deref().unwrap_or("-"),
            class: msg.class().map_or("-", |c| c.name.as_str()),
            sender: &msg.sender,
            auth: msg.login.as_deref().unwrap_or("-"),
            rcpt_count: msg.rcpt_accepted,
            stage,
            verdict,
            rule: refusal.map_or("-", |r| r.rule),
            reply: refusal.map(|r| r.reply.to_string()),
            dkim: &msg.dkim,
            content: &msg.content_rules,
            elapsed: msg.started.elapsed(),
            milter_us: (msg.busy + self.stage_started.map_or(Duration::ZERO, |t| t.elapsed()))
                .as_micros(),
        });
    }
}

/// How a stage ends the message it is judging.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum Ending {
    /// End of message reached and nothing refused it.
    Accepted,
    /// RSET, a new MAIL FROM, a lost connection.
    Aborted,
    /// Refused with this verdict.
    Refused(Final),
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
            Final::Aborted => "aborted",
        }
    }
}
