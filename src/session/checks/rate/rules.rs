//! Which rate limits apply to a connection, a message or a recipient, with
//! which rate and which key: the first override that matches the facts and
//! sets the limit wins, else the default. Overrides apply to every client,
//! trusted classes included.
//!
//! | limit | key | an override's match is tested against |
//! |---|---|---|
//! | connections_per_client, concurrent_per_client | client IP | IP/CIDR; class name (classes matched by IP alone) |
//! | messages_per_client | client IP | IP/CIDR; class name; login; sender address / @domain |
//! | messages_per_sender, recipients_per_sender | sender address | the same |
//! | messages_per_user | SASL login | the same |
//! | messages_per_recipient | recipient address | IP/CIDR; class name; login; recipient address / @domain |

use crate::address::{canonical_ip, Address};
use crate::config::{Counter, CustomLimit, KeyPart, LimitKeys, RateLimits, Setting, Who};
use crate::limiter::{Check, LimitName, LimiterError, Outcome};
use crate::reply;
use crate::verdict::{Backend, Verdict};
use std::net::IpAddr;

/// What is known of the client and the message at a stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts<'a> {
    pub ip: Option<IpAddr>,
    pub class: Option<&'a str>,
    pub login: Option<&'a str>,
    pub sender: Option<&'a Address>,
    pub rcpt: Option<&'a Address>,
    /// A null-sender message (a bounce).
    pub bounce: bool,
}

/// Who the facts are, as overrides match them for a limit: by the
/// recipient for `messages_per_recipient`, else by the sender.
fn who<'a>(name: LimitName, f: &Facts<'a>) -> Who<'a> {
    Who {
        ip: f.ip,
        class: f.class,
        login: f.login,
        address: if name == LimitName::MessagesPerRecipient {
            f.rcpt
        } else {
            f.sender
        },
    }
}

/// The setting of one limit for these facts: the first override that
/// matches and sets it, else the default.
pub fn setting(limits: &RateLimits, name: LimitName, facts: &Facts<'_>) -> Option<Setting> {
    limits
        .override_index
        .matching(&limits.keys, &who(name, facts))
        .into_iter()
        .find_map(|i| limits.overrides.get(i)?.limits.get(name))
        .or_else(|| limits.defaults.get(name))
}

fn push(
    out: &mut Vec<Check>,
    limits: &RateLimits,
    name: LimitName,
    facts: &Facts<'_>,
    key: Option<String>,
) {
    if let (Some(Setting::Rate(rate)), Some(key)) = (setting(limits, name, facts), key) {
        out.push(Check {
            name: name.into(),
            key,
            rate,
            n: 1,
            member: None,
        });
    }
}

fn ip_key(limits: &RateLimits, facts: &Facts<'_>) -> Option<String> {
    facts.ip.map(|ip| limits.keys.client(ip))
}

/// The verdict on a batch of message or recipient limits: refused, with
/// when to retry, by the check that must wait longest; a limiter failure is
/// a [`Verdict::TempError`].
pub fn verdict(checks: &[Check], checked: Result<Outcome, LimiterError>) -> Verdict {
    match checked {
        Ok(Outcome::Allowed) => Verdict::Continue,
        Ok(Outcome::Denied { index, retry_after }) => match checks.get(index) {
            // A message bigger than the whole byte budget never fits.
            Some(c) if c.n > c.rate.burst() => {
                Verdict::Refuse(reply::over_byte_budget(c.name, &c.key))
            }
            Some(c) => Verdict::Refuse(reply::rate_limited(c.name, &c.key, retry_after)),
            None => Verdict::failed(
                Backend::Internal,
                format!("rate limiter denied unknown check {index}"),
            ),
        },
        Err(e) => failed(&e),
    }
}

fn failed(e: &LimiterError) -> Verdict {
    Verdict::failed(Backend::Limiter, format!("rate limiter failed: {e}"))
}

/// The verdict on the connection limits for a client: refused with a 421,
/// which closes the connection.
pub fn connection_verdict(
    checks: &[Check],
    checked: Result<Outcome, LimiterError>,
    client: &str,
) -> Verdict {
    match checked {
        Ok(Outcome::Allowed) => Verdict::Continue,
        Ok(Outcome::Denied { index, .. }) => {
            let name = checks
                .get(index)
                .map_or(LimitName::ConnectionsPerClient.into(), |c| c.name);
            Verdict::Refuse(reply::too_many_connections(name, client))
        }
        Err(e) => failed(&e),
    }
}

/// The verdict on the open-connection cap: `Ok(true)` when the client got a
/// place.
pub fn concurrent_verdict(got: Result<bool, &LimiterError>, client: &str) -> Verdict {
    match got {
        Ok(true) => Verdict::Continue,
        Ok(false) => Verdict::Refuse(reply::too_many_connections(
            LimitName::ConcurrentPerClient.into(),
            client,
        )),
        Err(e) => failed(e),
    }
}

/// At connect: the connection rate, and the cap on open connections.
pub fn connection(limits: &RateLimits, facts: &Facts<'_>) -> (Vec<Check>, Option<u32>) {
    let mut checks = Vec::new();
    push(
        &mut checks,
        limits,
        LimitName::ConnectionsPerClient,
        facts,
        ip_key(limits, facts),
    );
    let concurrent = match setting(limits, LimitName::ConcurrentPerClient, facts) {
        Some(Setting::Count(n)) if facts.ip.is_some() => Some(n),
        _ => None,
    };
    (checks, concurrent)
}

/// At MAIL FROM: one message for the client, the sender and the login. A
/// null sender (a bounce) has no sender key.
pub fn message(limits: &RateLimits, facts: &Facts<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    push(
        &mut checks,
        limits,
        LimitName::MessagesPerClient,
        facts,
        ip_key(limits, facts),
    );
    let sender = facts.sender.map(|a| limits.keys.address(a));
    push(
        &mut checks,
        limits,
        LimitName::MessagesPerSender,
        facts,
        sender,
    );
    let login = facts.login.map(|l| limits.keys.login(l));
    push(
        &mut checks,
        limits,
        LimitName::MessagesPerUser,
        facts,
        login,
    );
    for c in limits.custom.iter().filter(|c| c.per_message()) {
        push_cells(&mut checks, limits, c, facts, 1);
    }
    checks
}

/// A custom limit's key for these facts: its part, or its pair joined by
/// `+`; None when a part is unknown (no login, a null sender).
pub fn custom_key(keys: &LimitKeys, limit: &CustomLimit, f: &Facts<'_>) -> Option<String> {
    let mut out = String::new();
    for (i, part) in limit.key.iter().enumerate() {
        let v = match part {
            KeyPart::Client => keys.client(f.ip?),
            KeyPart::ClientNetwork => network_key(f.ip?),
            KeyPart::Sender => keys.address(f.sender?),
            KeyPart::SenderDomain => f.sender?.domain.to_string(),
            KeyPart::User => keys.login(f.login?),
            KeyPart::Class => f.class?.to_string(),
            KeyPart::Recipient => keys.address(f.rcpt?),
            KeyPart::RecipientDomain => f.rcpt?.domain.to_string(),
        };
        if i > 0 {
            out.push('+');
        }
        out.push_str(&v);
    }
    Some(out)
}

/// The client's network for `client_network` keys: its /24 (IPv4) or /64
/// (IPv6).
fn network_key(ip: IpAddr) -> String {
    let prefix = match canonical_ip(ip) {
        IpAddr::V4(_) => 24,
        IpAddr::V6(_) => 64,
    };
    ipnet::IpNet::new(canonical_ip(ip), prefix)
        .map_or_else(|_| canonical_ip(ip).to_string(), |n| n.trunc().to_string())
}

/// The rate of a custom limit for these facts: the first override that
/// matches, else its own. None: unlimited.
fn custom_rate(
    limits: &RateLimits,
    limit: &CustomLimit,
    f: &Facts<'_>,
) -> Option<crate::limiter::Rate> {
    let name = if limit.key.iter().any(|k| k.per_recipient()) {
        LimitName::MessagesPerRecipient
    } else {
        LimitName::MessagesPerSender
    };
    let first = limit
        .override_index
        .matching(&limits.keys, &who(name, f))
        .into_iter()
        .next();
    match first.and_then(|i| limit.overrides.get(i)) {
        Some((_, rate)) => *rate,
        None => limit.rate,
    }
}

fn push_cells(
    out: &mut Vec<Check>,
    limits: &RateLimits,
    limit: &CustomLimit,
    f: &Facts<'_>,
    n: u64,
) {
    if limit.count == Counter::Bounces && !f.bounce {
        return;
    }
    // A recipient already counted in the window costs nothing.
    let member = match (limit.count, f.rcpt) {
        (Counter::DistinctRecipients, Some(r)) => Some(limits.keys.address(r)),
        (Counter::DistinctRecipients, None) => return,
        _ => None,
    };
    if let (Some(rate), Some(key)) = (
        custom_rate(limits, limit, f),
        custom_key(&limits.keys, limit, f),
    ) {
        out.push(Check {
            name: crate::limiter::LimitId::Custom(limit.name),
            key,
            rate,
            n,
            member,
        });
    }
}

/// At end of message: the byte budgets, charged the message's size once
/// for each of its keys (each recipient key among the accepted
/// recipients, for a limit keyed by recipient).
pub fn end_of_message(
    limits: &RateLimits,
    facts: &Facts<'_>,
    rcpts: &[Address],
    size: u64,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for c in limits.custom.iter().filter(|c| c.count == Counter::Bytes) {
        if c.key.iter().any(|k| k.per_recipient()) {
            for r in rcpts {
                let before = checks.len();
                push_cells(
                    &mut checks,
                    limits,
                    c,
                    &Facts {
                        rcpt: Some(r),
                        ..*facts
                    },
                    size,
                );
                if let Some(new) = checks.get(before) {
                    if checks[..before]
                        .iter()
                        .any(|o| o.name == new.name && o.key == new.key)
                    {
                        checks.truncate(before);
                    }
                }
            }
        } else {
            push_cells(&mut checks, limits, c, facts, size);
        }
    }
    checks
}

/// Splits a stage's checks: those that enforce, and the shadow ones
/// (`mode: monitor` custom limits), judged after and never refusing.
/// Without shadow limits in the configuration, nothing is copied.
pub fn split_shadow<'a>(
    limits: &RateLimits,
    checks: &'a [Check],
) -> (std::borrow::Cow<'a, [Check]>, Vec<Check>) {
    if !limits.custom.iter().any(|l| l.monitor) {
        return (std::borrow::Cow::Borrowed(checks), Vec::new());
    }
    let (enforce, shadow) = checks.iter().cloned().partition(|c| match c.name {
        crate::limiter::LimitId::Custom(n) => {
            !limits.custom.iter().any(|l| l.name == n && l.monitor)
        }
        crate::limiter::LimitId::Named(_) => true,
    });
    (std::borrow::Cow::Owned(enforce), shadow)
}

/// At RCPT TO: one message for the recipient, one recipient for the sender,
/// and the custom limits judged per recipient. A custom limit that counts
/// messages (or bounces) by a recipient key counts each message once per
/// key: `charged` holds the (limit, key) pairs this message has paid for.
pub fn recipient(
    limits: &RateLimits,
    facts: &Facts<'_>,
    charged: &[(&'static str, String)],
) -> Vec<Check> {
    let mut checks = Vec::new();
    let rcpt = facts.rcpt.map(|a| limits.keys.address(a));
    push(
        &mut checks,
        limits,
        LimitName::MessagesPerRecipient,
        facts,
        rcpt,
    );
    let sender = facts.sender.map(|a| limits.keys.address(a));
    push(
        &mut checks,
        limits,
        LimitName::RecipientsPerSender,
        facts,
        sender,
    );
    for c in limits.custom.iter().filter(|c| c.per_recipient()) {
        let before = checks.len();
        push_cells(&mut checks, limits, c, facts, 1);
        if matches!(c.count, Counter::Messages | Counter::Bounces) {
            if let Some(new) = checks.get(before) {
                if charged.iter().any(|(n, k)| *n == c.name && *k == new.key) {
                    checks.truncate(before);
                }
            }
        }
    }
    checks
}

/// The (limit, key) pairs of per-message custom checks among a recipient's
/// checks: what a message has paid for once it passed.
pub fn charged_once(limits: &RateLimits, checks: &[Check]) -> Vec<(&'static str, String)> {
    checks
        .iter()
        .filter_map(|c| match &c.name {
            crate::limiter::LimitId::Custom(n) => limits
                .custom
                .iter()
                .find(|l| l.name == *n && matches!(l.count, Counter::Messages | Counter::Bounces))
                .map(|l| (l.name, c.key.clone())),
            crate::limiter::LimitId::Named(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
