//! Telling the postmaster: once when an incident opens and once when it
//! closes, never per message, by webhook (an HTTP POST of a JSON document)
//! and/or by mail through an SMTP relay. Notices wait in a bounded queue
//! for one background task, so no message ever waits on a notification;
//! a failed delivery is retried a few times, then logged; at most
//! `max_per_hour` are sent, all incidents together.

use super::store::Incident;
use crate::config::Notify;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Mail, Tokio1Executor};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Notices waiting at most; more are dropped (and counted).
const QUEUE: usize = 1000;
/// Attempts per delivery.
const ATTEMPTS: u32 = 3;

#[derive(Clone, Copy, Debug, Eq, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Opened,
    Closed,
}

#[derive(Clone, Debug)]
pub struct Notice {
    pub change: Change,
    pub incident: Incident,
    /// Unix seconds.
    pub at: u64,
    /// How it closed (`expired`, `closed by hand`), for a closing notice.
    pub reason: Option<&'static str>,
    /// The console's one-click links (action, URL) on its held mail,
    /// filled when queued (see [`Notifier::set_linker`]).
    pub links: Vec<(String, String)>,
}

/// Makes the one-click links of an incident (`kind:key`): (action, URL).
pub type Linker = Box<dyn Fn(&str) -> Vec<(String, String)> + Send + Sync>;

/// The webhook's JSON document.
#[derive(Serialize)]
pub struct Document<'a> {
    pub event: Change,
    /// Opened in monitor mode: nothing was held.
    pub monitor: bool,
    pub key: String,
    pub kind: &'a str,
    pub value: &'a str,
    pub signal: &'a str,
    pub figures: &'a str,
    pub action: &'a str,
    pub opened: String,
    pub until: String,
    pub at: String,
    pub reason: Option<&'a str>,
    pub messages: u64,
    pub first_queue_id: Option<&'a str>,
    pub last_queue_id: Option<&'a str>,
    pub earlier_queue_ids: &'a [String],
    pub held_queue_ids: &'a [String],
    pub gateway: &'a str,
    /// The console's one-click links, by action (`release`, `delete`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub links: std::collections::BTreeMap<&'a str, &'a str>,
}

impl Notice {
    pub fn document<'a>(&'a self, gateway: &'a str) -> Document<'a> {
        let i = &self.incident;
        Document {
            event: self.change,
            monitor: i.monitor,
            key: i.name(),
            kind: i.kind.as_str(),
            value: &i.key,
            signal: &i.signal,
            figures: &i.figures,
            action: i.action.as_str(),
            opened: rfc3339(i.opened),
            until: rfc3339(i.until),
            at: rfc3339(self.at),
            reason: self.reason,
            messages: i.messages,
            first_queue_id: i.first_queue_id.as_deref(),
            last_queue_id: i.last_queue_id.as_deref(),
            earlier_queue_ids: &i.earlier,
            held_queue_ids: &i.held,
            gateway,
            links: self
                .links
                .iter()
                .map(|(a, u)| (a.as_str(), u.as_str()))
                .collect(),
        }
    }

    /// The mail: a subject and a short plain text, readable on a phone.
    pub fn mail_text(&self, gateway: &str) -> (String, String) {
        let i = &self.incident;
        let would = if i.monitor { " (monitor mode)" } else { "" };
        let subject = match self.change {
            Change::Opened => format!("egress-milter: {} suspended{would}", i.name()),
            Change::Closed => format!("egress-milter: {} released{would}", i.name()),
        };
        let mut text = String::new();
        use std::fmt::Write as _;
        match self.change {
            Change::Opened => {
                let _ = writeln!(
                    text,
                    "Gateway {gateway} opened an incident for {}.",
                    i.name()
                );
                let _ = writeln!(text, "\nSignal: {}\n{}", i.signal, i.figures);
                let action = if i.monitor {
                    format!(
                        "{} (monitor mode: logged only, nothing held)",
                        i.action.as_str()
                    )
                } else {
                    i.action.as_str().to_string()
                };
                let _ = writeln!(text, "\nAction: {action}\nUntil: {}", rfc3339(i.until));
                if !i.earlier.is_empty() {
                    let _ = writeln!(
                        text,
                        "\nAccepted before it opened, in the same window:\n{}",
                        i.earlier.join(" ")
                    );
                }
            }
            Change::Closed => {
                let _ = writeln!(
                    text,
                    "Gateway {gateway} closed the incident for {} ({}).",
                    i.name(),
                    self.reason.unwrap_or("closed")
                );
                let _ = writeln!(
                    text,
                    "\nIt opened at {} on: {}",
                    rfc3339(i.opened),
                    i.figures
                );
                let _ = writeln!(text, "Messages from the key meanwhile: {}", i.messages);
                if !i.held.is_empty() {
                    let _ = writeln!(
                        text,
                        "\nHeld ({}), still in the MTA's hold queue until released:\n{}\n\nRelease with\n  postsuper -H {}\n(Sendmail: {})",
                        i.held.len(),
                        i.held.join(" "),
                        i.held.join(" "),
                        super::sendmail_release(&i.held)
                    );
                }
            }
        }
        for (action, url) in &self.links {
            let what = if action == "release" {
                "Release its held mail"
            } else {
                "Delete its held mail"
            };
            let _ = writeln!(
                text,
                "\n{what} (the page asks you to confirm; valid 24 hours, once):\n  {url}"
            );
        }
        (subject, text)
    }
}

/// A key past a rate limit's `warn_at` (`rate_limits.warn_notify`).
#[derive(Clone, Debug)]
pub struct WarningNotice {
    pub limit: &'static str,
    pub key: String,
    pub rate: String,
    pub used_pct: u16,
    pub warn_at_pct: u16,
    /// Unix seconds.
    pub at: u64,
    pub queue_id: Option<String>,
}

/// The warning's webhook document.
#[derive(Serialize)]
struct WarningDocument<'a> {
    event: &'static str,
    limit: &'a str,
    key: &'a str,
    rate: &'a str,
    used_pct: u16,
    warn_at_pct: u16,
    at: String,
    queue_id: Option<&'a str>,
    gateway: &'a str,
}

/// A rotated DKIM key changed state, or has waited a day for its record
/// (`dkim.rotation`).
#[derive(Clone, Debug, Serialize)]
pub struct DkimNotice {
    /// made, activated, retired, revoked, removed, late.
    pub change: &'static str,
    pub domain: String,
    pub selector: String,
    pub algorithm: &'static str,
    /// `SELECTOR._domainkey.DOMAIN`.
    pub name: String,
    /// The TXT value the name must hold now (empty once removed).
    pub record: String,
    /// Why a pending key is not yet switched to.
    pub waiting: Option<String>,
    /// Unix seconds.
    #[serde(skip)]
    pub at: u64,
}

/// A notice another part of the daemon made whole: its name for the
/// logs, its event, the webhook document (the gateway is added) and the
/// mail.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub name: String,
    pub event: &'static str,
    pub document: serde_json::Value,
    pub subject: String,
    pub text: String,
}

/// What the notifier delivers.
#[derive(Clone, Debug)]
enum Outgoing {
    Incident(Notice),
    Warning(WarningNotice),
    Dkim(DkimNotice),
    Prepared(Prepared),
}

impl Outgoing {
    /// What the log lines name.
    fn name(&self) -> String {
        match self {
            Self::Incident(n) => n.incident.name(),
            Self::Warning(w) => format!("{} for {}", w.limit, w.key),
            Self::Dkim(d) => format!("DKIM key {}", d.name),
            Self::Prepared(p) => p.name.clone(),
        }
    }

    fn event(&self) -> &'static str {
        match self {
            Self::Incident(n) => match n.change {
                Change::Opened => "opened",
                Change::Closed => "closed",
            },
            Self::Warning(_) => "limit_warning",
            Self::Dkim(_) => "dkim_key",
            Self::Prepared(p) => p.event,
        }
    }

    fn body(&self, gateway: &str) -> serde_json::Result<Vec<u8>> {
        match self {
            Self::Incident(n) => serde_json::to_vec(&n.document(gateway)),
            Self::Warning(w) => serde_json::to_vec(&WarningDocument {
                event: "limit_warning",
                limit: w.limit,
                key: &w.key,
                rate: &w.rate,
                used_pct: w.used_pct,
                warn_at_pct: w.warn_at_pct,
                at: rfc3339(w.at),
                queue_id: w.queue_id.as_deref(),
                gateway,
            }),
            Self::Dkim(d) => {
                let mut doc = serde_json::to_value(d)?;
                if let Some(o) = doc.as_object_mut() {
                    o.insert("event".into(), "dkim_key".into());
                    o.insert("at".into(), rfc3339(d.at).into());
                    o.insert("gateway".into(), gateway.into());
                }
                serde_json::to_vec(&doc)
            }
            Self::Prepared(p) => {
                let mut doc = p.document.clone();
                if let Some(o) = doc.as_object_mut() {
                    o.insert("gateway".into(), gateway.into());
                }
                serde_json::to_vec(&doc)
            }
        }
    }

    fn mail_text(&self, gateway: &str) -> (String, String) {
        match self {
            Self::Prepared(p) => (p.subject.clone(), format!("Gateway {gateway}: {}", p.text)),
            Self::Incident(n) => n.mail_text(gateway),
            Self::Warning(w) => (
                format!(
                    "egress-milter: {} at {}% of rate limit {}",
                    w.key, w.used_pct, w.limit
                ),
                format!(
                    "Gateway {gateway}: {} has used {}% of rate limit {} ({}), past its warning level of {}%.\n\
                     Its mail still passes; at 100% it is refused (451 4.7.1) until the budget refills.\n\
                     Last message: {}\nAt: {}\n\nLook, and reset if it is legitimate:\n  egress-milter limits show {}\n",
                    w.key,
                    w.used_pct,
                    w.limit,
                    w.rate,
                    w.warn_at_pct,
                    w.queue_id.as_deref().unwrap_or("-"),
                    rfc3339(w.at),
                    w.key
                ),
            ),
            Self::Dkim(d) => {
                let what = match d.change {
                    "made" => format!(
                        "A new key was made. It signs once every authoritative server and the resolver serve its record:\n  {}. TXT {}",
                        d.name,
                        crate::dkim::txt_strings(&d.record)
                    ),
                    "late" => format!(
                        "The key was made a day ago and its record is still not served ({}). The old key signs on. Publish:\n  {}. TXT {}",
                        d.waiting.as_deref().unwrap_or("not served"),
                        d.name,
                        crate::dkim::txt_strings(&d.record)
                    ),
                    "activated" => "DNS serves its record: the key signs from now on.".to_string(),
                    "retired" => "A new key signs in its place; its record stays published so that mail in flight still verifies.".to_string(),
                    "revoked" => format!(
                        "Its private key is deleted and its record must now read:\n  {}. TXT \"{}\"",
                        d.name, d.record
                    ),
                    _ => format!("Its record can be removed: {}. TXT", d.name),
                };
                (
                    format!("egress-milter: DKIM key {} of {} {}", d.selector, d.domain, d.change),
                    format!(
                        "Gateway {gateway}: DKIM key {} ({}) of {} {} at {}.\n{what}\n\nWhere every key stands:\n  egress-milter dkim status\n",
                        d.selector,
                        d.algorithm,
                        d.domain,
                        d.change,
                        rfc3339(d.at)
                    ),
                )
            }
        }
    }
}

/// Unix seconds as RFC 3339 UTC (`2026-12-02T03:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The sending side: notices go in, one task delivers them.
pub struct Notifier {
    tx: mpsc::Sender<(Outgoing, Notify)>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<(Outgoing, Notify)>>>,
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub suppressed: AtomicU64,
    /// The console's links, when it makes them.
    linker: arc_swap::ArcSwapOption<Linker>,
}

impl Default for Notifier {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            linker: arc_swap::ArcSwapOption::empty(),
        }
    }
}

impl Notifier {
    /// Queues a notice, under the settings in force now; never waits.
    pub fn send(&self, mut notice: Notice, settings: &Notify) {
        // Links for an incident opened (its mail will be held), or closed
        // with mail still held; none in monitor mode (nothing is held).
        let held = notice.change == Change::Opened || !notice.incident.held.is_empty();
        if held && !notice.incident.monitor {
            if let Some(make) = self.linker.load().as_deref() {
                notice.links = make(&notice.incident.name());
            }
        }
        self.queue(Outgoing::Incident(notice), settings);
    }

    /// Who makes the one-click links of the notices (the console, when it
    /// has a link secret); None: no links.
    pub fn set_linker(&self, linker: Option<Linker>) {
        self.linker.store(linker.map(std::sync::Arc::new));
    }

    /// Queues a rate-limit warning, as [`send`](Self::send).
    pub fn send_warning(&self, warning: WarningNotice, settings: &Notify) {
        self.queue(Outgoing::Warning(warning), settings);
    }

    /// Queues a DKIM key's change, as [`send`](Self::send).
    pub fn send_dkim(&self, notice: DkimNotice, settings: &Notify) {
        self.queue(Outgoing::Dkim(notice), settings);
    }

    /// Queues a notice made elsewhere, as [`send`](Self::send).
    pub fn send_prepared(&self, notice: Prepared, settings: &Notify) {
        self.queue(Outgoing::Prepared(notice), settings);
    }

    fn queue(&self, notice: Outgoing, settings: &Notify) {
        if settings.webhook.is_none() && settings.mail.is_none() {
            return;
        }
        if self.tx.try_send((notice, settings.clone())).is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("incident notification queue full: a notice was dropped");
        }
    }

    /// The delivering task; the first call takes the queue, later calls
    /// return at once.
    pub async fn run(&self, gateway: String) {
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let http = reqwest::Client::new();
        let mut recent: VecDeque<tokio::time::Instant> = VecDeque::new();
        while let Some((notice, settings)) = rx.recv().await {
            let now = tokio::time::Instant::now();
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(3600))
            {
                recent.pop_front();
            }
            if recent.len() >= settings.max_per_hour as usize {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    incident = notice.name(),
                    max_per_hour = settings.max_per_hour,
                    "incident notification not sent: the hourly cap is reached"
                );
                continue;
            }
            recent.push_back(now);
            if let Some(w) = &settings.webhook {
                let body = match notice.body(&gateway) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!("incident notification unserialisable: {e}");
                        continue;
                    }
                };
                let result = retry(|| async {
                    let r = http
                        .post(&w.url)
                        .header("Content-Type", "application/json")
                        .timeout(w.timeout)
                        .body(body.clone())
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    if r.status().is_success() {
                        Ok(())
                    } else {
                        Err(format!("HTTP {}", r.status()))
                    }
                })
                .await;
                self.count(&notice, "webhook", result);
            }
            if let Some(m) = &settings.mail {
                let (subject, text) = notice.mail_text(&gateway);
                let result = retry(|| send_mail(m, &subject, &text)).await;
                self.count(&notice, "mail", result);
            }
        }
    }

    fn count(&self, notice: &Outgoing, how: &'static str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    incident = notice.name(),
                    event = notice.event(),
                    how,
                    "incident notification sent"
                );
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    incident = notice.name(),
                    how,
                    "incident notification failed after {ATTEMPTS} attempts: {e}"
                );
            }
        }
    }
}

async fn retry<F, Fut>(mut attempt: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut last = String::new();
    for n in 0..ATTEMPTS {
        if n > 0 {
            tokio::time::sleep(Duration::from_secs(1 << (n - 1))).await;
        }
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!("incident notification attempt {} failed: {e}", n + 1);
                last = e;
            }
        }
    }
    Err(last)
}

async fn send_mail(m: &crate::config::MailNotify, subject: &str, text: &str) -> Result<(), String> {
    let mail = Mail::builder()
        .from(
            m.from
                .to_string()
                .parse()
                .map_err(|e| format!("from: {e}"))?,
        )
        .to(m.to.to_string().parse().map_err(|e| format!("to: {e}"))?)
        .subject(subject)
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(text.to_string())
        .map_err(|e| e.to_string())?;
    let (host, port) = m
        .relay
        .rsplit_once(':')
        .ok_or_else(|| format!("relay {} is not HOST:PORT", m.relay))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("relay {} is not HOST:PORT", m.relay))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(m.timeout))
        .build();
    transport
        .send(mail)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_180_400), "2026-12-02T03:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
