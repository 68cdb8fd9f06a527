//! The session's side of incidents: the keys a message is counted under,
//! the open incident that holds or refuses it, and the evidence it gives
//! (accepted, refused, recipients the MTA rejected).

use super::*;
use crate::incidents::{now_ms, Event, Incident, Keys};

/// A message's keys, owned: the client IP as limits write it, the login,
/// the sender as limits key it, the class.
#[derive(Clone)]
struct OwnedKeys {
    client: Option<String>,
    user: Option<String>,
    sender: Option<String>,
    class: Option<String>,
}

impl OwnedKeys {
    fn keys(&self) -> Keys<'_> {
        Keys {
            client: self.client.as_deref(),
            user: self.user.as_deref(),
            sender: self.sender.as_deref(),
            class: self.class.as_deref(),
        }
    }
}

impl Connection {
    /// The keys as limits spell them (`rate_limits.keys`): one person is
    /// one key for both, however the address or login is written.
    fn owned_keys(&self) -> OwnedKeys {
        let msg = self.message.as_ref();
        let config = msg.map_or_else(|| self.shared.config(), |m| m.config.clone());
        let keys = &config.rate_limits.keys;
        OwnedKeys {
            client: self
                .client_ip
                .map(|ip| crate::address::client_key(ip, config.incidents.ipv6_prefix)),
            user: msg.and_then(|m| m.login.as_deref()).map(|l| keys.login(l)),
            sender: msg
                .and_then(|m| m.sender_address.as_ref())
                .map(|a| keys.address(a)),
            class: match msg {
                Some(m) => m.class().map(|c| c.name.clone()),
                None => self.connect_class.clone(),
            },
        }
    }

    /// MAIL FROM: an open incident for one of the message's keys holds the
    /// message (at end of message), or refuses it now.
    pub(super) async fn open_incident(&mut self, stage: Stage) -> Flow {
        let redis = self.shared.limiter.redis.as_ref();
        if self.message.is_none() || !self.shared.incidents.may_be_open(redis) {
            return Ok(());
        }
        let keys = self.owned_keys();
        let found = self
            .shared
            .incidents
            .find(redis, now_ms(), &keys.keys())
            .await;
        match found {
            Some(incident) => self.apply_incident(stage, incident).await,
            None => Ok(()),
        }
    }

    /// A message from the key of an open incident, held or refused.
    async fn note_incident(&self, incident: &Incident, queue_id: Option<&str>, held: bool) {
        self.shared
            .incidents
            .note(self.shared.limiter.redis.as_ref(), incident, queue_id, held)
            .await;
    }

    /// Judges the message by an open incident.
    async fn apply_incident(&mut self, stage: Stage, incident: Incident) -> Flow {
        let verdict = policy::incident::verdict(&incident);
        if let Some(msg) = self.message.as_mut() {
            msg.incident = Some(incident.clone());
        }
        // The incident applies in the mode of this message's class, not
        // in that of the class whose mail opened it.
        let flow = self.settle_as(stage, verdict, None);
        if flow.is_err() {
            // Refused: counted against the incident now (a held message is
            // counted at end of message, with its queue id).
            let queue_id = self.message.as_ref().and_then(|m| m.queue_id.clone());
            self.note_incident(&incident, queue_id.as_deref(), false)
                .await;
        }
        flow
    }

    /// The keys an event counts under, and the settings and mode it is
    /// judged by; None when nothing is counted. Only our own senders count:
    /// a client in no class sends inbound mail, which the signals leave
    /// alone (a stranger's mail is no sign of our account being abused).
    fn counted(&self) -> Option<(OwnedKeys, Arc<Config>, bool)> {
        if !self.shared.incidents.counting() {
            return None;
        }
        let keys = self.owned_keys();
        keys.class.as_ref()?;
        let config = self
            .message
            .as_ref()
            .map_or_else(|| self.shared.config(), |m| m.config.clone());
        Some((keys, config, self.mode() == Mode::Monitor))
    }

    /// Counts an event under the current message's (or connection's) keys,
    /// and opens the incidents it makes cross.
    pub(super) async fn observe(&mut self, event: Event<'_>) -> Vec<Incident> {
        let Some((keys, config, monitor)) = self.counted() else {
            return Vec::new();
        };
        self.shared
            .incidents
            .observe(
                self.shared.limiter.redis.as_ref(),
                now_ms(),
                &keys.keys(),
                &event,
                &config.incidents,
                monitor,
            )
            .await
    }

    /// One of our permanent refusals: evidence against the keys. The
    /// stages that refuse do not wait: with Redis it is counted aside.
    pub(super) fn observe_refusal(&mut self) {
        let Some((keys, config, monitor)) = self.counted() else {
            return;
        };
        if self.shared.limiter.redis.is_none() {
            self.shared.incidents.observe_local(
                now_ms(),
                &keys.keys(),
                &Event::Refused,
                &config.incidents,
                monitor,
            );
            return;
        }
        let shared = self.shared.clone();
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
                )
                .await;
        });
    }

    /// End of message, the checks passed: the message counts as accepted;
    /// if that (or an earlier event) opened an incident for one of its
    /// keys, the incident's action applies to this message already. A
    /// message to hold (for an incident or a virus) gets the quarantine
    /// action.
    pub(super) async fn incidents_at_end(&mut self) -> Flow<Vec<HeaderAction>> {
        let Some(msg) = self.message.as_ref() else {
            return Ok(Vec::new());
        };
        // Counted as limits key them: `D1.TEST`, `d1.test.` and `d1.test`
        // are one domain, `a+x@` and `A@` one recipient.
        let keys = &msg.config.rate_limits.keys;
        let recipients: Vec<String> = msg
            .rcpt_addresses()
            .iter()
            .map(|a| keys.address(a))
            .collect();
        let queue_id = msg.queue_id.clone();
        let already = msg.incident.is_some();
        let opened = self
            .observe(Event::Accepted {
                queue_id: queue_id.as_deref(),
                recipients: &recipients,
            })
            .await;
        let redis = self.shared.limiter.redis.as_ref();
        if !already {
            // An incident opened by this message, or during it (by its
            // refused recipients, those the MTA rejected), applies to it.
            let found = match opened.into_iter().next() {
                Some(i) => Some(i),
                None if self.shared.incidents.may_be_open(redis) => {
                    let keys = self.owned_keys();
                    self.shared
                        .incidents
                        .find(redis, now_ms(), &keys.keys())
                        .await
                }
                None => None,
            };
            if let Some(incident) = found {
                self.apply_incident(Stage::Eom, incident).await?;
            }
        }
        let Some(msg) = self.message.as_ref() else {
            return Ok(Vec::new());
        };
        // A message held (for an incident, or a virus) gets the
        // quarantine action.
        let held = msg.hold.as_ref().map(|(_, h)| h.reason.clone());
        if let Some(incident) = msg.incident.clone() {
            self.note_incident(&incident, queue_id.as_deref(), held.is_some())
                .await;
        }
        let changes: Vec<HeaderAction> = held.map(HeaderAction::Quarantine).into_iter().collect();
        Ok(changes)
    }
}
