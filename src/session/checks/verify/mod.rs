//! `verify_sender` (MAIL FROM: a class's envelope sender must exist) and
//! `verify_recipients` (RCPT TO: inbound mail to a mailbox that exists).
//! A store that cannot answer gets the address's own 4xx under
//! `on_error: tempfail`.

pub(crate) mod rules;

use super::{Check, Cx, Flow};
use crate::config::{Config, Verify as Settings, VerifyBy};
use crate::verdict::Verdict;

pub(super) struct Verify;

pub(super) fn new(_: &Config) -> Option<Verify> {
    Some(Verify)
}

impl Check for Verify {
    async fn mail(&mut self, cx: &mut Cx<'_>) -> Flow {
        let (Some(settings), Some(address)) = (
            cx.class().and_then(|c| c.verify_sender.clone()),
            cx.msg.sender_address.clone(),
        ) else {
            return Ok(());
        };
        let helo = callout_helo(&cx.msg.config, &settings);
        let shared = cx.shared();
        let lists = shared.lists(cx.recording());
        let result = rules::sender(&lists, &settings, &address, &helo).await;
        cx.noted_lookups(&lists);
        decide(cx, result, || format!("pass: <{address}> exists"))
    }

    async fn rcpt(&mut self, cx: &mut Cx<'_>) -> Flow {
        // Inbound mail (a client in no class), to a recipient nothing
        // refused already.
        let Some(settings) = cx.msg.config.verify_recipients.clone() else {
            return Ok(());
        };
        let Some(rcpt) = cx.rcpt.and_then(|r| r.address()) else {
            return Ok(());
        };
        if cx.msg.class.is_some() || cx.against {
            return Ok(());
        }
        let helo = callout_helo(&cx.msg.config, &settings);
        let shared = cx.shared();
        let lists = shared.lists(cx.recording());
        let result = rules::recipient(&lists, &settings, rcpt, &helo).await;
        cx.noted_lookups(&lists);
        decide(cx, result, || format!("pass: <{rcpt}> exists"))
    }
}

/// A verification's outcome: a verdict, or a failure to verify that gets
/// its own 4xx under `on_error: tempfail`.
fn decide(cx: &mut Cx<'_>, verdict: Verdict, pass: impl FnOnce() -> String) -> Flow {
    if verdict == Verdict::Continue {
        cx.note("address exists", |_| pass());
    }
    cx.decide(verdict)
}

/// The name a callout gives in EHLO: its own `helo`, else `hostname`, else
/// localhost.
fn callout_helo(config: &Config, verify: &Settings) -> String {
    match &verify.by {
        VerifyBy::Callout(c) if !c.helo.is_empty() => c.helo.clone(),
        _ => config
            .hostname
            .as_ref()
            .map_or_else(|| "localhost".into(), |h| h.to_string()),
    }
}
