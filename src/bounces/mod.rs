//! Bounces: the delivery-status notices that pass the milter (those
//! Postfix makes, with `internal_mail_filter_classes = bounce`, and those
//! remote servers send back to our senders) read, and the recipients
//! whose mail fails for good suppressed for a while.
//!
//! - `dsn.rs`: reading a notice;
//! - `store.rs`: the suppressed recipients;
//! - `shared.rs`: the list shared through Redis;
//! - `recent.rs`: who recently sent as each sender, for the signals.

pub mod dsn;
pub mod recent;
pub mod shared;
pub mod store;

pub use store::{Entry, Suppressions};

use crate::config::BounceSettings;
use crate::limiter::RedisLimiter;

/// A hard failure of a recipient's mailbox, counted in Redis for every
/// gateway when shared (and kept in this gateway's copy), else here;
/// while Redis fails, here.
pub async fn hard_failure(
    store: &Suppressions,
    redis: Option<&RedisLimiter>,
    address: &str,
    status: &str,
    now: u64,
    settings: &BounceSettings,
) -> Entry {
    let (after, for_secs) = (settings.suppress_after, settings.suppress_for.as_secs());
    if let Some(r) = redis {
        match shared::hard_failure(r, address, status, now, after, for_secs).await {
            Ok(e) => {
                store.put(address, e.clone());
                return e;
            }
            Err(e) => tracing::warn!(
                target: "egress_milter::bounces",
                "suppressions: not shared ({e}): counted on this gateway alone"
            ),
        }
    }
    store.hard_failure(address, status, now, after, for_secs)
}

/// Reads the shared list again when its version moved (every gateway,
/// every couple of seconds).
pub async fn sync(store: &Suppressions, r: &RedisLimiter) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    let v = shared::version(r).await?;
    if v == store.version.load(Ordering::Relaxed) {
        return Ok(());
    }
    let all = shared::load(r).await?;
    store.replace(all);
    store.version.store(v, Ordering::Relaxed);
    Ok(())
}
