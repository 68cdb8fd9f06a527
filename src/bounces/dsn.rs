//! Reading a delivery-status notice: RFC 3464's `multipart/report;
//! report-type=delivery-status` (Postfix, Exchange, Gmail, Exim 4.9x and
//! most others), and, as a best effort, the plain-text bounces of qmail
//! and older Exim, only where they state an SMTP status. A notice that
//! says nothing certain is unreadable: counted, never guessed at.

use mail_parser::{MessageParser, MimeHeaders};

/// What a notice says of one recipient.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Outcome {
    /// The recipient, as the notice writes it (`Final-Recipient`).
    pub recipient: String,
    pub action: Action,
    /// `5.1.1`, `4.4.7`...
    pub status: String,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Action {
    Failed,
    Delayed,
    /// delivered, relayed, expanded: nothing against the recipient.
    Other,
}

impl Outcome {
    /// A hard failure: failed, with a permanent (5.x.x) status.
    pub fn hard(&self) -> bool {
        self.action == Action::Failed && self.status.starts_with('5')
    }

    /// A hard failure that says the mailbox is gone: `5.1.x` (bad
    /// mailbox, bad domain, null MX) or `5.2.1` (mailbox disabled). A
    /// `5.7.x` policy refusal says nothing about the recipient (often it
    /// is about us).
    pub fn dead_mailbox(&self) -> bool {
        self.hard() && (self.status.starts_with("5.1.") || self.status == "5.2.1")
    }
}

/// Why a message that looks like a notice could not be read.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Unreadable(pub String);

/// Whether a message is a notice at all: a report, or the text of a
/// known bouncer. Other mail with a null sender (vacation replies, read
/// receipts) is none.
pub fn parse(raw: &[u8]) -> Result<Option<Vec<Outcome>>, Unreadable> {
    let Some(message) = MessageParser::default().parse(raw) else {
        return Err(Unreadable("not a MIME message".into()));
    };
    let report = message.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    });
    if report {
        let status_part = message.parts.iter().find(|p| {
            p.content_type().is_some_and(|ct| {
                let sub = ct.subtype().unwrap_or_default().to_ascii_lowercase();
                ct.ctype().eq_ignore_ascii_case("message")
                    && (sub == "delivery-status" || sub == "global-delivery-status")
            })
        });
        let Some(part) = status_part else {
            // A report of another kind (a read receipt, a feedback
            // report): not a delivery-status notice.
            return Ok(None);
        };
        let body = String::from_utf8_lossy(part.contents());
        let outcomes = delivery_status(&body);
        if outcomes.is_empty() {
            return Err(Unreadable(
                "a delivery-status part with no recipient".into(),
            ));
        }
        return Ok(Some(outcomes));
    }
    let text = message
        .body_text(0)
        .map(|t| t.into_owned())
        .unwrap_or_default();
    plain(&text)
}

/// The per-recipient fields of a `message/delivery-status` body: groups
/// of header-style fields separated by blank lines, the first group the
/// message's own.
fn delivery_status(body: &str) -> Vec<Outcome> {
    let mut out = Vec::new();
    for group in groups(body) {
        let field = |name: &str| {
            group
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        let Some(recipient) = field("Final-Recipient").or_else(|| field("Original-Recipient"))
        else {
            continue;
        };
        // `rfc822; user@example.org` (the type is optional in practice).
        let recipient = recipient
            .split_once(';')
            .map_or(recipient.as_str(), |(_, a)| a)
            .trim()
            .trim_matches(['<', '>'])
            .to_string();
        let action = match field("Action").map(|a| a.to_ascii_lowercase()) {
            Some(a) if a.starts_with("failed") => Action::Failed,
            Some(a) if a.starts_with("delayed") => Action::Delayed,
            _ => Action::Other,
        };
        // `5.1.1`, sometimes followed by a comment: `5.1.1 (bad mailbox)`.
        let status = field("Status")
            .and_then(|s| s.split_whitespace().next().map(str::to_string))
            .filter(|s| is_status(s))
            .unwrap_or_default();
        if status.is_empty() && action != Action::Other {
            continue;
        }
        out.push(Outcome {
            recipient,
            action,
            status,
        });
    }
    out
}

/// `X.Y.Z`, X one of 2, 4, 5 (RFC 3463).
fn is_status(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Header-style field groups, unfolded.
fn groups(body: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut group: Vec<(String, String)> = Vec::new();
    for line in body.lines() {
        if line.trim().is_empty() {
            if !group.is_empty() {
                out.push(std::mem::take(&mut group));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = group.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            group.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    if !group.is_empty() {
        out.push(group);
    }
    out
}

/// qmail (`Hi. This is the qmail-send program`) and Exim's plain text
/// (`The following address(es) failed:`): each `<address>:` (qmail) or
/// indented address (Exim) with the SMTP status its diagnostic gives.
/// Nothing without a status is taken.
fn plain(text: &str) -> Result<Option<Vec<Outcome>>, Unreadable> {
    let qmail = text.contains("This is the qmail-send program");
    let exim = text.contains("could not be delivered to one or more of its")
        || text.contains("The following address(es) failed");
    if !qmail && !exim {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        let address = if qmail {
            t.strip_prefix('<')
                .and_then(|r| r.strip_suffix(">:"))
                .filter(|a| a.contains('@'))
        } else {
            (line.starts_with("  ")
                && !line.starts_with("    ")
                && t.contains('@')
                && !t.contains(' '))
            .then_some(t)
        };
        if let Some(a) = address {
            current = Some(a.to_string());
            continue;
        }
        let Some(rcpt) = current.as_ref() else {
            continue;
        };
        if let Some(status) = status_in(t) {
            out.push(Outcome {
                recipient: rcpt.clone(),
                action: if status.starts_with('5') {
                    Action::Failed
                } else {
                    Action::Delayed
                },
                status,
            });
            current = None;
        }
    }
    if out.is_empty() {
        return Err(Unreadable(format!(
            "a {} bounce that states no SMTP status",
            if qmail { "qmail" } else { "plain-text" }
        )));
    }
    Ok(Some(out))
}

/// The enhanced status in a diagnostic line, else the class of its
/// basic SMTP code (`550` is `5.0.0`).
fn status_in(line: &str) -> Option<String> {
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == '_' || c == '#' || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    if let Some(s) = words
        .iter()
        .find(|w| is_status(w.trim_end_matches(['.', ',', ':'])))
    {
        return Some(s.trim_end_matches(['.', ',', ':']).to_string());
    }
    words.iter().find_map(|w| {
        let w = w.trim_end_matches(['-', ':']);
        (w.len() == 3 && w.bytes().all(|b| b.is_ascii_digit()) && matches!(&w[..1], "4" | "5"))
            .then(|| format!("{}.0.0", &w[..1]))
    })
}

#[cfg(test)]
mod tests;
