//! A change's notice: the webhook document (`event: reputation`) and the
//! mail, a listing's naming the top senders of the hours before.

use super::state::Change;
use super::tally::Kind;
use crate::incidents::{rfc3339, Prepared};
use std::fmt::Write as _;

/// The hours a listing notice looks back, and the senders it names per
/// kind.
pub const TOP_HOURS: u64 = 6;
pub const TOP_N: usize = 5;

pub fn prepared(c: &Change, top: &[(Kind, String, u64)]) -> Prepared {
    let senders: Vec<serde_json::Value> = top
        .iter()
        .map(|(kind, key, n)| serde_json::json!({"kind": kind.as_str(), "key": key, "recipients": n}))
        .collect();
    let document = serde_json::json!({
        "event": "reputation",
        "change": c.change,
        "target": c.target,
        "list": c.list,
        "was": c.was,
        "now": c.now,
        "at": rfc3339(c.at),
        "top_senders": senders,
    });
    let (subject, mut text) = match c.change.as_str() {
        "listed" => (
            format!("egress-milter: {} is listed on {}", c.target, c.list),
            format!(
                "{} is listed on {}: {}.\nReceivers that use this list refuse or junk our mail from it.\n\
                 Find out why on the list's site, stop the cause, then ask for delisting.\n",
                c.target, c.list, c.now
            ),
        ),
        "delisted" => (
            format!("egress-milter: {} is no longer listed on {}", c.target, c.list),
            format!("{} is no longer listed on {} (it was since the last notice).\n", c.target, c.list),
        ),
        _ => return records(std::slice::from_ref(c)),
    };
    if !top.is_empty() {
        let _ = writeln!(
            text,
            "\nTop senders of the {TOP_HOURS} hours before (recipients):"
        );
        for (kind, key, n) in top {
            let _ = writeln!(text, "  {:<7} {key}: {n}", kind.as_str());
        }
    } else if c.change == "listed" {
        let _ = writeln!(
            text,
            "\nNo outbound mail was counted in the {TOP_HOURS} hours before."
        );
    }
    let _ = writeln!(
        text,
        "\nAt: {}\nState: egress-milter reputation",
        rfc3339(c.at)
    );
    Prepared {
        name: format!("reputation of {}", c.target),
        event: "reputation",
        document,
        subject,
        text,
    }
}

/// The records a round found changed, in one notice: `change:
/// record_changed`, each record in `records`.
pub fn records(changes: &[Change]) -> Prepared {
    let at = changes.first().map_or(0, |c| c.at);
    let list: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| serde_json::json!({"target": c.target, "check": c.list, "was": c.was, "now": c.now}))
        .collect();
    let document = serde_json::json!({
        "event": "reputation",
        "change": "record_changed",
        "records": list,
        "at": rfc3339(at),
    });
    let subject = match changes {
        [one] => format!("egress-milter: {} of {} changed", one.list, one.target),
        many => format!("egress-milter: {} records changed", many.len()),
    };
    let mut text = String::from("What receivers check about us changed:\n");
    for c in changes {
        let _ = write!(
            text,
            "\n{} of {}\n  was: {}\n  now: {}\n",
            c.list, c.target, c.was, c.now
        );
    }
    let _ = writeln!(
        text,
        "\nAt: {}\nState: egress-milter reputation",
        rfc3339(at)
    );
    Prepared {
        name: "reputation of our records".into(),
        event: "reputation",
        document,
        subject,
        text,
    }
}
