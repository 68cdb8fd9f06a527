//! Signals and incidents in Redis, with `rate_limits.backend: redis`: every
//! gateway counts into the same windows and sees the same open incidents.
//! The same sliding windows as in process (a ring of slices), with Redis's HyperLogLog (`PFADD`, `PFCOUNT`) for distinct
//! counts; the baseline and each incident are small hashes. Each update is
//! one Lua script, atomic.

use super::signals::{describe, judge_counts, Crossing, Event, Keys, Reading};
use super::store::{Incident, MAX_HELD};
use crate::config::{KeyKind, Signal, Threshold};
use crate::limiter::{LimiterError, RedisLimiter};
use redis::{AsyncCommands, Script};
use std::collections::HashMap;

/// The script in `signal.lua` (its keys and arguments are described there).
const SIGNAL_LUA: &str = include_str!("signal.lua");

/// The script in `open.lua` (its keys and arguments are described there).
const OPEN_LUA: &str = include_str!("open.lua");

/// The script in `note.lua` (its keys and arguments are described there).
const NOTE_LUA: &str = include_str!("note.lua");

/// An incident hash is kept this long after it ends, so that one gateway
/// can still announce its end.
const KEEP_AFTER_MS: u64 = 86_400_000;

/// The fixed part of an incident, stored as JSON.
#[derive(serde::Deserialize, serde::Serialize)]
struct Fixed {
    kind: KeyKind,
    key: String,
    signal: String,
    figures: String,
    action: crate::config::IncidentAction,
    monitor: bool,
    opened: u64,
    earlier: Vec<String>,
}

pub struct Scripts {
    signal: Script,
    open: Script,
    note: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            signal: Script::new(SIGNAL_LUA),
            open: Script::new(OPEN_LUA),
            note: Script::new(NOTE_LUA),
        }
    }
}

fn member(kind: KeyKind, key: &str) -> String {
    format!("{}:{key}", kind.as_str())
}

fn hash_key(r: &RedisLimiter, member: &str) -> String {
    r.key(format_args!("incident:{member}"))
}

fn held_key(r: &RedisLimiter, member: &str) -> String {
    r.key(format_args!("incident-held:{member}"))
}

fn index_key(r: &RedisLimiter) -> String {
    r.key(format_args!("incidents"))
}

/// One signal's part of a call to `signal.lua`: its keys and arguments.
struct Part {
    keys: Vec<String>,
    args: Vec<String>,
}

/// What `signal.lua` answers for one signal: the window's figure, the
/// usual volume, the recent queue ids.
type Figures = (f64, Option<f64>, Vec<String>);

impl Part {
    /// One signal for one key, counted (when `event` is given) and read:
    /// one part, or for a ratio two (the recipients sent, the bounces).
    /// None when the signal does not count this event.
    fn of(
        r: &RedisLimiter,
        s: &Signal,
        key: &str,
        now: u64,
        event: Option<&Event<'_>>,
    ) -> Option<Vec<Part>> {
        let amount = match event {
            Some(e) => Some(super::signals::amount_of(s.count, e)?),
            None => None,
        };
        let recent = match event {
            Some(Event::Accepted {
                queue_id: Some(q), ..
            }) if !q.is_empty() && *q != "-" => format!("{now}:{q}"),
            _ => String::new(),
        };
        if !matches!(s.threshold, Threshold::Ratio { .. }) {
            let added = amount.map(|(n, values, _)| (n, values, recent));
            return Some(vec![Part::new(r, s, key, "", now, added)]);
        }
        let (sent, bounced) = match amount {
            Some((n, _, true)) => (None, Some((n, Vec::new(), String::new()))),
            Some((n, _, false)) => (Some((n, Vec::new(), recent)), None),
            None => (None, None),
        };
        Some(vec![
            Part::new(r, s, key, ":sent", now, sent),
            Part::new(r, s, key, ":bounced", now, bounced),
        ])
    }

    /// One counter of a signal for one key (`sub`: which, for a ratio);
    /// `added`: what the event adds (the number, the values, the recent
    /// entry), or None to read only.
    fn new(
        r: &RedisLimiter,
        s: &Signal,
        key: &str,
        sub: &str,
        now: u64,
        added: Option<(f64, Vec<String>, String)>,
    ) -> Part {
        let len = s.threshold.window().as_millis() as u64;
        let starts = super::window::slice_starts(now, len);
        let id = format!("{}:{}:{key}{sub}", s.name, s.key.as_str());
        let kind = if s.count.distinct() {
            "distinct"
        } else {
            "sum"
        };
        let slice = |start: &u64| r.key(format_args!("signal:{id}:{start}"));
        let mut keys = vec![
            starts.first().map(slice).unwrap_or_default(),
            r.key(format_args!("baseline:{id}")),
            r.key(format_args!("recent:{id}")),
        ];
        keys.extend(starts.iter().skip(1).map(slice));
        let add = added.is_some();
        let (added, values, recent) = added.unwrap_or((0.0, Vec::new(), String::new()));
        let (baseline, learn) = match s.threshold {
            Threshold::Baseline { learn, .. } => ("1", learn.as_millis() as u64),
            Threshold::Above(_) | Threshold::Ratio { .. } => ("0", 0),
        };
        let mut args = vec![
            kind.to_string(),
            if add { "add" } else { "read" }.to_string(),
            (len + 2 * super::window::slice_len(len) + 1000).to_string(),
            now.to_string(),
            len.to_string(),
            baseline.to_string(),
            learn.to_string(),
            added.to_string(),
            recent,
        ];
        if s.count.distinct() {
            args.extend(values);
        } else {
            args.push((added as u64).to_string());
        }
        Part { keys, args }
    }
}

/// A signal's figure and the usual volume from its parts' figures: for a
/// ratio, the bounces, and the recipients sent as the "usual".
fn judged(s: &Signal, figures: &[Figures]) -> (f64, Option<f64>, Vec<String>) {
    match (s.threshold, figures) {
        (Threshold::Ratio { .. }, [sent, bounced]) => (bounced.0, Some(sent.0), sent.2.clone()),
        (_, [one, ..]) => one.clone(),
        _ => (0.0, None, Vec::new()),
    }
}

impl Scripts {
    /// Every part in one call of `signal.lua`: one round trip for all the
    /// signals of an event; with the fields of the incident hashes
    /// `read`, as they are after it.
    async fn signals(
        &self,
        r: &RedisLimiter,
        parts: &[Part],
        read: &[String],
    ) -> Result<(Vec<Figures>, Vec<HashMap<String, String>>), LimiterError> {
        if parts.is_empty() && read.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut inv = self.signal.prepare_invoke();
        inv.arg(parts.len());
        for p in parts {
            inv.arg(p.keys.len()).arg(p.args.len());
            for k in &p.keys {
                inv.key(k);
            }
            for a in &p.args {
                inv.arg(a);
            }
        }
        for h in read {
            inv.key(h);
        }
        let mut got: Vec<redis::Value> = r
            .call(async |mut conn| inv.invoke_async(&mut conn).await)
            .await?;
        let incidents: Vec<HashMap<String, String>> = if read.is_empty() {
            Vec::new()
        } else {
            match got.pop() {
                Some(v) => {
                    redis::from_redis_value(v).map_err(|e| LimiterError::Redis(e.to_string()))?
                }
                None => Vec::new(),
            }
        };
        let mut figures = Vec::new();
        for v in got {
            let (figure, usual, recent): (String, String, Vec<String>) =
                redis::from_redis_value(v).map_err(|e| LimiterError::Redis(e.to_string()))?;
            let figure = figure.parse::<f64>().unwrap_or(0.0).floor();
            let usual = usual.parse::<f64>().ok().filter(|u| *u >= 0.0);
            figures.push((figure, usual, recent));
        }
        Ok((figures, incidents))
    }

    /// Counts an event under its keys, every signal in one round trip;
    /// returns the crossings, and, in the same round trip, the open
    /// incident of the first of `find`'s keys that has one.
    pub async fn observe(
        &self,
        r: &RedisLimiter,
        signals: &[Signal],
        now: u64,
        keys: &Keys<'_>,
        event: &Event<'_>,
        find: &[(KeyKind, &str)],
    ) -> Result<(Vec<Crossing>, Option<Incident>), LimiterError> {
        let mut counted = Vec::new();
        let mut parts = Vec::new();
        for s in signals {
            let Some(key) = keys.get(s.key) else {
                continue;
            };
            if let Some(p) = Part::of(r, s, key, now, Some(event)) {
                counted.push((s, key, p.len()));
                parts.extend(p);
            }
        }
        let hashes: Vec<String> = find
            .iter()
            .map(|(k, v)| hash_key(r, &member(*k, v)))
            .collect();
        let (figures, incidents) = self.signals(r, &parts, &hashes).await?;
        let found = incidents
            .iter()
            .filter_map(|f| incident(f, Vec::new()))
            .find(|i| i.until > now / 1000);
        let mut out = Vec::new();
        let mut at = 0;
        for (s, key, n) in counted {
            let Some(f) = figures.get(at..at + n) else {
                break;
            };
            at += n;
            let (figure, usual, recent) = judged(s, f);
            if judge_counts(s, figure, usual) {
                let since = now.saturating_sub(s.threshold.window().as_millis() as u64);
                let mut earlier: Vec<String> = recent
                    .iter()
                    .filter_map(|e| e.split_once(':'))
                    .filter(|(t, _)| t.parse::<u64>().is_ok_and(|t| t >= since))
                    .map(|(_, q)| q.to_string())
                    .collect();
                earlier.reverse();
                out.push(Crossing {
                    signal: s.name.clone(),
                    kind: s.key,
                    key: key.to_string(),
                    figures: describe(s, figure, usual),
                    earlier,
                });
            }
        }
        Ok((out, found))
    }

    pub async fn read(
        &self,
        r: &RedisLimiter,
        signals: &[Signal],
        now: u64,
        keys: &Keys<'_>,
    ) -> Result<Vec<Reading>, LimiterError> {
        let mut read = Vec::new();
        let mut parts = Vec::new();
        for s in signals {
            let Some(key) = keys.get(s.key) else {
                continue;
            };
            if let Some(p) = Part::of(r, s, key, now, None) {
                read.push((s, key, p.len()));
                parts.extend(p);
            }
        }
        let (figures, _) = self.signals(r, &parts, &[]).await?;
        let mut out = Vec::new();
        let mut at = 0;
        for (s, key, n) in read {
            let Some(f) = figures.get(at..at + n) else {
                break;
            };
            at += n;
            let (figure, usual, _) = judged(s, f);
            out.push(Reading {
                signal: s.name.clone(),
                kind: s.key,
                key: key.to_string(),
                figures: describe(s, figure, usual),
                crossed: judge_counts(s, figure, usual),
            });
        }
        Ok(out)
    }

    /// Forgets a key's counts in every signal of its kind (its usual
    /// volume stays).
    pub async fn forget(
        &self,
        r: &RedisLimiter,
        signals: &[Signal],
        kind: KeyKind,
        key: &str,
        now: u64,
    ) -> Result<(), LimiterError> {
        let mut keys = Vec::new();
        for s in signals.iter().filter(|s| s.key == kind) {
            let len = s.threshold.window().as_millis() as u64;
            let subs: &[&str] = match s.threshold {
                Threshold::Ratio { .. } => &[":sent", ":bounced"],
                _ => &[""],
            };
            for sub in subs {
                let id = format!("{}:{}:{key}{sub}", s.name, s.key.as_str());
                for start in super::window::slice_starts(now, len) {
                    keys.push(r.key(format_args!("signal:{id}:{start}")));
                }
                keys.push(r.key(format_args!("recent:{id}")));
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let _: i64 = r.call(async |mut conn| conn.del(&keys).await).await?;
        Ok(())
    }

    /// Opens (or extends) an incident; returns it as stored, and whether
    /// it is new.
    pub async fn open(
        &self,
        r: &RedisLimiter,
        i: &Incident,
    ) -> Result<(Incident, bool), LimiterError> {
        let m = member(i.kind, &i.key);
        let fixed = Fixed {
            kind: i.kind,
            key: i.key.clone(),
            signal: i.signal.clone(),
            figures: i.figures.clone(),
            action: i.action,
            monitor: i.monitor,
            opened: i.opened,
            earlier: i.earlier.clone(),
        };
        let json = serde_json::to_string(&fixed).map_err(|e| LimiterError::Redis(e.to_string()))?;
        let ttl = i.until.saturating_sub(i.opened) * 1000 + KEEP_AFTER_MS;
        let (h, idx, held) = (hash_key(r, &m), index_key(r), held_key(r, &m));
        let new: i64 = r
            .call(async |mut conn| {
                self.open
                    .key(&h)
                    .key(&idx)
                    .key(&held)
                    .arg(&json)
                    .arg(i.opened)
                    .arg(i.until)
                    .arg(&m)
                    .arg(ttl)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let stored = self.get(r, &m, true).await?.unwrap_or_else(|| i.clone());
        Ok((stored, new == 1))
    }

    /// The incident of a member, with its held ids when asked.
    async fn get(
        &self,
        r: &RedisLimiter,
        m: &str,
        with_held: bool,
    ) -> Result<Option<Incident>, LimiterError> {
        let (h, held) = (hash_key(r, m), held_key(r, m));
        let (fields, ids): (HashMap<String, String>, Vec<String>) = r
            .call(async |mut conn| {
                let fields: HashMap<String, String> = conn.hgetall(&h).await?;
                let ids: Vec<String> = if with_held {
                    conn.lrange(&held, 0, -1).await?
                } else {
                    Vec::new()
                };
                Ok((fields, ids))
            })
            .await?;
        Ok(incident(&fields, ids))
    }

    /// The open incident of the first of the keys that has one: one round
    /// trip for all the keys.
    pub async fn find(
        &self,
        r: &RedisLimiter,
        now_s: u64,
        keys: &[(KeyKind, &str)],
    ) -> Result<Option<Incident>, LimiterError> {
        let hashes: Vec<String> = keys
            .iter()
            .map(|(k, v)| hash_key(r, &member(*k, v)))
            .collect();
        let all: Vec<HashMap<String, String>> = r
            .call(async |mut conn| {
                let mut pipe = redis::pipe();
                for h in &hashes {
                    pipe.hgetall(h);
                }
                pipe.query_async(&mut conn).await
            })
            .await?;
        Ok(all
            .iter()
            .filter_map(|f| incident(f, Vec::new()))
            .find(|i| i.until > now_s))
    }

    pub async fn note(
        &self,
        r: &RedisLimiter,
        i: &Incident,
        queue_id: Option<&str>,
        held: bool,
    ) -> Result<(), LimiterError> {
        let m = member(i.kind, &i.key);
        let (h, l) = (hash_key(r, &m), held_key(r, &m));
        let _: i64 = r
            .call(async |mut conn| {
                self.note
                    .key(&h)
                    .key(&l)
                    .arg(queue_id.unwrap_or(""))
                    .arg(if held { "1" } else { "0" })
                    .arg(MAX_HELD)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Closes an incident; only one caller gets it (the one whose delete
    /// removed it), so its end is announced once across gateways.
    pub async fn close(
        &self,
        r: &RedisLimiter,
        kind: KeyKind,
        key: &str,
    ) -> Result<Option<Incident>, LimiterError> {
        let m = member(kind, key);
        let Some(i) = self.get(r, &m, true).await? else {
            return Ok(None);
        };
        let (h, l, idx) = (hash_key(r, &m), held_key(r, &m), index_key(r));
        let deleted: i64 = r
            .call(async |mut conn| {
                let n: i64 = conn.del(&h).await?;
                let _: i64 = conn.del(&l).await?;
                let _: i64 = conn.srem(&idx, &m).await?;
                Ok(n)
            })
            .await?;
        Ok((deleted == 1).then_some(i))
    }

    /// Sets an open incident's action (the JSON written back whole: an
    /// operator's command, not the message path). None when none is open.
    pub async fn set_action(
        &self,
        r: &RedisLimiter,
        kind: KeyKind,
        key: &str,
        action: crate::config::IncidentAction,
    ) -> Result<Option<Incident>, LimiterError> {
        let m = member(kind, key);
        let h = hash_key(r, &m);
        let json: Option<String> = r.call(async |mut conn| conn.hget(&h, "json").await).await?;
        let Some(mut fixed) = json.and_then(|j| serde_json::from_str::<Fixed>(&j).ok()) else {
            return Ok(None);
        };
        fixed.action = action;
        let json = serde_json::to_string(&fixed).map_err(|e| LimiterError::Redis(e.to_string()))?;
        let _: i64 = r
            .call(async |mut conn| conn.hset(&h, "json", &json).await)
            .await?;
        self.get(r, &m, true).await
    }

    /// Every incident the index names (those whose hash is gone are
    /// dropped from it), open or ended: three round trips however many.
    pub async fn all(&self, r: &RedisLimiter) -> Result<Vec<Incident>, LimiterError> {
        let idx = index_key(r);
        let members: Vec<String> = r.call(async |mut conn| conn.smembers(&idx).await).await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let got: Vec<(HashMap<String, String>, Vec<String>)> = r
            .call(async |mut conn| {
                let mut pipe = redis::pipe();
                for m in &members {
                    pipe.cmd("HGETALL").arg(hash_key(r, m));
                    pipe.cmd("LRANGE").arg(held_key(r, m)).arg(0).arg(-1);
                }
                let flat: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
                let mut out = Vec::new();
                for pair in flat.chunks(2) {
                    if let [fields, held] = pair {
                        out.push((
                            redis::from_redis_value_ref(fields)?,
                            redis::from_redis_value_ref(held)?,
                        ));
                    }
                }
                Ok(out)
            })
            .await?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (m, (fields, held)) in members.iter().zip(got) {
            match incident(&fields, held) {
                Some(i) => out.push(i),
                None => gone.push(m),
            }
        }
        if !gone.is_empty() {
            let _: i64 = r
                .call(async |mut conn| conn.srem(&idx, &gone).await)
                .await?;
        }
        Ok(out)
    }
}

/// An incident from its hash and held list.
fn incident(fields: &HashMap<String, String>, held: Vec<String>) -> Option<Incident> {
    let fixed: Fixed = serde_json::from_str(fields.get("json")?).ok()?;
    Some(Incident {
        kind: fixed.kind,
        key: fixed.key,
        signal: fixed.signal,
        figures: fixed.figures,
        action: fixed.action,
        monitor: fixed.monitor,
        opened: fixed.opened,
        until: fields.get("until")?.parse().ok()?,
        earlier: fixed.earlier,
        messages: fields
            .get("messages")
            .and_then(|m| m.parse().ok())
            .unwrap_or(0),
        first_queue_id: fields.get("first").cloned(),
        last_queue_id: fields.get("last").cloned(),
        held,
    })
}
