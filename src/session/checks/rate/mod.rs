//! The rate limits: at connect the connection rate and the cap on open
//! connections, by client; at MAIL FROM the message limits; at RCPT TO the
//! recipient limits; at end of message the byte budgets. The enforcing
//! limits of a stage are checked all or nothing, then the shadow ones
//! (`mode: monitor`), counted and logged but never refusing. A key past
//! its limit's `warn_at` is logged (and notified) once per window.

pub(crate) mod rules;

use super::{Check, Cx, Decision, Flow};
use crate::config::{Config, Counter};
use crate::limiter;
use crate::session::{trace::limit_names, Connection, Stage};
use crate::verdict::Verdict;
use rules::Facts;
use std::time::Instant;

pub(super) struct Rate {
    /// Per-message custom limits keyed by a recipient, paid for by this
    /// message: (limit, key).
    charged: Vec<(&'static str, String)>,
}

pub(super) fn new(_: &Config) -> Option<Rate> {
    Some(Rate {
        charged: Vec::new(),
    })
}

/// What the limits of a message are keyed and matched by.
fn facts<'a>(cx: &'a Cx<'_>) -> Facts<'a> {
    let msg = &*cx.msg;
    Facts {
        ip: cx.conn.client_ip,
        class: msg.class().map(|c| c.name.as_str()),
        login: msg.login.as_deref(),
        sender: msg.sender_address.as_ref(),
        rcpt: cx.rcpt.and_then(|r| r.address()),
        bounce: matches!(
            msg.envelope_sender,
            Ok(crate::address::EnvelopeAddress::Null)
        ),
    }
}

impl Check for Rate {
    async fn mail(&mut self, cx: &mut Cx<'_>) -> Flow {
        let checks = rules::message(&cx.msg.config.rate_limits, &facts(cx));
        judge(cx, &checks).await
    }

    async fn rcpt(&mut self, cx: &mut Cx<'_>) -> Flow {
        let limits = &cx.msg.config.rate_limits;
        let checks = rules::recipient(limits, &facts(cx), &self.charged);
        judge(cx, &checks).await?;
        let paid = rules::charged_once(&cx.msg.config.rate_limits, &checks);
        self.charged.extend(paid);
        Ok(())
    }

    async fn eom(&mut self, cx: &mut Cx<'_>) -> Flow {
        // The byte budgets (`count: bytes`), charged the message's size
        // now that it is known.
        let config = cx.config();
        let budgets = || {
            config
                .rate_limits
                .custom
                .iter()
                .filter(|c| c.count == Counter::Bytes)
        };
        if budgets().next().is_none() {
            return Ok(());
        }
        // The recipients, parsed again only for a budget keyed by them.
        let rcpts = if budgets().any(|c| c.key.iter().any(|k| k.per_recipient())) {
            cx.msg.rcpt_addresses()
        } else {
            Vec::new()
        };
        let checks =
            rules::end_of_message(&config.rate_limits, &facts(cx), &rcpts, cx.msg.size as u64);
        judge(cx, &checks).await
    }
}

/// One stage's limits: the enforcing ones, then the shadow ones.
async fn judge(cx: &mut Cx<'_>, checks: &[limiter::Check]) -> Flow {
    let config = cx.config();
    let (enforce, shadow) = rules::split_shadow(&config.rate_limits, checks);
    let verdict = batch(cx, &config, &enforce).await;
    if verdict == Verdict::Continue {
        cx.note("rate limits", |_| limit_names(&enforce, false));
    }
    cx.decide(verdict)?;
    if shadow.is_empty() {
        return Ok(());
    }
    let verdict = batch(cx, &config, &shadow).await;
    cx.decide(Decision::from(verdict).monitor())
}

/// One batch through the limiter: its verdict, and the warnings of the
/// keys it left past `warn_at`.
async fn batch(cx: &Cx<'_>, config: &Config, checks: &[limiter::Check]) -> Verdict {
    let shared = cx.shared();
    let started = Instant::now();
    let checked = shared.limiter.check_fill(checks).await;
    limiter_time(&shared, started);
    let checked = checked.map(|(outcome, fill)| {
        warn(cx, config, checks, &fill);
        outcome
    });
    rules::verdict(checks, checked)
}

/// `warn_at`: a key past its limit's warning level, logged and counted
/// once per window.
fn warn(cx: &Cx<'_>, config: &Config, checks: &[limiter::Check], fill: &[u16]) {
    let limits = &config.rate_limits;
    let shared = &cx.conn.shared;
    let crossed = shared
        .limiter
        .warnings
        .crossed(checks, fill, |c| limits.warn_level(c.name));
    if crossed.is_empty() {
        return;
    }
    let queue_id = cx.msg.queue_id.clone().unwrap_or_else(|| "-".into());
    for (c, f) in crossed {
        shared.metrics.limit_warning(c.name.as_str());
        if limits.warn_notify {
            shared.incidents.notifier.send_warning(
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
            conn_id = cx.conn.id,
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
fn limiter_time(shared: &crate::state::Shared, started: Instant) {
    if shared.limiter.redis.is_some() {
        shared.metrics.backend_time("redis", started.elapsed());
    }
}

/// Connect: the connection rate and the open-connection cap, by client
/// IP. A connection refused by one consumes nothing of the other. The
/// class here (one matched by the client IP alone) only chooses the limits
/// and their mode: a source that cannot answer leaves the client unplaced
/// until MAIL FROM, where it counts.
pub(in crate::session) async fn connect(conn: &mut Connection) -> Flow {
    let Some(ip) = conn.client_ip else {
        return Ok(());
    };
    let config = conn.shared.config();
    let shared = conn.shared.clone();
    let lists = shared.lists(conn.trace.is_some());
    let class = match crate::class::resolve(&config, &lists, Some(ip), None).await {
        Ok(c) => c.map(|(_, c)| c),
        Err(e) => {
            tracing::warn!(conn_id = conn.id, "class at connect unknown: {e}");
            None
        }
    };
    conn.note_lookups(Stage::Connect, &lists);
    conn.connect_mode = config.mode_for(class);
    conn.connect_class = class.map(|c| c.name.clone());
    let facts = Facts {
        ip: Some(ip),
        class: class.map(|c| c.name.as_str()),
        ..Facts::default()
    };
    let (checks, concurrent) = rules::connection(&config.rate_limits, &facts);
    let started = Instant::now();
    let net = crate::address::client_net(ip, config.rate_limits.keys.ipv6_prefix);
    let got = shared.limiter.connect(net, concurrent, &checks).await;
    limiter_time(&shared, started);
    let (verdict, lease) = match got {
        // The cap on open connections first: a refused connection counts
        // against neither.
        Ok(None) => (rules::concurrent_verdict(Ok(false), &conn.client), None),
        Err(e) if concurrent.is_some() => (rules::concurrent_verdict(Err(&e), &conn.client), None),
        Err(e) => (
            rules::connection_verdict(&checks, Err(e), &conn.client),
            None,
        ),
        Ok(Some((outcome, lease))) => (
            rules::connection_verdict(&checks, Ok(outcome), &conn.client),
            lease,
        ),
    };
    if verdict == Verdict::Continue {
        let names = limit_names(&checks, concurrent.is_some());
        conn.note(Stage::Connect, "connection limits", || names);
    }
    conn.settle(None, Stage::Connect, verdict, None)?;
    conn.lease = lease;
    Ok(())
}
