//! The suppressed recipients shared through Redis (with
//! `rate_limits.backend: redis`): one hash for every gateway, changed
//! by one script (`suppress.lua`) that also raises a version. Each
//! gateway answers RCPT TO from its own copy, read again whenever the
//! version moves (every couple of seconds): no Redis round trip per
//! recipient. While Redis fails, each keeps refusing what its copy holds.

use super::store::Entry;
use crate::limiter::{LimiterError, RedisLimiter};
use redis::{AsyncCommands, Script};
use std::collections::BTreeMap;

const SUPPRESS_LUA: &str = include_str!("suppress.lua");

fn keys(r: &RedisLimiter) -> (String, String) {
    (
        r.key(format_args!("suppressions")),
        r.key(format_args!("suppressions:version")),
    )
}

fn err(e: LimiterError) -> String {
    format!("redis: {e}")
}

async fn run(r: &RedisLimiter, args: &[String]) -> Result<redis::Value, String> {
    let (hash, version) = keys(r);
    r.call(async |mut c| {
        let script = Script::new(SUPPRESS_LUA);
        let mut s = script.prepare_invoke();
        s.key(&hash).key(&version);
        for a in args {
            s.arg(a);
        }
        s.invoke_async(&mut c).await
    })
    .await
    .map_err(err)
}

fn entry(v: redis::Value) -> Result<Entry, String> {
    let text: String = redis::from_redis_value(v).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// A hard failure, counted for every gateway; the record.
pub async fn hard_failure(
    r: &RedisLimiter,
    address: &str,
    status: &str,
    now: u64,
    after: u32,
    for_secs: u64,
) -> Result<Entry, String> {
    entry(
        run(
            r,
            &[
                "hard".into(),
                address.into(),
                now.to_string(),
                status.into(),
                after.to_string(),
                for_secs.to_string(),
            ],
        )
        .await?,
    )
}

pub async fn add(r: &RedisLimiter, address: &str, now: u64, until: u64) -> Result<Entry, String> {
    entry(
        run(
            r,
            &[
                "add".into(),
                address.into(),
                now.to_string(),
                until.to_string(),
            ],
        )
        .await?,
    )
}

pub async fn remove(r: &RedisLimiter, address: &str, now: u64) -> Result<bool, String> {
    let v = run(r, &["remove".into(), address.into(), now.to_string()]).await?;
    let n: i64 = redis::from_redis_value(v).map_err(|e| e.to_string())?;
    Ok(n == 1)
}

/// The version of the shared list (0: none yet).
pub async fn version(r: &RedisLimiter) -> Result<u64, String> {
    let (_, version) = keys(r);
    let v: Option<u64> = r
        .call(async |mut c| c.get(&version).await)
        .await
        .map_err(err)?;
    Ok(v.unwrap_or(0))
}

/// The whole shared list.
pub async fn load(r: &RedisLimiter) -> Result<BTreeMap<String, Entry>, String> {
    let (hash, _) = keys(r);
    let all: BTreeMap<String, String> = r
        .call(async |mut c| c.hgetall(&hash).await)
        .await
        .map_err(err)?;
    Ok(all
        .into_iter()
        .filter_map(|(a, j)| serde_json::from_str(&j).ok().map(|e| (a, e)))
        .collect())
}
