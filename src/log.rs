//! The decision log: one `info` line per decision and one summary line per
//! message, with the same fields in text and JSON (`log.format`).

use crate::config::LogFormat;
use crate::reply::Reply;
use tracing::info;

/// What was done with a refusal.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Outcome {
    Accept,
    Reject,
    Tempfail,
    WouldReject,
    WouldTempfail,
    /// A check failed internally and `on_error: accept` let it through.
    ErrorAccepted,
    /// A check in `warn` mode found something: logged, not refused.
    Warn,
    /// Accepted and held for review (an open incident).
    Hold,
    WouldHold,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Tempfail => "tempfail",
            Self::WouldReject => "would_reject",
            Self::WouldTempfail => "would_tempfail",
            Self::ErrorAccepted => "error_accepted",
            Self::Warn => "warn",
            Self::Hold => "hold",
            Self::WouldHold => "would_hold",
        }
    }
}

pub struct Decision<'a> {
    pub queue_id: &'a str,
    pub conn_id: u64,
    pub stage: &'static str,
    pub outcome: Outcome,
    pub rule: crate::reply::Rule,
    /// The SMTP reply; none when the message is held (accepted).
    pub reply: Option<&'a Reply>,
    /// The incident behind the decision, `kind:key`, or "-".
    pub incident: &'a str,
    pub client_ip: &'a str,
    pub class: &'a str,
    pub sender: &'a str,
    pub auth: &'a str,
    pub rcpt_count: usize,
}

pub fn decision(d: &Decision<'_>) {
    // A string, so that the text format quotes it as the summary line's
    // (logfmt parsers split an unquoted value at its first space).
    let reply = Shown(d.reply).to_string();
    info!(
        target: "egress_milter::decision",
        queue_id = d.queue_id,
        conn_id = d.conn_id,
        stage = d.stage,
        verdict = d.outcome.as_str(),
        rule = d.rule.as_str(),
        reply = reply.as_str(),
        incident = d.incident,
        client_ip = d.client_ip,
        class = d.class,
        sender = d.sender,
        auth = d.auth,
        rcpt_count = d.rcpt_count,
        "decision"
    );
}

pub struct Summary<'a> {
    pub queue_id: &'a str,
    pub conn_id: u64,
    pub client_ip: &'a str,
    pub helo: &'a str,
    pub daemon: &'a str,
    pub class: &'a str,
    pub sender: &'a str,
    pub auth: &'a str,
    pub rcpt_count: usize,
    pub stage: &'a str,
    pub verdict: &'a str,
    pub rule: &'a str,
    pub reply: Option<String>,
    /// The open incident of the message's keys, `kind:key`, or "-".
    pub incident: &'a str,
    /// The DKIM signatures added (`d=... s=...`), or "-".
    pub dkim: &'a str,
    /// The content score and the rules that fired, or "-".
    pub content: &'a str,
    /// The virus scan: `clean`, `virus SIG`, `allowed SIG`, `error`, or "-".
    pub antivirus: &'a str,
    /// From MAIL FROM to the end of the message, the client's time included.
    pub elapsed: std::time::Duration,
    /// The milter's own time on this message, in microseconds.
    pub milter_us: u128,
}

pub fn summary(s: &Summary<'_>) {
    info!(
        target: "egress_milter::summary",
        queue_id = s.queue_id,
        conn_id = s.conn_id,
        client_ip = s.client_ip,
        helo = s.helo,
        daemon = s.daemon,
        class = s.class,
        sender = s.sender,
        auth = s.auth,
        rcpt_count = s.rcpt_count,
        stage = s.stage,
        verdict = s.verdict,
        rule = s.rule,
        reply = s.reply.as_deref().unwrap_or("-"),
        incident = s.incident,
        dkim = s.dkim,
        content = s.content,
        antivirus = s.antivirus,
        elapsed_ms = %Millis(s.elapsed),
        milter_us = s.milter_us as u64,
        "message"
    );
}

/// A reply, or "-".
struct Shown<'a>(Option<&'a Reply>);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(r) => r.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// A duration in milliseconds with three decimals, from its whole
/// microseconds: integer formatting, cheaper than a float's on every line.
struct Millis(std::time::Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = self.0.as_micros();
        write!(f, "{}.{:03}", us / 1000, us % 1000)
    }
}

/// Installs the global subscriber writing to stderr. `RUST_LOG` overrides
/// the level (default `info`).
pub fn init(format: LogFormat) {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour only on a terminal: journald and log files want plain text.
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::Millis;
    use std::time::Duration;

    #[test]
    fn milliseconds_with_three_decimals() {
        assert_eq!(Millis(Duration::from_micros(882)).to_string(), "0.882");
        assert_eq!(
            Millis(Duration::from_micros(12_034_005)).to_string(),
            "12034.005"
        );
        assert_eq!(Millis(Duration::from_nanos(1_999)).to_string(), "0.001");
        assert_eq!(Millis(Duration::ZERO).to_string(), "0.000");
    }
}
