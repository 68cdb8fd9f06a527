//! rspamd (end of message): its action rejects, defers or tags the
//! message.

pub(crate) mod rules;

use super::{Check, Cx, Flow};
use crate::config::Config;
use crate::verdict::{Backend, Verdict};
use std::time::Instant;

pub(super) struct Rspamd;

pub(super) fn new(config: &Config) -> Option<Rspamd> {
    config.content.rspamd.is_some().then_some(Rspamd)
}

impl Check for Rspamd {
    fn reads_whole(&self, _null_sender: bool) -> bool {
        true
    }

    async fn eom(&mut self, cx: &mut Cx<'_>) -> Flow {
        let shared = cx.shared();
        let (Some(client), Some(whole)) = (&shared.rspamd, cx.whole) else {
            return Ok(());
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                let cause = format!("rspamd client unusable: {e}");
                return cx.decide(Verdict::failed(Backend::Rspamd, cause));
            }
        };
        let msg = &*cx.msg;
        let hostname = msg
            .config
            .hostname
            .as_ref()
            .map_or("localhost".to_string(), |h| h.to_string());
        let env = crate::content::rspamd::Envelope {
            client_ip: cx.conn.client_ip.map(|ip| ip.to_string()),
            helo: cx.conn.helo.as_deref(),
            hostname: &hostname,
            sender: &msg.sender,
            recipients: &msg.rcpts,
            login: msg.login.as_deref(),
            queue_id: msg.queue_id.as_deref(),
        };
        let started = Instant::now();
        let judged = rules::check(client, whole.raw.clone(), &env).await;
        shared.metrics.backend_time("rspamd", started.elapsed());
        if let Some(report) = &judged.report {
            let shown = format!(
                "action {:?}, score {:.1}, symbols {}",
                report.action,
                report.score,
                report.symbols_text(10)
            );
            cx.note("rspamd", |_| shown);
            let summary = &mut cx.msg.summary.content;
            *summary = format!(
                "{summary} rspamd={} score={:.1} symbols={}",
                report.action.replace(' ', "_"),
                report.score,
                report.symbols_text(10)
            );
        }
        cx.decide(judged.verdict)?;
        for (name, value) in judged.tags {
            cx.insert_header(name, value);
        }
        Ok(())
    }
}
