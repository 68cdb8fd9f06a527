//! The state of one milter connection (one SMTP session) and of its current
//! message, and the pipeline that runs the checks over it.
//!
//! The connection part (client, HELO) lives as long as the SMTP session; the
//! message part starts at MAIL FROM and ends at end of message, at a
//! message-level refusal, or at an abort (RSET, or a new MAIL FROM).
//!
//! - `mod.rs`: the connection and the message, what every check shares;
//! - `stages.rs`: each milter stage: the message's facts kept, then the
//!   checks run in order;
//! - `checks/`: the checks, one unit each, and their order;
//! - `cx.rs`: what a check sees of the session, and the door through which
//!   it decides;
//! - `decide.rs`: the one place where a decision becomes an answer, under
//!   monitor mode and `on_error`, with the decision and summary lines;
//! - `buffer.rs`: the message as the MTA passed it, kept for the checks
//!   that read it whole;
//! - `trace.rs`: the record of every check, for `explain`.

mod buffer;
pub(crate) mod checks;
mod cx;
mod decide;
mod stage;
mod stages;
mod trace;

pub use decide::Final;
pub use stage::Stage;
pub use trace::Step;

use crate::address::{Address, Domain};
use crate::config::{Class, Config, Mode};
use crate::limiter::ConnectionLease;
use crate::reply::{Refusal, Reply};
use crate::state::Shared;
use buffer::Content;
use checks::sender::rules::Sender;
use cx::Cx;
use decide::{Ending, Flow};
use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

/// What the milter layer must answer the MTA.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Answer {
    Continue,
    Refuse(Reply),
}

pub struct Connection {
    pub id: u64,
    shared: Arc<Shared>,
    pub client_ip: Option<IpAddr>,
    pub client_name: String,
    /// The client as logs and replies show it: its IP, else the MTA's name
    /// for it.
    client: String,
    /// The MTA service or address the client connected to.
    pub daemon: Option<String>,
    pub helo: Option<String>,
    /// Boxed: a stage takes it out and puts it back, which then moves a
    /// pointer, not the message.
    message: Option<Box<Message>>,
    /// When the stage being handled began, and which, to count the milter's
    /// own time.
    stage_started: Option<Instant>,
    stage: Stage,
    /// This connection's place under `concurrent_per_client`, given back
    /// when the connection is dropped, however it ends.
    lease: Option<ConnectionLease>,
    /// Every check and its outcome, when asked for (`explain`).
    trace: Option<Vec<Step>>,
    /// The class known at connect (one matched by the client IP alone) and
    /// the mode it carries, which the connection limits are judged under;
    /// set by `connect` before anything reads them.
    connect_class: Option<String>,
    connect_mode: Mode,
}

/// One message: what every check shares (the envelope, the buffer, the
/// queue id, the class, what the decisions so far were); each check keeps
/// its own state in its unit.
struct Message {
    /// The configuration in force when the message began: a reload in the
    /// middle of a message does not change the rules it is judged by.
    config: Arc<Config>,
    started: Instant,
    /// Time spent in the milter's own stage handling for this message, the
    /// stage in progress excluded.
    busy: Duration,
    queue_id: Option<String>,
    /// The envelope sender as the summary shows it.
    sender: String,
    /// The envelope sender parsed (or its raw text when it does not parse).
    envelope_sender: Sender,
    /// The sender as an address (None for `<>` or an unparsable one).
    sender_address: Option<Address>,
    login: Option<String>,
    /// Index into `config.classes`.
    class: Option<usize>,
    /// Why the class could not be known, if a source failed.
    class_failure: Option<String>,
    rcpt_accepted: usize,
    rcpt_refused: usize,
    /// Accepted recipients (for rspamd), at most `recipients.max_per_message`.
    rcpts: Vec<String>,
    /// Header and body bytes seen.
    size: usize,
    /// The whole message, kept only when a check reads it.
    content: Option<Content>,
    /// The From: mailbox, once end of headers found exactly one.
    from_address: Option<Address>,
    /// Its domain.
    from_domain: Option<Domain>,
    /// The summary line's fields that checks fill.
    summary: Summary,
    /// The checks the message is judged by, with what each keeps of it.
    checks: Vec<checks::Any>,
    /// The header changes and the quarantine the checks ask for at end of
    /// message.
    changes: Vec<HeaderAction>,
    /// The refusal that ended the message, if any, and its stage.
    refused: Option<(Stage, Refusal)>,
    /// The last refused recipient's refusal, for the summary.
    last_rcpt_refusal: Option<Refusal>,
    /// The last refusal monitor mode let through, and its stage.
    would: Option<(Stage, Refusal)>,
    /// The open incident of one of the message's keys, if any.
    incident: Option<crate::incidents::Incident>,
    /// The message is to be held for review, or would be in monitor mode.
    hold: Option<(Stage, crate::verdict::Hold)>,
    would_hold: Option<(Stage, crate::verdict::Hold)>,
}

/// The fields of the summary line that checks fill (`-` when they did
/// not run).
struct Summary {
    /// The signatures added.
    dkim: String,
    /// The content score and the rules that fired (and rspamd's verdict).
    content: String,
    /// The virus scan's result (and signature).
    antivirus: String,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            dkim: "-".into(),
            content: "-".into(),
            antivirus: "-".into(),
        }
    }
}

impl Message {
    /// The accepted recipients, parsed (those that do not parse left out).
    fn rcpt_addresses(&self) -> Vec<Address> {
        self.rcpts
            .iter()
            .filter_map(
                |r| match crate::address::parse_envelope(format!("<{r}>").as_bytes()) {
                    Ok(crate::address::EnvelopeAddress::Address(a)) => Some(a),
                    _ => None,
                },
            )
            .collect()
    }

    fn class(&self) -> Option<&Class> {
        self.class.and_then(|i| self.config.classes.get(i))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The place given back before the count falls.
        drop(self.lease.take());
        self.shared
            .metrics
            .open_connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A change to the message at end of message: its headers, or its fate.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum HeaderAction {
    /// Added above every other header.
    Insert { name: &'static str, value: String },
    /// An existing header replaced or deleted.
    Change(checks::headers::rules::Edit),
    /// The whole message held for review (the milter's quarantine action:
    /// Postfix's hold queue, Sendmail's quarantine), with the reason.
    Quarantine(String),
}

/// The MTA's macros that matter to a stage.
#[derive(Clone, Debug, Default)]
pub struct Macros {
    pub queue_id: Option<String>,
    pub auth_login: Option<String>,
    /// `{rcpt_mailer}` at RCPT TO: `error` for a recipient the MTA itself
    /// rejected (sent only when the milter asked for rejected recipients).
    pub rcpt_mailer: Option<String>,
}

impl Connection {
    pub fn new(shared: Arc<Shared>, client_name: String, client_ip: Option<IpAddr>) -> Self {
        let id = shared.next_connection_id();
        shared
            .metrics
            .open_connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let client = client_ip.map_or_else(|| client_name.clone(), |ip| ip.to_string());
        Self {
            id,
            shared,
            client_ip,
            client,
            client_name,
            daemon: None,
            helo: None,
            message: None,
            stage_started: None,
            stage: Stage::Connect,
            lease: None,
            trace: None,
            connect_class: None,
            connect_mode: Mode::default(),
        }
    }

    /// Records every check from now on, for `explain`.
    pub fn record_trace(&mut self) {
        self.trace = Some(Vec::new());
    }

    /// The checks recorded so far.
    pub fn take_trace(&mut self) -> Vec<Step> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    fn client(&self) -> &str {
        &self.client
    }

    /// Marks the start of a stage's handling.
    pub fn begin_stage(&mut self, stage: Stage) {
        self.stage_started = Some(Instant::now());
        self.stage = stage;
    }

    /// Marks its end: the time goes to the current message, if any, and to
    /// the stage's histogram.
    pub fn end_stage(&mut self) {
        let Some(t) = self.stage_started.take() else {
            return;
        };
        let took = t.elapsed();
        self.shared.metrics.stage_time(self.stage.as_str(), took);
        if let Some(msg) = self.message.as_mut() {
            msg.busy += took;
        }
    }

    pub fn helo(&mut self, name: &str) {
        self.helo = Some(name.to_string());
    }

    /// The MTA aborted the message (RSET, a refusal elsewhere, a lost client).
    pub fn abort(&mut self) {
        self.end_message(Ending::Aborted);
    }

    /// The connection closes: its open-connection lease goes back.
    pub fn close(&mut self) {
        self.end_message(Ending::Aborted);
        self.lease = None;
    }
}

#[cfg(test)]
mod tests;
