//! The state of one milter connection (one SMTP session) and of its current
//! message, and the stage methods that run the policies over it.
//!
//! The connection part (client, HELO) lives as long as the SMTP session; the
//! message part starts at MAIL FROM and ends at end of message, at a
//! message-level refusal, or at an abort (RSET, or a new MAIL FROM).

use crate::address::{parse_envelope, Address, Domain, EnvelopeAddress};
use crate::config::{CheckMode, SignMode};
use crate::config::{Class, Config, Mode};
use crate::limiter::{Check, ConnectionLease, LimitName, Outcome as LimitOutcome};
use crate::log::{self, Outcome};
use crate::policy::rate::Facts;
use crate::policy::{self, from_header::FromHeaders, sender::Sender, Verdict};
use crate::reply::{self, Refusal, Reply};
use crate::state::Shared;
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
    message: Option<Message>,
    /// When the stage being handled began, and which, to count the milter's
    /// own time.
    stage_started: Option<Instant>,
    stage_name: &'static str,
    /// This connection's place under `concurrent_per_client`, given back
    /// when the connection is dropped, however it ends.
    lease: Option<ConnectionLease>,
    /// Every check and its outcome, when asked for (`explain`).
    trace: Option<Vec<Step>>,
    /// The class known at connect (one matched by the client IP alone) and
    /// the mode it carries, which the connection limits are judged under.
    connect_class: Option<String>,
    connect_mode: Mode,
}

/// One check of the policy and what came of it, for `explain`.
#[derive(Clone, Debug)]
pub struct Step {
    pub stage: &'static str,
    pub check: &'static str,
    pub outcome: String,
}

struct Message {
    /// The configuration in force when the message began: a reload in the
    /// middle of a message does not change the rules it is judged by.
    config: Arc<Config>,
    started: Instant,
    /// Time spent in the milter's own stage handling for this message, the
    /// stage in progress excluded.
    busy: Duration,
    queue_id: Option<String>,
    sender: String,
    /// The sender as an address (None for `<>` or an unparsable one).
    sender_address: Option<Address>,
    login: Option<String>,
    /// Index into `config.classes`.
    class: Option<usize>,
    rcpt_accepted: usize,
    rcpt_refused: usize,
    from: FromHeaders,
    /// The From: domain, once end of headers found exactly one mailbox.
    from_domain: Option<Domain>,
    /// Header and body bytes seen, against `content.max_message_size`.
    size: usize,
    /// The whole message, kept only when DKIM signs or verifies.
    content: Option<Content>,
    /// The signatures added, for the summary line.
    dkim: String,
    /// The content score and the rules that fired, for the summary line.
    content_rules: String,
    /// Accepted recipients (for rspamd), at most `recipients.max_per_message`.
    rcpts: Vec<String>,
    /// Received: values, top first, when internal hops are scrubbed.
    received: Vec<Vec<u8>>,
    /// How many of each `headers.remove` header the message has.
    remove_counts: Vec<usize>,
    /// The refusal that ended the message, if any, and its stage.
    refused: Option<(&'static str, Refusal)>,
    /// The last refused recipient's refusal, for the summary.
    last_rcpt_refusal: Option<Refusal>,
    /// The last refusal monitor mode let through, and its stage.
    would: Option<(&'static str, Refusal)>,
    summarised: bool,
}

impl Message {
    fn class(&self) -> Option<&Class> {
        self.class.and_then(|i| self.config.classes.get(i))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared
            .metrics
            .open_connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A change to the message's headers at end of message.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum HeaderAction {
    /// Added above every other header.
    Insert { name: &'static str, value: String },
    /// An existing header replaced or deleted.
    Change(policy::headers::Edit),
}

/// A message as the MTA passed it to the milter, kept whole (once) for the
/// content checks and DKIM: `Name: value` per header (milter header values
/// carry their folding with bare LF, made CRLF here), a blank line at the
/// end of the headers, then the body as received. Body chunks are kept as
/// the buffers the milter protocol delivered them in (no copy) and joined
/// once, into an allocation of the exact size, at end of message.
#[derive(Default)]
struct Content {
    head: Vec<u8>,
    body: Vec<bytes::Bytes>,
    body_len: usize,
    /// DKIM-Signature headers seen.
    signatures: usize,
    body_started: bool,
    /// The content scan made at end of headers when they show a plain
    /// text message (it stands unless the body starts like a ZIP archive).
    plain_scan: Option<crate::content::Scan>,
    /// True when only the content checks read the message and the headers
    /// show a plain text message: the body is then counted but not kept,
    /// bar its first bytes (the ZIP check).
    skip_body: bool,
}

/// Body bytes kept when the body is skipped: enough to see "PK".
const BODY_PREFIX: usize = 2;

impl Content {
    fn header(&mut self, name: &[u8], value: &[u8]) {
        if name.eq_ignore_ascii_case(b"dkim-signature") {
            self.signatures += 1;
        }
        self.head.reserve(name.len() + value.len() + 4);
        self.head.extend_from_slice(name);
        self.head.extend_from_slice(b": ");
        let mut prev = 0u8;
        for &b in value {
            if b == b'\n' && prev != b'\r' {
                self.head.push(b'\r');
            }
            self.head.push(b);
            prev = b;
        }
        self.head.extend_from_slice(b"\r\n");
    }

    fn body(&mut self, chunk: bytes::Bytes) {
        self.end_headers();
        if self.skip_body {
            if self.body_len < BODY_PREFIX {
                let take = (BODY_PREFIX - self.body_len).min(chunk.len());
                self.body_len += take;
                // A copy: a slice would keep the whole chunk's buffer.
                self.body
                    .push(bytes::Bytes::copy_from_slice(&chunk[..take]));
            }
            return;
        }
        self.body_len += chunk.len();
        self.body.push(chunk);
    }

    fn end_headers(&mut self) {
        if !self.body_started {
            self.head.extend_from_slice(b"\r\n");
            self.body_started = true;
        }
    }

    /// The whole message, in one buffer.
    fn into_raw(mut self) -> bytes::Bytes {
        self.end_headers();
        let mut raw = std::mem::take(&mut self.head);
        raw.reserve_exact(self.body_len);
        for chunk in &self.body {
            raw.extend_from_slice(chunk);
        }
        bytes::Bytes::from(raw)
    }
}

/// The limits a batch checked, for `explain`.
fn limit_names(checks: &[Check], concurrent: bool) -> String {
    let mut names: Vec<String> = checks
        .iter()
        .map(|c| format!("{} (key {})", c.name.as_str(), c.key))
        .collect();
    if concurrent {
        names.push(LimitName::ConcurrentPerClient.as_str().to_string());
    }
    if names.is_empty() {
        "none configured".into()
    } else {
        format!("pass: {}", names.join(", "))
    }
}

/// What a class is matched by, for `explain`.
fn class_matched_by(c: &Class) -> &'static str {
    match (c.clients.is_empty(), c.auth.is_some()) {
        (false, true) => "matched by client address and login",
        (false, false) => "matched by client address",
        (true, true) => "matched by login",
        (true, false) => "matches every client",
    }
}

/// Whether something besides the content checks reads the whole message:
/// signing, verifying, rspamd.
fn whole_message_needed(config: &Config, shared: &Shared) -> bool {
    signs_or_verifies(config) || shared.rspamd.is_some()
}

/// Whether DKIM reads the whole message: to sign it or to verify it.
fn signs_or_verifies(config: &Config) -> bool {
    (!config.dkim.keys.is_empty() && config.dkim.sign != SignMode::Off)
        || config.dkim.verify_existing != CheckMode::Off
}

/// Whether a message must be kept whole: for DKIM or the content checks.
fn needs_content(config: &Config) -> bool {
    signs_or_verifies(config) || config.content.active()
}

/// The MTA's macros that matter to a stage.
#[derive(Clone, Debug, Default)]
pub struct Macros {
    pub queue_id: Option<String>,
    pub auth_login: Option<String>,
}

impl Connection {
    pub fn new(shared: Arc<Shared>, client_name: String, client_ip: Option<IpAddr>) -> Self {
        let id = shared.next_connection_id();
        shared
            .metrics
            .open_connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let client = client_ip.map_or_else(|| client_name.clone(), |ip| ip.to_string());
        let connect_mode = shared.config().mode;
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
            stage_name: "",
            lease: None,
            trace: None,
            connect_class: None,
            connect_mode,
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

    /// Records a check's outcome when tracing; `outcome` is built only then.
    fn note(&mut self, stage: &'static str, check: &'static str, outcome: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(Step {
                stage,
                check,
                outcome: outcome(),
            });
        }
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    fn client(&self) -> &str {
        &self.client
    }

    /// Marks the start of a stage's handling.
    pub fn begin_stage(&mut self, stage: &'static str) {
        self.stage_started = Some(Instant::now());
        self.stage_name = stage;
    }

    /// Marks its end: the time goes to the current message, if any, and to
    /// the stage's histogram.
    pub fn end_stage(&mut self) {
        let Some(t) = self.stage_started.take() else {
            return;
        };
        let took = t.elapsed();
        self.shared.metrics.stage_time(self.stage_name, took);
        if let Some(msg) = self.message.as_mut() {
            msg.busy += took;
        }
    }

    pub fn helo(&mut self, name: &str) {
        self.helo = Some(name.to_string());
    }

    /// Connect: the connection rate and the open-connection cap, by client
    /// IP. A connection refused by one consumes nothing of the other.
    pub async fn connect(&mut self) -> Answer {
        let Some(ip) = self.client_ip else {
            return Answer::Continue;
        };
        let config = self.shared.config();
        let class = policy::class::resolve(&config, Some(ip), None);
        self.connect_mode = config.mode_for(class);
        self.connect_class = class.map(|c| c.name.clone());
        let facts = Facts {
            ip: Some(ip),
            class: class.map(|c| c.name.as_str()),
            ..Facts::default()
        };
        let (checks, concurrent) = policy::rate::connection(&config.rate_limits, &facts);
        let client = self.client.clone();
        let limiter = &self.shared.limiter;
        let mut lease = None;
        let started = Instant::now();
        if let Some(max) = concurrent {
            match limiter.open_connection(ip, max).await {
                Ok(Some(l)) => lease = Some(l),
                Ok(None) => {
                    let r = reply::too_many_connections(
                        LimitName::ConcurrentPerClient.as_str(),
                        &client,
                    );
                    return self.settle("connect", Verdict::Refuse(r), false);
                }
                Err(e) => return self.limiter_failed("connect", &e),
            }
        }
        let checked = limiter.check(&checks).await;
        self.limiter_time(started);
        let verdict = match checked {
            Ok(LimitOutcome::Allowed) => Verdict::Continue,
            Ok(LimitOutcome::Denied { index, .. }) => Verdict::Refuse(reply::too_many_connections(
                checks[index].name.as_str(),
                &client,
            )),
            Err(e) => return self.limiter_failed("connect", &e),
        };
        let passed = verdict == Verdict::Continue;
        let answer = self.settle("connect", verdict, false);
        if passed && self.trace.is_some() {
            let names = limit_names(&checks, concurrent.is_some());
            self.note("connect", "connection limits", || names);
        }
        if answer == Answer::Continue {
            self.lease = lease;
        }
        answer
    }

    /// MAIL FROM: starts a new message (ending any earlier one), resolves the
    /// client's class, checks the sender, then the message rate limits.
    pub async fn mail(&mut self, sender_arg: &[u8], macros: &Macros) -> Answer {
        self.end_message("aborted");
        let config = self.shared.config();
        let login = macros.auth_login.clone().filter(|l| !l.is_empty());
        let class = policy::class::resolve(&config, self.client_ip, login.as_deref());
        let class_index = class.and_then(|c| config.classes.iter().position(|k| k.name == c.name));
        let sender: Sender = parse_envelope(sender_arg).map_err(|_| {
            String::from_utf8_lossy(sender_arg)
                .trim_matches(['<', '>'])
                .to_string()
        });
        let sender_text = match &sender {
            Ok(s) => s.to_string(),
            Err(raw) => raw.clone(),
        };
        let sender_address = match &sender {
            Ok(EnvelopeAddress::Address(a)) => Some(a.clone()),
            _ => None,
        };
        let verdict =
            policy::sender::check(&config, class, &self.client, &sender, login.as_deref());
        let checks = policy::rate::message(
            &config.rate_limits,
            &Facts {
                ip: self.client_ip,
                class: class.map(|c| c.name.as_str()),
                login: login.as_deref(),
                sender: sender_address.as_ref(),
                rcpt: None,
            },
        );
        let content = needs_content(&config).then(Content::default);
        let remove_len = config.remove_headers.len();
        self.message = Some(Message {
            config,
            started: Instant::now(),
            busy: Duration::ZERO,
            queue_id: macros.queue_id.clone(),
            sender: sender_text,
            sender_address,
            login,
            class: class_index,
            rcpt_accepted: 0,
            rcpt_refused: 0,
            from: FromHeaders::default(),
            from_domain: None,
            size: 0,
            content,
            dkim: "-".into(),
            content_rules: "-".into(),
            rcpts: Vec::new(),
            received: Vec::new(),
            remove_counts: vec![0; remove_len],
            refused: None,
            last_rcpt_refusal: None,
            would: None,
            summarised: false,
        });
        if self.trace.is_some() {
            let config = self.shared.config();
            let class = class_index.and_then(|i| config.classes.get(i));
            let what = match class {
                Some(c) => format!("{} ({})", c.name, class_matched_by(c)),
                None => format!(
                    "none: an unknown client (unknown_clients: {})",
                    match config.unknown_clients {
                        crate::config::UnknownClients::RelayDeny => "relay_deny",
                        crate::config::UnknownClients::Reject => "reject",
                    }
                ),
            };
            self.note("mail", "class", || what);
        }
        let sender_passed = verdict == Verdict::Continue;
        // Policy first, then SPF, then the limits: a sender refused by
        // either consumes no quota.
        if let refused @ Answer::Refuse(_) = self.settle("mail", verdict, true) {
            return refused;
        }
        if sender_passed && self.trace.is_some() {
            let shown = self
                .message
                .as_ref()
                .map_or(String::new(), |m| m.sender.clone());
            self.note("mail", "sender", || {
                format!("pass: <{shown}> is allowed for this client")
            });
        }
        if let refused @ Answer::Refuse(_) = self.spf_egress().await {
            return refused;
        }
        if self.message.is_none() {
            // on_error accepted an SPF failure... and ended nothing; or
            // tempfail ended the message: nothing more to check.
            return Answer::Continue;
        }
        self.rate_limit("mail", &checks, true).await
    }

    /// RCPT TO: open relay, the recipient count, then the recipient rate
    /// limits.
    pub async fn rcpt(&mut self, rcpt_arg: &[u8], macros: &Macros) -> Answer {
        let Some(msg) = self.message.as_mut() else {
            // No MAIL FROM seen: the MTA would not send this; refuse nothing
            // that policy has not judged.
            return Answer::Continue;
        };
        if macros.queue_id.is_some() {
            msg.queue_id.clone_from(&macros.queue_id);
        }
        let rcpt =
            parse_envelope(rcpt_arg).map_err(|_| String::from_utf8_lossy(rcpt_arg).to_string());
        let class = msg.class();
        let verdict = policy::relay::check(&msg.config, class, &rcpt)
            .and_then(|| policy::recipients::check(&msg.config, msg.rcpt_accepted));
        let rcpt_address = match &rcpt {
            Ok(EnvelopeAddress::Address(a)) => Some(a),
            _ => None,
        };
        let checks = policy::rate::recipient(
            &msg.config.rate_limits,
            &Facts {
                ip: self.client_ip,
                class: class.map(|c| c.name.as_str()),
                login: msg.login.as_deref(),
                sender: msg.sender_address.as_ref(),
                rcpt: rcpt_address,
            },
        );
        let passed = verdict == Verdict::Continue;
        let answer = match self.settle("rcpt", verdict, false) {
            Answer::Continue => {
                if passed && self.trace.is_some() {
                    let shown = String::from_utf8_lossy(rcpt_arg).into_owned();
                    let known = self.message.as_ref().is_some_and(|m| m.class.is_some());
                    self.note("rcpt", "relay, recipient count", || {
                        format!(
                            "pass: {shown} ({})",
                            if known {
                                "a known client may send anywhere"
                            } else {
                                "a local recipient"
                            }
                        )
                    });
                }
                self.rate_limit("rcpt", &checks, false).await
            }
            refused => refused,
        };
        if let Some(msg) = self.message.as_mut() {
            match answer {
                Answer::Continue => {
                    msg.rcpt_accepted += 1;
                    if msg.rcpts.len() < msg.config.max_recipients {
                        let r = String::from_utf8_lossy(rcpt_arg);
                        msg.rcpts
                            .push(r.trim().trim_matches(['<', '>']).to_string());
                    }
                }
                Answer::Refuse(_) => msg.rcpt_refused += 1,
            }
        }
        answer
    }

    /// Runs a batch of rate checks and settles the outcome.
    async fn rate_limit(
        &mut self,
        stage: &'static str,
        checks: &[Check],
        ends_message: bool,
    ) -> Answer {
        let started = Instant::now();
        let checked = self.shared.limiter.check(checks).await;
        self.limiter_time(started);
        let verdict = match checked {
            Ok(LimitOutcome::Allowed) => Verdict::Continue,
            Ok(LimitOutcome::Denied { index, retry_after }) => {
                let c = &checks[index];
                Verdict::Refuse(reply::rate_limited(c.name.as_str(), &c.key, retry_after))
            }
            Err(e) => return self.limiter_failed(stage, &e),
        };
        if verdict == Verdict::Continue && self.trace.is_some() {
            let names = limit_names(checks, false);
            self.note(stage, "rate limits", || names);
        }
        self.settle(stage, verdict, ends_message)
    }

    /// A limiter round trip, counted when it went to Redis.
    fn limiter_time(&self, started: Instant) {
        if self.shared.limiter.redis.is_some() {
            self.shared.metrics.backend_time("redis", started.elapsed());
        }
    }

    /// The limiter could not decide (its backend failed, and `on_failure`
    /// says to tempfail): an internal error, answered as `on_error` says.
    fn limiter_failed(&mut self, stage: &'static str, e: &crate::limiter::LimiterError) -> Answer {
        tracing::warn!(conn_id = self.id, stage, "rate limiter failed: {e}");
        self.internal_error(stage)
    }

    /// SPF of the sender domain for our egress IPs (`spf.check_egress`).
    async fn spf_egress(&mut self) -> Answer {
        let Some(msg) = self.message.as_ref() else {
            return Answer::Continue;
        };
        let mode = msg.config.spf_check_egress;
        let Some(sender) = msg.sender_address.clone() else {
            return Answer::Continue;
        };
        if mode == CheckMode::Off {
            return Answer::Continue;
        }
        let config = msg.config.clone();
        let helo = self
            .helo
            .clone()
            .unwrap_or_else(|| self.client_name.clone());
        let started = Instant::now();
        let result = match &self.shared.dns {
            Ok(resolver) => policy::spf::check(resolver, &config, &sender, &helo).await,
            Err(_) => policy::spf::Spf::TempError,
        };
        self.shared.metrics.backend_time("dns", started.elapsed());
        match result {
            policy::spf::Spf::Authorised => {
                self.note("mail", "SPF of the sender domain", || {
                    format!("pass: {} authorises our egress IPs", sender.domain)
                });
                Answer::Continue
            }
            policy::spf::Spf::Refuse(r) => {
                self.settle_check("mail", Verdict::Refuse(r), mode, true)
            }
            policy::spf::Spf::TempError => {
                self.shared
                    .metrics
                    .dns_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(conn_id = self.id, "SPF lookup failed for {sender}");
                self.internal_error("mail")
            }
        }
    }

    /// A check with an `off | warn | reject` mode: warn logs the refusal as
    /// `warn` and lets the transaction go on.
    fn settle_check(
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

    /// A header: From: is kept (bounded by `from_header.max_length`), and
    /// every header when DKIM needs the message.
    pub fn header(&mut self, name: &[u8], value: &[u8]) -> Answer {
        let Some(msg) = self.message.as_mut() else {
            return Answer::Continue;
        };
        msg.size += name.len() + value.len() + 4;
        if name.eq_ignore_ascii_case(b"from") {
            if value.len() > msg.config.from_max_length {
                msg.from.too_long = true;
                msg.from.values.push(Vec::new());
            } else {
                msg.from.values.push(value.to_vec());
            }
        }
        if msg.size > msg.config.content.max_message_size {
            return self.settle("header", Verdict::Refuse(reply::message_too_big()), true);
        }
        if name.eq_ignore_ascii_case(b"received")
            && msg.config.strip_internal_received
            && !msg.config.internal_networks.is_empty()
        {
            msg.received.push(value.to_vec());
        }
        for (i, h) in msg.config.remove_headers.iter().enumerate() {
            if name.eq_ignore_ascii_case(h.as_bytes()) {
                msg.remove_counts[i] += 1;
            }
        }
        if let Some(c) = msg.content.as_mut() {
            c.header(name, value);
        }
        Answer::Continue
    }

    /// End of headers: the From: check.
    pub fn end_of_headers(&mut self, macros: &Macros) -> Answer {
        let Some(msg) = self.message.as_mut() else {
            return Answer::Continue;
        };
        if macros.queue_id.is_some() {
            msg.queue_id.clone_from(&macros.queue_id);
        }
        if let Some(c) = msg.content.as_mut() {
            c.end_headers();
            if msg.config.content.active() {
                c.plain_scan = crate::content::scan_headers(&c.head, &msg.config.content);
                c.skip_body =
                    c.plain_scan.is_some() && !whole_message_needed(&msg.config, &self.shared);
            }
        }
        let judged = policy::from_header::judge(&msg.config, msg.class(), &msg.from);
        msg.from_domain = judged.domain;
        let verdict = judged.verdict;
        if verdict == Verdict::Continue && self.trace.is_some() {
            let strict = msg.config.from_strict;
            let inbound = msg.class.is_none().then_some(msg.config.inbound_own_domain);
            let domain = msg.from_domain.as_ref().map(|d| d.to_string());
            self.note("eoh", "From: header", || match (inbound, strict, domain) {
                (Some(crate::config::InboundOwnDomain::Accept), ..) => {
                    "not checked: inbound mail (inbound_own_domain: accept)".into()
                }
                (Some(crate::config::InboundOwnDomain::Reject), ..) => {
                    "pass: inbound mail, no From: mailbox in our domains".into()
                }
                (None, false, _) => "not checked (from_header.strict: false)".into(),
                (None, true, Some(d)) => format!("pass: one mailbox, domain {d} is ours"),
                (None, true, None) => "pass".into(),
            });
        }
        self.settle("eoh", verdict, true)
    }

    /// A body chunk: counted, and kept when DKIM needs the message.
    pub fn body(&mut self, chunk: bytes::Bytes) -> Answer {
        let Some(msg) = self.message.as_mut() else {
            return Answer::Continue;
        };
        msg.size += chunk.len();
        if msg.size > msg.config.content.max_message_size {
            return self.settle("body", Verdict::Refuse(reply::message_too_big()), true);
        }
        if let Some(c) = msg.content.as_mut() {
            c.body(chunk);
        }
        Answer::Continue
    }

    /// End of message: existing signatures verified, then our signatures
    /// made; returns the answer and the headers to insert at the top.
    pub async fn end_of_message(&mut self, macros: &Macros) -> (Answer, Vec<HeaderAction>) {
        let Some(msg) = self.message.as_mut() else {
            return (Answer::Continue, Vec::new());
        };
        if macros.queue_id.is_some() {
            msg.queue_id.clone_from(&macros.queue_id);
        }
        let mut insert = Vec::new();
        if let Some(mut content) = msg.content.take() {
            let signatures = content.signatures;
            let head_len = content.head.len();
            let plain_scan = content.plain_scan.take();
            let raw = content.into_raw();
            // The scan made at end of headers stands unless the body turned
            // out to start like a ZIP archive.
            let plain_scan = plain_scan.filter(|_| {
                !crate::content::body_needs_walk(raw.get(head_len..).unwrap_or_default())
            });
            let config = msg.config.clone();
            if config.content.active() {
                match self.content_checks(&raw, &config, plain_scan) {
                    Ok(tags) => insert.extend(
                        tags.into_iter()
                            .map(|(name, value)| HeaderAction::Insert { name, value }),
                    ),
                    Err(refused) => return (refused, Vec::new()),
                }
            }
            if self.message.is_none() {
                return (Answer::Continue, Vec::new());
            }
            match self.rspamd(raw.clone()).await {
                Ok(tags) => insert.extend(tags),
                Err(answer) => return (answer, Vec::new()),
            }
            if self.message.is_none() {
                return (Answer::Continue, Vec::new());
            }
            let mode = config.dkim.verify_existing;
            if mode != CheckMode::Off {
                let count = signatures;
                let started = Instant::now();
                let existing = match &self.shared.dns {
                    Ok(r) => policy::dkim::verify_existing(r, &config, &raw, count).await,
                    Err(e) => policy::dkim::Existing::TempError(e.clone()),
                };
                self.shared.metrics.backend_time("dns", started.elapsed());
                if let policy::dkim::Existing::TempError(e) = &existing {
                    self.shared
                        .metrics
                        .dns_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(conn_id = self.id, "DKIM verification failed: {e}");
                    let answer = self.internal_error("eom");
                    if answer != Answer::Continue {
                        return (answer, Vec::new());
                    }
                } else {
                    let v = policy::dkim::verdict(&existing);
                    if v == Verdict::Continue {
                        self.note("eom", "existing DKIM signatures", || {
                            format!("pass: {count} signature(s), none failing")
                        });
                    }
                    if let refused @ Answer::Refuse(_) = self.settle_check("eom", v, mode, true) {
                        return (refused, Vec::new());
                    }
                }
            }
            let Some(msg) = self.message.as_mut() else {
                return (Answer::Continue, Vec::new());
            };
            match policy::dkim::signing_keys(&config, msg.class(), msg.from_domain.as_ref()) {
                Ok(keys) => {
                    let mut signed = Vec::new();
                    for key in keys {
                        match key.sign(&raw, &config.dkim.headers) {
                            Ok(value) => {
                                self.shared
                                    .metrics
                                    .signature(key.domain.as_str(), key.algorithm());
                                signed.push(format!(
                                    "d={} s={} a={}",
                                    key.domain,
                                    key.selector,
                                    key.algorithm()
                                ));
                                insert.push(HeaderAction::Insert {
                                    name: "DKIM-Signature",
                                    value,
                                });
                            }
                            Err(e) => {
                                tracing::error!(
                                    conn_id = self.id,
                                    "DKIM signing with {key:?} failed: {e}"
                                );
                                return (self.internal_error("eom"), Vec::new());
                            }
                        }
                    }
                    if !signed.is_empty() {
                        msg.dkim = signed.join(", ");
                    }
                    if self.trace.is_some() {
                        let shown = if signed.is_empty() {
                            "not signed (no key for the From: domain, or signing off)".to_string()
                        } else {
                            format!("signed: {}", signed.join(", "))
                        };
                        self.note("eom", "DKIM signing", || shown);
                    }
                }
                Err(refusal) => {
                    let answer = self.settle("eom", Verdict::Refuse(refusal), true);
                    if answer != Answer::Continue {
                        return (answer, Vec::new());
                    }
                }
            }
        }
        if let Some(msg) = self.message.as_ref() {
            let config = &msg.config;
            let scrub = policy::headers::scrub_received(&msg.received, &config.internal_networks);
            insert.extend(scrub.into_iter().map(HeaderAction::Change));
            for (name, n) in config.remove_headers.iter().zip(&msg.remove_counts) {
                insert.extend(
                    policy::headers::remove_all(name, *n)
                        .into_iter()
                        .map(HeaderAction::Change),
                );
            }
        }
        self.end_message("accept");
        (Answer::Continue, insert)
    }

    /// rspamd's verdict, when it is configured: reject, defer, or tag.
    async fn rspamd(&mut self, raw: bytes::Bytes) -> Result<Vec<HeaderAction>, Answer> {
        let Some(client) = &self.shared.rspamd else {
            return Ok(Vec::new());
        };
        let Some(msg) = self.message.as_ref() else {
            return Ok(Vec::new());
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(conn_id = self.id, "rspamd client unusable: {e}");
                return Err(self.internal_error("eom"));
            }
        };
        let hostname = msg
            .config
            .hostname
            .as_ref()
            .map_or("localhost".to_string(), |h| h.to_string());
        let env = crate::content::rspamd::Envelope {
            client_ip: self.client_ip.map(|ip| ip.to_string()),
            helo: self.helo.as_deref(),
            hostname: &hostname,
            sender: &msg.sender,
            recipients: &msg.rcpts,
            login: msg.login.as_deref(),
            queue_id: msg.queue_id.as_deref(),
        };
        let started = Instant::now();
        let checked = client.check(raw, &env).await;
        self.shared
            .metrics
            .backend_time("rspamd", started.elapsed());
        let verdict = match checked {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(conn_id = self.id, "rspamd check failed: {e}");
                let answer = self.internal_error("eom");
                return if answer == Answer::Continue {
                    Ok(Vec::new())
                } else {
                    Err(answer)
                };
            }
        };
        if self.trace.is_some() {
            let shown = format!(
                "action {:?}, score {:.1}, symbols {}",
                verdict.action,
                verdict.score,
                verdict.symbols_text(10)
            );
            self.note("eom", "rspamd", || shown);
        }
        if let Some(msg) = self.message.as_mut() {
            msg.content_rules = format!(
                "{} rspamd={} score={:.1} symbols={}",
                msg.content_rules,
                verdict.action.replace(' ', "_"),
                verdict.score,
                verdict.symbols_text(10)
            );
        }
        let refusal = match verdict.action.as_str() {
            "reject" => Some(reply::spam_rejected("rspamd", verdict.score)),
            "soft reject" | "greylist" => Some(reply::spam_deferred("rspamd", verdict.score)),
            _ => None,
        };
        if let Some(r) = refusal {
            if let refused @ Answer::Refuse(_) = self.settle("eom", Verdict::Refuse(r), true) {
                return Err(refused);
            }
        }
        if matches!(verdict.action.as_str(), "add header" | "rewrite subject") {
            return Ok(vec![
                HeaderAction::Insert {
                    name: "X-Spam-Score",
                    value: format!("{:.1}", verdict.score),
                },
                HeaderAction::Insert {
                    name: "X-Spam-Symbols",
                    value: verdict.symbols_text(20),
                },
            ]);
        }
        Ok(Vec::new())
    }

    /// Banned attachments, then the score: refused, deferred, tagged (the
    /// headers to add), or nothing.
    fn content_checks(
        &mut self,
        raw: &[u8],
        config: &Config,
        plain_scan: Option<crate::content::Scan>,
    ) -> Result<Vec<(&'static str, String)>, Answer> {
        let scan = plain_scan.unwrap_or_else(|| crate::content::scan(raw, &config.content));
        let score = scan.score();
        if self.trace.is_some() {
            let c = &config.content;
            let rules = if scan.rules.is_empty() {
                "none".to_string()
            } else {
                scan.rules_text()
            };
            let banned = scan.banned.clone();
            self.note("eom", "content", || {
                format!(
                    "score {score:.1} (rules: {rules}; reject at {}, tempfail at {}, tag at {}){}",
                    c.reject_score,
                    c.tempfail_score,
                    c.tag_score,
                    banned.map_or(String::new(), |b| format!("; banned attachment .{b}"))
                )
            });
        }
        if let Some(msg) = self.message.as_mut() {
            msg.content_rules = format!(
                "score={score:.1} rules={}",
                if scan.rules.is_empty() {
                    "-".into()
                } else {
                    scan.rules_text()
                }
            );
        }
        if let Some(ext) = &scan.banned {
            if let refused @ Answer::Refuse(_) =
                self.settle("eom", Verdict::Refuse(reply::banned_attachment(ext)), true)
            {
                return Err(refused);
            }
        }
        let c = &config.content;
        let verdict = if score >= c.reject_score {
            Verdict::Refuse(reply::spam_rejected("content_score", score))
        } else if score >= c.tempfail_score {
            Verdict::Refuse(reply::spam_deferred("content_score", score))
        } else {
            Verdict::Continue
        };
        if let refused @ Answer::Refuse(_) = self.settle("eom", verdict, true) {
            return Err(refused);
        }
        if score >= c.tag_score {
            return Ok(vec![
                ("X-Egress-Score", format!("{score:.1}")),
                ("X-Egress-Rules", scan.rules_text()),
            ]);
        }
        Ok(Vec::new())
    }

    /// The MTA aborted the message (RSET, a refusal elsewhere, a lost client).
    pub fn abort(&mut self) {
        self.end_message("aborted");
    }

    /// The connection closes: its open-connection lease goes back.
    pub fn close(&mut self) {
        self.end_message("aborted");
        self.lease = None;
    }

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
    fn failed(&mut self, stage: &'static str, refusal: Refusal) -> Answer {
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
                self.end_message("tempfail");
                Answer::Refuse(refusal.reply)
            }
        }
    }

    /// Applies the mode to a verdict, logs the decision, and tells the MTA.
    /// `ends_message`: a refusal at this stage ends the message (MAIL FROM,
    /// end of headers), as opposed to refusing one recipient.
    fn settle(&mut self, stage: &'static str, verdict: Verdict, ends_message: bool) -> Answer {
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
            self.end_message(outcome.as_str());
        }
        Answer::Refuse(reply)
    }

    fn log_decision(&mut self, stage: &'static str, outcome: Outcome, refusal: &Refusal) {
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

    /// Logs the summary line of the current message once, and forgets it.
    /// `how` is the verdict when nothing more specific is known.
    fn end_message(&mut self, how: &str) {
        let Some(msg) = self.message.take() else {
            return;
        };
        if msg.summarised {
            return;
        }
        // The verdict, the stage that decided it and the refusal behind it.
        let (verdict, stage, refusal) = if let Some((stage, r)) = &msg.refused {
            let verdict = if r.reply.is_permanent() {
                "reject"
            } else {
                "tempfail"
            };
            (verdict, *stage, Some(r))
        } else if how == "aborted" && msg.rcpt_accepted == 0 && msg.rcpt_refused > 0 {
            ("reject", "rcpt", msg.last_rcpt_refusal.as_ref())
        } else if how == "accept" {
            match &msg.would {
                Some((stage, w)) if w.reply.is_permanent() => ("would_reject", *stage, Some(w)),
                Some((stage, w)) => ("would_tempfail", *stage, Some(w)),
                None => ("accept", "eom", None),
            }
        } else {
            (how, "-", None)
        };
        if verdict == "accept" || verdict.starts_with("would") {
            self.shared.stats.count(Outcome::Accept);
        }
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
