//! The session's side of incidents: the keys a message is counted under,
//! the open incident that holds or refuses it, and the evidence it gives
//! (accepted, refused, recipients the MTA rejected).

use super::*;
use crate::incidents::{now_ms, Event, Incident, Keys};

/// A message's keys, owned: the client IP as limits write it, the login,
/// the sender as limits key it, the class.
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
    fn owned_keys(&self) -> OwnedKeys {
        let msg = self.message.as_ref();
        OwnedKeys {
            client: self.client_ip.map(crate::limiter::client_key),
            user: msg.and_then(|m| m.login.clone()),
            sender: msg
                .and_then(|m| m.sender_address.as_ref())
                .map(Address::limit_key),
            class: match msg {
                Some(m) => m.class().map(|c| c.name.clone()),
                None => self.connect_class.clone(),
            },
        }
    }

    /// MAIL FROM: an open incident for one of the message's keys holds the
    /// message (at end of message), or refuses it now.
    pub(super) fn open_incident(&mut self, stage: Stage) -> Flow {
        let Some(msg) = self.message.as_ref() else {
            return Ok(());
        };
        if msg.config.incidents.signals.is_empty() && !self.shared.incidents.any_open() {
            return Ok(());
        }
        let keys = self.owned_keys();
        let Some(incident) = self.shared.incidents.find(now_ms(), &keys.keys()) else {
            return Ok(());
        };
        self.apply_incident(stage, incident)
    }

    /// Judges the message by an open incident.
    fn apply_incident(&mut self, stage: Stage, incident: Incident) -> Flow {
        let verdict = policy::incident::verdict(&incident);
        let forced = incident.monitor.then_some(Mode::Monitor);
        if let Some(msg) = self.message.as_mut() {
            msg.incident = Some(incident.clone());
        }
        let flow = self.settle_as(stage, verdict, forced);
        if flow.is_err() {
            // Refused: counted against the incident now (a held message is
            // counted at end of message, with its queue id).
            let queue_id = self.message.as_ref().and_then(|m| m.queue_id.clone());
            self.shared
                .incidents
                .note(&incident, queue_id.as_deref(), false);
        }
        flow
    }

    /// Counts an event under the current message's (or connection's) keys,
    /// and opens the incidents it makes cross. Only our own senders count:
    /// a client in no class sends inbound mail, which the signals leave
    /// alone (a stranger's mail is no sign of our account being abused).
    pub(super) fn observe(&mut self, event: Event<'_>) -> Vec<Incident> {
        if !self.shared.incidents.counting() {
            return Vec::new();
        }
        let keys = self.owned_keys();
        if keys.class.is_none() {
            return Vec::new();
        }
        let config = self
            .message
            .as_ref()
            .map_or_else(|| self.shared.config(), |m| m.config.clone());
        let monitor = self.mode() == Mode::Monitor;
        self.shared
            .incidents
            .observe(now_ms(), &keys.keys(), &event, &config.incidents, monitor)
    }

    /// One of our permanent refusals: evidence against the keys.
    pub(super) fn observe_refusal(&mut self) {
        self.observe(Event::Refused);
    }

    /// End of message, the checks passed: the message counts as accepted;
    /// if that (or an earlier event) opened an incident for one of its
    /// keys, the incident's action applies to this message already. A
    /// message to hold gets the quarantine action.
    pub(super) fn incidents_at_end(&mut self) -> Flow<Vec<HeaderAction>> {
        let Some(msg) = self.message.as_ref() else {
            return Ok(Vec::new());
        };
        let recipients = msg.rcpts.clone();
        let queue_id = msg.queue_id.clone();
        let already = msg.incident.is_some();
        let opened = self.observe(Event::Accepted {
            queue_id: queue_id.as_deref(),
            recipients: &recipients,
        });
        if !already {
            // An incident opened by this message, or during it (by its
            // refused recipients, those the MTA rejected), applies to it.
            let keys = self.owned_keys();
            let found = match opened.into_iter().next() {
                Some(i) => Some(i),
                None => self.shared.incidents.find(now_ms(), &keys.keys()),
            };
            if let Some(incident) = found {
                self.apply_incident(Stage::Eom, incident)?;
            }
        }
        let Some(msg) = self.message.as_ref() else {
            return Ok(Vec::new());
        };
        let mut changes = Vec::new();
        if let Some(incident) = &msg.incident {
            let held = msg.hold.as_ref();
            if let Some((_, h)) = held {
                changes.push(HeaderAction::Quarantine(h.reason.clone()));
            }
            self.shared
                .incidents
                .note(incident, queue_id.as_deref(), held.is_some());
        }
        Ok(changes)
    }
}
