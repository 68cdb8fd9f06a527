//! Headers, body and end of message.

use super::*;

impl Connection {
    /// A header: From: is kept (bounded by `from_header.max_length`), and
    /// every header when DKIM needs the message.
    pub fn header(&mut self, name: &[u8], value: &[u8]) -> Answer {
        let Some(msg) = self.message.as_mut() else {
            return Answer::Continue;
        };
        msg.size += name.len() + value.len() + 4;
        if name.eq_ignore_ascii_case(b"from") {
            if value.len() > msg.config.from_max_length {
                msg.from.too_long = true;
                msg.from.values.push(Vec::new());
            } else {
                msg.from.values.push(value.to_vec());
            }
        }
        if msg.size > msg.config.content.max_message_size {
            return self.settle("header", Verdict::Refuse(reply::message_too_big()), true);
        }
        if name.eq_ignore_ascii_case(b"received")
            && msg.config.strip_internal_received
            && !msg.config.internal_networks.is_empty()
        {
            msg.received.push(value.to_vec());
        }
        for (i, h) in msg.config.remove_headers.iter().enumerate() {
            if name.eq_ignore_ascii_case(h.as_bytes()) {
                msg.remove_counts[i] += 1;
            }
        }
        if let Some(c) = msg.content.as_mut() {
            c.header(name, value);
        }
        Answer::Continue
    }

    /// End of headers: the From: check.
    pub fn end_of_headers(&mut self, macros: &Macros) -> Answer {
        let Some(msg) = self.message.as_mut() else {
            return Answer::Continue;
        };
        if macros.queue_id.is_some() {
            msg.queue_id.clone_from(&macros.queue_id);
        }
        if let Some(c) = msg.content.as_mut() {
            c.end_headers();
            if msg.config.content.active() {
                c.plain_scan = crate::content::scan_headers(&c.head, &msg.config.content);
                c.skip_body =
                    c.plain_scan.is_some() && !whole_message_needed(&msg.config, &self.shared);
            }
        }
        let judged = policy::from_header::judge(&msg.config, msg.class(), &msg.from);
        msg.from_domain = judged.domain;
        let verdict = judged.verdict;
        if verdict == Verdict::Continue && self.trace.is_some() {
            let strict = msg.config.from_strict;
            let inbound = msg.class.is_none().then_some(msg.config.inbound_own_domain);
            let domain = msg.from_domain.as_ref().map(|d| d.to_string());
            self.note("eoh", "From: header", || match (inbound, strict, domain) {
                (Some(crate::config::InboundOwnDomain::Accept), ..) => {
                    "not checked: inbound mail (inbound_own_domain: accept)".into()
                }
                (Some(crate::config::InboundOwnDomain::Reject), ..) => {
                    "pass: inbound mail, no From: mailbox in our domains".into()
                }
                (None, false, _) => "not checked (from_header.strict: false)".into(),
                (None, true, Some(d)) => format!("pass: one mailbox, domain {d} is ours"),
                (None, true, None) => "pass".into(),
            });
        }
        self.settle("eoh", verdict, true)
    }

    /// A body chunk: counted, and kept when DKIM needs the message.
    pub fn body(&mut self, chunk: bytes::Bytes) -> Answer {
        let Some(msg) = self.message.as_mut() else {
            return Answer::Continue;
        };
        msg.size += chunk.len();
        if msg.size > msg.config.content.max_message_size {
            return self.settle("body", Verdict::Refuse(reply::message_too_big()), true);
        }
        if let Some(c) = msg.content.as_mut() {
            c.body(chunk);
        }
        Answer::Continue
    }

    /// End of message: existing signatures verified, then our signatures
    /// made; returns the answer and the headers to insert at the top.
    pub async fn end_of_message(&mut self, macros: &Macros) -> (Answer, Vec<HeaderAction>) {
        let Some(msg) = self.message.as_mut() else {
            return (Answer::Continue, Vec::new());
        };
        if macros.queue_id.is_some() {
            msg.queue_id.clone_from(&macros.queue_id);
        }
        let mut insert = Vec::new();
        if let Some(mut content) = msg.content.take() {
            let signatures = content.signatures;
            let head_len = content.head.len();
            let plain_scan = content.plain_scan.take();
            let raw = content.into_raw();
            // The scan made at end of headers stands unless the body turned
            // out to start like a ZIP archive.
            let plain_scan = plain_scan.filter(|_| {
                !crate::content::body_needs_walk(raw.get(head_len..).unwrap_or_default())
            });
            let config = msg.config.clone();
            if config.content.active() {
                match self.content_checks(&raw, &config, plain_scan) {
                    Ok(tags) => insert.extend(
                        tags.into_iter()
                            .map(|(name, value)| HeaderAction::Insert { name, value }),
                    ),
                    Err(refused) => return (refused, Vec::new()),
                }
            }
            if self.message.is_none() {
                return (Answer::Continue, Vec::new());
            }
            match self.rspamd(raw.clone()).await {
                Ok(tags) => insert.extend(tags),
                Err(answer) => return (answer, Vec::new()),
            }
            if self.message.is_none() {
                return (Answer::Continue, Vec::new());
            }
            let mode = config.dkim.verify_existing;
            if mode != CheckMode::Off {
                let count = signatures;
                let started = Instant::now();
                let existing = match &self.shared.dns {
                    Ok(r) => policy::dkim::verify_existing(r, &config, &raw, count).await,
                    Err(e) => policy::dkim::Existing::TempError(e.clone()),
                };
                self.shared.metrics.backend_time("dns", started.elapsed());
                if let policy::dkim::Existing::TempError(e) = &existing {
                    self.shared
                        .metrics
                        .dns_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(conn_id = self.id, "DKIM verification failed: {e}");
                    let answer = self.internal_error("eom");
                    if answer != Answer::Continue {
                        return (answer, Vec::new());
                    }
                } else {
                    let v = policy::dkim::verdict(&existing);
                    if v == Verdict::Continue {
                        self.note("eom", "existing DKIM signatures", || {
                            format!("pass: {count} signature(s), none failing")
                        });
                    }
                    if let refused @ Answer::Refuse(_) = self.settle_check("eom", v, mode, true) {
                        return (refused, Vec::new());
                    }
                }
            }
            let Some(msg) = self.message.as_mut() else {
                return (Answer::Continue, Vec::new());
            };
            match policy::dkim::signing_keys(&config, msg.class(), msg.from_domain.as_ref()) {
                Ok(keys) => {
                    let mut signed = Vec::new();
                    for key in keys {
                        match key.sign(&raw, &config.dkim.headers) {
                            Ok(value) => {
                                self.shared
                                    .metrics
                                    .signature(key.domain.as_str(), key.algorithm());
                                signed.push(format!(
                                    "d={} s={} a={}",
                                    key.domain,
                                    key.selector,
                                    key.algorithm()
                                ));
                                insert.push(HeaderAction::Insert {
                                    name: "DKIM-Signature",
                                    value,
                                });
                            }
                            Err(e) => {
                                tracing::error!(
                                    conn_id = self.id,
                                    "DKIM signing with {key:?} failed: {e}"
                                );
                                return (self.internal_error("eom"), Vec::new());
                            }
                        }
                    }
                    if !signed.is_empty() {
                        msg.dkim = signed.join(", ");
                    }
                    if self.trace.is_some() {
                        let shown = if signed.is_empty() {
                            "not signed (no key for the From: domain, or signing off)".to_string()
                        } else {
                            format!("signed: {}", signed.join(", "))
                        };
                        self.note("eom", "DKIM signing", || shown);
                    }
                }
                Err(refusal) => {
                    let answer = self.settle("eom", Verdict::Refuse(refusal), true);
                    if answer != Answer::Continue {
                        return (answer, Vec::new());
                    }
                }
            }
        }
        if let Some(msg) = self.message.as_ref() {
            let config = &msg.config;
            let scrub = policy::headers::scrub_received(&msg.received, &config.internal_networks);
            insert.extend(scrub.into_iter().map(HeaderAction::Change));
            for (name, n) in config.remove_headers.iter().zip(&msg.remove_counts) {
                insert.extend(
                    policy::headers::remove_all(name, *n)
                        .into_iter()
                        .map(HeaderAction::Change),
                );
            }
        }
        self.end_message(super::decide::Ending::Accepted);
        (Answer::Continue, insert)
    }

    /// rspamd's verdict, when it is configured: reject, defer, or tag.
    pub(super) async fn rspamd(&mut self, raw: bytes::Bytes) -> Result<Vec<HeaderAction>, Answer> {
        let Some(client) = &self.shared.rspamd else {
            return Ok(Vec::new());
        };
        let Some(msg) = self.message.as_ref() else {
            return Ok(Vec::new());
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(conn_id = self.id, "rspamd client unusable: {e}");
                return Err(self.internal_error("eom"));
            }
        };
        let hostname = msg
            .config
            .hostname
            .as_ref()
            .map_or("localhost".to_string(), |h| h.to_string());
        let env = crate::content::rspamd::Envelope {
            client_ip: self.client_ip.map(|ip| ip.to_string()),
            helo: self.helo.as_deref(),
            hostname: &hostname,
            sender: &msg.sender,
            recipients: &msg.rcpts,
            login: msg.login.as_deref(),
            queue_id: msg.queue_id.as_deref(),
        };
        let started = Instant::now();
        let checked = client.check(raw, &env).await;
        self.shared
            .metrics
            .backend_time("rspamd", started.elapsed());
        let verdict = match checked {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(conn_id = self.id, "rspamd check failed: {e}");
                let answer = self.internal_error("eom");
                return if answer == Answer::Continue {
                    Ok(Vec::new())
                } else {
                    Err(answer)
                };
            }
        };
        if self.trace.is_some() {
            let shown = format!(
                "action {:?}, score {:.1}, symbols {}",
                verdict.action,
                verdict.score,
                verdict.symbols_text(10)
            );
            self.note("eom", "rspamd", || shown);
        }
        if let Some(msg) = self.message.as_mut() {
            msg.content_rules = format!(
                "{} rspamd={} score={:.1} symbols={}",
                msg.content_rules,
                verdict.action.replace(' ', "_"),
                verdict.score,
                verdict.symbols_text(10)
            );
        }
        let refusal = match verdict.action.as_str() {
            "reject" => Some(reply::spam_rejected("rspamd", verdict.score)),
            "soft reject" | "greylist" => Some(reply::spam_deferred("rspamd", verdict.score)),
            _ => None,
        };
        if let Some(r) = refusal {
            if let refused @ Answer::Refuse(_) = self.settle("eom", Verdict::Refuse(r), true) {
                return Err(refused);
            }
        }
        if matches!(verdict.action.as_str(), "add header" | "rewrite subject") {
            return Ok(vec![
                HeaderAction::Insert {
                    name: "X-Spam-Score",
                    value: format!("{:.1}", verdict.score),
                },
                HeaderAction::Insert {
                    name: "X-Spam-Symbols",
                    value: verdict.symbols_text(20),
                },
            ]);
        }
        Ok(Vec::new())
    }

    /// Banned attachments, then the score: refused, deferred, tagged (the
    /// headers to add), or nothing.
    pub(super) fn content_checks(
        &mut self,
        raw: &[u8],
        config: &Config,
        plain_scan: Option<crate::content::Scan>,
    ) -> Result<Vec<(&'static str, String)>, Answer> {
        let scan = plain_scan.unwrap_or_else(|| crate::content::scan(raw, &config.content));
        let score = scan.score();
        if self.trace.is_some() {
            let c = &config.content;
            let rules = if scan.rules.is_empty() {
                "none".to_string()
            } else {
                scan.rules_text()
            };
            let banned = scan.banned.clone();
            self.note("eom", "content", || {
                format!(
                    "score {score:.1} (rules: {rules}; reject at {}, tempfail at {}, tag at {}){}",
                    c.reject_score,
                    c.tempfail_score,
                    c.tag_score,
                    banned.map_or(String::new(), |b| format!("; banned attachment .{b}"))
                )
            });
        }
        if let Some(msg) = self.message.as_mut() {
            msg.content_rules = format!(
                "score={score:.1} rules={}",
                if scan.rules.is_empty() {
                    "-".into()
                } else {
                    scan.rules_text()
                }
            );
        }
        if let Some(ext) = &scan.banned {
            if let refused @ Answer::Refuse(_) =
                self.settle("eom", Verdict::Refuse(reply::banned_attachment(ext)), true)
            {
                return Err(refused);
            }
        }
        let c = &config.content;
        let verdict = if score >= c.reject_score {
            Verdict::Refuse(reply::spam_rejected("content_score", score))
        } else if score >= c.tempfail_score {
            Verdict::Refuse(reply::spam_deferred("content_score", score))
        } else {
            Verdict::Continue
        };
        if let refused @ Answer::Refuse(_) = self.settle("eom", verdict, true) {
            return Err(refused);
        }
        if score >= c.tag_score {
            return Ok(vec![
                ("X-Egress-Score", format!("{score:.1}")),
                ("X-Egress-Rules", scan.rules_text()),
            ]);
        }
        Ok(Vec::new())
    }
}
