//! `egress-milter explain`: one message run offline through the whole
//! policy, stage by stage, as the daemon would judge it, with every check
//! and its outcome, the final SMTP reply and the header changes. The same
//! transaction code as the daemon runs; only the MTA is played here.

use crate::config::{Backend, Config, Mode};
use crate::session::{Answer, Connection, HeaderAction, Macros, Stage, Step};
use crate::state::Shared;
use std::sync::Arc;
use std::{fmt::Write as _, net::IpAddr};

/// What to run through the policy.
pub struct Request {
    pub client: IpAddr,
    pub helo: String,
    pub auth: Option<String>,
    pub from: String,
    pub rcpts: Vec<String>,
    /// The message as an .eml file (headers, empty line, body), or None for
    /// a minimal one whose From: is the envelope sender.
    pub message: Option<Vec<u8>>,
}

/// What came of it.
pub struct Report {
    pub steps: Vec<Step>,
    /// The final answer and the stage that gave it.
    pub answer: Answer,
    pub stage: Stage,
    /// Each recipient and the answer it got.
    pub rcpts: Vec<(String, Answer)>,
    pub headers: Vec<HeaderAction>,
    pub monitor: bool,
    /// Each incident signal's figure for the message's keys, against its
    /// threshold.
    pub signals: Vec<crate::incidents::Reading>,
}

impl Report {
    pub fn accepted(&self) -> bool {
        self.answer == Answer::Continue
    }
}

/// A header field: name, value.
type Field = (Vec<u8>, Vec<u8>);

/// A message split as an MTA passes it to a milter: header fields (name,
/// value with folding kept as LF), then the body with CRLF line ends.
fn split_message(raw: &[u8]) -> (Vec<Field>, Vec<u8>) {
    let mut headers: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let end = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| pos + i);
        let line = &raw[pos..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let next = (end + 1).min(raw.len());
        if line.is_empty() {
            pos = next;
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, v)) = headers.last_mut() {
                v.push(b'\n');
                v.extend_from_slice(line);
            }
        } else if let Some(i) = line.iter().position(|&b| b == b':') {
            let value = &line[i + 1..];
            let value = value.strip_prefix(b" ").unwrap_or(value);
            headers.push((line[..i].to_vec(), value.to_vec()));
        } else {
            // Not a header line: the body starts here, as MTAs treat it.
            break;
        }
        pos = next;
    }
    let rest = &raw[pos..];
    let mut body = Vec::with_capacity(rest.len() + rest.len() / 32);
    let mut prev = 0u8;
    for &b in rest {
        if b == b'\n' && prev != b'\r' {
            body.push(b'\r');
        }
        body.push(b);
        prev = b;
    }
    (headers, body)
}

fn minimal_message(from: &str, rcpts: &[String]) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: {}\r\nSubject: egress-milter explain\r\nDate: Mon, 23 Nov 2026 00:00:00 +0000\r\nMessage-ID: <explain@egress-milter>\r\n\r\nA test message.\r\n",
        rcpts
            .iter()
            .map(|r| format!("<{r}>"))
            .collect::<Vec<_>>()
            .join(", ")
    )
    .into_bytes()
}

/// Runs the request through the policy. Rate limits and incident signals
/// are counted in a fresh in-process state (never the shared Redis one):
/// every budget starts full, every signal at zero, and no incident is
/// open; the signals' figures shown are this message's contribution.
pub async fn explain(config: Config, req: &Request, offline: bool) -> Report {
    let state_dir = config.incidents.state_dir.clone();
    let shared = Shared::new(offline_config(config, offline));
    // The suppressed recipients as the daemon keeps them, read only: a
    // refusal shows why.
    if let Some(dir) = state_dir.filter(|_| shared.config().bounces.is_some()) {
        let on_disk = crate::bounces::Suppressions::load(Some(&dir));
        shared.suppressions.replace(on_disk.all());
    }
    let mut report = judge(shared.clone(), req).await;
    let config = shared.config();
    let class = crate::class::resolve(
        &config,
        &shared.lists(false),
        Some(req.client),
        req.auth.as_deref(),
    )
    .await
    .ok()
    .flatten()
    .map(|(_, c)| c);
    let client = crate::address::client_key(req.client, config.incidents.ipv6_prefix);
    let sender = crate::address::Address::parse(&req.from)
        .ok()
        .map(|a| config.rate_limits.keys.address(&a));
    let user = req
        .auth
        .as_deref()
        .map(|l| config.rate_limits.keys.login(l));
    let keys = crate::incidents::Keys {
        client: Some(&client),
        user: user.as_deref(),
        sender: sender.as_deref(),
        class: class.map(|c| c.name.as_str()),
    };
    report.signals = shared
        .incidents
        .read(None, crate::incidents::now_ms(), &keys)
        .await;
    report
}

/// A configuration for a run outside the daemon: rate limits in process
/// (never the shared Redis), no admin endpoint, nothing persisted. With
/// `offline`, no check asks the network: SPF, existing signatures,
/// rspamd, clamd and the callouts are off (LDAP sources are turned off
/// by [`crate::sources::Sources::go_offline`]).
pub fn offline_config(mut config: Config, offline: bool) -> Config {
    config.rate_limits.backend = Backend::Local;
    config.admin.listen = crate::config::AdminListen::Off;
    config.incidents.state_dir = None;
    if offline {
        config.spf_check_egress = crate::config::CheckMode::Off;
        config.dkim.verify_existing = crate::config::CheckMode::Off;
        config.content.rspamd = None;
        config.antivirus = None;
        config.classes.edit(|c| {
            if c.verify_sender
                .as_ref()
                .is_some_and(|v| matches!(v.by, crate::config::VerifyBy::Callout(_)))
            {
                c.verify_sender = None;
            }
        });
        if config
            .verify_recipients
            .as_ref()
            .is_some_and(|v| matches!(v.by, crate::config::VerifyBy::Callout(_)))
        {
            config.verify_recipients = None;
        }
    }
    config
}

/// Runs a request through the policy with this state.
pub(crate) async fn judge(shared: Arc<Shared>, req: &Request) -> Report {
    let config = shared.config();
    let monitor = config.mode == Mode::Monitor
        || config.classes.iter().any(|c| c.mode == Some(Mode::Monitor));
    let mut conn = Connection::new(shared, req.helo.clone(), Some(req.client));
    conn.record_trace();
    let macros = Macros {
        queue_id: Some("EXPLAIN".into()),
        auth_login: req.auth.clone(),
        rcpt_mailer: None,
    };
    let mut report = Report {
        steps: Vec::new(),
        answer: Answer::Continue,
        stage: Stage::Eom,
        rcpts: Vec::new(),
        headers: Vec::new(),
        monitor,
        signals: Vec::new(),
    };
    let finish = |conn: &mut Connection, mut report: Report, stage, answer| {
        report.steps = conn.take_trace();
        report.stage = stage;
        report.answer = answer;
        report
    };

    let a = conn.connect().await;
    if a != Answer::Continue {
        return finish(&mut conn, report, Stage::Connect, a);
    }
    conn.helo(&req.helo);
    let a = conn
        .mail(format!("<{}>", req.from).as_bytes(), &macros)
        .await;
    if a != Answer::Continue {
        return finish(&mut conn, report, Stage::Mail, a);
    }
    let mut last_refusal = None;
    for r in &req.rcpts {
        let a = conn.rcpt(format!("<{r}>").as_bytes(), &macros).await;
        if a != Answer::Continue {
            last_refusal = Some(a.clone());
        }
        report.rcpts.push((r.clone(), a));
    }
    if report.rcpts.iter().all(|(_, a)| *a != Answer::Continue) {
        // No recipient left: the MTA ends the transaction.
        let a = last_refusal.unwrap_or(Answer::Continue);
        conn.abort();
        return finish(&mut conn, report, Stage::Rcpt, a);
    }
    let minimal;
    let raw: &[u8] = match &req.message {
        Some(m) => m,
        None => {
            minimal = minimal_message(&req.from, &req.rcpts);
            &minimal
        }
    };
    let (headers, body) = split_message(raw);
    for (name, value) in &headers {
        let a = conn.header(name, value);
        if a != Answer::Continue {
            return finish(&mut conn, report, Stage::Header, a);
        }
    }
    let a = conn.end_of_headers(&macros).await;
    if a != Answer::Continue {
        return finish(&mut conn, report, Stage::Eoh, a);
    }
    let body = bytes::Bytes::from(body);
    let mut at = 0;
    while at < body.len() {
        let end = (at + 65_535).min(body.len());
        let a = conn.body(body.slice(at..end));
        if a != Answer::Continue {
            return finish(&mut conn, report, Stage::Body, a);
        }
        at = end;
    }
    let (a, actions) = conn.end_of_message(&macros).await;
    report.headers = actions;
    finish(&mut conn, report, Stage::Eom, a)
}

/// The report as printed: the checks, the recipients, the reply, the
/// header changes.
pub fn render(req: &Request, r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "client {} (HELO {}), auth {}, MAIL FROM <{}>, {} recipient(s)\n",
        req.client,
        req.helo,
        req.auth.as_deref().unwrap_or("-"),
        req.from,
        req.rcpts.len()
    );
    for s in &r.steps {
        let _ = writeln!(out, "{:<8} {:<24} {}", s.stage, s.check, s.outcome);
    }
    if !r.rcpts.is_empty() {
        let _ = writeln!(out);
        for (rcpt, a) in &r.rcpts {
            let _ = writeln!(
                out,
                "RCPT TO:<{rcpt}>  {}",
                match a {
                    Answer::Continue => "accepted".to_string(),
                    Answer::Refuse(reply) => reply.to_string(),
                }
            );
        }
    }
    let _ = writeln!(out);
    match &r.answer {
        Answer::Continue
            if r.monitor && r.steps.iter().any(|s| s.outcome.starts_with("would_")) =>
        {
            let _ = writeln!(
                out,
                "result: accept (monitor mode: the would_* lines above would be refused under enforce)"
            );
        }
        Answer::Continue => match r.headers.iter().find_map(|h| match h {
            HeaderAction::Quarantine(reason) => Some(reason),
            _ => None,
        }) {
            Some(reason) => {
                let _ = writeln!(out, "result: accept, held for review ({reason})");
            }
            None => {
                let _ = writeln!(out, "result: accept");
            }
        },
        Answer::Refuse(reply) => {
            let _ = writeln!(out, "result: {reply}  (at {})", r.stage);
        }
    }
    if !r.signals.is_empty() {
        let _ = writeln!(out, "\nincident signals (counted from zero here):");
        for g in &r.signals {
            let _ = writeln!(
                out,
                "  {:<16} {}:{}  {}{}",
                g.signal,
                g.kind.as_str(),
                g.key,
                g.figures,
                if g.crossed {
                    "  -> opens an incident"
                } else {
                    ""
                }
            );
        }
    }
    if !r.headers.is_empty() {
        let _ = writeln!(out, "\nheader changes:");
        for h in &r.headers {
            match h {
                HeaderAction::Insert { name, value } => {
                    let _ = writeln!(out, "  add     {name}: {value}");
                }
                HeaderAction::Quarantine(reason) => {
                    let _ = writeln!(out, "  hold    {reason}");
                }
                HeaderAction::Change(e) => match &e.value {
                    Some(v) => {
                        let _ = writeln!(out, "  change  {} #{}: {v}", e.name, e.index);
                    }
                    None => {
                        let _ = writeln!(out, "  remove  {} #{}", e.name, e.index);
                    }
                },
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_as_an_mta_passes_them() {
        let (h, b) = split_message(b"From: a@example.com\nSubject: x\n y\n\nline1\nline2\r\n");
        assert_eq!(
            h,
            vec![
                (b"From".to_vec(), b"a@example.com".to_vec()),
                (b"Subject".to_vec(), b"x\n y".to_vec())
            ]
        );
        assert_eq!(b, b"line1\r\nline2\r\n");
        let (h, b) = split_message(b"From: a\r\n\r\n");
        assert_eq!(h.len(), 1);
        assert!(b.is_empty());
        let (h, b) = split_message(b"");
        assert!(h.is_empty() && b.is_empty());
    }
}
