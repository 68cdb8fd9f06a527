//! `reputation`: while one of our addresses or domains is listed, the
//! mail of the classes `on_listed` names is held or refused for now (MAIL
//! FROM; inbound mail, from clients in no class, is never paused); and
//! every outbound message that passed the checks is counted by login,
//! client and sender, for the top senders a listing notice names (end of
//! message).

pub(crate) mod rules;

use super::incident::OwnedKeys;
use super::{Check, Cx, Flow};
use crate::config::{Config, OnListed};
use crate::reputation::tally::Kind;

pub(super) struct Reputation;

pub(super) fn new(config: &Config) -> Option<Reputation> {
    config.reputation.as_ref().map(|_| Reputation)
}

impl Check for Reputation {
    async fn mail(&mut self, cx: &mut Cx<'_>) -> Flow {
        let config = cx.config();
        let Some(settings) = &config.reputation else {
            return Ok(());
        };
        if settings.action == OnListed::Notify {
            return Ok(());
        }
        let Some(class) = cx.class() else {
            return Ok(());
        };
        if !settings.classes.is_empty() && !settings.classes.contains(&class.name) {
            return Ok(());
        }
        let Some(listed) = cx.shared().reputation.listed() else {
            return Ok(());
        };
        cx.note("reputation", |_| {
            format!("{} is listed on {}", listed.0, listed.1)
        });
        cx.decide(rules::verdict(settings.action, &listed.0, &listed.1))
    }

    async fn eom(&mut self, cx: &mut Cx<'_>) -> Flow {
        if cx.class().is_none() {
            return Ok(());
        }
        let keys = OwnedKeys::of(cx.conn, Some(cx.msg));
        let mut counted = Vec::with_capacity(3);
        if let Some(u) = &keys.user {
            counted.push((Kind::Login, u.as_str()));
        }
        if let Some(c) = &keys.client {
            counted.push((Kind::Client, c.as_str()));
        }
        if let Some(s) = &keys.sender {
            counted.push((Kind::Sender, s.as_str()));
        }
        let n = cx.msg.rcpt_addresses().len().max(1) as u64;
        cx.shared()
            .reputation
            .tally
            .add(crate::incidents::now_ms(), &counted, n);
        Ok(())
    }
}
