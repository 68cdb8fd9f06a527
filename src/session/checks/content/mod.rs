//! The content checks (end of message): banned attachments, then the
//! score of the rules that fired: refused, deferred, or tagged. A plain
//! text message is scanned at end of headers already; the scan stands
//! unless the body holds what only the full walk judges.

pub(crate) mod rules;

use super::{Check, Cx, Flow};
use crate::config::Config;
use crate::content::Scan;

pub(super) struct Content {
    /// The scan made at end of headers, when they show a plain text
    /// message.
    plain_scan: Option<Scan>,
}

pub(super) fn new(config: &Config) -> Option<Content> {
    config
        .content
        .active()
        .then_some(Content { plain_scan: None })
}

impl Check for Content {
    fn reads_whole(&self, _null_sender: bool) -> bool {
        true
    }

    async fn eoh(&mut self, cx: &mut Cx<'_>) -> Flow {
        if let Some(c) = cx.msg.content.as_ref() {
            self.plain_scan = crate::content::scan_headers(&c.head, &cx.msg.config.content);
        }
        Ok(())
    }

    async fn eom(&mut self, cx: &mut Cx<'_>) -> Flow {
        let Some(whole) = cx.whole else {
            return Ok(());
        };
        let config = cx.config();
        let c = &config.content;
        // The scan made at end of headers stands unless the body holds
        // what only the full walk judges (a uuencoded file, an archive,
        // a control character).
        let plain_scan = self
            .plain_scan
            .take()
            .filter(|_| !crate::content::body_needs_walk(whole.body()));
        let scan = plain_scan.unwrap_or_else(|| crate::content::scan(&whole.raw, c));
        let score = scan.score();
        let rules = if scan.rules.is_empty() {
            "-".to_string()
        } else {
            scan.rules_text()
        };
        cx.note("content", |_| {
            format!(
                "score {score:.1} (rules: {}; reject at {}, tempfail at {}, tag at {}){}",
                if scan.rules.is_empty() {
                    "none"
                } else {
                    &rules
                },
                c.reject_score,
                c.tempfail_score,
                c.tag_score,
                scan.banned
                    .as_ref()
                    .map_or(String::new(), |b| format!("; banned attachment .{b}"))
            )
        });
        cx.msg.summary.content = format!("score={score:.1} rules={rules}");
        cx.decide(rules::attachments(&scan, c))?;
        let (verdict, tags) = rules::score(&scan, c);
        cx.decide(verdict)?;
        for (name, value) in tags {
            cx.insert_header(name, value);
        }
        Ok(())
    }
}
