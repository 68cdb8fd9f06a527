//! `suppressions list | show ADDR | remove ADDR | add ADDR [--for D]`:
//! the recipients refused after hard bounces. An address is taken in any
//! spelling and looked up as the policy keys it.

use super::Answer;
use crate::address::Address;
use crate::incidents::{now_ms, rfc3339};
use crate::state::Shared;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// A `suppressions` request.
#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suppressions {
    List,
    Show {
        address: String,
    },
    Remove {
        address: String,
    },
    /// Refuses an address by hand, for `for_` (default:
    /// `bounces.suppress.for`).
    Add {
        address: String,
        for_: Option<String>,
    },
}

pub(super) async fn answer(shared: &Shared, request: Suppressions) -> Answer {
    let config = shared.config();
    let Some(settings) = &config.bounces else {
        return Answer::error("bounces is not configured: no recipient is suppressed");
    };
    let now = now_ms() / 1000;
    let key = |a: &str| {
        Address::parse(a.trim().trim_matches(['<', '>']))
            .map(|a| config.rate_limits.keys.address(&a))
            .map_err(|e| format!("{a:?} is not an address: {e}"))
    };
    let store = &shared.suppressions;
    match request {
        Suppressions::List => {
            let list = store.list(now);
            let mut out = String::new();
            for (a, e) in &list {
                let _ = writeln!(out, "{a:<40} {:<8} until {}", e.status, rfc3339(e.until));
            }
            let _ = writeln!(out, "{} recipient(s) suppressed", list.len());
            Answer::Ok(out)
        }
        Suppressions::Show { address } => match key(&address) {
            Err(e) => Answer::error(e),
            Ok(k) => match store.get(&k) {
                None => Answer::Ok(format!("{k}: no bounce on record\n")),
                Some(e) => Answer::Ok(format!(
                    "{k}: {} hard failure(s) since {}, last {} at {}\n{}\n",
                    e.hard,
                    rfc3339(e.first),
                    e.status,
                    rfc3339(e.last),
                    if e.until > now {
                        format!("refused at RCPT TO until {}", rfc3339(e.until))
                    } else {
                        format!(
                            "not refused (after {} hard failures)",
                            settings.suppress_after
                        )
                    }
                )),
            },
        },
        Suppressions::Remove { address } => match key(&address) {
            Err(e) => Answer::error(e),
            Ok(k) => {
                let mut known = store.remove(&k);
                if let Some(r) = shared.limiter.redis.as_ref() {
                    match crate::bounces::shared::remove(r, &k, now).await {
                        Ok(shared) => known |= shared,
                        Err(e) => {
                            return Answer::error(format!(
                                "{k}: not removed for every gateway: {e}"
                            ))
                        }
                    }
                }
                if known {
                    Answer::Ok(format!("{k}: removed; mail to it goes again\n"))
                } else {
                    Answer::error(format!("{k}: not on record"))
                }
            }
        },
        Suppressions::Add { address, for_ } => {
            let k = match key(&address) {
                Ok(k) => k,
                Err(e) => return Answer::error(e),
            };
            let d = match for_.as_deref().map(crate::config::parse_duration) {
                None => settings.suppress_for,
                Some(Some(d)) => d,
                Some(None) => return Answer::error("--for: expected a duration such as 30d"),
            };
            store.add(&k, now, now + d.as_secs());
            if let Some(r) = shared.limiter.redis.as_ref() {
                if let Err(e) = crate::bounces::shared::add(r, &k, now, now + d.as_secs()).await {
                    return Answer::error(format!("{k}: refused on this gateway only: {e}"));
                }
            }
            Answer::Ok(format!(
                "{k}: refused at RCPT TO until {}\n",
                rfc3339(now + d.as_secs())
            ))
        }
    }
}
