//! The virus scan through clamd (end of message), when `antivirus` is
//! configured and the class does not turn it off. The message is scanned
//! as the client sent it: the headers we add or change carry nothing
//! executable. `antivirus.action: monitor` judges in monitor mode whatever
//! the class's mode; `antivirus.on_error` overrides the global one.

pub(crate) mod rules;

use super::{Check, Cx, Decision, Flow};
use crate::config::{Config, VirusAction};
use crate::content::clamd::Scan;
use crate::verdict::{Backend, Verdict};
use rules::Finding;
use std::time::Instant;

pub(super) struct Antivirus;

pub(super) fn new(config: &Config) -> Option<Antivirus> {
    config.antivirus.is_some().then_some(Antivirus)
}

impl Check for Antivirus {
    fn reads_whole(&self, _null_sender: bool) -> bool {
        true
    }

    async fn eom(&mut self, cx: &mut Cx<'_>) -> Flow {
        let config = cx.config();
        let shared = cx.shared();
        let (Some(settings), Some(client), Some(whole)) =
            (&config.antivirus, &shared.clamd, cx.whole)
        else {
            return Ok(());
        };
        if cx.class().is_some_and(|c| !c.antivirus) {
            cx.msg.summary.antivirus = "off".into();
            return Ok(());
        }
        let started = Instant::now();
        let scanned = client.scan(&whole.raw, settings).await;
        shared.metrics.backend_time("clamd", started.elapsed());
        let (verdict, result, shown, signature) = match &scanned {
            Ok((scan, by)) => {
                let (verdict, result) = rules::verdict(scan, settings);
                let (shown, signature) = match scan {
                    Scan::Clean => ("clean".to_string(), None),
                    Scan::Virus(s) => (format!("{} {s}", result.as_str()), Some(s.clone())),
                    Scan::Error(e) => (format!("error ({e})"), None),
                };
                if result == Finding::Allowed {
                    tracing::info!(conn_id = cx.conn.id, clamd = %by, "virus signature allowed by antivirus.allow: {shown}");
                }
                (verdict, result, shown, signature)
            }
            Err(e) => (
                Verdict::failed(Backend::Clamd, format!("virus scan failed: {e}")),
                Finding::Error,
                "error (no clamd answered)".to_string(),
                None,
            ),
        };
        shared.metrics.scan(result.as_str(), signature.as_deref());
        cx.note("antivirus", |_| shown.clone());
        cx.msg.summary.antivirus = shown;
        let mut decision = Decision::from(verdict).on_error(settings.on_error);
        if settings.action == VirusAction::Monitor {
            decision = decision.monitor();
        }
        cx.decide(decision)
    }
}
