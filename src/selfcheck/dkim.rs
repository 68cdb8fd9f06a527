//! DKIM: each configured key published under its selector, and the published key ours.

use super::{row, txt, Row, Status};
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

pub(super) async fn check_dkim(
    resolver: &MessageAuthenticator,
    config: &Config,
    rows: &mut Vec<Row>,
) {
    let b64 = base64::engine::general_purpose::STANDARD;
    for key in &config.dkim.keys {
        let name = format!("{}._domainkey.{}", key.selector, key.domain);
        let publish = format!("publish {name}. TXT \"{}\"", key.dns_record());
        let records = match txt(resolver, &name).await {
            Ok(r) => r,
            Err(e) => {
                rows.push(row(
                    "dkim",
                    name,
                    Status::Fail,
                    format!("DNS lookup failed: {e}"),
                    "check dns.nameservers",
                ));
                continue;
            }
        };
        let Some(record) = records.first() else {
            rows.push(row("dkim", name, Status::Fail, "no key published", publish));
            continue;
        };
        let p: String = record
            .split(';')
            .filter_map(|t| t.trim().strip_prefix("p="))
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let ours = b64.decode(&key.public_key).unwrap_or_default();
        match b64.decode(&p) {
            Ok(published) if !published.is_empty() && same_key(&published, &ours) => {
                rows.push(row(
                    "dkim",
                    name,
                    Status::Ok,
                    format!("{} key published and ours", key.algorithm()),
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
