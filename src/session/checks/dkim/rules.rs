//! End of message: DKIM. Which keys sign a message, and whether signatures
//! an application already added still verify (one that fails would fail
//! DMARC at the receiver, with our IP on the report).

use crate::address::Domain;
use crate::config::{Class, Config, OnUnsigned, SignMode};
use crate::dkim::{keys_for, DkimKey};
use crate::reply;
use crate::verdict::{Backend, Verdict};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use std::sync::Arc;

/// The keys to sign with: those of the From: domain or its nearest parent,
/// if the class may use that domain for From: (its `from_domains`, else
/// `local_domains`). A local From: domain without a key is refused when
/// `on_unsigned: tempfail`. Inbound mail (a client in no class) is never
/// signed: a stranger's message claiming our domain must not leave with
/// our signature.
pub async fn signing_keys(
    config: &Config,
    rotated: &[Arc<DkimKey>],
    lists: &crate::sources::Lists<'_>,
    class: Option<&Class>,
    from: Option<&Domain>,
) -> Result<Vec<Arc<DkimKey>>, Verdict> {
    let (Some(from), Some(class)) = (from, class) else {
        return Ok(Vec::new());
    };
    if config.dkim.sign == SignMode::Off {
        return Ok(Vec::new());
    }
    let allowed = class.from_domains.as_ref().unwrap_or(&config.local_domains);
    match lists.has_domain(allowed, from).await {
        Ok(true) => {}
        Ok(false) => return Ok(Vec::new()),
        Err(e) => {
            return Err(Verdict::failed(
                Backend::Source,
                format!("DKIM: whether {from} may be signed is unknown: {e}"),
            ))
        }
    }
    let merged;
    let all: &[Arc<DkimKey>] = if rotated.is_empty() {
        &config.dkim.keys
    } else {
        merged = crate::rotation::with_hand_keys(&config.dkim.keys, rotated);
        &merged
    };
    let keys: Vec<Arc<DkimKey>> = keys_for(all, from).into_iter().cloned().collect();
    if keys.is_empty() && config.dkim.on_unsigned == OnUnsigned::Tempfail {
        return Err(Verdict::Refuse(reply::no_dkim_key(from.as_str())));
    }
    Ok(keys)
}

/// Verifies the DKIM-Signature headers already on a message (at most
/// `dkim.max_signatures`; more is refused outright): continues when there
/// is none or all verify, refuses one that fails, and is a
/// [`Verdict::TempError`] when DNS could not answer.
pub async fn verify_existing(
    resolver: &MessageAuthenticator,
    config: &Config,
    message: &[u8],
    count: usize,
) -> Verdict {
    if count == 0 {
        return Verdict::Continue;
    }
    if count > config.dkim.max_signatures {
        return Verdict::Refuse(reply::too_many_signatures(
            count,
            config.dkim.max_signatures,
        ));
    }
    let Some(parsed) = AuthenticatedMessage::parse(message) else {
        return Verdict::Continue;
    };
    let timeout = config.dns.timeout * 2;
    let outputs = match tokio::time::timeout(timeout, resolver.verify_dkim(&parsed)).await {
        Ok(o) => o,
        Err(_) => return Verdict::failed(Backend::Dns, "DKIM key lookup timed out"),
    };
    for out in &outputs {
        let domain = out.signature().map_or("?", |s| s.d.as_str()).to_string();
        match out.result() {
            DkimResult::Pass | DkimResult::None => {}
            // mail-auth reports a body hash mismatch or an expired
            // signature as neutral: none of them passes at the receiver.
            DkimResult::Neutral(e) | DkimResult::Fail(e) | DkimResult::PermError(e) => {
                return Verdict::Refuse(reply::existing_dkim_fails(&domain, &e.to_string()))
            }
            DkimResult::TempError(e) => {
                return Verdict::failed(Backend::Dns, format!("DKIM verification failed: {e}"))
            }
        }
    }
    Verdict::Continue
}

/// A signature made with one of our keys.
pub struct Signature {
    pub key: Arc<DkimKey>,
    /// The DKIM-Signature header's value.
    pub value: String,
}

impl Signature {
    /// The signature as the summary line and `explain` show it.
    pub fn shown(&self) -> String {
        format!(
            "d={} s={} a={}",
            self.key.domain,
            self.key.selector,
            self.key.algorithm()
        )
    }
}

/// Signs the message with the keys [`signing_keys`] chooses: the verdict
/// (a refusal when a local From: domain has no key and `on_unsigned:
/// tempfail`, a [`Verdict::TempError`] when a key fails to sign) and the
/// signatures made.
pub async fn sign(
    config: &Config,
    rotated: &[Arc<DkimKey>],
    lists: &crate::sources::Lists<'_>,
    class: Option<&Class>,
    from: Option<&Domain>,
    message: &[u8],
) -> (Verdict, Vec<Signature>) {
    let keys = match signing_keys(config, rotated, lists, class, from).await {
        Ok(keys) => keys,
        Err(verdict) => return (verdict, Vec::new()),
    };
    let mut signed = Vec::with_capacity(keys.len());
    for key in keys {
        match key.sign(message, &config.dkim.headers) {
            Ok(value) => signed.push(Signature { key, value }),
            Err(e) => {
                let cause = format!("DKIM signing with {key:?} failed: {e}");
                return (Verdict::failed(Backend::Signer, cause), Vec::new());
            }
        }
    }
    (Verdict::Continue, signed)
}
