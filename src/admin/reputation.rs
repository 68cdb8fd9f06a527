//! `reputation [--check]`: what the watch knows; with `--check`, after a
//! round run now (every list asked at once, not spread).

use super::Answer;
use crate::state::Shared;
use serde::{Deserialize, Serialize};

/// A `reputation` request.
#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
pub struct Reputation {
    pub check: bool,
}

pub(super) async fn answer(shared: &Shared, request: Reputation) -> Answer {
    let config = shared.config();
    match (&config.reputation, request.check) {
        (None, true) => Answer::error("reputation is not configured: there is nothing to check"),
        (Some(settings), true) => {
            let resolver = match &shared.dns {
                Ok(r) => r,
                Err(e) => return Answer::error(format!("no DNS resolver: {e}")),
            };
            crate::reputation::round(
                &shared.reputation,
                resolver,
                &shared.incidents.notifier,
                &config,
                settings,
                None,
            )
            .await;
            Answer::Ok(shared.reputation.report(true))
        }
        (settings, false) => Answer::Ok(shared.reputation.report(settings.is_some())),
    }
}
