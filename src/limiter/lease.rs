//! A lease in Redis naming the one gateway that does a shared job (DKIM
//! rotation's steps, the reputation watch's rounds): taken when free,
//! renewed by its holder, given up, or left to expire when the holder
//! dies, so that another gateway takes over.

use super::{LimiterError, RedisLimiter};
use redis::{AsyncCommands, Script};

const LEASE_LUA: &str = include_str!("lease.lua");

impl RedisLimiter {
    /// Takes or renews the lease `name` for `ms` milliseconds (0: gives it
    /// up, if held); true when this gateway holds it (or gave it up).
    pub async fn lease(&self, name: &str, ms: u64) -> Result<bool, LimiterError> {
        let key = self.key(format_args!("{name}"));
        let held: i64 = self
            .call(async |mut c| {
                Script::new(LEASE_LUA)
                    .key(&key)
                    .arg(self.gateway())
                    .arg(ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(held == 1)
    }

    /// Who holds the lease `name`, and for how much longer (ms).
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>, LimiterError> {
        let key = self.key(format_args!("{name}"));
        self.call(async |mut c| {
            let holder: Option<String> = c.get(&key).await?;
            let ttl: i64 = c.pttl(&key).await?;
            Ok(holder.map(|h| (h, ttl)))
        })
        .await
    }
}
