//! Every SMTP reply the milter gives, with its RFC 3463 enhanced status code,
//! in one place. Policies build their refusals here; the milter layer turns
//! them into protocol replies.

use crate::rate::LimitId;
use std::fmt;

pub use crate::rule::Rule;

/// An SMTP reply: a 4xx or 5xx code, its enhanced code, one line of text.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Reply {
    pub code: &'static str,
    pub enhanced: &'static str,
    pub text: String,
}

impl Reply {
    /// True for a permanent (5xx) reply, false for a temporary (4xx) one.
    pub fn is_permanent(&self) -> bool {
        self.code.starts_with('5')
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

/// A refusal: the rule that decided and the reply it gives.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Refusal {
    pub rule: Rule,
    pub reply: Reply,
}

fn refuse(rule: Rule, code: &'static str, enhanced: &'static str, text: String) -> Refusal {
    Refusal {
        rule,
        reply: Reply {
            code,
            enhanced,
            text: sanitize(&text),
        },
    }
}

/// Reply text goes back on the SMTP wire: keep it to one line of printable
/// ASCII whatever a client put in the values it quotes. `%` goes too:
/// Sendmail formats milter replies with printf-style expansion.
fn sanitize(text: &str) -> String {
    const MAX: usize = 400;
    let mut out: String = text
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '%') || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if out.len() > MAX {
        out.truncate(MAX);
        out.push_str("...");
    }
    out
}

pub fn relay_denied() -> Refusal {
    refuse(Rule::Relay, "554", "5.7.1", "Relay access denied".into())
}

/// `verify_sender`: the mail store (or the source) does not know the
/// envelope sender. RFC 3463 X.1.7: bad sender's mailbox address syntax or
/// existence, as Postfix's `reject_unverified_sender` answers.
pub fn sender_does_not_exist(sender: &str) -> Refusal {
    refuse(
        Rule::VerifySender,
        "550",
        "5.1.7",
        format!("Sender address <{sender}> does not exist"),
    )
}

/// `verify_sender`: the store could not be asked (on_error decides).
pub fn sender_unverified(sender: &str) -> Refusal {
    refuse(
        Rule::VerifySender,
        "451",
        "4.1.7",
        format!("Sender address <{sender}> could not be verified"),
    )
}

/// `verify_recipients`: no such mailbox here (RFC 3463 X.1.1, bad
/// destination mailbox address).
pub fn recipient_does_not_exist(rcpt: &str) -> Refusal {
    refuse(
        Rule::VerifyRecipients,
        "550",
        "5.1.1",
        format!("Recipient <{rcpt}> does not exist"),
    )
}

/// `verify_recipients`: the store could not be asked (on_error decides).
pub fn recipient_unverified(rcpt: &str) -> Refusal {
    refuse(
        Rule::VerifyRecipients,
        "451",
        "4.1.1",
        format!("Recipient <{rcpt}> could not be verified"),
    )
}

pub fn client_not_authorised(client: &str) -> Refusal {
    refuse(
        Rule::UnknownClient,
        "550",
        "5.7.1",
        format!("Client {client} not authorised to send mail"),
    )
}

pub fn sender_not_authorised(rule: Rule, sender: &str, class: &str) -> Refusal {
    refuse(
        rule,
        "550",
        "5.7.1",
        format!("Sender <{sender}> not authorised for {class}"),
    )
}

pub fn sender_not_owned(sender: &str, login: &str) -> Refusal {
    refuse(
        Rule::LoginMatch,
        "553",
        "5.7.1",
        format!("Sender <{sender}> not owned by user {login}"),
    )
}

pub fn null_sender(class: &str) -> Refusal {
    refuse(
        Rule::NullSender,
        "550",
        "5.7.1",
        format!("Null sender not allowed for {class}"),
    )
}

pub fn too_many_recipients() -> Refusal {
    refuse(
        Rule::MaxRecipients,
        "452",
        "4.5.3",
        "Too many recipients".into(),
    )
}

pub fn no_from_header() -> Refusal {
    refuse(
        Rule::FromHeader,
        "550",
        "5.6.0",
        "Message has no From: header".into(),
    )
}

pub fn malformed_from_header(why: &str) -> Refusal {
    refuse(
        Rule::FromHeader,
        "550",
        "5.6.0",
        format!("Malformed From: header ({why})"),
    )
}

pub fn several_from_headers(n: usize) -> Refusal {
    refuse(
        Rule::FromHeader,
        "550",
        "5.7.1",
        format!("Message has {n} From: headers, one is allowed"),
    )
}

pub fn several_from_mailboxes(n: usize) -> Refusal {
    refuse(
        Rule::FromHeader,
        "550",
        "5.7.1",
        format!("From: header holds {n} mailboxes, one is allowed"),
    )
}

pub fn from_group() -> Refusal {
    refuse(
        Rule::FromHeader,
        "550",
        "5.7.1",
        "From: header holds a group, not one mailbox".into(),
    )
}

pub fn from_domain_not_authorised(domain: &str) -> Refusal {
    refuse(
        Rule::FromHeader,
        "550",
        "5.7.1",
        format!("From: domain {domain} not authorised"),
    )
}

pub fn from_domain_from_outside(domain: &str) -> Refusal {
    refuse(
        Rule::InboundOwnDomain,
        "550",
        "5.7.1",
        format!("From: domain {domain} may not be used from outside"),
    )
}

/// A rate limit: the limit's name is the rule.
pub fn rate_limited(limit: LimitId, key: &str, retry_after: std::time::Duration) -> Refusal {
    // Whole seconds, rounded up: "retry in 0s" would invite a retry storm.
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    refuse(
        Rule::Limit(limit),
        "451",
        "4.7.1",
        format!("Rate limit {limit} exceeded for {key}, retry in {secs}s"),
    )
}

/// A message larger than a byte budget's whole burst: it can never pass.
pub fn over_byte_budget(limit: LimitId, key: &str) -> Refusal {
    refuse(
        Rule::Limit(limit),
        "552",
        "5.3.4",
        format!("Message size exceeds rate limit {limit} for {key}"),
    )
}

pub fn too_many_connections(limit: LimitId, client: &str) -> Refusal {
    refuse(
        Rule::Limit(limit),
        "421",
        "4.7.0",
        format!("Too many connections from {client}"),
    )
}

pub fn spf_not_authorised(domain: &str) -> Refusal {
    refuse(
        Rule::SpfEgress,
        "550",
        "5.7.23",
        format!("SPF of {domain} does not authorise this gateway"),
    )
}

pub fn existing_dkim_fails(domain: &str, why: &str) -> Refusal {
    refuse(
        Rule::DkimExisting,
        "550",
        "5.7.20",
        format!("DKIM signature of {domain} does not verify ({why})"),
    )
}

pub fn too_many_signatures(n: usize, max: usize) -> Refusal {
    refuse(
        Rule::DkimExisting,
        "550",
        "5.7.20",
        format!("Message carries {n} DKIM signatures, at most {max} are accepted"),
    )
}

pub fn no_dkim_key(domain: &str) -> Refusal {
    refuse(
        Rule::DkimSign,
        "451",
        "4.3.0",
        format!("No DKIM signing key for {domain}"),
    )
}

pub fn message_too_big() -> Refusal {
    refuse(
        Rule::MaxMessageSize,
        "552",
        "5.3.4",
        "Message size exceeds fixed limit".into(),
    )
}

pub fn banned_attachment(ext: &str) -> Refusal {
    refuse(
        Rule::BannedAttachment,
        "550",
        "5.7.1",
        format!("Attachment type .{ext} not allowed"),
    )
}

/// The attachment checks could not finish: an archive or a nesting past
/// a cap (`zip_entries`, `zip_depth`, `zip_inner_size`, `mime_depth`,
/// `mime_readings`).
pub fn unchecked_content(cap: &str) -> Refusal {
    refuse(
        Rule::UncheckedContent,
        "550",
        "5.7.1",
        format!("Message too deeply nested or too large to check ({cap})"),
    )
}

/// An archive the attachment checks cannot read whole (an encrypted entry,
/// a compression method the reader does not have), with
/// `attachments.unreadable_archives: reject`.
pub fn unreadable_archive(why: &str) -> Refusal {
    refuse(
        Rule::UncheckedContent,
        "550",
        "5.7.1",
        format!("Message has an archive that cannot be checked ({why})"),
    )
}

pub fn spam_rejected(rule: Rule, score: f64) -> Refusal {
    refuse(
        rule,
        "550",
        "5.7.1",
        format!("Message rejected as spam (score {score:.1})"),
    )
}

pub fn spam_deferred(rule: Rule, score: f64) -> Refusal {
    refuse(
        rule,
        "451",
        "4.7.1",
        format!("Message deferred as suspected spam (score {score:.1})"),
    )
}

/// A virus found by clamd (`antivirus.action: reject` or `tempfail`).
pub fn virus(signature: &str, permanent: bool) -> Refusal {
    let text = format!("Message contains a virus ({signature})");
    if permanent {
        refuse(Rule::Antivirus, "550", "5.7.1", text)
    } else {
        refuse(Rule::Antivirus, "451", "4.7.1", text)
    }
}

/// The quarantine reason for a message held for a virus.
pub fn virus_hold_reason(signature: &str) -> String {
    sanitize(&format!(
        "egress-milter: virus {signature}: held for review"
    ))
}

/// A message from a key with an open incident (`incidents.action:
/// tempfail` or `reject`).
pub fn suspended(key: &str, permanent: bool) -> Refusal {
    if permanent {
        refuse(
            Rule::Incident,
            "550",
            "5.7.1",
            format!("Sending from {key} is suspended"),
        )
    } else {
        refuse(
            Rule::Incident,
            "451",
            "4.7.1",
            format!("Sending from {key} is suspended"),
        )
    }
}

/// A recipient suppressed after hard failures (`bounces.suppress`).
pub fn suppressed(address: &str, status: &str, until: &str) -> Refusal {
    refuse(
        Rule::Suppressed,
        "550",
        "5.1.1",
        format!("Recipient <{address}> bounced ({status}); not sent again before {until}"),
    )
}

/// Mail of a class paused while one of our addresses or domains is
/// listed (`reputation.on_listed.action: tempfail`).
pub fn sending_paused(target: &str, list: &str) -> Refusal {
    refuse(
        Rule::Reputation,
        "451",
        "4.7.1",
        format!("Sending paused: {target} is listed on {list}"),
    )
}

/// The quarantine reason for mail held while listed
/// (`reputation.on_listed.action: hold`).
pub fn paused_hold_reason(target: &str, list: &str) -> String {
    sanitize(&format!(
        "egress-milter: {target} is listed on {list}: held for review"
    ))
}

/// The reason given with the quarantine action (Postfix logs it with the
/// held message; Sendmail keeps it in the queue file).
pub fn hold_reason(incident: &str, signal: &str) -> String {
    sanitize(&format!(
        "egress-milter incident {incident} ({signal}): held for review"
    ))
}

pub fn internal_error() -> Refusal {
    refuse(
        Rule::InternalError,
        "451",
        "4.3.0",
        "Temporary policy failure".into(),
    )
}

/// The MTA sent a command out of order (a header after the body, a
/// recipient before the sender): the message cannot be judged, and the
/// answer is `on_error`'s, as for any failure to decide.
pub fn out_of_order() -> Refusal {
    refuse(
        Rule::OutOfOrder,
        "451",
        "4.3.0",
        "Temporary policy failure".into(),
    )
}
