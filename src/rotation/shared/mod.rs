//! The keys' state shared through Redis (`dkim.rotation` with
//! `rate_limits.backend: redis`): the ring in one hash with a version
//! (every write checks the version it read, so an operator's request and
//! a step never overwrite each other), the private keys sealed
//! (`seal.rs`), and a lease naming the one gateway that steps the
//! schedule. Every gateway mirrors the ring and the private keys it signs
//! with into its own `key_dir`, and signs from there: a gateway restarted
//! while Redis is down still signs with what it last knew.

use super::ring::{Key, Ring, State};
use super::store::Store;
use crate::config::{RotationSettings, SealKey};
use crate::limiter::RedisLimiter;
use redis::Script;

const SAVE_LUA: &str = include_str!("save.lua");

/// The lease lasts three steps: a driver that dies is replaced within
/// three `check_every`.
pub fn lease_ms(settings: &RotationSettings) -> u64 {
    (settings.check_every.as_millis() as u64)
        .saturating_mul(3)
        .max(1000)
}

/// How a save ended.
#[derive(Debug, Eq, PartialEq)]
pub enum Saved {
    Done,
    /// The state changed since it was read (a request, another driver).
    Changed,
    /// Another gateway holds the lease.
    NotDriver,
}

fn ring_key(r: &RedisLimiter) -> String {
    r.key(format_args!("dkim:ring"))
}

/// The lease's name under the key prefix.
const LEASE: &str = "dkim:lease";

/// The name a private key is sealed under, `DOMAIN/SELECTOR`.
pub fn key_name(k: &Key) -> String {
    format!("{}/{}", k.domain, k.selector)
}

fn private_key(r: &RedisLimiter, k: &Key) -> String {
    r.key(format_args!("dkim:key:{}", key_name(k)))
}

fn err(e: crate::limiter::LimiterError) -> String {
    format!("redis: {e}")
}

/// Takes or renews the lease; true when this gateway drives.
pub async fn lease(r: &RedisLimiter, settings: &RotationSettings) -> Result<bool, String> {
    lease_for(r, lease_ms(settings)).await
}

/// Gives the lease up, if this process holds it (a command that stepped).
pub async fn release(r: &RedisLimiter) -> Result<(), String> {
    lease_for(r, 0).await.map(|_| ())
}

async fn lease_for(r: &RedisLimiter, ms: u64) -> Result<bool, String> {
    r.lease(LEASE, ms).await.map_err(err)
}

/// The gateway that drives now, and for how much longer (ms).
pub async fn driver(r: &RedisLimiter) -> Result<Option<(String, i64)>, String> {
    r.lease_holder(LEASE).await.map_err(err)
}

/// The ring as Redis holds it, and its version (0: none yet).
pub async fn load(r: &RedisLimiter) -> Result<(Ring, u64), String> {
    let key = ring_key(r);
    let (version, ring): (Option<u64>, Option<String>) = r
        .call(async |mut c| {
            redis::cmd("HMGET")
                .arg(&key)
                .arg("version")
                .arg("ring")
                .query_async(&mut c)
                .await
        })
        .await
        .map_err(err)?;
    let ring = match ring {
        Some(json) => serde_json::from_str(&json).map_err(|e| format!("redis {key}: {e}"))?,
        None => Ring::default(),
    };
    Ok((ring, version.unwrap_or(0)))
}

/// Saves the ring read at `version`, with new private keys sealed and
/// the private keys of `gone` deleted. `driver`: the lease this gateway
/// holds (None for an operator's request).
pub async fn save(
    r: &RedisLimiter,
    driver: Option<&str>,
    version: u64,
    ring: &Ring,
    made: &[(Key, String)],
    gone: &[&Key],
) -> Result<Saved, String> {
    let json = serde_json::to_string(ring).map_err(|e| e.to_string())?;
    let lua = Script::new(SAVE_LUA);
    let mut script = lua.prepare_invoke();
    script
        .key(ring_key(r))
        .key(r.key(format_args!("{LEASE}")))
        .arg(driver.unwrap_or(""))
        .arg(version)
        .arg(json)
        .arg(made.len());
    for (k, sealed) in made {
        script.key(private_key(r, k)).arg(sealed);
    }
    for k in gone {
        script.key(private_key(r, k));
    }
    let n: i64 = r
        .call(async |mut c| script.invoke_async(&mut c).await)
        .await
        .map_err(err)?;
    Ok(match n {
        -1 => Saved::NotDriver,
        0 => Saved::Changed,
        _ => Saved::Done,
    })
}

/// Which keys that sign or may sign have no private key in Redis that
/// opens with this gateway's `secret_file`.
pub async fn check_keys(
    r: &RedisLimiter,
    seal: &SealKey,
    ring: &Ring,
) -> Result<Vec<String>, String> {
    let wanted: Vec<&Key> = ring.keys.iter().filter(|k| kept(k)).collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    Ok(opened(r, seal, &wanted)
        .await?
        .into_iter()
        .zip(&wanted)
        .filter_map(|(pem, k)| pem.err().map(|e| format!("{}: {e}", k.name())))
        .collect())
}

/// The private keys of `keys` as Redis holds them, each opened (or why
/// not), in one round trip.
async fn opened(
    r: &RedisLimiter,
    seal: &SealKey,
    keys: &[&Key],
) -> Result<Vec<Result<String, String>>, String> {
    let names: Vec<String> = keys.iter().map(|k| private_key(r, k)).collect();
    let sealed: Vec<Option<String>> = r
        .call(async |mut c| redis::cmd("MGET").arg(&names).query_async(&mut c).await)
        .await
        .map_err(err)?;
    Ok(keys
        .iter()
        .zip(sealed)
        .map(|(k, s)| match s {
            Some(s) => super::seal::open(seal, &key_name(k), &s),
            None => Err("its private key is not in Redis".into()),
        })
        .collect())
}

/// Whether a key's private key is kept: it signs, will sign at a moment
/// recorded, or is retiring (to be revealed when revoked).
fn kept(k: &Key) -> bool {
    matches!(k.state, State::Active | State::Retiring)
}

/// Reads the ring and the private keys this gateway may sign with into
/// `key_dir`: the state saved, each missing private key opened and
/// written, the private keys of revoked keys deleted. The ring read, and
/// what could not be done.
pub async fn mirror(
    r: &RedisLimiter,
    settings: &RotationSettings,
    seal: &SealKey,
) -> Result<(Ring, Vec<String>), String> {
    let (ring, _) = load(r).await?;
    let store = Store::open(&settings.key_dir)
        .map_err(|e| format!("{}: {e}", settings.key_dir.display()))?;
    let wanted: Vec<&Key> = ring
        .keys
        .iter()
        .filter(|k| kept(k) && !store.key_path(k).exists())
        .collect();
    let mut errors = Vec::new();
    if !wanted.is_empty() {
        for (k, pem) in wanted.iter().zip(opened(r, seal, &wanted).await?) {
            match pem.and_then(|p| store.write_key(k, &p).map_err(|e| e.to_string())) {
                Ok(()) => {}
                Err(e) => errors.push(format!("{}: {e}", k.name())),
            }
        }
    }
    for k in &ring.keys {
        if k.state == State::Revoked {
            if let Err(e) = store.delete_key(k) {
                errors.push(format!("{}: {e}", store.key_path(k).display()));
            }
        }
    }
    let saved = store.lock().and_then(|lock| store.save(&ring, &lock));
    if let Err(e) = saved {
        errors.push(format!("{}: {e}", store.dir().display()));
    }
    Ok((ring, errors))
}
