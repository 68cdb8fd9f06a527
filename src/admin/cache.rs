//! `cache show|flush`: the cached answers of sources and callouts.

use super::Answer;
use crate::address::{Address, Domain};
use crate::sources::Answer as Cached;
use crate::state::Shared;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// A `cache` request.
#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cache {
    /// KEY's cached answer in every cache, with the time it has left.
    Show { key: String },
    /// Forgets KEY's cached answers, or every one.
    Flush { key: Option<String> },
}

/// `cache show KEY` and `cache flush [KEY]`, as the admin endpoint
/// answers them. A key is looked up as the policy writes it: an address in
/// its canonical spelling (the callout cache: its local part in lower
/// case), a domain in lower case, a login as given.
pub(super) async fn answer(shared: &Shared, request: Cache) -> Answer {
    let sources = &shared.sources;
    let redis = shared.limiter.redis.as_ref();
    match request {
        Cache::Show { key } => {
            let k = key.trim();
            if k.is_empty() {
                return Answer::error("no key given");
            }
            let mut out = String::new();
            for k in cache_keys(k) {
                for (cache, shown) in sources.show(&k, redis).await {
                    match shown {
                        Ok(Some(s)) => {
                            let answer = match &s.answer {
                                Cached::Missing => "not found".to_string(),
                                Cached::Found(v) if v.is_empty() => "found".to_string(),
                                Cached::Found(v) => format!("found: {}", v.join(", ")),
                            };
                            let _ = writeln!(
                                out,
                                "{cache:<16} {k:<32} {answer} (expires in {}s)",
                                s.remaining.as_secs()
                            );
                        }
                        Ok(None) => {}
                        Err(e) => return Answer::error(format!("{cache}: {e}")),
                    }
                }
            }
            if out.is_empty() {
                out = format!("{k}: in no cache\n");
            }
            Answer::Ok(out)
        }
        Cache::Flush { key } => {
            let mut n = 0;
            let k = key.as_deref().unwrap_or("").trim();
            if k.is_empty() {
                match sources.flush(None, redis).await {
                    Ok(x) => n += x,
                    Err(e) => return Answer::error(e.to_string()),
                }
            } else {
                for k in cache_keys(k) {
                    match sources.flush(Some(&k), redis).await {
                        Ok(x) => n += x,
                        Err(e) => return Answer::error(e.to_string()),
                    }
                }
            }
            Answer::Ok(format!("flushed {n} cached answer(s)\n"))
        }
    }
}

/// The spellings under which a key may be cached: as given; as an
/// address in canonical form; that address with its local part in lower
/// case (the callout cache); a domain in lower case.
fn cache_keys(key: &str) -> Vec<String> {
    let mut keys = vec![key.to_string()];
    if let Ok(a) = Address::parse(key) {
        keys.push(a.to_string());
        keys.push(a.limit_key());
    } else if let Ok(d) = Domain::parse(key) {
        keys.push(d.to_string());
    }
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| seen.insert(k.clone()));
    keys
}
