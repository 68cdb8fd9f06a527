//! No open relay, and at most `recipients.max_per_message` recipients
//! (RCPT TO).

mod recipients;
pub(crate) mod rules;

use super::{Check, Cx, Flow};
use crate::config::Config;
use crate::verdict::Verdict;

pub(super) struct Relay;

pub(super) fn new(_: &Config) -> Option<Relay> {
    Some(Relay)
}

impl Check for Relay {
    async fn rcpt(&mut self, cx: &mut Cx<'_>) -> Flow {
        let Some(rcpt) = cx.rcpt else {
            return Ok(());
        };
        let config = cx.config();
        let shared = cx.shared();
        let lists = shared.lists(cx.recording());
        let verdict = rules::check(&config, &lists, cx.class(), &rcpt.parsed)
            .await
            .and_then(|| recipients::check(&config, cx.msg.rcpt_accepted));
        cx.noted_lookups(&lists);
        let passed = verdict == Verdict::Continue;
        cx.decide(verdict)?;
        if passed {
            cx.note("relay, recipient count", |m| {
                format!(
                    "pass: {} ({})",
                    String::from_utf8_lossy(&rcpt.raw),
                    if m.class.is_some() {
                        "a known client may send anywhere"
                    } else {
                        "a local recipient"
                    }
                )
            });
        }
        Ok(())
    }
}
