//! The record of every check and what came of it, for `explain`.

use super::*;
use crate::limiter::Check;
use crate::rate::LimitName;

/// One check of the policy and what came of it, for `explain`.
#[derive(Clone, Debug)]
pub struct Step {
    pub stage: Stage,
    pub check: &'static str,
    pub outcome: String,
}

/// The limits a batch checked, for `explain`.
pub(super) fn limit_names(checks: &[Check], concurrent: bool) -> String {
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
pub(super) fn class_matched_by(c: &Class) -> &'static str {
    let any_ip = c.clients.inline().is_some_and(<[_]>::is_empty);
    match (any_ip, c.auth.is_some()) {
        (false, true) => "matched by client address and login",
        (false, false) => "matched by client address",
        (true, true) => "matched by login",
        (true, false) => "matches every client",
    }
}

impl Connection {
    /// Records the lookups a check made in sources, when tracing.
    pub(super) fn note_lookups(&mut self, stage: Stage, lists: &crate::sources::Lists<'_>) {
        if self.trace.is_some() {
            for l in lists.take() {
                self.note(stage, "lookup", || l.to_string());
            }
        }
    }

    /// Records a check's outcome when tracing; `outcome` is built only then.
    pub(super) fn note(
        &mut self,
        stage: Stage,
        check: &'static str,
        outcome: impl FnOnce() -> String,
    ) {
        if let Some(t) = self.trace.as_mut() {
            t.push(Step {
                stage,
                check,
                outcome: outcome(),
            });
        }
    }
}
