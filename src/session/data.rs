//! Headers, body and end of message.

use super::*;

impl Connection {
    /// A header: From: is kept (bounded by `from_header.max_length`), and
    /// every header when DKIM needs the message.
    pub fn header(&mut self, name: &[u8], value: &[u8]) -> Answer {
        let flow = self.header_checks(name, value);
        self.finish(flow)
    }

    fn header_checks(&mut self, name: &[u8], value: &[u8]) -> Flow {
        let Some(msg) = self.message.as_mut() else {
            return Ok(());
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
        let size = policy::content::size(msg.size, &msg.config.content);
        if size != Verdict::Continue {
            return self.settle(Stage::Header, size);
        }
        let ours = policy::headers::OURS
            .iter()
            .any(|o| name.eq_ignore_ascii_case(o.as_bytes()));
        let traced = msg.config.strip_internal_received && policy::headers::traced(name);
        if ours || traced {
            let key = String::from_utf8_lossy(name).to_ascii_lowercase();
            let index = msg.name_counts.entry(key).or_default();
            *index += 1;
            if traced {
                msg.traced.push(policy::headers::Traced {
                    name: String::from_utf8_lossy(name).into_owned(),
                    index: *index,
                    value: value.to_vec(),
                });
            }
        }
        for (i, h) in msg.config.remove_headers.iter().enumerate() {
            if name.eq_ignore_ascii_case(h.as_bytes()) {
                msg.remove_counts[i] += 1;
            }
        }
        if let Some(c) = msg.content.as_mut() {
            c.header(name, value);
        }
        Ok(())
    }

    /// End of headers: the From: check.
    pub async fn end_of_headers(&mut self, macros: &Macros) -> Answer {
        let flow = self.eoh_checks(macros).await;
        self.finish(flow)
    }

    async fn eoh_checks(&mut self, macros: &Macros) -> Flow {
        let Some(msg) = self.message.as_mut() else {
            return Ok(());
        };
        if macros.queue_id.is_some() {
            msg.queue_id.clone_from(&macros.queue_id);
        }
        if let Some(c) = msg.content.as_mut() {
            c.end_headers();
            if msg.config.content.active() {
                c.plain_scan = crate::content::scan_headers(&c.head, &msg.config.content);
            }
        }
        let shared = self.shared.clone();
        let lists = shared.lists(self.trace.is_some());
        let judged = policy::from_header::judge(&msg.config, &lists, msg.class(), &msg.from).await;
        msg.from_domain = judged.domain;
        msg.from_address = judged.mailbox;
        let verdict = judged.verdict;
        self.note_lookups(Stage::Eoh, &lists);
        let Some(msg) = self.message.as_mut() else {
            return Ok(());
        };
        if verdict == Verdict::Continue && self.trace.is_some() {
            let strict = msg.config.from_strict;
            let inbound = msg.class.is_none().then_some(msg.config.inbound_own_domain);
            let domain = msg.from_domain.as_ref().map(|d| d.to_string());
            self.note(Stage::Eoh, "From: header", || {
                match (inbound, strict, domain) {
                    (Some(crate::config::InboundOwnDomain::Accept), ..) => {
                        "not checked: inbound mail (inbound_own_domain: accept)".into()
                    }
                    (Some(crate::config::InboundOwnDomain::Reject), ..) => {
                        "pass: inbound mail, no From: mailbox in our domains".into()
                    }
                    (None, false, _) => "not checked (from_header.strict: false)".into(),
                    (None, true, Some(d)) => format!("pass: one mailbox, domain {d} is ours"),
                    (None, true, None) => "pass".into(),
                }
            });
        }
        self.settle(Stage::Eoh, verdict)
    }

    /// A body chunk: counted, and kept when DKIM needs the message.
    pub fn body(&mut self, chunk: bytes::Bytes) -> Answer {
        let flow = self.body_checks(chunk);
        self.finish(flow)
    }

    fn body_checks(&mut self, chunk: bytes::Bytes) -> Flow {
        let Some(msg) = self.message.as_mut() else {
            return Ok(());
        };
        msg.size += chunk.len();
        let size = policy::content::size(msg.size, &msg.config.content);
        if size != Verdict::Continue {
            return self.settle(Stage::Body, size);
        }
        if let Some(c) = msg.content.as_mut() {
            c.body(chunk);
        }
        Ok(())
    }

    /// End of message: the content checks, rspamd, existing signatures
    /// verified, then our signatures made and the internal headers
    /// scrubbed; returns the answer and the header changes.
    pub async fn end_of_message(&mut self, macros: &Macros) -> (Answer, Vec<HeaderAction>) {
        let Some(msg) = self.message.as_mut() else {
            return (Answer::Continue, Vec::new());
        };
        if macros.queue_id.is_some() {
            msg.queue_id.clone_from(&macros.queue_id);
        }
        let checked = match self.eom_checks().await {
            Ok(mut changes) => self.incidents_at_end().await.map(|more| {
                changes.extend(more);
                changes
            }),
            Err(reply) => Err(reply),
        };
        match checked {
            Ok(changes) => {
                self.end_message(Ending::Accepted);
                (Answer::Continue, changes)
            }
            Err(reply) => (self.finish(Err(reply)), Vec::new()),
        }
    }

    async fn eom_checks(&mut self) -> Flow<Vec<HeaderAction>> {
        let Some(msg) = self.message.as_mut() else {
            return Ok(Vec::new());
        };
        let config = msg.config.clone();
        let mut changes = Vec::new();
        if let Some(mut content) = msg.content.take() {
            let signatures = content.signatures;
            let head_len = content.head.len();
            let plain_scan = content.plain_scan.take();
            let raw = content.into_raw();
            // The scan made at end of headers stands unless the body holds
            // what only the full walk judges (a uuencoded file, an archive,
            // a control character).
            let plain_scan = plain_scan.filter(|_| {
                !crate::content::body_needs_walk(raw.get(head_len..).unwrap_or_default())
            });
            if config.content.active() {
                let tags = self.content_checks(&raw, &config, plain_scan)?;
                changes.extend(tags.into_iter().map(insert));
            }
            let tags = self.rspamd(raw.clone()).await?;
            changes.extend(tags.into_iter().map(insert));
            self.antivirus(&raw, &config).await?;
            self.existing_signatures(&raw, &config, signatures).await?;
            let signed = self.sign(&raw, &config).await?;
            changes.extend(signed.into_iter().map(insert));
        }
        self.byte_budgets(&config).await?;
        if let Some(msg) = self.message.as_ref() {
            let internal = policy::headers::Internal {
                networks: &config.internal_networks,
                hostnames: &config.internal_hostnames,
            };
            let ours: Vec<(String, usize)> = policy::headers::OURS
                .iter()
                .map(|o| {
                    let n = msg.name_counts.get(&o.to_ascii_lowercase()).copied();
                    (o.to_string(), n.unwrap_or(0))
                })
                .collect();
            let scrub = policy::headers::scrub(&msg.traced, &internal, &ours);
            // A header `headers.remove` lists goes whole below, once.
            let listed = |e: &policy::headers::Edit| {
                config
                    .remove_headers
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&e.name))
            };
            changes.extend(
                scrub
                    .into_iter()
                    .filter(|e| !listed(e))
                    .map(HeaderAction::Change),
            );
            for (name, n) in config.remove_headers.iter().zip(&msg.remove_counts) {
                changes.extend(
                    policy::headers::remove_all(name, *n)
                        .into_iter()
                        .map(HeaderAction::Change),
                );
            }
        }
        // Edits of the headers the message came with first, then ours
        // added at the top: an index counts the message's own headers
        // only, whichever way the MTA numbers added ones.
        changes.sort_by_key(|c| matches!(c, HeaderAction::Insert { .. }));
        Ok(changes)
    }

    /// The byte budgets (`count: bytes`), charged the message's size now
    /// that it is known.
    async fn byte_budgets(&mut self, config: &Config) -> Flow {
        if !config
            .rate_limits
            .custom
            .iter()
            .any(|c| c.count == crate::config::Counter::Bytes)
        {
            return Ok(());
        }
        let Some(msg) = self.message.as_ref() else {
            return Ok(());
        };
        // The recipients, parsed again only for a budget keyed by them.
        let by_recipient = config.rate_limits.custom.iter().any(|c| {
            c.count == crate::config::Counter::Bytes && c.key.iter().any(|k| k.per_recipient())
        });
        let rcpts: Vec<crate::address::Address> = if by_recipient {
            msg.rcpt_addresses()
        } else {
            Vec::new()
        };
        let class = msg.class().map(|c| c.name.clone());
        let checks = policy::rate::end_of_message(
            &config.rate_limits,
            &policy::rate::Facts {
                ip: self.client_ip,
                class: class.as_deref(),
                login: msg.login.as_deref(),
                sender: msg.sender_address.as_ref(),
                rcpt: None,
                bounce: msg.sender == "<>",
            },
            &rcpts,
            msg.size as u64,
        );
        self.rate_limit(Stage::Eom, &checks).await
    }

    /// Banned attachments, then the score: refused, deferred, or the tags
    /// to add.
    fn content_checks(
        &mut self,
        raw: &[u8],
        config: &Config,
        plain_scan: Option<crate::content::Scan>,
    ) -> Flow<Vec<policy::Tag>> {
        let scan = plain_scan.unwrap_or_else(|| crate::content::scan(raw, &config.content));
        let score = scan.score();
        let rules = if scan.rules.is_empty() {
            "-".to_string()
        } else {
            scan.rules_text()
        };
        if self.trace.is_some() {
            let c = &config.content;
            let shown = if scan.rules.is_empty() {
                "none"
            } else {
                &rules
            };
            let banned = scan.banned.clone();
            let shown = format!(
                "score {score:.1} (rules: {shown}; reject at {}, tempfail at {}, tag at {}){}",
                c.reject_score,
                c.tempfail_score,
                c.tag_score,
                banned.map_or(String::new(), |b| format!("; banned attachment .{b}"))
            );
            self.note(Stage::Eom, "content", || shown);
        }
        if let Some(msg) = self.message.as_mut() {
            msg.content_rules = format!("score={score:.1} rules={rules}");
        }
        self.settle(
            Stage::Eom,
            policy::content::attachments(&scan, &config.content),
        )?;
        let (verdict, tags) = policy::content::score(&scan, &config.content);
        self.settle(Stage::Eom, verdict)?;
        Ok(tags)
    }

    /// rspamd's verdict, when it is configured: reject, defer, or tag.
    async fn rspamd(&mut self, raw: bytes::Bytes) -> Flow<Vec<policy::Tag>> {
        let Some(client) = &self.shared.rspamd else {
            return Ok(Vec::new());
        };
        let Some(msg) = self.message.as_ref() else {
            return Ok(Vec::new());
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                let cause = format!("rspamd client unusable: {e}");
                self.settle(Stage::Eom, Verdict::TempError(cause))?;
                return Ok(Vec::new());
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
        let judged = policy::rspamd::check(client, raw, &env).await;
        self.shared
            .metrics
            .backend_time("rspamd", started.elapsed());
        if let Some(report) = &judged.report {
            if self.trace.is_some() {
                let shown = format!(
                    "action {:?}, score {:.1}, symbols {}",
                    report.action,
                    report.score,
                    report.symbols_text(10)
                );
                self.note(Stage::Eom, "rspamd", || shown);
            }
            if let Some(msg) = self.message.as_mut() {
                msg.content_rules = format!(
                    "{} rspamd={} score={:.1} symbols={}",
                    msg.content_rules,
                    report.action.replace(' ', "_"),
                    report.score,
                    report.symbols_text(10)
                );
            }
        }
        self.settle(Stage::Eom, judged.verdict)?;
        Ok(judged.tags)
    }

    /// The virus scan through clamd, when `antivirus` is configured and the
    /// class does not turn it off. The message is scanned as the client
    /// sent it: the headers we add or change carry nothing executable.
    async fn antivirus(&mut self, raw: &[u8], config: &Config) -> Flow {
        let (Some(settings), Some(client)) = (&config.antivirus, &self.shared.clamd) else {
            return Ok(());
        };
        let Some(msg) = self.message.as_ref() else {
            return Ok(());
        };
        if msg.class().is_some_and(|c| !c.antivirus) {
            if let Some(m) = self.message.as_mut() {
                m.antivirus = "off".into();
            }
            return Ok(());
        }
        let started = Instant::now();
        let scanned = client.scan(raw, settings).await;
        self.shared.metrics.backend_time("clamd", started.elapsed());
        let (verdict, result, shown, signature) = match &scanned {
            Ok((scan, by)) => {
                let (verdict, result) = policy::antivirus::verdict(scan, settings);
                let (shown, signature) = match scan {
                    crate::content::clamd::Scan::Clean => ("clean".to_string(), None),
                    crate::content::clamd::Scan::Virus(s) => {
                        (format!("{result} {s}"), Some(s.clone()))
                    }
                    crate::content::clamd::Scan::Error(e) => (format!("error ({e})"), None),
                };
                if result == "allowed" {
                    tracing::info!(conn_id = self.id, clamd = %by, "virus signature allowed by antivirus.allow: {shown}");
                }
                (verdict, result, shown, signature)
            }
            Err(e) => (
                Verdict::TempError(e.clone()),
                "error",
                "error (no clamd answered)".to_string(),
                None,
            ),
        };
        self.shared.metrics.scan(result, signature.as_deref());
        self.note(Stage::Eom, "antivirus", || shown.clone());
        if let Some(m) = self.message.as_mut() {
            m.antivirus = shown;
        }
        match verdict {
            Verdict::TempError(cause) => {
                tracing::warn!(conn_id = self.id, "virus scan failed: {cause}");
                let on_error = settings.on_error.unwrap_or(config.on_error);
                self.failed_as(Stage::Eom, reply::internal_error(), on_error)
            }
            v => {
                let forced = (settings.action == crate::config::VirusAction::Monitor)
                    .then_some(Mode::Monitor);
                self.settle_as(Stage::Eom, v, forced)
            }
        }
    }

    /// The DKIM signatures the message already carries, when
    /// `dkim.verify_existing` is on.
    async fn existing_signatures(&mut self, raw: &[u8], config: &Config, count: usize) -> Flow {
        let mode = config.dkim.verify_existing;
        if mode == CheckMode::Off {
            return Ok(());
        }
        let started = Instant::now();
        let verdict = match &self.shared.dns {
            Ok(r) => policy::dkim::verify_existing(r, config, raw, count).await,
            Err(e) => Verdict::TempError(format!("DKIM verification impossible: {e}")),
        };
        self.shared.metrics.backend_time("dns", started.elapsed());
        match &verdict {
            Verdict::TempError(_) => self.shared.metrics.dns_failed(),
            Verdict::Continue => self.note(Stage::Eom, "existing DKIM signatures", || {
                format!("pass: {count} signature(s), none failing")
            }),
            Verdict::Refuse(_) | Verdict::Hold(_) => {}
        }
        self.settle_check(Stage::Eom, verdict, mode)
    }

    /// Our signatures: the DKIM-Signature headers to add.
    async fn sign(&mut self, raw: &[u8], config: &Config) -> Flow<Vec<policy::Tag>> {
        let Some(msg) = self.message.as_ref() else {
            return Ok(Vec::new());
        };
        let shared = self.shared.clone();
        let lists = shared.lists(self.trace.is_some());
        let (verdict, signatures) =
            policy::dkim::sign(config, &lists, msg.class(), msg.from_domain.as_ref(), raw).await;
        self.note_lookups(Stage::Eom, &lists);
        self.settle(Stage::Eom, verdict)?;
        let shown: Vec<String> = signatures.iter().map(|s| s.shown()).collect();
        for s in &signatures {
            self.shared
                .metrics
                .signature(s.key.domain.as_str(), s.key.algorithm());
        }
        if let Some(msg) = self.message.as_mut() {
            if !shown.is_empty() {
                msg.dkim = shown.join(", ");
            }
        }
        self.note(Stage::Eom, "DKIM signing", || {
            if shown.is_empty() {
                "not signed (no key for the From: domain, or signing off)".to_string()
            } else {
                format!("signed: {}", shown.join(", "))
            }
        });
        Ok(signatures
            .into_iter()
            .map(|s| ("DKIM-Signature", s.value))
            .collect())
    }
}

/// A tag or signature, added above every other header.
fn insert((name, value): policy::Tag) -> HeaderAction {
    HeaderAction::Insert { name, value }
}
