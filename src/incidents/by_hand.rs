//! Incidents opened, changed and closed by an operator (`egress-milter
//! incidents open|close`): in Redis when it is the backend, else here, and
//! told as the ones the signals open are.

use super::*;

impl Incidents {
    /// Opens an incident by hand (`incidents open`), with the given action
    /// or `incidents.action`; one already open for the key is extended to
    /// the later end, and takes the action when one is given (escalated or
    /// relaxed, logged).
    pub async fn open_by_hand(
        &self,
        redis: Option<&RedisLimiter>,
        kind: KeyKind,
        key: &str,
        duration: Duration,
        action: Option<IncidentAction>,
        settings: &IncidentSettings,
    ) -> Incident {
        let now = now_ms() / 1000;
        let incident = Incident {
            kind,
            key: key.to_string(),
            signal: "operator".into(),
            figures: "opened by hand".into(),
            action: action.unwrap_or(settings.action),
            monitor: false,
            opened: now,
            until: now + duration.as_secs(),
            earlier: Vec::new(),
            messages: 0,
            first_queue_id: None,
            last_queue_id: None,
            held: Vec::new(),
        };
        let before = self.find(redis, now * 1000, &keys_of(kind, key)).await;
        let opened = self.open(redis, incident, settings).await;
        match (before, action) {
            (Some(b), Some(action)) if b.action != action => {
                self.set_action(redis, b, action).await
            }
            _ => opened,
        }
    }

    /// Changes an open incident's action, wherever it is kept.
    async fn set_action(
        &self,
        redis: Option<&RedisLimiter>,
        before: Incident,
        action: IncidentAction,
    ) -> Incident {
        let mut changed = None;
        if let Some(r) = redis {
            match self
                .scripts
                .set_action(r, before.kind, &before.key, action)
                .await
            {
                Ok(c) => changed = c,
                Err(e) => self.fell_back(&e),
            }
        }
        for store in [&self.store, &self.seen] {
            if let Some(c) = store.set_action(before.kind, &before.key, action) {
                changed.get_or_insert(c);
            }
        }
        let changed = changed.unwrap_or_else(|| Incident {
            action,
            ..before.clone()
        });
        tracing::warn!(
            target: "egress_milter::incident",
            incident = changed.name(),
            from = before.action.as_str(),
            to = action.as_str(),
            until = rfc3339(changed.until),
            "incident action changed by hand"
        );
        changed
    }

    /// Closes an incident by hand (`incidents close`): the key's counts
    /// start afresh, or the next message would open it again at once.
    pub async fn close(
        &self,
        redis: Option<&RedisLimiter>,
        kind: KeyKind,
        key: &str,
        settings: &IncidentSettings,
    ) -> Option<Incident> {
        let mut closed = self.store.close(kind, key);
        closed = self.seen.close(kind, key).or(closed);
        let signals = self.signals.load();
        signals.2.forget(kind, key);
        if let Some(r) = redis {
            match self.scripts.close(r, kind, key).await {
                Ok(c) => closed = c.or(closed),
                Err(e) => self.fell_back(&e),
            }
            if let Err(e) = self
                .scripts
                .forget(r, &signals.0, kind, key, now_ms())
                .await
            {
                self.fell_back(&e);
            }
        }
        let closed = closed?;
        self.closed(closed.clone(), "closed by hand", settings);
        Some(closed)
    }
}
