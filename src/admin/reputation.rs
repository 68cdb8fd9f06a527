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
    let text = checked(shared, request).await;
    let Answer::Ok(text) = text else {
        return text;
    };
    // On several gateways: which one runs the rounds.
    let driver = match shared.limiter.redis.as_ref() {
        Some(r) => match crate::reputation::shared::driver(r).await {
            Ok(Some(g)) => format!("rounds run by {g}\n"),
            Ok(None) => "rounds run by no gateway now\n".into(),
            Err(e) => format!("which gateway runs the rounds is not known: {e}\n"),
        },
        None => String::new(),
    };
    Answer::Ok(format!("{driver}{text}"))
}

async fn checked(shared: &Shared, request: Reputation) -> Answer {
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
                shared.limiter.redis.as_ref(),
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
