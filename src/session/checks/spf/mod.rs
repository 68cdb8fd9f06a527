//! `spf.check_egress`: the sender domain's SPF must authorise our egress
//! IPs (MAIL FROM).

pub(crate) mod rules;

use super::{Check, Cx, Decision, Flow};
use crate::config::{CheckMode, Config};
use crate::verdict::{Backend, Verdict};
use std::time::Instant;

pub(super) struct Spf(CheckMode);

pub(super) fn new(config: &Config) -> Option<Spf> {
    (config.spf_check_egress != CheckMode::Off).then_some(Spf(config.spf_check_egress))
}

impl Check for Spf {
    async fn mail(&mut self, cx: &mut Cx<'_>) -> Flow {
        let Some(sender) = cx.msg.sender_address.clone() else {
            return Ok(());
        };
        let config = cx.config();
        let shared = cx.shared();
        let helo = cx
            .conn
            .helo
            .clone()
            .unwrap_or_else(|| cx.conn.client_name.clone());
        let started = Instant::now();
        let verdict = match &shared.dns {
            Ok(resolver) => rules::check(resolver, &config, &sender, &helo).await,
            Err(e) => Verdict::failed(
                Backend::Dns,
                format!("SPF lookup for {sender} impossible: {e}"),
            ),
        };
        shared.metrics.backend_time("dns", started.elapsed());
        match &verdict {
            Verdict::Continue => cx.note("SPF of the sender domain", |_| {
                format!("pass: {} authorises our egress IPs", sender.domain)
            }),
            Verdict::TempError(_) => shared.metrics.dns_failed(),
            Verdict::Refuse(_) | Verdict::Hold(_) => {}
        }
        cx.decide(Decision::from(verdict).under(self.0))
    }
}
