//! Header scrubbing (end of message): the Received: lines and other trace
//! headers of internal hops redacted (`strip_internal_received`), our own
//! headers a client set removed, and every `headers.remove` header gone.

pub(crate) mod rules;

use super::{Check, Cx, Flow};
use crate::config::Config;
use rules::{Edit, Internal, Traced};
use std::collections::HashMap;

pub(super) struct Headers {
    /// The headers that trace the message's path, top first, when
    /// internal hops are scrubbed.
    traced: Vec<Traced>,
    /// How many of each traced header name, and of our own header names
    /// (which a client may not set), the message has.
    name_counts: HashMap<String, usize>,
    /// How many of each `headers.remove` header the message has.
    remove_counts: Vec<usize>,
    strip: bool,
}

pub(super) fn new(config: &Config) -> Option<Headers> {
    Some(Headers {
        traced: Vec::new(),
        name_counts: HashMap::new(),
        remove_counts: vec![0; config.remove_headers.len()],
        strip: config.strip_internal_received,
    })
}

impl Check for Headers {
    fn header(&mut self, cx: &mut Cx<'_>, name: &[u8], value: &[u8]) -> Flow {
        let ours = rules::OURS
            .iter()
            .any(|o| name.eq_ignore_ascii_case(o.as_bytes()));
        let traced = self.strip && rules::traced(name);
        if ours || traced {
            let key = String::from_utf8_lossy(name).to_ascii_lowercase();
            let index = self.name_counts.entry(key).or_default();
            *index += 1;
            if traced {
                self.traced.push(Traced {
                    name: String::from_utf8_lossy(name).into_owned(),
                    index: *index,
                    value: value.to_vec(),
                });
            }
        }
        for (i, h) in cx.msg.config.remove_headers.iter().enumerate() {
            if name.eq_ignore_ascii_case(h.as_bytes()) {
                if let Some(n) = self.remove_counts.get_mut(i) {
                    *n += 1;
                }
            }
        }
        Ok(())
    }

    async fn eom(&mut self, cx: &mut Cx<'_>) -> Flow {
        let config = cx.config();
        let internal = Internal {
            networks: &config.internal_networks,
            hostnames: &config.internal_hostnames,
        };
        let ours: Vec<(String, usize)> = rules::OURS
            .iter()
            .map(|o| {
                let n = self.name_counts.get(&o.to_ascii_lowercase()).copied();
                (o.to_string(), n.unwrap_or(0))
            })
            .collect();
        let scrub = rules::scrub(&self.traced, &internal, &ours);
        // A header `headers.remove` lists goes whole below, once.
        let listed = |e: &Edit| {
            config
                .remove_headers
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&e.name))
        };
        for edit in scrub.into_iter().filter(|e| !listed(e)) {
            cx.change_header(edit);
        }
        for (name, n) in config.remove_headers.iter().zip(&self.remove_counts) {
            for edit in rules::remove_all(name, *n) {
                cx.change_header(edit);
            }
        }
        Ok(())
    }
}
