//! Where Redis is, and connections to it: the configured URL, or the
//! master that Sentinel names, asked again whenever a connection is made.

use super::LimiterError;
use crate::config::RedisSettings;
use redis::aio::ConnectionManager;
use std::sync::Mutex;
use tracing::info;

/// Where Redis is: the configured URL, or the master that Sentinel names
/// (asked again each time a connection is made, so that after a failover
/// the promoted replica is found).
pub(super) enum Target {
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
    pub(super) fn new(settings: &RedisSettings) -> redis::RedisResult<Self> {
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
    pub(super) async fn kept(
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
