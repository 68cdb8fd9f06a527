//! Strict relay (end of headers): mail that leaves carries exactly one
//! From: mailbox in one of our domains; inbound mail is judged only by
//! `from_header.inbound_own_domain`. The mailbox found is shared with the
//! other checks (DKIM signs for its domain).

pub(crate) mod rules;

use super::{Check, Cx, Flow};
use crate::config::{Config, InboundOwnDomain};
use crate::verdict::Verdict;
use rules::FromHeaders;

pub(super) struct FromHeader {
    from: FromHeaders,
    max_length: usize,
}

pub(super) fn new(config: &Config) -> Option<FromHeader> {
    Some(FromHeader {
        from: FromHeaders::default(),
        max_length: config.from_max_length,
    })
}

impl Check for FromHeader {
    fn header(&mut self, _: &mut Cx<'_>, name: &[u8], value: &[u8]) -> Flow {
        if name.eq_ignore_ascii_case(b"from") {
            if value.len() > self.max_length {
                self.from.too_long = true;
                self.from.values.push(Vec::new());
            } else {
                self.from.values.push(value.to_vec());
            }
        }
        Ok(())
    }

    async fn eoh(&mut self, cx: &mut Cx<'_>) -> Flow {
        let config = cx.config();
        let shared = cx.shared();
        let lists = shared.lists(cx.recording());
        let judged = rules::judge(&config, &lists, cx.class(), &self.from).await;
        cx.msg.from_domain = judged.domain;
        cx.msg.from_address = judged.mailbox;
        cx.noted_lookups(&lists);
        if judged.verdict == Verdict::Continue {
            let strict = config.from_strict;
            let inbound = cx.msg.class.is_none().then_some(config.inbound_own_domain);
            let domain = cx.msg.from_domain.as_ref().map(|d| d.to_string());
            cx.note("From: header", |_| match (inbound, strict, domain) {
                (Some(InboundOwnDomain::Accept), ..) => {
                    "not checked: inbound mail (inbound_own_domain: accept)".into()
                }
                (Some(InboundOwnDomain::Reject), ..) => {
                    "pass: inbound mail, no From: mailbox in our domains".into()
                }
                (None, false, _) => "not checked (from_header.strict: false)".into(),
                (None, true, Some(d)) => format!("pass: one mailbox, domain {d} is ours"),
                (None, true, None) => "pass".into(),
            });
        }
        cx.decide(judged.verdict)
    }
}
