//! The sender policy (MAIL FROM): may this client use this envelope
//! sender? A class that could not be known is a failure to decide.

pub(crate) mod rules;

use super::{Check, Cx, Flow};
use crate::config::Config;
use crate::verdict::{Backend, Verdict};

pub(super) struct Sender;

pub(super) fn new(_: &Config) -> Option<Sender> {
    Some(Sender)
}

impl Check for Sender {
    async fn mail(&mut self, cx: &mut Cx<'_>) -> Flow {
        let verdict = match &cx.msg.class_failure {
            Some(e) => Verdict::failed(Backend::Source, format!("client class: {e}")),
            None => {
                let config = cx.config();
                let shared = cx.shared();
                let lists = shared.lists(cx.recording());
                let verdict = rules::check(
                    &config,
                    &lists,
                    cx.class(),
                    cx.conn.client(),
                    &cx.msg.envelope_sender,
                    cx.msg.login.as_deref(),
                )
                .await;
                cx.noted_lookups(&lists);
                verdict
            }
        };
        let passed = verdict == Verdict::Continue;
        cx.decide(verdict)?;
        if passed {
            cx.note("sender", |m| {
                format!("pass: <{}> is allowed for this client", m.sender)
            });
        }
        Ok(())
    }
}
