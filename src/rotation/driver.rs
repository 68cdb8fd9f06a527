//! One step of the schedule as the daemon takes it every `check_every`
//! (the pending keys looked up in DNS): each change logged, and the
//! signing keys swapped to the ones that sign now. Shared through Redis,
//! the gateway holding the lease steps, and every gateway (the driver
//! too) then mirrors the state and its private keys into `key_dir`; while
//! Redis fails, the last mirrored state keeps signing.

use super::ring::{Change, Ring};
use super::store::Store;
use super::Rotated;
use crate::limiter::RedisLimiter;
use tracing::{error, info, warn};

/// One step, logged; `rotated` follows it. The ring as it stands after
/// it and what this gateway changed, or None when the state could not be
/// read at all.
pub async fn step(
    rotated: &Rotated,
    settings: &crate::config::RotationSettings,
    dns: &crate::config::DnsSettings,
    redis: Option<&RedisLimiter>,
) -> Option<(Ring, Vec<Change>)> {
    let now = crate::incidents::now_ms() / 1000;
    let (mut ring, changes) = match super::advance(settings, dns, redis, now).await {
        Ok(Some(s)) => {
            log(&s.changes, &s.errors);
            (Some(s.ring), s.changes)
        }
        Ok(None) => (None, Vec::new()),
        Err(e) => {
            error!(target: "egress_milter::dkim", "dkim rotation: {e}");
            (None, Vec::new())
        }
    };
    let store = Store::at(&settings.key_dir);
    if settings.shared {
        ring = match (redis, &settings.seal) {
            (Some(r), Some(seal)) => match super::shared::mirror(r, settings, seal).await {
                Ok((ring, errors)) => {
                    for e in errors {
                        error!(target: "egress_milter::dkim", "dkim rotation: {e}");
                    }
                    Some(ring)
                }
                Err(e) => {
                    warn!(target: "egress_milter::dkim", "dkim rotation: the shared state cannot be read, signing as last read: {e}");
                    None
                }
            },
            _ => None,
        };
    }
    let ring = match ring {
        Some(r) => r,
        None => match store.load() {
            Ok(r) => r,
            Err(e) => {
                error!(target: "egress_milter::dkim", "dkim rotation: {e}");
                return None;
            }
        },
    };
    for e in rotated.set(&store, ring.clone(), now) {
        error!(target: "egress_milter::dkim", "dkim rotation: a key that should sign cannot: {e}");
    }
    Some((ring, changes))
}

fn log(changes: &[Change], errors: &[String]) {
    for c in changes {
        let k = c.key();
        let record = k.published();
        match c {
            Change::Late(_) => warn!(
                target: "egress_milter::dkim",
                domain = k.domain,
                selector = k.selector,
                algorithm = k.algorithm.as_str(),
                waiting = k.waiting.as_deref().unwrap_or(""),
                "dkim key pending for a day, its record still not served: publish {}. TXT {}",
                k.name(),
                crate::dkim::txt_strings(&record)
            ),
            _ => info!(
                target: "egress_milter::dkim",
                domain = k.domain,
                selector = k.selector,
                algorithm = k.algorithm.as_str(),
                change = c.verb(),
                from = crate::incidents::rfc3339(k.since),
                "dkim key {} {}",
                k.name(),
                c.verb()
            ),
        }
    }
    for e in errors {
        error!(target: "egress_milter::dkim", "dkim rotation: {e}");
    }
}
