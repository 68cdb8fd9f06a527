//! Connect, MAIL FROM and RCPT TO.

use super::trace::{class_matched_by, limit_names};
use super::*;

impl Connection {
    /// Connect: the connection rate and the open-connection cap, by client
    /// IP. A connection refused by one consumes nothing of the other.
    pub async fn connect(&mut self) -> Answer {
        let flow = self.connect_checks().await;
        self.finish(flow)
    }

    async fn connect_checks(&mut self) -> Flow {
        let Some(ip) = self.client_ip else {
            return Ok(());
        };
        let config = self.shared.config();
        let shared = self.shared.clone();
        let lists = shared.lists(self.trace.is_some());
        // At connect the class only chooses the connection limits and their
        // mode: a source that cannot answer leaves the client unplaced here
        // and is asked again at MAIL FROM, where it counts.
        let class = match policy::class::resolve(&config, &lists, Some(ip), None).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(conn_id = self.id, "class at connect unknown: {e}");
                None
            }
        };
        self.note_lookups(Stage::Connect, &lists);
        self.connect_mode = config.mode_for(class);
        self.connect_class = class.map(|c| c.name.clone());
        let facts = Facts {
            ip: Some(ip),
            class: class.map(|c| c.name.as_str()),
            ..Facts::default()
        };
        let (checks, concurrent) = policy::rate::connection(&config.rate_limits, &facts);
        let shared = self.shared.clone();
        let mut lease = None;
        let started = Instant::now();
        if let Some(max) = concurrent {
            let net = crate::address::client_net(ip, config.rate_limits.keys.ipv6_prefix);
            let got = shared.limiter.open_connection(net, max).await;
            let verdict =
                policy::rate::concurrent_verdict(got.as_ref().map(Option::is_some), &self.client);
            if verdict != Verdict::Continue {
                self.limiter_time(started);
                return self.settle(Stage::Connect, verdict);
            }
            lease = got.ok().flatten();
        }
        let checked = shared.limiter.check(&checks).await;
        self.limiter_time(started);
        let verdict = policy::rate::connection_verdict(&checks, checked, &self.client);
        if verdict == Verdict::Continue && self.trace.is_some() {
            let names = limit_names(&checks, concurrent.is_some());
            self.note(Stage::Connect, "connection limits", || names);
        }
        self.settle(Stage::Connect, verdict)?;
        self.lease = lease;
        Ok(())
    }

    /// MAIL FROM: starts a new message (ending any earlier one), resolves the
    /// client's class, checks the sender, then the message rate limits.
    pub async fn mail(&mut self, sender_arg: &[u8], macros: &Macros) -> Answer {
        let flow = self.mail_checks(sender_arg, macros).await;
        self.finish(flow)
    }

    async fn mail_checks(&mut self, sender_arg: &[u8], macros: &Macros) -> Flow {
        self.end_message(Ending::Aborted);
        let config = self.shared.config();
        let shared = self.shared.clone();
        let lists = shared.lists(self.trace.is_some());
        let login = macros.auth_login.clone().filter(|l| !l.is_empty());
        let (class, class_failure) =
            match policy::class::resolve(&config, &lists, self.client_ip, login.as_deref()).await {
                Ok(c) => (c, None),
                Err(e) => (None, Some(e)),
            };
        let class_index = class.and_then(|c| config.classes.iter().position(|k| k.name == c.name));
        let sender: Sender = parse_envelope(sender_arg).map_err(|_| {
            String::from_utf8_lossy(sender_arg)
                .trim_matches(['<', '>'])
                .to_string()
        });
        let sender_text = match &sender {
            Ok(s) => s.to_string(),
            Err(raw) => raw.clone(),
        };
        let sender_address = match &sender {
            Ok(EnvelopeAddress::Address(a)) => Some(a.clone()),
            _ => None,
        };
        let verdict = match class_failure {
            Some(e) => Verdict::TempError(format!("client class: {e}")),
            None => {
                policy::sender::check(
                    &config,
                    &lists,
                    class,
                    &self.client,
                    &sender,
                    login.as_deref(),
                )
                .await
            }
        };
        let checks = policy::rate::message(
            &config.rate_limits,
            &Facts {
                ip: self.client_ip,
                class: class.map(|c| c.name.as_str()),
                login: login.as_deref(),
                sender: sender_address.as_ref(),
                rcpt: None,
                bounce: matches!(sender, Ok(EnvelopeAddress::Null)),
            },
        );
        let content = needs_content(&config).then(Content::default);
        let remove_len = config.remove_headers.len();
        self.message = Some(Message {
            config,
            started: Instant::now(),
            busy: Duration::ZERO,
            queue_id: macros.queue_id.clone(),
            sender: sender_text,
            sender_address,
            login,
            class: class_index,
            rcpt_accepted: 0,
            rcpt_refused: 0,
            charged: Vec::new(),
            from: FromHeaders::default(),
            from_domain: None,
            from_address: None,
            size: 0,
            content,
            dkim: "-".into(),
            content_rules: "-".into(),
            antivirus: "-".into(),
            rcpts: Vec::new(),
            traced: Vec::new(),
            name_counts: std::collections::HashMap::new(),
            remove_counts: vec![0; remove_len],
            refused: None,
            last_rcpt_refusal: None,
            would: None,
            incident: None,
            hold: None,
            would_hold: None,
        });
        if self.trace.is_some() {
            let config = self.shared.config();
            let class = class_index.and_then(|i| config.classes.get(i));
            let what = match class {
                Some(c) => format!("{} ({})", c.name, class_matched_by(c)),
                None => format!(
                    "none: an unknown client (unknown_clients: {})",
                    match config.unknown_clients {
                        crate::config::UnknownClients::RelayDeny => "relay_deny",
                        crate::config::UnknownClients::Reject => "reject",
                    }
                ),
            };
            self.note(Stage::Mail, "class", || what);
        }
        let sender_passed = verdict == Verdict::Continue;
        self.note_lookups(Stage::Mail, &lists);
        // Policy first, then SPF, then the limits: a sender refused by
        // either consumes no quota.
        self.settle(Stage::Mail, verdict)?;
        self.open_incident(Stage::Mail).await?;
        self.verify_sender().await?;
        if sender_passed && self.trace.is_some() {
            let shown = self
                .message
                .as_ref()
                .map_or(String::new(), |m| m.sender.clone());
            self.note(Stage::Mail, "sender", || {
                format!("pass: <{shown}> is allowed for this client")
            });
        }
        self.spf_egress().await?;
        self.rate_limit(Stage::Mail, &checks).await
    }

    /// RCPT TO: open relay, the recipient count, then the recipient rate
    /// limits. A refused recipient does not end the message.
    pub async fn rcpt(&mut self, rcpt_arg: &[u8], macros: &Macros) -> Answer {
        if macros.rcpt_mailer.as_deref() == Some("error") {
            // A recipient the MTA itself rejected (it has answered the
            // client already): evidence for the incidents, nothing to judge.
            if self.message.is_some() {
                self.observe(crate::incidents::Event::MtaRejected).await;
            }
            return Answer::Continue;
        }
        let flow = self.rcpt_checks(rcpt_arg, macros).await;
        if let Some(msg) = self.message.as_mut() {
            match flow {
                Ok(()) => {
                    msg.rcpt_accepted += 1;
                    if msg.rcpts.len() < msg.config.max_recipients {
                        let r = String::from_utf8_lossy(rcpt_arg);
                        msg.rcpts
                            .push(r.trim().trim_matches(['<', '>']).to_string());
                    }
                }
                Err(_) => msg.rcpt_refused += 1,
            }
        }
        self.finish(flow)
    }

    async fn rcpt_checks(&mut self, rcpt_arg: &[u8], macros: &Macros) -> Flow {
        let Some(msg) = self.message.as_mut() else {
            // No MAIL FROM seen: the MTA would not send this; refuse nothing
            // that policy has not judged.
            return Ok(());
        };
        if macros.queue_id.is_some() {
            msg.queue_id.clone_from(&macros.queue_id);
        }
        let rcpt =
            parse_envelope(rcpt_arg).map_err(|_| String::from_utf8_lossy(rcpt_arg).to_string());
        let class = msg.class();
        let shared = self.shared.clone();
        let lists = shared.lists(self.trace.is_some());
        let verdict = policy::relay::check(&msg.config, &lists, class, &rcpt)
            .await
            .and_then(|| policy::recipients::check(&msg.config, msg.rcpt_accepted));
        let rcpt_address = match &rcpt {
            Ok(EnvelopeAddress::Address(a)) => Some(a),
            _ => None,
        };
        let checks = policy::rate::recipient(
            &msg.config.rate_limits,
            &Facts {
                ip: self.client_ip,
                class: class.map(|c| c.name.as_str()),
                login: msg.login.as_deref(),
                sender: msg.sender_address.as_ref(),
                rcpt: rcpt_address,
                bounce: msg.sender == "<>",
            },
            &msg.charged,
        );
        let passed = verdict == Verdict::Continue;
        self.note_lookups(Stage::Rcpt, &lists);
        self.settle(Stage::Rcpt, verdict)?;
        if let Some(a) = rcpt_address {
            if passed {
                self.verify_recipient(a).await?;
            }
        }
        if passed && self.trace.is_some() {
            let shown = String::from_utf8_lossy(rcpt_arg).into_owned();
            let known = self.message.as_ref().is_some_and(|m| m.class.is_some());
            self.note(Stage::Rcpt, "relay, recipient count", || {
                format!(
                    "pass: {shown} ({})",
                    if known {
                        "a known client may send anywhere"
                    } else {
                        "a local recipient"
                    }
                )
            });
        }
        self.rate_limit(Stage::Rcpt, &checks).await?;
        if let Some(msg) = self.message.as_mut() {
            let paid = policy::rate::charged_once(&msg.config.rate_limits, &checks);
            msg.charged.extend(paid);
        }
        Ok(())
    }

    /// `verify_sender`: the class's envelope sender must exist.
    async fn verify_sender(&mut self) -> Flow {
        let Some(msg) = self.message.as_ref() else {
            return Ok(());
        };
        let (Some(verify), Some(address)) = (
            msg.class().and_then(|c| c.verify_sender.clone()),
            msg.sender_address.clone(),
        ) else {
            return Ok(());
        };
        let helo = callout_helo(&msg.config, &verify);
        let shared = self.shared.clone();
        let lists = shared.lists(self.trace.is_some());
        let result = policy::verify::sender(&lists, &verify, &address, &helo).await;
        self.note_lookups(Stage::Mail, &lists);
        self.settle_verified(Stage::Mail, result, || format!("pass: <{address}> exists"))
    }

    /// `verify_recipients`: inbound mail (a client in no class) to a
    /// mailbox that exists.
    async fn verify_recipient(&mut self, rcpt: &Address) -> Flow {
        let Some(msg) = self.message.as_ref() else {
            return Ok(());
        };
        let Some(verify) = msg.config.verify_recipients.clone() else {
            return Ok(());
        };
        if msg.class.is_some() {
            return Ok(());
        }
        let helo = callout_helo(&msg.config, &verify);
        let shared = self.shared.clone();
        let lists = shared.lists(self.trace.is_some());
        let result = policy::verify::recipient(&lists, &verify, rcpt, &helo).await;
        self.note_lookups(Stage::Rcpt, &lists);
        self.settle_verified(Stage::Rcpt, result, || format!("pass: <{rcpt}> exists"))
    }

    /// A verification's outcome: a verdict, or a failure to verify that
    /// gets its own 4xx under `on_error: tempfail`.
    fn settle_verified(
        &mut self,
        stage: Stage,
        result: Result<Verdict, policy::verify::Unverified>,
        pass: impl FnOnce() -> String,
    ) -> Flow {
        match result {
            Ok(Verdict::Continue) => {
                self.note(stage, "address exists", pass);
                Ok(())
            }
            Ok(verdict) => self.settle(stage, verdict),
            Err((cause, refusal)) => {
                tracing::warn!(conn_id = self.id, stage = stage.as_str(), "{cause}");
                self.failed(stage, refusal)
            }
        }
    }

    /// Runs a batch of rate checks and settles the outcome: the enforcing
    /// ones all or nothing, then the shadow ones (`mode: monitor`), which
    /// are counted and logged but never refuse.
    pub(super) async fn rate_limit(&mut self, stage: Stage, checks: &[Check]) -> Flow {
        let config = match self.message.as_ref() {
            Some(m) => m.config.clone(),
            None => self.shared.config(),
        };
        let (enforce, shadow) = policy::rate::split_shadow(&config.rate_limits, checks);
        let verdict = self.judge_limits(&config, &enforce).await;
        if verdict == Verdict::Continue && self.trace.is_some() {
            let names = limit_names(&enforce, false);
            self.note(stage, "rate limits", || names);
        }
        self.settle(stage, verdict)?;
        if shadow.is_empty() {
            return Ok(());
        }
        let verdict = self.judge_limits(&config, &shadow).await;
        self.settle_as(stage, verdict, Some(crate::config::Mode::Monitor))
    }

    /// One batch through the limiter: its verdict, and the warnings of
    /// the keys it left past `warn_at`.
    async fn judge_limits(&self, config: &Config, checks: &[Check]) -> Verdict {
        let started = Instant::now();
        let checked = self.shared.limiter.check_fill(checks).await;
        self.limiter_time(started);
        let checked = checked.map(|(outcome, fill)| {
            self.warn_limits(config, checks, &fill);
            outcome
        });
        policy::rate::verdict(checks, checked)
    }

    /// `warn_at`: a key past its limit's warning level, logged and counted
    /// once per window.
    fn warn_limits(&self, config: &Config, checks: &[Check], fill: &[u16]) {
        let limits = &config.rate_limits;
        let crossed = self
            .shared
            .limiter
            .warnings
            .crossed(checks, fill, |c| limits.warn_level(c.name));
        if crossed.is_empty() {
            return;
        }
        let queue_id = self
            .message
            .as_ref()
            .and_then(|m| m.queue_id.clone())
            .unwrap_or_else(|| "-".into());
        for (c, f) in crossed {
            self.shared.metrics.limit_warning(c.name.as_str());
            if limits.warn_notify {
                self.shared.incidents.notifier.send_warning(
                    crate::incidents::WarningNotice {
                        limit: c.name.as_str(),
                        key: c.key.clone(),
                        rate: c.rate.to_string(),
                        used_pct: f / 10,
                        warn_at_pct: limits.warn_level(c.name).unwrap_or(0) / 10,
                        at: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                        queue_id: (queue_id != "-").then(|| queue_id.clone()),
                    },
                    &config.incidents.notify,
                );
            }
            tracing::warn!(
                conn_id = self.id,
                queue_id = %queue_id,
                limit = c.name.as_str(),
                key = %c.key,
                rate = %c.rate,
                used_pct = f / 10,
                "rate limit {} {}% used by {} (warn_at {}%)",
                c.name,
                f / 10,
                c.key,
                limits.warn_level(c.name).unwrap_or(0) / 10
            );
        }
    }

    /// A limiter round trip, counted when it went to Redis.
    fn limiter_time(&self, started: Instant) {
        if self.shared.limiter.redis.is_some() {
            self.shared.metrics.backend_time("redis", started.elapsed());
        }
    }

    /// SPF of the sender domain for our egress IPs (`spf.check_egress`).
    async fn spf_egress(&mut self) -> Flow {
        let Some(msg) = self.message.as_ref() else {
            return Ok(());
        };
        let mode = msg.config.spf_check_egress;
        let Some(sender) = msg.sender_address.clone() else {
            return Ok(());
        };
        if mode == CheckMode::Off {
            return Ok(());
        }
        let config = msg.config.clone();
        let helo = self
            .helo
            .clone()
            .unwrap_or_else(|| self.client_name.clone());
        let started = Instant::now();
        let verdict = match &self.shared.dns {
            Ok(resolver) => policy::spf::check(resolver, &config, &sender, &helo).await,
            Err(e) => Verdict::TempError(format!("SPF lookup for {sender} impossible: {e}")),
        };
        self.shared.metrics.backend_time("dns", started.elapsed());
        match &verdict {
            Verdict::Continue => self.note(Stage::Mail, "SPF of the sender domain", || {
                format!("pass: {} authorises our egress IPs", sender.domain)
            }),
            Verdict::TempError(_) => self.shared.metrics.dns_failed(),
            Verdict::Refuse(_) | Verdict::Hold(_) => {}
        }
        self.settle_check(Stage::Mail, verdict, mode)
    }
}

/// The name a callout gives in EHLO: its own `helo`, else `hostname`, else
/// localhost.
fn callout_helo(config: &Config, verify: &crate::config::Verify) -> String {
    match &verify.by {
        crate::config::VerifyBy::Callout(c) if !c.helo.is_empty() => c.helo.clone(),
        _ => config
            .hostname
            .as_ref()
            .map_or_else(|| "localhost".into(), |h| h.to_string()),
    }
}
