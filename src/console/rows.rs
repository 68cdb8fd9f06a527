//! The rows the pages show, gathered from the incidents, the MTA's queue,
//! the held notes and the limiter.

use super::preview::Preview;
use super::queue::{self, Queued};
use crate::incidents::{now_ms, rfc3339, Incident};
use crate::state::Shared;

/// A time as the pages show it.
pub fn when(secs: u64) -> String {
    if secs == 0 {
        "-".into()
    } else {
        rfc3339(secs)
    }
}

pub struct LimitRow {
    pub limit: String,
    pub key: String,
    pub window_left: String,
    pub budget: String,
}

pub struct IncidentRow {
    pub key: String,
    pub signal: String,
    pub figures: String,
    pub action: String,
    pub opened: String,
    pub until: String,
    pub messages: u64,
    pub held: usize,
    /// When it closed and why (recent incidents).
    pub closed: Option<(String, String)>,
}

impl IncidentRow {
    pub fn of(i: &Incident, closed: Option<(u64, &str)>) -> Self {
        Self {
            key: i.name(),
            signal: i.signal.clone(),
            figures: i.figures.clone(),
            action: if i.monitor {
                format!("{} (monitor mode)", i.action.as_str())
            } else {
                i.action.as_str().to_string()
            },
            opened: when(i.opened),
            until: when(i.until),
            messages: i.messages,
            held: i.held.len(),
            closed: closed.map(|(at, why)| (when(at), why.to_string())),
        }
    }

    /// The link to its page.
    pub fn href(&self) -> String {
        format!("/incident?key={}", query_escape(&self.key))
    }
}

pub struct HeldRow {
    pub id: String,
    pub arrival: String,
    pub age: String,
    pub size: u64,
    pub sender: String,
    pub recipients: String,
    pub subject: String,
    pub why: String,
    pub incident: String,
}

/// A duration as "3d 4h", "5m", "12s".
fn age(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl HeldRow {
    /// A queued message as the queue lists it (no note, no subject).
    pub fn plain(q: Queued) -> Self {
        let now = now_ms() / 1000;
        let recipients = q.recipients.join(", ");
        Self {
            arrival: when(q.arrival),
            age: age(now.saturating_sub(q.arrival)),
            size: q.size,
            sender: if q.sender.is_empty() {
                "<>".into()
            } else {
                q.sender
            },
            recipients: super::preview::clean(&recipients, 500).0,
            subject: String::new(),
            why: q
                .reason
                .unwrap_or_else(|| "not held by egress-milter (no note of it)".into()),
            incident: "-".into(),
            id: q.id,
        }
    }

    /// With why egress-milter held it, when it noted that.
    fn noted(q: Queued, shared: &Shared) -> Self {
        let note = shared.history.held_note(&q.id);
        let mut row = Self::plain(q);
        if let Some(n) = note {
            row.why = format!("{} ({})", n.reason, n.rule);
            row.incident = n.incident;
        }
        row
    }
}

/// `key` escaped for a query string.
pub fn query_escape(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The incident `kind:key`, open or recently closed.
pub async fn find_incident(shared: &Shared, key: &str) -> Option<IncidentRow> {
    let open = shared
        .incidents
        .list(shared.limiter.redis.as_ref(), now_ms())
        .await;
    if let Some(i) = open.iter().find(|i| i.name() == key) {
        return Some(IncidentRow::of(i, None));
    }
    shared
        .incidents
        .recently_closed()
        .iter()
        .find(|(i, ..)| i.name() == key)
        .map(|(i, at, why)| IncidentRow::of(i, Some((*at, why))))
}

/// The queue ids held for the incident `kind:key`: those of its record
/// (open or recently closed) and those noted for it.
pub async fn incident_held_ids(shared: &Shared, key: &str) -> Vec<String> {
    let mut ids = shared.history.held_for(key);
    let open = shared
        .incidents
        .list(shared.limiter.redis.as_ref(), now_ms())
        .await;
    let closed = shared.incidents.recently_closed();
    let records = open
        .iter()
        .chain(closed.iter().map(|(i, ..)| i))
        .filter(|i| i.name() == key);
    for i in records {
        ids.extend(i.held.iter().cloned());
    }
    ids.sort();
    ids.dedup();
    ids
}

/// The most held messages whose subjects are read for a list.
const SUBJECTS: usize = 50;

/// The held messages (of the incident `kind:key`, or all), oldest first,
/// with why each was held and, for the first ones, their subject.
pub async fn held_rows(shared: &Shared, incident: Option<&str>) -> Result<Vec<HeldRow>, String> {
    let config = shared.config();
    let settings = config.console.as_ref().ok_or("the console is off")?;
    let mut held = queue::list(settings).await?;
    if let Some(key) = incident {
        let ids = incident_held_ids(shared, key).await;
        held.retain(|q| ids.contains(&q.id));
    }
    let mut rows = Vec::with_capacity(held.len());
    for (n, q) in held.into_iter().enumerate() {
        let id = q.id.clone();
        let mut row = HeldRow::noted(q, shared);
        if n < SUBJECTS {
            if let Ok(raw) = queue::content(settings, &id).await {
                row.subject = super::preview::preview(&raw).subject;
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// One held message and its preview; None when it is not held.
pub async fn message(shared: &Shared, id: &str) -> Result<Option<(HeldRow, Preview)>, String> {
    let config = shared.config();
    let settings = config.console.as_ref().ok_or("the console is off")?;
    if !queue::valid_id(id) {
        return Ok(None);
    }
    let Some(q) = queue::find(settings, id).await? else {
        return Ok(None);
    };
    let raw = queue::content(settings, id).await?;
    let preview = super::preview::preview(&raw);
    let mut row = HeldRow::noted(q, shared);
    row.subject = preview.subject.clone();
    Ok(Some((row, preview)))
}

/// The keys past a limit's `warn_at` in its current window, with their
/// budgets as `limits show` gives them.
pub async fn limit_rows(shared: &Shared) -> Vec<LimitRow> {
    let mut rows = Vec::new();
    for (limit, key, left) in shared.limiter.warnings.current().into_iter().take(200) {
        let budget = match crate::admin::answer(
            shared,
            crate::admin::Request::Limits(crate::admin::Limits::Show {
                key: key.clone(),
                limit: Some(limit.as_str().to_string()),
            }),
        )
        .await
        {
            crate::admin::Answer::Ok(t) | crate::admin::Answer::Error(t) => t,
        };
        rows.push(LimitRow {
            limit: limit.as_str().to_string(),
            key,
            window_left: age(left.as_secs()),
            budget,
        });
    }
    rows
}
