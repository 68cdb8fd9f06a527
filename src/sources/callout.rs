//! Whether an address exists, asked of an internal mail store over SMTP:
//! `EHLO`, `MAIL FROM:<>`, `RCPT TO:<address>`, then `RCPT TO:` a made-up
//! address of the same domain (a store that accepts that one accepts
//! anything: a catch-all, whose yes proves nothing), `QUIT`. Nothing is
//! ever sent. Only the configured stores are asked, in order; a store that
//! cannot answer (no connection, a 4xx, the timeout) passes the question
//! to the next.

use super::{cache::Answer, Failure, Lists};
use crate::address::Address;
use crate::config::Verify;
use lettre::transport::smtp::{client::AsyncSmtpConnection, extension::ClientId};
use std::time::Instant;

/// The answer cached for a store that accepts any address (counted as
/// `result="catch_all"` in `egress_source_lookups_total`).
pub const CATCH_ALL: &str = "catch-all";

/// What the store said of an address.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Exists {
    Yes,
    /// Refused with a 5xx: its reply.
    No(String),
    /// Accepted, but so was a made-up address: the store accepts anything.
    CatchAll,
}

/// Asks one store. `Err` when it could not answer.
pub async fn ask(
    host: &str,
    helo: &str,
    address: &Address,
    timeout: std::time::Duration,
) -> Result<Exists, String> {
    tokio::time::timeout(timeout, dialogue(host, helo, address))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

async fn dialogue(host: &str, helo: &str, address: &Address) -> Result<Exists, String> {
    let text = address.to_string();
    if text.chars().any(|c| c.is_control()) {
        return Ok(Exists::No("not a deliverable address".into()));
    }
    let client_id = ClientId::Domain(helo.to_string());
    let mut conn = AsyncSmtpConnection::connect_tokio1(host, None, &client_id, None, None)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let result = async {
        conn.command("MAIL FROM:<>\r\n")
            .await
            .map_err(|e| format!("MAIL FROM:<> refused: {e}"))?;
        match conn.command(format!("RCPT TO:<{text}>\r\n")).await {
            Ok(_) => {}
            Err(e) if e.is_permanent() => return Ok(Exists::No(e.to_string())),
            Err(e) => return Err(format!("RCPT TO:<{text}>: {e}")),
        }
        let made_up = format!("egress-verify-{:016x}@{}", rand_u64(), address.domain);
        match conn.command(format!("RCPT TO:<{made_up}>\r\n")).await {
            Ok(_) => Ok(Exists::CatchAll),
            Err(_) => Ok(Exists::Yes),
        }
    }
    .await;
    let _ = conn.quit().await;
    result
}

/// What `selfcheck` found of one mail store.
pub struct StoreProbe {
    /// What uses it: `classes[N].verify_sender` or `verify_recipients`.
    pub used_by: String,
    pub host: String,
    /// Accepted a made-up address: `Ok(true)`; refused it: `Ok(false)`.
    pub catch_all: Result<bool, String>,
}

/// Asks every configured mail store about a made-up address of `domain`:
/// a store that accepts it is a catch-all, against which verification
/// proves nothing.
pub async fn probe_stores(config: &crate::config::Config, domain: &str) -> Vec<StoreProbe> {
    let mut uses: Vec<(String, &crate::config::Verify)> = config
        .classes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            c.verify_sender
                .as_ref()
                .map(|v| (format!("classes[{i}].verify_sender"), v))
        })
        .collect();
    if let Some(v) = &config.verify_recipients {
        uses.push(("verify_recipients".into(), v));
    }
    let helo = config
        .hostname
        .as_ref()
        .map_or_else(|| "localhost".into(), |h| h.to_string());
    let mut out = Vec::new();
    for (used_by, verify) in uses {
        let crate::config::VerifyBy::Callout(c) = &verify.by else {
            continue;
        };
        let helo = if c.helo.is_empty() {
            helo.clone()
        } else {
            c.helo.clone()
        };
        for host in &c.hosts {
            let made_up = format!("egress-selfcheck-{:016x}@{domain}", rand_u64());
            let catch_all = match Address::parse(&made_up) {
                Ok(a) => ask(host, &helo, &a, c.timeout)
                    .await
                    .map(|e| !matches!(e, Exists::No(_))),
                Err(e) => Err(e.to_string()),
            };
            out.push(StoreProbe {
                used_by: used_by.clone(),
                host: host.clone(),
                catch_all,
            });
        }
    }
    out
}

/// A made-up local part no store holds.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

impl Lists<'_> {
    /// Whether an address exists, as `verify` says to find out: in a
    /// source, or by a callout (answers cached under `verify.cache`).
    pub async fn exists(
        &self,
        verify: &Verify,
        address: &Address,
        helo: &str,
    ) -> Result<Exists, Failure> {
        let settings = match &verify.by {
            crate::config::VerifyBy::Source(name) => {
                let a = self.lookup(name, &address.to_string()).await?;
                return Ok(match a {
                    Answer::Found(_) => Exists::Yes,
                    Answer::Missing => Exists::No(format!("not in source {name}")),
                });
            }
            crate::config::VerifyBy::Callout(c) => c,
        };
        // Stores compare local parts without regard to case.
        let key = address.limit_key();
        let cache = self.sources.callout_cache();
        if let Some(hit) = cache.get(&key, self.redis).await {
            let answer = Ok(hit.clone());
            self.record("callout", &key, &answer, true);
            return Ok(match hit {
                Answer::Missing => Exists::No("not found (cached)".into()),
                Answer::Found(v) if v.first().is_some_and(|s| s == "catch-all") => Exists::CatchAll,
                Answer::Found(_) => Exists::Yes,
            });
        }
        if !self.sources.callout_cap.take() {
            self.metrics.callout("capped");
            let failure = Failure(
                "callout not made: this gateway's callouts are over verify_callouts.rate".into(),
            );
            self.record("callout", &key, &Err(failure.clone()), false);
            return Err(failure);
        }
        self.metrics.callout("made");
        let started = Instant::now();
        let mut errors = Vec::new();
        let mut said = None;
        for host in &settings.hosts {
            match ask(host, helo, address, settings.timeout).await {
                Ok(e) => {
                    if e == Exists::CatchAll {
                        self.sources.note_catch_all(host);
                    }
                    said = Some(e);
                    break;
                }
                Err(e) => errors.push(format!("{host}: {e}")),
            }
        }
        self.metrics.source_time("callout", started.elapsed());
        let Some(exists) = said else {
            let failure = Failure(format!("callout: {}", errors.join("; ")));
            self.record("callout", &key, &Err(failure.clone()), false);
            return Err(failure);
        };
        let (answer, ttl) = match &exists {
            Exists::Yes => (Answer::Found(Vec::new().into()), verify.cache.ttl),
            Exists::CatchAll => (
                Answer::Found(vec![CATCH_ALL.to_string()].into()),
                verify.cache.ttl,
            ),
            Exists::No(_) => (Answer::Missing, verify.cache.negative_ttl),
        };
        cache.put(&key, answer.clone(), ttl, self.redis).await;
        self.record("callout", &key, &Ok(answer), false);
        Ok(exists)
    }
}
