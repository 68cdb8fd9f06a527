//! The milter stages: each keeps the message's shared facts (envelope,
//! size, buffer, queue id), runs the checks in order, and leaves through
//! [`Connection::finish`], the one door out of a stage.

use super::checks::{self, Check};
use super::cx::{Rcpt, Whole};
use super::*;
use crate::address::{parse_envelope, EnvelopeAddress};

/// The hook a stage runs on each check.
#[derive(Clone, Copy)]
enum Hook<'a> {
    Mail,
    Rcpt,
    Header(&'a [u8], &'a [u8]),
    Eoh,
    Body(&'a [u8]),
    Eom,
}

impl Hook<'_> {
    fn stage(self) -> Stage {
        match self {
            Hook::Mail => Stage::Mail,
            Hook::Rcpt => Stage::Rcpt,
            Hook::Header(..) => Stage::Header,
            Hook::Eoh => Stage::Eoh,
            Hook::Body(_) => Stage::Body,
            Hook::Eom => Stage::Eom,
        }
    }
}

/// The message and its checks, taken from the connection for a stage and
/// given back however the stage ends (a panic in a check included: the
/// message goes on being judged).
struct Taken<'a> {
    conn: &'a mut Connection,
    msg: Option<Box<Message>>,
    checks: Vec<checks::Any>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Some(mut msg) = self.msg.take() {
            msg.checks = std::mem::take(&mut self.checks);
            self.conn.message = Some(msg);
        }
    }
}

impl Taken<'_> {
    /// The check's view of the session, and the checks to run.
    fn split<'a>(
        &'a mut self,
        stage: Stage,
        rcpt: Option<&'a Rcpt>,
        whole: Option<&'a Whole>,
    ) -> Option<(Cx<'a>, &'a mut Vec<checks::Any>)> {
        let msg = self.msg.as_mut()?;
        let cx = Cx {
            conn: &mut *self.conn,
            msg,
            stage,
            rcpt,
            whole,
            against: false,
        };
        Some((cx, &mut self.checks))
    }
}

/// The sync hooks over the checks.
fn run_now_on(cx: &mut Cx<'_>, checks: &mut [checks::Any], hook: Hook<'_>) -> Flow {
    for check in checks.iter_mut() {
        match hook {
            Hook::Header(name, value) => check.header(cx, name, value)?,
            Hook::Body(chunk) => check.body(cx, chunk)?,
            Hook::Mail | Hook::Rcpt | Hook::Eoh | Hook::Eom => {}
        }
    }
    Ok(())
}

impl Connection {
    /// The current message and its checks, taken for a stage.
    fn take(&mut self) -> Option<Taken<'_>> {
        let mut msg = self.message.take()?;
        let checks = std::mem::take(&mut msg.checks);
        Some(Taken {
            conn: self,
            msg: Some(msg),
            checks,
        })
    }

    /// Runs a stage's hook on every check of the current message, in
    /// order, until one refuses.
    async fn run(&mut self, hook: Hook<'_>, rcpt: Option<&Rcpt>, whole: Option<&Whole>) -> Flow {
        let Some(mut taken) = self.take() else {
            return Ok(());
        };
        let Some((mut cx, checks)) = taken.split(hook.stage(), rcpt, whole) else {
            return Ok(());
        };
        for check in checks.iter_mut() {
            match hook {
                Hook::Mail => check.mail(&mut cx).await?,
                Hook::Rcpt => check.rcpt(&mut cx).await?,
                Hook::Eoh => check.eoh(&mut cx).await?,
                Hook::Eom => check.eom(&mut cx).await?,
                Hook::Header(..) | Hook::Body(_) => return run_now_on(&mut cx, checks, hook),
            }
        }
        Ok(())
    }

    /// Runs a hook that does not wait (a header, a body chunk) on every
    /// check, in order, until one refuses.
    fn run_now(&mut self, hook: Hook<'_>) -> Flow {
        let Some(mut taken) = self.take() else {
            return Ok(());
        };
        let Some((mut cx, checks)) = taken.split(hook.stage(), None, None) else {
            return Ok(());
        };
        run_now_on(&mut cx, checks, hook)
    }

    /// Connect: the connection limits, by client IP.
    pub async fn connect(&mut self) -> Answer {
        let flow = checks::rate::connect(self).await;
        self.finish(flow)
    }

    /// MAIL FROM: starts a new message (ending any earlier one), resolves the
    /// client's class, then runs the checks.
    pub async fn mail(&mut self, sender_arg: &[u8], macros: &Macros) -> Answer {
        self.end_message(Ending::Aborted);
        let config = self.shared.config();
        let shared = self.shared.clone();
        let lists = shared.lists(self.trace.is_some());
        let login = macros.auth_login.clone().filter(|l| !l.is_empty());
        let (class, class_failure) =
            match crate::class::resolve(&config, &lists, self.client_ip, login.as_deref()).await {
                Ok(c) => (c, None),
                Err(e) => (None, Some(e.to_string())),
            };
        let class = class.map(|(i, _)| i);
        let envelope_sender: Sender = parse_envelope(sender_arg).map_err(|_| {
            String::from_utf8_lossy(sender_arg)
                .trim_matches(['<', '>'])
                .to_string()
        });
        let sender = match &envelope_sender {
            Ok(s) => s.to_string(),
            Err(raw) => raw.clone(),
        };
        let sender_address = match &envelope_sender {
            Ok(EnvelopeAddress::Address(a)) => Some(a.clone()),
            _ => None,
        };
        let checks = checks::made(&config);
        let null_sender = matches!(envelope_sender, Ok(EnvelopeAddress::Null));
        let content = checks
            .iter()
            .any(|c| c.reads_whole(null_sender))
            .then(Content::default);
        let shown = match class.and_then(|i| config.classes.get(i)) {
            Some(c) => format!("{} ({})", c.name, trace::class_matched_by(c)),
            None => format!(
                "none: an unknown client (unknown_clients: {})",
                match config.unknown_clients {
                    crate::config::UnknownClients::RelayDeny => "relay_deny",
                    crate::config::UnknownClients::Reject => "reject",
                }
            ),
        };
        self.note(Stage::Mail, "class", || shown);
        self.note_lookups(Stage::Mail, &lists);
        self.message = Some(Box::new(Message {
            config,
            started: Instant::now(),
            busy: Duration::ZERO,
            queue_id: macros.queue_id.clone(),
            sender,
            envelope_sender,
            sender_address,
            login,
            class,
            class_failure,
            rcpt_accepted: 0,
            rcpt_refused: 0,
            rcpts: Vec::new(),
            size: 0,
            content,
            from_address: None,
            from_domain: None,
            summary: Summary::default(),
            checks,
            changes: Vec::new(),
            refused: None,
            last_rcpt_refusal: None,
            would: None,
            incident: None,
            hold: None,
            would_hold: None,
        }));
        let flow = self.run(Hook::Mail, None, None).await;
        self.finish(flow)
    }

    /// RCPT TO: the checks on one recipient. A refused recipient does not
    /// end the message.
    pub async fn rcpt(&mut self, rcpt_arg: &[u8], macros: &Macros) -> Answer {
        if macros.rcpt_mailer.as_deref() == Some("error") {
            // A recipient the MTA itself rejected (it has answered the
            // client already): evidence for the incidents, nothing to judge.
            if let Some(msg) = self.message.take() {
                checks::incident::mta_rejected(self, &msg).await;
                self.message = Some(msg);
            }
            return Answer::Continue;
        }
        let Some(msg) = self.message.as_mut() else {
            // No MAIL FROM seen: the MTA would not send this; refuse
            // nothing that policy has not judged.
            return Answer::Continue;
        };
        if macros.queue_id.is_some() {
            msg.queue_id.clone_from(&macros.queue_id);
        }
        let rcpt = Rcpt {
            raw: rcpt_arg.to_vec(),
            parsed: parse_envelope(rcpt_arg)
                .map_err(|_| String::from_utf8_lossy(rcpt_arg).to_string()),
        };
        let flow = self.run(Hook::Rcpt, Some(&rcpt), None).await;
        if let Some(msg) = self.message.as_mut() {
            match flow {
                Ok(()) => {
                    msg.rcpt_accepted += 1;
                    if msg.rcpts.len() < msg.config.max_recipients {
                        let r = String::from_utf8_lossy(rcpt_arg);
                        msg.rcpts
                            .push(r.trim().trim_matches(['<', '>']).to_string());
                    }
                }
                Err(_) => msg.rcpt_refused += 1,
            }
        }
        self.finish(flow)
    }

    /// A header: counted against the size, run through the checks, and
    /// kept when a check reads the whole message.
    pub fn header(&mut self, name: &[u8], value: &[u8]) -> Answer {
        let Some(msg) = self.message.as_mut() else {
            return Answer::Continue;
        };
        msg.size += name.len() + value.len() + 4;
        let flow = self.run_now(Hook::Header(name, value));
        if flow.is_ok() {
            if let Some(c) = self.message.as_mut().and_then(|m| m.content.as_mut()) {
                c.header(name, value);
            }
        }
        self.finish(flow)
    }

    /// End of headers.
    pub async fn end_of_headers(&mut self, macros: &Macros) -> Answer {
        let Some(msg) = self.message.as_mut() else {
            return Answer::Continue;
        };
        if macros.queue_id.is_some() {
            msg.queue_id.clone_from(&macros.queue_id);
        }
        if let Some(c) = msg.content.as_mut() {
            c.end_headers();
        }
        let flow = self.run(Hook::Eoh, None, None).await;
        self.finish(flow)
    }

    /// A body chunk: counted, run through the checks, and kept when a
    /// check reads the whole message.
    pub fn body(&mut self, chunk: bytes::Bytes) -> Answer {
        let Some(msg) = self.message.as_mut() else {
            return Answer::Continue;
        };
        msg.size += chunk.len();
        let flow = self.run_now(Hook::Body(&chunk));
        if flow.is_ok() {
            if let Some(c) = self.message.as_mut().and_then(|m| m.content.as_mut()) {
                c.body(chunk);
            }
        }
        self.finish(flow)
    }

    /// End of message: the checks that read the whole message, then those
    /// that count it; returns the answer and the changes to the message.
    pub async fn end_of_message(&mut self, macros: &Macros) -> (Answer, Vec<HeaderAction>) {
        let Some(msg) = self.message.as_mut() else {
            return (Answer::Continue, Vec::new());
        };
        if macros.queue_id.is_some() {
            msg.queue_id.clone_from(&macros.queue_id);
        }
        let whole = msg.content.take().map(|c| Whole {
            signatures: c.signatures,
            head_len: c.head.len(),
            raw: c.into_raw(),
        });
        let flow = self.run(Hook::Eom, None, whole.as_ref()).await;
        if let Err(reply) = flow {
            return (self.finish(Err(reply)), Vec::new());
        }
        let mut changes = self
            .message
            .as_mut()
            .map(|m| std::mem::take(&mut m.changes))
            .unwrap_or_default();
        // Edits of the headers the message came with first, then ours
        // added at the top (an index counts the message's own headers
        // only, whichever way the MTA numbers added ones), then the
        // quarantine.
        changes.sort_by_key(|c| match c {
            HeaderAction::Change(_) => 0,
            HeaderAction::Insert { .. } => 1,
            HeaderAction::Quarantine(_) => 2,
        });
        self.end_message(Ending::Accepted);
        (Answer::Continue, changes)
    }
}
