//! One step of the schedule as the daemon takes it every `check_every`
//! (the pending keys looked up in DNS): each change logged, and the
//! signing keys swapped to the active ones.

use super::ring::{Change, Ring};
use super::store::Store;
use super::Rotated;
use tracing::{error, info, warn};

/// One step, logged; `rotated` follows it. The ring as it stands after
/// it and what changed, or None when the step could not be taken.
pub async fn step(
    rotated: &Rotated,
    settings: &crate::config::RotationSettings,
    dns: &crate::config::DnsSettings,
) -> Option<(Ring, Vec<Change>)> {
    let now = crate::incidents::now_ms() / 1000;
    let stepped = match super::advance(settings, dns, now).await {
        Ok(s) => s,
        Err(e) => {
            error!(target: "egress_milter::dkim", "dkim rotation: {e}");
            return None;
        }
    };
    for c in &stepped.changes {
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
                "dkim key {} {}",
                k.name(),
                c.verb()
            ),
        }
    }
    for e in &stepped.errors {
        error!(target: "egress_milter::dkim", "dkim rotation: {e}");
    }
    for e in rotated.set(&Store::at(&settings.key_dir), &stepped.ring) {
        error!(target: "egress_milter::dkim", "dkim rotation: a key that should sign cannot: {e}");
    }
    Some((stepped.ring, stepped.changes))
}
