//! The Redis backend: the same GCRA as the local one, run atomically in
//! Redis by a Lua script (one round trip for a whole batch, all or
//! nothing), so that every gateway using the same Redis shares one budget.
//! Open connections are counted in a sorted set per client, one member per
//! connection, each with an expiry that its gateway renews: when a gateway
//! dies, its connections stop counting after `redis.lease`.
//!
//! Times are Redis's own clock (`TIME`), in microseconds, so gateways with
//! skewed clocks still agree; Lua numbers are doubles, exact to 2^53 µs.
//!
//! Redis is one address (`url`), or the master that Sentinel names: asked
//! of every sentinel at once whenever a connection is made, which is after
//! every failure, so a promoted replica is found without a restart.

use super::{Check, LimiterError, Outcome};
use crate::config::RedisSettings;
use redis::{aio::ConnectionManager, AsyncCommands, Script};
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// The script in `gcra.lua`: the GCRA of `gcra_fn.lua` over its keys and
/// arguments (described there).
const GCRA_LUA: &str = concat!(include_str!("gcra_fn.lua"), include_str!("gcra.lua"));

/// Where Redis is: the configured URL, or the master that Sentinel names
/// (asked again each time a connection is made, so that after a failover
/// the promoted replica is found).
enum Target {
    Direct(redis::Client),
    Sentinel {
        /// One client per sentinel, all asked at once: one that hangs
        /// (its port open, nothing answering) or whose host is gone holds
        /// up no other.
        sentinels: Vec<tokio::sync::Mutex<redis::sentinel::SentinelClient>>,
        master_name: String,
        /// The master last named, to log when it changes.
        master: Mutex<String>,
    },
}

impl Target {
    /// For the configured URL or sentinels: the ACL user and the password
    /// from its file, and for TLS the configured CA (else the system's).
    fn new(settings: &RedisSettings) -> redis::RedisResult<Self> {
        use redis::IntoConnectionInfo as _;
        let certificates = || {
            settings.ca_pem.as_ref().map(|pem| redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            })
        };
        if let Some(sentinel) = &settings.sentinel {
            use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
            let mut clients = Vec::new();
            for node in &sentinel.nodes {
                let addr = node.as_str().into_connection_info()?.addr().clone();
                let b = SentinelClientBuilder::new(
                    [addr],
                    &sentinel.master_name,
                    SentinelServerType::Master,
                )?;
                clients.push(tokio::sync::Mutex::new(
                    Self::sentinel_auth(b, settings, sentinel, certificates())?.build()?,
                ));
            }
            return Ok(Target::Sentinel {
                sentinels: clients,
                master_name: sentinel.master_name.clone(),
                master: Mutex::new(String::new()),
            });
        }
        let info = settings.url.as_str().into_connection_info()?;
        let mut auth = info.redis_settings().clone();
        if let Some(user) = &settings.username {
            auth = auth.set_username(user);
        }
        if let Some(password) = &settings.password {
            auth = auth.set_password(&password.0);
        }
        let info = info.set_redis_settings(auth);
        let client = match certificates() {
            Some(c) => redis::Client::build_with_tls(info, c)?,
            None => redis::Client::open(info)?,
        };
        Ok(Target::Direct(client))
    }

    /// The users, passwords and TLS of one sentinel's client: the
    /// master's from `redis`, the sentinels' own from `sentinel`.
    fn sentinel_auth(
        mut b: redis::sentinel::SentinelClientBuilder,
        settings: &RedisSettings,
        sentinel: &crate::config::SentinelSettings,
        certificates: Option<redis::TlsCertificates>,
    ) -> redis::RedisResult<redis::sentinel::SentinelClientBuilder> {
        if let Some(user) = &settings.username {
            b = b.set_client_to_redis_username(user);
        }
        if let Some(password) = &settings.password {
            b = b.set_client_to_redis_password(&password.0);
        }
        if let Some(user) = &sentinel.username {
            b = b.set_client_to_sentinel_username(user);
        }
        if let Some(password) = &sentinel.password {
            b = b.set_client_to_sentinel_password(&password.0);
        }
        if sentinel.tls() {
            b = b
                .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
            if let Some(c) = certificates {
                b = b
                    .set_client_to_redis_certificates(c.clone())
                    .set_client_to_sentinel_certificates(c);
            }
        }
        Ok(b)
    }

    /// A client for the master: for Sentinel, the one the first sentinel
    /// to answer names, after the master has confirmed its role.
    async fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Target::Direct(c) => Ok(c.clone()),
            Target::Sentinel {
                sentinels,
                master_name,
                master,
            } => {
                // All at once; the first master found wins, and the other
                // lookups are dropped (the crate caches only connections
                // it has verified, so dropping one midway is safe).
                let lookups = sentinels
                    .iter()
                    .map(|s| Box::pin(async move { s.lock().await.async_get_client().await }));
                let (client, _) = futures_util::future::select_ok(lookups).await?;
                let now = client.get_connection_info().addr().to_string();
                let mut last = master.lock().unwrap_or_else(|p| p.into_inner());
                if *last != now {
                    info!(master = %now, "redis master for sentinel name {master_name:?} is {now}");
                    *last = now;
                }
                Ok(client)
            }
        }
    }

    /// The connection in `slot`, or a new one kept there.
    async fn kept(
        &self,
        slot: &mut Option<ConnectionManager>,
        settings: &RedisSettings,
    ) -> Result<ConnectionManager, LimiterError> {
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.connect(settings).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// A connection to the master, made within the timeout.
    async fn connect(&self, settings: &RedisSettings) -> Result<ConnectionManager, LimiterError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1);
        // Boxed: made only on (re)connection, and the sentinel lookup is
        // a deep future that would otherwise be part of every caller's.
        let connect: std::pin::Pin<
            Box<
                dyn std::future::Future<Output = redis::RedisResult<ConnectionManager>> + Send + '_,
            >,
        > = Box::pin(async {
            let client = self.client().await?;
            ConnectionManager::new_with_config(client, config).await
        });
        tokio::time::timeout(settings.timeout, connect)
            .await
            .map_err(|_| LimiterError::Timeout(settings.timeout))?
            .map_err(|e| LimiterError::Redis(e.to_string()))
    }
}

/// The script in `connect.lua`, with the GCRA of `gcra_fn.lua`.
const CONNECT_LUA: &str = concat!(include_str!("gcra_fn.lua"), include_str!("connect.lua"));

/// The script in `renew.lua` (its keys and arguments are described there).
const RENEW_LUA: &str = include_str!("renew.lua");

/// After a failure, Redis is not asked again for this long: every check in
/// between goes straight to `on_failure`, so a dead Redis costs the MTA one
/// timeout per interval, not one per message.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

pub struct RedisLimiter {
    target: Arc<Target>,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    settings: RedisSettings,
    gcra: Script,
    connect: Script,
    renew: Script,
    /// Identifies this gateway's connection members.
    gateway: String,
    next_member: AtomicU64,
    leases: OnceLock<mpsc::UnboundedSender<LeaseEvent>>,
    down_until: Mutex<Option<Instant>>,
    healthy: AtomicBool,
    /// Calls that failed (timeout, refused, error reply).
    pub failures: AtomicU64,
}

enum LeaseEvent {
    Taken { key: String, member: String },
    Released { key: String, member: String },
}

/// An open connection counted in Redis; dropping it gives the place back.
pub struct RedisLease {
    tx: mpsc::UnboundedSender<LeaseEvent>,
    key: String,
    member: String,
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        let _ = self.tx.send(LeaseEvent::Released {
            key: std::mem::take(&mut self.key),
            member: std::mem::take(&mut self.member),
        });
    }
}

impl RedisLimiter {
    pub fn new(settings: &RedisSettings) -> Result<Self, LimiterError> {
        let target = Target::new(settings).map_err(|e| LimiterError::Redis(e.to_string()))?;
        let gateway = format!(
            "{}:{}:{:x}",
            std::env::var("HOSTNAME").unwrap_or_default(),
            std::process::id(),
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8)
        );
        Ok(Self {
            target: Arc::new(target),
            conn: tokio::sync::Mutex::new(None),
            settings: settings.clone(),
            gcra: Script::new(GCRA_LUA),
            connect: Script::new(CONNECT_LUA),
            renew: Script::new(RENEW_LUA),
            gateway,
            next_member: AtomicU64::new(1),
            leases: OnceLock::new(),
            down_until: Mutex::new(None),
            healthy: AtomicBool::new(true),
            failures: AtomicU64::new(0),
        })
    }

    pub(crate) fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}{}", self.settings.key_prefix, parts)
    }

    fn rate_key(&self, c: &Check) -> String {
        self.key(format_args!(
            "{}:{}/{}:{}",
            c.name,
            c.rate.count,
            c.rate.period.as_secs(),
            c.key
        ))
    }

    /// True while Redis is left alone after a failure.
    fn resting(&self) -> bool {
        let until = *self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    async fn connection(&self) -> Result<ConnectionManager, LimiterError> {
        let mut slot = self.conn.lock().await;
        self.target.kept(&mut slot, &self.settings).await
    }

    /// Runs one Redis call under the timeout, noting success or failure.
    /// For `RETRY_INTERVAL` after a failure, Redis is not asked at all.
    pub(crate) async fn call<T>(
        &self,
        f: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, LimiterError> {
        if self.resting() {
            return Err(LimiterError::Redis("unavailable, retrying later".into()));
        }
        let result = match self.connection().await {
            Ok(conn) => match tokio::time::timeout(self.settings.timeout, f(conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(LimiterError::Redis(e.to_string())),
                Err(_) => Err(LimiterError::Timeout(self.settings.timeout)),
            },
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    info!("redis is reachable again: rate limits shared across gateways again");
                }
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                // Start afresh next time: a manager whose reconnection
                // failed while Redis was down does not recover by itself.
                *self.conn.lock().await = None;
                *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Instant::now() + RETRY_INTERVAL);
                if self.healthy.swap(false, Ordering::Relaxed) {
                    warn!(
                        on_failure = ?self.settings.on_failure,
                        "redis failed, rate limits follow on_failure until it answers: {e}"
                    );
                }
            }
        }
        result
    }

    pub async fn check(&self, checks: &[Check]) -> Result<(Outcome, Vec<u16>), LimiterError> {
        if checks.is_empty() {
            return Ok((Outcome::Allowed, Vec::new()));
        }
        let mut invocation = self.gcra.prepare_invoke();
        for c in checks {
            let emission_us = (c.rate.emission_ns() / 1000).max(1);
            invocation
                .key(self.rate_key(c))
                .arg(emission_us)
                .arg(c.rate.burst())
                .arg(c.n)
                .arg(c.member.as_deref().unwrap_or(""));
        }
        let (index, wait_us): (usize, String) = self
            .call(async |mut conn| invocation.invoke_async(&mut conn).await)
            .await?;
        if index == 0 {
            let fill = wait_us
                .split(',')
                .map(|f| f.parse::<u16>().unwrap_or(0).min(1000))
                .collect();
            return Ok((Outcome::Allowed, fill));
        }
        let wait_us: u64 = wait_us.parse().unwrap_or(u64::MAX / 1000);
        Ok((
            Outcome::Denied {
                index: index - 1,
                retry_after: Duration::from_micros(wait_us),
            },
            Vec::new(),
        ))
    }

    /// A new connection from `ip` in one round trip: a place among at most
    /// `max` open connections (when capped), then the connection rate
    /// `checks`, all or nothing. `None`: the cap is reached; else the
    /// rates' outcome, and the place when capped and allowed.
    pub async fn connect(
        &self,
        ip: IpAddr,
        max: Option<u32>,
        checks: &[Check],
    ) -> Result<Option<(Outcome, Option<RedisLease>)>, LimiterError> {
        let tx = self.lease_manager().clone();
        let key = self.key(format_args!("concurrent_per_client:{ip}"));
        let member = format!(
            "{}:{}",
            self.gateway,
            self.next_member.fetch_add(1, Ordering::Relaxed)
        );
        let mut invocation = self.connect.prepare_invoke();
        invocation
            .key(&key)
            .arg(max.unwrap_or(0))
            .arg(&member)
            .arg(self.settings.lease.as_micros() as u64);
        for c in checks {
            invocation
                .key(self.rate_key(c))
                .arg((c.rate.emission_ns() / 1000).max(1))
                .arg(c.rate.burst())
                .arg(c.n)
                .arg(c.member.as_deref().unwrap_or(""));
        }
        let (index, wait_us): (i64, String) = self
            .call(async |mut conn| invocation.invoke_async(&mut conn).await)
            .await?;
        match usize::try_from(index) {
            Err(_) => Ok(None),
            Ok(0) => {
                let lease = max.map(|_| {
                    let _ = tx.send(LeaseEvent::Taken {
                        key: key.clone(),
                        member: member.clone(),
                    });
                    RedisLease { tx, key, member }
                });
                Ok(Some((Outcome::Allowed, lease)))
            }
            Ok(index) => Ok(Some((
                Outcome::Denied {
                    index: index - 1,
                    retry_after: Duration::from_micros(wait_us.parse().unwrap_or(u64::MAX / 1000)),
                },
                None,
            ))),
        }
    }

    /// Open connections counted for `ip` across all gateways.
    pub async fn open_connections(&self, ip: IpAddr) -> Result<u64, LimiterError> {
        let key = self.key(format_args!("concurrent_per_client:{ip}"));
        self.call(async |mut conn| {
            let t: (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
            let now = t.0 * 1_000_000 + t.1;
            conn.zcount(&key, now, "+inf").await
        })
        .await
    }

    /// Forgets a key's counters under the given rate-limit checks.
    pub async fn reset(&self, checks: &[Check]) -> Result<(), LimiterError> {
        let keys: Vec<String> = checks.iter().map(|c| self.rate_key(c)).collect();
        self.call(async |mut conn| conn.del::<_, ()>(&keys).await)
            .await
    }

    /// The stored TAT (µs, Redis clock) and Redis's now, for `limits show`.
    pub async fn tat(&self, check: &Check) -> Result<(Option<u64>, u64), LimiterError> {
        let key = self.rate_key(check);
        self.call(async |mut conn| {
            let t: (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
            let tat: Option<String> = conn.get(&key).await?;
            Ok((tat.and_then(|v| v.parse().ok()), t.0 * 1_000_000 + t.1))
        })
        .await
    }

    /// The task that renews this gateway's connection leases and removes
    /// the ones given back; started with the first lease.
    fn lease_manager(&self) -> &mpsc::UnboundedSender<LeaseEvent> {
        self.leases.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let target = self.target.clone();
            let renew = self.renew.clone();
            let settings = self.settings.clone();
            tokio::spawn(manage_leases(target, renew, settings, rx));
            tx
        })
    }
}

async fn manage_leases(
    target: Arc<Target>,
    renew: Script,
    settings: RedisSettings,
    mut rx: mpsc::UnboundedReceiver<LeaseEvent>,
) {
    let mut live: HashMap<String, String> = HashMap::new();
    let mut conn: Option<ConnectionManager> = None;
    let mut tick = tokio::time::interval(settings.lease / 3);
    let lease_us = settings.lease.as_micros() as u64;
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                None => return,
                Some(LeaseEvent::Taken { key, member }) => { live.insert(member, key); }
                Some(LeaseEvent::Released { key, member }) => {
                    live.remove(&member);
                    if let Ok(mut c) = target.kept(&mut conn, &settings).await {
                        let r = tokio::time::timeout(settings.timeout, c.zrem::<_, _, ()>(&key, &member)).await;
                        if !matches!(r, Ok(Ok(()))) {
                            // It expires by itself after the lease.
                            tracing::debug!("could not release {member} in redis");
                            conn = None;
                        }
                    }
                }
            },
            _ = tick.tick() => {
                if live.is_empty() { continue; }
                if let Ok(mut c) = target.kept(&mut conn, &settings).await {
                    let mut inv = renew.prepare_invoke();
                    inv.arg(lease_us);
                    for (member, key) in &live {
                        inv.key(key);
                        inv.arg(member);
                    }
                    let r = tokio::time::timeout(settings.timeout, inv.invoke_async::<i64>(&mut c)).await;
                    if !matches!(r, Ok(Ok(_))) {
                        tracing::debug!("could not renew connection leases in redis");
                        conn = None;
                    }
                }
            }
        }
    }
}
