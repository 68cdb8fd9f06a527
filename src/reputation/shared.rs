//! The watch on several gateways (`rate_limits.backend: redis`): one
//! gateway at a time runs the rounds, under a lease, keeps the state in
//! Redis and alone sends the notices; the others read the state (and
//! pause their classes by it). Every gateway adds its counts of senders
//! to Redis, so that a listing notice names the top senders of all of
//! them. While Redis fails, each gateway watches alone from the state it
//! last read: a listing stays in force, and a new one is still seen.

use super::state::State;
use super::tally::{self, Kind, Tally, HOURS, HOUR_MS};
use crate::limiter::{LimiterError, RedisLimiter};
use redis::AsyncCommands;
use std::time::Duration;

const LEASE: &str = "reputation:lease";

fn state_key(r: &RedisLimiter) -> String {
    r.key(format_args!("reputation:state"))
}

fn tally_key(r: &RedisLimiter, hour: u64) -> String {
    r.key(format_args!("reputation:senders:{hour}"))
}

fn err(e: LimiterError) -> String {
    format!("redis: {e}")
}

/// Takes or renews the lease for a round of `every`: it lasts two rounds,
/// so that another gateway takes over within two periods of the driver's
/// death.
pub async fn drive(r: &RedisLimiter, every: Duration) -> Result<bool, String> {
    let ms = (every.as_millis() as u64).saturating_mul(2).max(2000);
    r.lease(LEASE, ms).await.map_err(err)
}

/// The gateway that runs the rounds now.
pub async fn driver(r: &RedisLimiter) -> Result<Option<String>, String> {
    Ok(r.lease_holder(LEASE).await.map_err(err)?.map(|(g, _)| g))
}

/// The state as Redis holds it (None: none yet).
pub async fn load(r: &RedisLimiter) -> Result<Option<State>, String> {
    let key = state_key(r);
    let text: Option<String> = r.call(async |mut c| c.get(&key).await).await.map_err(err)?;
    match text {
        Some(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| format!("redis {key}: {e}")),
        None => Ok(None),
    }
}

pub async fn save(r: &RedisLimiter, state: &State) -> Result<(), String> {
    let key = state_key(r);
    let text = serde_json::to_string(state).map_err(|e| e.to_string())?;
    r.call(async |mut c| c.set::<_, _, ()>(&key, &text).await)
        .await
        .map_err(err)
}

/// Adds this gateway's counts since the last flush to Redis (one hash per
/// hour, kept seven hours).
pub async fn flush(r: &RedisLimiter, tally: &Tally) -> Result<(), String> {
    let counts = tally.take_pending();
    if counts.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (hour, kind, key, n) in &counts {
        let k = tally_key(r, *hour);
        pipe.hincr(&k, format!("{}\t{key}", kind.as_str()), *n)
            .ignore()
            .expire(&k, (HOURS * HOUR_MS / 1000) as i64)
            .ignore();
    }
    r.call(async |mut c| pipe.query_async::<()>(&mut c).await)
        .await
        .map_err(err)
}

/// The `n` biggest senders of each kind over the hours before `now`
/// (ms), all gateways together.
pub async fn top(
    r: &RedisLimiter,
    now: u64,
    hours_back: u64,
    n: usize,
) -> Result<Vec<(Kind, String, u64)>, String> {
    let hour = now / HOUR_MS;
    let keys: Vec<String> = (hour.saturating_sub(hours_back)..=hour)
        .map(|h| tally_key(r, h))
        .collect();
    let hashes: Vec<Vec<(String, u64)>> = r
        .call(async |mut c| {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.hgetall(k);
            }
            pipe.query_async(&mut c).await
        })
        .await
        .map_err(err)?;
    let mut sum: std::collections::HashMap<(Kind, String), u64> = Default::default();
    for (field, count) in hashes.into_iter().flatten() {
        let Some((kind, key)) = field.split_once('\t') else {
            continue;
        };
        let Some(kind) = Kind::parse(kind) else {
            continue;
        };
        *sum.entry((kind, key.to_string())).or_default() += count;
    }
    Ok(tally::ranked(
        sum.into_iter().map(|((k, key), c)| (k, key, c)).collect(),
        n,
    ))
}
