//! Compromised accounts: an open incident for one of a message's keys
//! holds or refuses it ([`open`], at MAIL FROM); each message is evidence
//! for the signals ([`evidence`]: accepted at end of message, refused
//! wherever a permanent refusal came, recipients the MTA itself
//! rejected), and an incident it makes open applies to it already.

pub(crate) mod rules;

use super::{Check, Cx, Flow};
use crate::config::{Config, Mode};
use crate::incidents::{now_ms, Event, Incident, Keys};
use crate::session::{Connection, HeaderAction, Message};
use std::sync::Arc;

/// A message's keys, owned: the client IP as limits write it, the login,
/// the sender as limits key it, the class.
#[derive(Clone)]
pub(super) struct OwnedKeys {
    pub(super) client: Option<String>,
    pub(super) user: Option<String>,
    pub(super) sender: Option<String>,
    pub(super) class: Option<String>,
}

impl OwnedKeys {
    /// The keys as limits spell them (`rate_limits.keys`): one person is
    /// one key for both, however the address or login is written.
    pub(super) fn of(conn: &Connection, msg: Option<&Message>) -> Self {
        let config = msg.map_or_else(|| conn.shared.config(), |m| m.config.clone());
        let keys = &config.rate_limits.keys;
        OwnedKeys {
            client: conn
                .client_ip
                .map(|ip| crate::address::client_key(ip, config.incidents.ipv6_prefix)),
            user: msg.and_then(|m| m.login.as_deref()).map(|l| keys.login(l)),
            sender: msg
                .and_then(|m| m.sender_address.as_ref())
                .map(|a| keys.address(a)),
            class: match msg {
                Some(m) => m.class().map(|c| c.name.clone()),
                None => conn.connect_class.clone(),
            },
        }
    }

    fn keys(&self) -> Keys<'_> {
        Keys {
            client: self.client.as_deref(),
            user: self.user.as_deref(),
            sender: self.sender.as_deref(),
            class: self.class.as_deref(),
        }
    }
}

/// An open incident for one of the message's keys (MAIL FROM).
pub(super) struct Open;

pub(super) fn open(_: &Config) -> Option<Open> {
    Some(Open)
}

impl Check for Open {
    async fn mail(&mut self, cx: &mut Cx<'_>) -> Flow {
        let shared = cx.shared();
        let redis = shared.limiter.redis.as_ref();
        if !shared.incidents.may_be_open(redis) {
            return Ok(());
        }
        let keys = OwnedKeys::of(cx.conn, Some(cx.msg));
        match shared.incidents.find(redis, now_ms(), &keys.keys()).await {
            Some(incident) => apply(cx, incident).await,
            None => Ok(()),
        }
    }
}

/// Judges the message by an open incident, in the mode of this message's
/// class (not that of the class whose mail opened it). A refused message
/// is counted against the incident now; a held one at end of message,
/// with its queue id.
async fn apply(cx: &mut Cx<'_>, incident: Incident) -> Flow {
    let verdict = rules::verdict(&incident);
    cx.msg.incident = Some(incident.clone());
    let flow = cx.decide(verdict);
    if flow.is_err() {
        let shared = cx.shared();
        shared
            .incidents
            .note(
                shared.limiter.redis.as_ref(),
                &incident,
                cx.msg.queue_id.as_deref(),
                false,
            )
            .await;
    }
    flow
}

/// The message as evidence, at end of message (after every other check).
pub(super) struct Evidence;

pub(super) fn evidence(_: &Config) -> Option<Evidence> {
    Some(Evidence)
}

impl Check for Evidence {
    /// The checks passed: the message counts as accepted; if that (or an
    /// earlier event) opened an incident for one of its keys, the
    /// incident's action applies to this message already. A message to
    /// hold (for an incident or a virus) gets the quarantine action.
    async fn eom(&mut self, cx: &mut Cx<'_>) -> Flow {
        // Counted as limits key them: `D1.TEST`, `d1.test.` and
        // `d1.test` are one domain, `a+x@` and `A@` one recipient.
        let keys = &cx.msg.config.rate_limits.keys;
        let recipients: Vec<String> = cx
            .msg
            .rcpt_addresses()
            .iter()
            .map(|a| keys.address(a))
            .collect();
        let queue_id = cx.msg.queue_id.clone();
        let already = cx.msg.incident.is_some();
        let shared = cx.shared();
        let redis = shared.limiter.redis.as_ref();
        // Unless one applies already, an incident opened by this message,
        // or during it (by its refused recipients, those the MTA
        // rejected), applies to it: looked up in the same round trip as
        // the counting.
        let find = !already && shared.incidents.may_be_open(redis);
        let event = Event::Accepted {
            queue_id: queue_id.as_deref(),
            recipients: &recipients,
        };
        let (opened, found) = match counted(cx.conn, Some(cx.msg)) {
            Some((keys, config, monitor)) => {
                shared
                    .incidents
                    .observe(
                        redis,
                        now_ms(),
                        &keys.keys(),
                        &event,
                        &config.incidents,
                        monitor,
                        find,
                    )
                    .await
            }
            None if find => {
                let keys = OwnedKeys::of(cx.conn, Some(cx.msg));
                let found = shared.incidents.find(redis, now_ms(), &keys.keys()).await;
                (Vec::new(), found)
            }
            None => (Vec::new(), None),
        };
        if !already {
            if let Some(incident) = opened.into_iter().next().or(found) {
                apply(cx, incident).await?;
            }
        }
        let held = cx.msg.hold.as_ref().map(|(_, h)| h.reason.clone());
        if let Some(incident) = cx.msg.incident.clone() {
            shared
                .incidents
                .note(redis, &incident, queue_id.as_deref(), held.is_some())
                .await;
        }
        if let Some(reason) = held {
            cx.msg.changes.push(HeaderAction::Quarantine(reason));
        }
        Ok(())
    }
}

/// The keys an event counts under, and the settings and mode it is judged
/// by; None when nothing is counted. Only our own senders count: a client
/// in no class sends inbound mail, which the signals leave alone (a
/// stranger's mail is no sign of our account being abused).
fn counted(conn: &Connection, msg: Option<&Message>) -> Option<(OwnedKeys, Arc<Config>, bool)> {
    if !conn.shared.incidents.counting() {
        return None;
    }
    let keys = OwnedKeys::of(conn, msg);
    keys.class.as_ref()?;
    let config = msg.map_or_else(|| conn.shared.config(), |m| m.config.clone());
    Some((keys, config, conn.mode(msg) == Mode::Monitor))
}

/// Counts an event under the message's (or connection's) keys, and opens
/// the incidents it makes cross.
async fn observe(conn: &Connection, msg: Option<&Message>, event: Event<'_>) -> Vec<Incident> {
    let Some((keys, config, monitor)) = counted(conn, msg) else {
        return Vec::new();
    };
    conn.shared
        .incidents
        .observe(
            conn.shared.limiter.redis.as_ref(),
            now_ms(),
            &keys.keys(),
            &event,
            &config.incidents,
            monitor,
            false,
        )
        .await
        .0
}

/// A recipient the MTA itself rejected: evidence against the message's
/// keys.
pub(in crate::session) async fn mta_rejected(conn: &Connection, msg: &Message) {
    observe(conn, Some(msg), Event::MtaRejected).await;
}

/// One of our permanent refusals: evidence against the keys. The stages
/// that refuse do not wait: with Redis it is counted aside.
pub(in crate::session) fn observe_refusal(conn: &Connection, msg: Option<&Message>) {
    let Some((keys, config, monitor)) = counted(conn, msg) else {
        return;
    };
    let shared = conn.shared.clone();
    if shared.limiter.redis.is_none() {
        shared.incidents.observe_local(
            now_ms(),
            &keys.keys(),
            &Event::Refused,
            &config.incidents,
            monitor,
        );
        return;
    }
    tokio::spawn(async move {
        shared
            .incidents
            .observe(
                shared.limiter.redis.as_ref(),
                now_ms(),
                &keys.keys(),
                &Event::Refused,
                &config.incidents,
                monitor,
                false,
            )
            .await;
    });
}
