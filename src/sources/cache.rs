//! Answers kept for a while: found for `ttl`, not found for `negative_ttl`,
//! at most `max_entries`. In this process (moka), or in Redis when the rate
//! limits use Redis, so that every gateway shares one cache and one flush.
//!
//! The cache only saves work: when Redis fails, the lookup goes to the
//! source itself.

use crate::limiter::redis::RedisLimiter;
use moka::sync::Cache as Moka;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// A cached answer: the values found (none for a list entry), or nothing.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Answer {
    Found(Arc<[String]>),
    Missing,
}

impl Answer {
    fn encode(&self) -> String {
        match self {
            Answer::Missing => "-".into(),
            Answer::Found(v) => format!("+{}", v.join("\n")),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        if s == "-" {
            return Some(Answer::Missing);
        }
        let rest = s.strip_prefix('+')?;
        let values: Vec<String> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('\n').map(str::to_string).collect()
        };
        Some(Answer::Found(values.into()))
    }
}

#[derive(Clone)]
struct Entry {
    answer: Answer,
    expires: Instant,
}

struct ByEntry;

impl moka::Expiry<String, Entry> for ByEntry {
    fn expire_after_create(&self, _: &String, e: &Entry, now: Instant) -> Option<Duration> {
        Some(e.expires.saturating_duration_since(now))
    }
}

/// One cache (of a source, or of the callouts).
pub struct Cache {
    /// The name in Redis keys and in `cache show`.
    scope: String,
    local: Moka<String, Entry>,
}

/// An answer as `cache show` prints it.
pub struct Shown {
    pub answer: Answer,
    pub remaining: Duration,
}

impl Cache {
    pub fn new(scope: &str, max_entries: u64) -> Self {
        Self {
            scope: scope.to_string(),
            local: Moka::builder()
                .max_capacity(max_entries)
                .expire_after(ByEntry)
                .build(),
        }
    }

    fn redis_key(&self, redis: &RedisLimiter, key: &str) -> String {
        redis.key(format_args!("cache:{}:{key}", self.scope))
    }

    pub async fn get(&self, key: &str, redis: Option<&RedisLimiter>) -> Option<Answer> {
        match redis {
            None => self
                .local
                .get(key)
                .filter(|e| e.expires > Instant::now())
                .map(|e| e.answer),
            Some(r) => {
                let k = self.redis_key(r, key);
                let got: Option<String> = r
                    .call(async |mut c| redis::cmd("GET").arg(&k).query_async(&mut c).await)
                    .await
                    .ok()
                    .flatten();
                got.as_deref().and_then(Answer::decode)
            }
        }
    }

    pub async fn put(
        &self,
        key: &str,
        answer: Answer,
        ttl: Duration,
        redis: Option<&RedisLimiter>,
    ) {
        match redis {
            None => self.local.insert(
                key.to_string(),
                Entry {
                    answer,
                    expires: Instant::now() + ttl,
                },
            ),
            Some(r) => {
                let k = self.redis_key(r, key);
                let v = answer.encode();
                let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                let _: Result<(), _> = r
                    .call(async |mut c| {
                        redis::cmd("SET")
                            .arg(&k)
                            .arg(&v)
                            .arg("PX")
                            .arg(ms)
                            .query_async(&mut c)
                            .await
                    })
                    .await;
            }
        }
    }

    pub async fn show(
        &self,
        key: &str,
        redis: Option<&RedisLimiter>,
    ) -> Result<Option<Shown>, String> {
        match redis {
            None => Ok(self.local.get(key).and_then(|e| {
                let remaining = e.expires.checked_duration_since(Instant::now())?;
                Some(Shown {
                    answer: e.answer,
                    remaining,
                })
            })),
            Some(r) => {
                let k = self.redis_key(r, key);
                let (v, ttl): (Option<String>, i64) = r
                    .call(async |mut c| {
                        redis::pipe()
                            .cmd("GET")
                            .arg(&k)
                            .cmd("PTTL")
                            .arg(&k)
                            .query_async(&mut c)
                            .await
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(v.as_deref().and_then(Answer::decode).map(|answer| Shown {
                    answer,
                    remaining: Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
                }))
            }
        }
    }

    /// Forgets one key, or every key; returns how many went.
    pub async fn flush(
        &self,
        key: Option<&str>,
        redis: Option<&RedisLimiter>,
    ) -> Result<u64, String> {
        match (redis, key) {
            (None, Some(k)) => Ok(u64::from(self.local.remove(k).is_some())),
            (None, None) => {
                let n = self.local.iter().count() as u64;
                self.local.invalidate_all();
                Ok(n)
            }
            (Some(r), Some(k)) => {
                let k = self.redis_key(r, k);
                r.call(async |mut c| redis::cmd("DEL").arg(&k).query_async(&mut c).await)
                    .await
                    .map_err(|e| e.to_string())
            }
            (Some(r), None) => {
                let pattern = self.redis_key(r, "*");
                let mut deleted = 0u64;
                let mut cursor = 0u64;
                // Bounded: a cache of max_entries keys is scanned in
                // max_entries / 1000 rounds at most, with room to spare.
                for _ in 0..100_000 {
                    let (next, keys): (u64, Vec<String>) = r
                        .call(async |mut c| {
                            redis::cmd("SCAN")
                                .arg(cursor)
                                .arg("MATCH")
                                .arg(&pattern)
                                .arg("COUNT")
                                .arg(1000)
                                .query_async(&mut c)
                                .await
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    if !keys.is_empty() {
                        let n: u64 = r
                            .call(async |mut c| {
                                redis::cmd("DEL").arg(&keys).query_async(&mut c).await
                            })
                            .await
                            .map_err(|e| e.to_string())?;
                        deleted += n;
                    }
                    cursor = next;
                    if cursor == 0 {
                        break;
                    }
                }
                Ok(deleted)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip() {
        for a in [
            Answer::Missing,
            Answer::Found(Vec::new().into()),
            Answer::Found(vec!["a@example.com".to_string(), "b@example.com".to_string()].into()),
        ] {
            assert_eq!(Answer::decode(&a.encode()), Some(a));
        }
        assert_eq!(Answer::decode("garbage"), None);
    }

    #[test]
    fn entries_expire_by_their_own_ttl() {
        let c = Cache::new("t", 10);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            c.put("a", Answer::Missing, Duration::from_millis(30), None)
                .await;
            c.put(
                "b",
                Answer::Found(Vec::new().into()),
                Duration::from_secs(60),
                None,
            )
            .await;
            assert_eq!(c.get("a", None).await, Some(Answer::Missing));
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert_eq!(c.get("a", None).await, None);
            assert!(c.get("b", None).await.is_some());
            assert_eq!(c.flush(Some("b"), None).await, Ok(1));
            assert_eq!(c.get("b", None).await, None);
        });
    }
}
