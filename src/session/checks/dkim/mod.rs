//! DKIM (end of message): the signatures a message already carries
//! verified (`dkim.verify_existing`), then ours made (`dkim.keys`, for the
//! From: domain).

pub(crate) mod rules;

use super::{Check, Cx, Decision, Flow};
use crate::config::{CheckMode, Config, SignMode};
use crate::verdict::{Backend, Verdict};
use std::time::Instant;

/// `dkim.verify_existing`: a signature that no longer verifies would fail
/// DMARC at the receiver, with our IP on the report.
pub(super) struct Verify(CheckMode);

pub(super) fn verify(config: &Config) -> Option<Verify> {
    let mode = config.dkim.verify_existing;
    (mode != CheckMode::Off).then_some(Verify(mode))
}

impl Check for Verify {
    fn reads_whole(&self, _null_sender: bool) -> bool {
        true
    }

    async fn eom(&mut self, cx: &mut Cx<'_>) -> Flow {
        let Some(whole) = cx.whole else {
            return Ok(());
        };
        let config = cx.config();
        let shared = cx.shared();
        let count = whole.signatures;
        let started = Instant::now();
        let verdict = match &shared.dns {
            Ok(r) => rules::verify_existing(r, &config, &whole.raw, count).await,
            Err(e) => Verdict::failed(Backend::Dns, format!("DKIM verification impossible: {e}")),
        };
        shared.metrics.backend_time("dns", started.elapsed());
        match &verdict {
            Verdict::TempError(_) => shared.metrics.dns_failed(),
            Verdict::Continue => cx.note("existing DKIM signatures", |_| {
                format!("pass: {count} signature(s), none failing")
            }),
            Verdict::Refuse(_) | Verdict::Hold(_) => {}
        }
        cx.decide(Decision::from(verdict).under(self.0))
    }
}

/// Our signatures: the DKIM-Signature headers added for the From: domain.
/// Asked whenever the message is kept whole, so that `explain` says why a
/// message leaves unsigned.
pub(super) struct Sign {
    signs: bool,
}

pub(super) fn sign(config: &Config) -> Option<Sign> {
    let signs = (!config.dkim.keys.is_empty() || config.dkim.rotation.is_some())
        && config.dkim.sign != SignMode::Off;
    Some(Sign { signs })
}

impl Check for Sign {
    fn reads_whole(&self, _null_sender: bool) -> bool {
        self.signs
    }

    async fn eom(&mut self, cx: &mut Cx<'_>) -> Flow {
        let Some(whole) = cx.whole else {
            return Ok(());
        };
        let config = cx.config();
        let shared = cx.shared();
        let lists = shared.lists(cx.recording());
        let from = cx.msg.from_domain.clone();
        let (verdict, signatures) = rules::sign(
            &config,
            &shared.rotated.keys(),
            &lists,
            cx.class(),
            from.as_ref(),
            &whole.raw,
        )
        .await;
        cx.noted_lookups(&lists);
        cx.decide(verdict)?;
        let shown: Vec<String> = signatures.iter().map(|s| s.shown()).collect();
        for s in &signatures {
            shared
                .metrics
                .signature(s.key.domain.as_str(), s.key.algorithm());
        }
        if !shown.is_empty() {
            cx.msg.summary.dkim = shown.join(", ");
        }
        cx.note("DKIM signing", |_| {
            if shown.is_empty() {
                "not signed (no key for the From: domain, or signing off)".to_string()
            } else {
                format!("signed: {}", shown.join(", "))
            }
        });
        for s in signatures {
            cx.insert_header("DKIM-Signature", s.value);
        }
        Ok(())
    }
}
