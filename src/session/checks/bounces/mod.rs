//! `bounces`: a recipient suppressed after hard failures of its mailbox
//! is refused at RCPT TO (mail from a class: what leaves); every message
//! with a null sender is read at end of message, and each recipient a
//! delivery-status notice says is gone counts a hard failure, if the
//! sender the notice goes back to wrote to it recently (from this
//! gateway): a forged notice counts for nothing.

pub(crate) mod rules;

use super::incident::OwnedKeys;
use super::{Check, Cx, Flow};
use crate::address::EnvelopeAddress;
use crate::bounces::recent::Sent;
use crate::config::Config;
use crate::incidents::{Event, Keys};

pub(super) struct Bounces;

pub(super) fn new(config: &Config) -> Option<Bounces> {
    config.bounces.as_ref().map(|_| Bounces)
}

impl Check for Bounces {
    fn reads_whole(&self, null_sender: bool) -> bool {
        null_sender
    }

    async fn rcpt(&mut self, cx: &mut Cx<'_>) -> Flow {
        if cx.class().is_none() {
            return Ok(());
        }
        let Some(rcpt) = cx.rcpt.and_then(|r| r.address()).cloned() else {
            return Ok(());
        };
        let key = cx.msg.config.rate_limits.keys.address(&rcpt);
        let now = crate::incidents::now_ms() / 1000;
        let Some(entry) = cx.shared().suppressions.refused(&key, now) else {
            return Ok(());
        };
        cx.note("suppressed", |_| {
            format!(
                "{key}: {} hard failure(s), last {}, refused until {}",
                entry.hard,
                entry.status,
                crate::incidents::rfc3339(entry.until)
            )
        });
        cx.decide(rules::verdict(&rcpt.to_string(), &entry))
    }

    async fn eom(&mut self, cx: &mut Cx<'_>) -> Flow {
        if !matches!(cx.msg.envelope_sender, Ok(EnvelopeAddress::Null)) {
            // Our own mail: who sent as its sender, for its bounces.
            if cx.class().is_some() {
                let keys = OwnedKeys::of(cx.conn, Some(cx.msg));
                if let Some(sender) = keys.sender.clone() {
                    let now = crate::incidents::now_ms() / 1000;
                    let shared = cx.shared();
                    let limit_keys = &cx.msg.config.rate_limits.keys;
                    for rcpt in cx.msg.rcpt_addresses() {
                        shared
                            .recent_senders
                            .note_pair(&sender, &limit_keys.address(&rcpt), now);
                    }
                    shared.recent_senders.note(
                        &sender,
                        Sent {
                            login: keys.user,
                            client: keys.client,
                            class: keys.class,
                        },
                        now,
                    );
                }
            }
            return Ok(());
        }
        let Some(whole) = cx.whole else {
            return Ok(());
        };
        let config = cx.config();
        let Some(settings) = &config.bounces else {
            return Ok(());
        };
        let shared = cx.shared();
        let read = rules::read(&whole.raw, &config.rate_limits.keys);
        let now = crate::incidents::now_ms() / 1000;
        let mut said = Vec::new();
        match &read {
            Err(why) => {
                shared.metrics.bounce("unreadable");
                said.push(format!("unreadable: {why}"));
            }
            Ok(failures) => {
                // The senders the notice goes back to (its recipients).
                let senders: Vec<String> = cx
                    .msg
                    .rcpt_addresses()
                    .iter()
                    .map(|a| config.rate_limits.keys.address(a))
                    .collect();
                for (key, outcome) in failures {
                    // Believed only about a recipient one of them wrote to:
                    // a forged notice suppresses nobody.
                    let wrote: Vec<&String> = senders
                        .iter()
                        .filter(|s| shared.recent_senders.wrote_to(s, key))
                        .collect();
                    if wrote.is_empty() {
                        shared.metrics.bounce("unmatched");
                        said.push(format!(
                            "{key} {}: not about mail sent from here recently, not used",
                            outcome.status
                        ));
                        continue;
                    }
                    shared
                        .metrics
                        .bounce(if outcome.hard() { "hard" } else { "soft" });
                    if outcome.hard() {
                        hard_bounce(cx, &config, &wrote).await;
                    }
                    if outcome.dead_mailbox() {
                        let e = crate::bounces::hard_failure(
                            &shared.suppressions,
                            shared.limiter.redis.as_ref(),
                            key,
                            &outcome.status,
                            now,
                            settings,
                        )
                        .await;
                        said.push(format!("{key} {}: hard failure {}", outcome.status, e.hard));
                        if e.until > now && e.hard == settings.suppress_after {
                            tracing::info!(
                                target: "egress_milter::bounces",
                                recipient = key.as_str(),
                                status = outcome.status.as_str(),
                                until = crate::incidents::rfc3339(e.until),
                                "recipient suppressed after {} hard failure(s)",
                                e.hard
                            );
                        }
                    } else {
                        said.push(format!("{key} {}: not counted against it", outcome.status));
                    }
                }
            }
        }
        if !said.is_empty() {
            cx.note("bounce", |_| said.join("; "));
        }
        Ok(())
    }
}

/// A hard bounce, as evidence against the sender it goes back to (the
/// notice's recipients), and the login, client and class that recently
/// sent as that sender.
async fn hard_bounce(cx: &Cx<'_>, config: &Config, senders: &[&String]) {
    let shared = cx.shared();
    let now = crate::incidents::now_ms();
    for sender in senders {
        let sent = shared
            .recent_senders
            .get(sender, now / 1000)
            .unwrap_or_default();
        let keys = Keys {
            client: sent.client.as_deref(),
            user: sent.login.as_deref(),
            sender: Some(sender),
            class: sent.class.as_deref(),
        };
        shared
            .incidents
            .observe(
                shared.limiter.redis.as_ref(),
                now,
                &keys,
                &Event::HardBounce,
                &config.incidents,
                config.mode == crate::config::Mode::Monitor,
                false,
            )
            .await;
    }
}
