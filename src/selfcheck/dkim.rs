//! DKIM: each configured key published under its selector, and the published key ours.

use super::{row, txt, unanswered, Row, Status};
use crate::config::Config;
use base64::Engine;
use mail_auth::MessageAuthenticator;
use rsa::{pkcs1::DecodeRsaPublicKey, pkcs8::DecodePublicKey};

/// The key material of a `p=` value: SubjectPublicKeyInfo or bare PKCS#1
/// for RSA, raw bytes for Ed25519; compared as RSA (n, e) when both parse.
fn same_key(published: &[u8], ours: &[u8]) -> bool {
    if published == ours {
        return true;
    }
    let rsa = |b: &[u8]| {
        rsa::RsaPublicKey::from_public_key_der(b)
            .or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(b))
            .ok()
    };
    matches!((rsa(published), rsa(ours)), (Some(a), Some(b)) if a == b)
}

/// The `p=` value of a DKIM record, whitespace removed.
fn p_value(record: &str) -> String {
    record
        .split(';')
        .filter_map(|t| t.trim().strip_prefix("p="))
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// Each key of `dkim.keys`, and each rotated key that signs or was just
/// replaced (`dkim.rotation`), published and ours.
pub(super) async fn check_dkim(
    resolver: &MessageAuthenticator,
    config: &Config,
    rows: &mut Vec<Row>,
) {
    let b64 = base64::engine::general_purpose::STANDARD;
    // (name, our p= value, algorithm, the record to publish)
    let mut keys: Vec<(String, String, String, String)> = config
        .dkim
        .keys
        .iter()
        .map(|k| {
            (
                format!("{}._domainkey.{}", k.selector, k.domain),
                k.public_key.clone(),
                k.algorithm().to_string(),
                k.dns_record(),
            )
        })
        .collect();
    if let Some(settings) = &config.dkim.rotation {
        use crate::rotation::ring::State;
        if let Ok(ring) = crate::rotation::store::Store::at(&settings.key_dir).load() {
            for k in ring
                .keys
                .iter()
                .filter(|k| matches!(k.state, State::Active | State::Retiring))
            {
                keys.push((
                    k.name(),
                    p_value(&k.record),
                    k.algorithm.as_str().to_string(),
                    k.record.clone(),
                ));
            }
        }
    }
    for (name, ours, algorithm, record) in keys {
        let publish = format!("publish {name}. TXT \"{record}\"");
        let records = match txt(resolver, &name).await {
            Ok(r) => r,
            Err(e) => {
                rows.push(unanswered("dkim", name, &e));
                continue;
            }
        };
        let Some(record) = records.first() else {
            rows.push(row("dkim", name, Status::Fail, "no key published", publish));
            continue;
        };
        let p = p_value(record);
        let ours = b64.decode(&ours).unwrap_or_default();
        match b64.decode(&p) {
            Ok(published) if !published.is_empty() && same_key(&published, &ours) => {
                rows.push(row(
                    "dkim",
                    name,
                    Status::Ok,
                    format!("{algorithm} key published and ours"),
                    "",
                ))
            }
            Ok(published) if published.is_empty() => rows.push(row(
                "dkim",
                name,
                Status::Fail,
                "key revoked (empty p=)",
                publish,
            )),
            _ => rows.push(row(
                "dkim",
                name,
                Status::Fail,
                "published key is not our private key's",
                publish,
            )),
        }
    }
}

/// `dkim.rotation`: a key that has waited a day for its record, an active
/// key older than `every` (its replacement not served), a key that should
/// sign and has no private key.
pub(super) fn check_rotation(config: &Config, rows: &mut Vec<Row>) {
    use crate::rotation::ring::{State, LATE_AFTER};
    let Some(settings) = &config.dkim.rotation else {
        return;
    };
    let store = crate::rotation::store::Store::at(&settings.key_dir);
    let ring = match store.load() {
        Ok(r) => r,
        Err(e) => {
            rows.push(row(
                "dkim rotation",
                settings.key_dir.display().to_string(),
                Status::Fail,
                format!("the keys' state cannot be read: {e}"),
                "restore it from a backup, or move it aside to start afresh",
            ));
            return;
        }
    };
    let now = crate::incidents::now_ms() / 1000;
    for k in &ring.keys {
        let age = now.saturating_sub(k.created);
        let publish = format!(
            "publish {}. TXT {}",
            k.name(),
            crate::dkim::txt_strings(&k.record)
        );
        match k.state {
            State::Pending if age >= LATE_AFTER => rows.push(row(
                "dkim rotation",
                k.name(),
                Status::Warn,
                format!(
                    "pending for {} days: {}",
                    age / 86_400,
                    k.waiting.as_deref().unwrap_or("not served")
                ),
                publish,
            )),
            State::Active if age > settings.every.as_secs() + LATE_AFTER => rows.push(row(
                "dkim rotation",
                k.name(),
                Status::Warn,
                format!(
                    "active for {} days, past dkim.rotation.every: its replacement is not served",
                    age / 86_400
                ),
                "egress-milter dkim status",
            )),
            _ => {}
        }
    }
    let (_, errors) = store.signing_keys(&ring, now);
    for e in errors {
        rows.push(row(
            "dkim rotation",
            settings.key_dir.display().to_string(),
            Status::Fail,
            e,
            "restore the private key from a backup, or egress-milter dkim rotate --now",
        ));
    }
}
