//! `dkim.rotation`: DKIM keys that the daemon makes, publishes (or has
//! published) and replaces by itself, one RSA-2048 and one Ed25519 key per
//! listed domain, each switched to only once DNS serves its record.

use super::raw::{Spanned, Text};
use super::{Validator, NONZERO};
use crate::address::Domain;
use serde::Deserialize;
use std::{net::SocketAddr, path::PathBuf, time::Duration};

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRotation {
    /// (required) The signing domains whose keys rotate: each gets an RSA-2048 and an Ed25519
    /// key, on their own schedules. Keys in `dkim.keys` for these domains sign only until the
    /// first rotated key of the same algorithm is active.
    pub domains: Vec<Text>,
    /// The age at which a key is replaced (default `180d`: M3AAWG's six months).
    #[serde(default)]
    pub every: Option<Text>,
    /// The selector of a new key: `{algorithm}` is `rsa` or `ed25519`, `{date}` the day it is
    /// made, `YYYYMMDD` (default `{algorithm}{date}`). A second key of a day gets `-2`, `-3`...
    #[serde(default)]
    pub selector: Option<Text>,
    /// Where the private keys (mode 0600) and the state of every key are kept (default
    /// `/var/lib/egress-milter/dkim`).
    #[serde(default)]
    pub key_dir: Option<Text>,
    /// How records get into DNS: `manual` (default: `egress-milter dkim records` prints them,
    /// the keys wait until they are served) or `rfc2136` (dynamic updates, see `rfc2136`).
    #[serde(default)]
    pub publish: Option<Publish>,
    /// With `publish: rfc2136`: the primary server, the zone and the TSIG key.
    #[serde(default)]
    pub rfc2136: Option<Spanned<RawRfc2136>>,
    /// How long a replaced key stays published, no longer signing, so that mail in flight still
    /// verifies (default `7d`). Then its record becomes `p=` (revoked) and its private key is
    /// deleted (or revealed).
    #[serde(default)]
    pub retire_after: Option<Text>,
    /// How long a revoked key's empty record (`p=`) stays published before it is removed
    /// (default `30d`).
    #[serde(default)]
    pub revoke_after: Option<Text>,
    /// How often pending keys are looked up in DNS and the schedule is stepped (default `10m`).
    #[serde(default)]
    pub check_every: Option<Text>,
    /// The port the zone's authoritative servers are asked on (default 53; another only in a
    /// test lab).
    #[serde(default)]
    pub dns_port: Option<u16>,
    /// With `rate_limits.backend: redis` (required then): a file holding 32 random bytes in
    /// base64 (`openssl rand -base64 32`), the same on every gateway. The keys' state lives in
    /// Redis, and the private keys are kept there encrypted with it (AES-256-GCM), so every
    /// gateway signs with the same keys without a shared disk and Redis alone never holds a
    /// usable private key.
    #[serde(default)]
    pub secret_file: Option<Text>,
    /// Deniability (opt-in): a revoked key's private key is written to `dir` as
    /// `SELECTOR._domainkey.DOMAIN.pem` for a web server to publish under `url`, and its
    /// record notes where (`n=`), so that old signatures no longer prove who wrote a message.
    #[serde(default)]
    pub reveal: Option<Spanned<RawReveal>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawReveal {
    /// (required) The directory the revealed private keys are written to (mode 0644 files).
    pub dir: Text,
    /// (required) The URL that directory is published under, ending in `/`.
    pub url: Text,
}

/// Where revoked private keys are revealed.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Reveal {
    pub dir: PathBuf,
    pub url: String,
}

/// The key that seals private keys kept in Redis (`secret_file`).
#[derive(Clone, Eq, PartialEq)]
pub struct SealKey(pub [u8; 32]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Publish {
    /// The operator publishes the records `egress-milter dkim records` prints.
    #[default]
    Manual,
    /// Dynamic updates (RFC 2136), signed with TSIG, to the zone's primary.
    Rfc2136,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRfc2136 {
    /// (required) The primary server, `IP` or `IP:PORT`.
    pub server: Text,
    /// (required) The zone updated.
    pub zone: Text,
    /// (required) The TSIG key, in BIND's `key "NAME" { algorithm ...; secret "..."; };` form
    /// (as `tsig-keygen` writes it).
    pub tsig_key_file: Text,
}

/// A TSIG key, as read from `tsig_key_file`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct TsigKey {
    pub name: String,
    pub algorithm: String,
    pub secret: Vec<u8>,
}

#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Rfc2136Settings {
    pub server: SocketAddr,
    pub zone: Domain,
    pub key: TsigKey,
}

#[derive(Clone, Debug, Eq, PartialEq)]
pub struct RotationSettings {
    pub domains: Vec<Domain>,
    pub every: Duration,
    pub selector: String,
    pub key_dir: PathBuf,
    pub publish: Publish,
    pub rfc2136: Option<Rfc2136Settings>,
    pub retire_after: Duration,
    pub revoke_after: Duration,
    pub check_every: Duration,
    pub dns_port: u16,
    /// The keys' state is in Redis (`rate_limits.backend: redis`), shared
    /// by every gateway; one drives it at a time.
    pub shared: bool,
    /// With `shared`: what seals the private keys kept in Redis.
    pub seal: Option<SealKey>,
    /// How far ahead a key made active starts signing, so that every
    /// gateway has read the moment before it comes: twice `check_every`
    /// when shared, else none.
    pub switch_delay: Duration,
    pub reveal: Option<Reveal>,
}

const DAY: u64 = 86_400;

impl Default for RotationSettings {
    fn default() -> Self {
        Self {
            domains: Vec::new(),
            every: Duration::from_secs(180 * DAY),
            selector: "{algorithm}{date}".into(),
            key_dir: PathBuf::from("/var/lib/egress-milter/dkim"),
            publish: Publish::Manual,
            rfc2136: None,
            retire_after: Duration::from_secs(7 * DAY),
            revoke_after: Duration::from_secs(30 * DAY),
            check_every: Duration::from_secs(600),
            dns_port: 53,
            shared: false,
            seal: None,
            switch_delay: Duration::ZERO,
            reveal: None,
        }
    }
}

/// Reads a TSIG key in BIND's form: `key "NAME" { algorithm A; secret "B64"; };`.
pub fn parse_tsig_key(text: &str) -> Result<TsigKey, String> {
    use base64::Engine;
    let name = text
        .split_once("key")
        .and_then(|(_, rest)| rest.split_once('"'))
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(n, _)| n.trim_end_matches('.').to_string())
        .filter(|n| !n.is_empty())
        .ok_or("no key \"NAME\" { ... } in it")?;
    let field = |f: &str| {
        text.split(f)
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    let algorithm = field("algorithm").ok_or("no algorithm in it")?;
    if !matches!(
        algorithm.to_ascii_lowercase().as_str(),
        "hmac-sha256" | "hmac-sha384" | "hmac-sha512"
    ) {
        return Err(format!(
            "algorithm {algorithm}: expected hmac-sha256, hmac-sha384 or hmac-sha512"
        ));
    }
    let secret = field("secret").ok_or("no secret in it")?;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(secret.as_bytes())
        .map_err(|e| format!("secret is not base64: {e}"))?;
    Ok(TsigKey {
        name,
        algorithm: algorithm.to_ascii_lowercase(),
        secret,
    })
}

impl Validator {
    pub(super) fn rotation(&mut self, raw: &Spanned<RawRotation>) -> Option<RotationSettings> {
        let line = raw.referenced.line();
        let raw = &raw.value;
        let mut out = RotationSettings::default();
        for (i, d) in raw.domains.iter().enumerate() {
            match Domain::parse(&d.value) {
                Ok(domain) if !out.domains.contains(&domain) => out.domains.push(domain),
                Ok(_) => self.error(
                    d.referenced.line(),
                    format!("dkim.rotation.domains[{i}]"),
                    format!("\"{}\" is listed twice", d.value),
                ),
                Err(e) => self.error(
                    d.referenced.line(),
                    format!("dkim.rotation.domains[{i}]"),
                    format!("invalid domain \"{}\": {e}", d.value),
                ),
            }
        }
        if raw.domains.is_empty() {
            self.error(line, "dkim.rotation.domains", "name at least one domain");
        }
        let day = Duration::from_secs(DAY);
        let duration = |v: &mut Self, key: &str, t: &Option<Text>, min, default| {
            t.as_ref()
                .and_then(|t| v.duration(&format!("dkim.rotation.{key}"), t, min))
                .unwrap_or(default)
        };
        out.every = duration(self, "every", &raw.every, day, out.every);
        out.retire_after = duration(
            self,
            "retire_after",
            &raw.retire_after,
            NONZERO,
            out.retire_after,
        );
        out.revoke_after = duration(
            self,
            "revoke_after",
            &raw.revoke_after,
            NONZERO,
            out.revoke_after,
        );
        out.check_every = duration(
            self,
            "check_every",
            &raw.check_every,
            NONZERO,
            out.check_every,
        );
        if let Some(s) = &raw.selector {
            match check_selector(&s.value) {
                Ok(()) => out.selector = s.value.clone(),
                Err(e) => self.error(s.referenced.line(), "dkim.rotation.selector", e),
            }
        }
        if let Some(d) = &raw.key_dir {
            out.key_dir = self.resolve_path(&d.value);
        }
        if let Some(f) = &raw.secret_file {
            out.seal = self.seal_key(f);
        }
        if let Some(r) = &raw.reveal {
            out.reveal = self.reveal(r);
        }
        out.publish = raw.publish.unwrap_or_default();
        if let Some(p) = raw.dns_port {
            out.dns_port = p;
        }
        match (&raw.rfc2136, out.publish) {
            (Some(r), Publish::Rfc2136) => {
                out.rfc2136 = self.rfc2136(r);
                if let Some(zone) = out.rfc2136.as_ref().map(|r| r.zone.clone()) {
                    for d in &out.domains {
                        if !(d == &zone || d.as_str().ends_with(&format!(".{zone}"))) {
                            self.error(
                                r.referenced.line(),
                                "dkim.rotation.rfc2136.zone",
                                format!("{d} is not in the zone {zone}: its records cannot be updated there"),
                            );
                        }
                    }
                }
            }
            (None, Publish::Rfc2136) => self.error(
                line,
                "dkim.rotation.rfc2136",
                "publish: rfc2136 needs the server, the zone and the TSIG key",
            ),
            (Some(r), Publish::Manual) => self.warn(
                r.referenced.line(),
                "dkim.rotation.rfc2136",
                "ignored with publish: manual",
            ),
            (None, Publish::Manual) => {}
        }
        Some(out)
    }

    /// With the Redis backend: the keys' state shared in Redis, the private
    /// keys sealed with `secret_file`, each switch recorded ahead.
    pub(super) fn share_rotation(&mut self, r: &mut RotationSettings, line: u64) {
        r.shared = true;
        r.switch_delay = r.check_every * 2;
        if r.seal.is_none() {
            self.error(
                line,
                "dkim.rotation.secret_file",
                "rate_limits.backend is redis: the keys are shared through Redis, sealed with the key in this file (the same on every gateway; make it with `openssl rand -base64 32`)",
            );
        }
    }

    fn seal_key(&mut self, f: &Text) -> Option<SealKey> {
        use base64::Engine;
        let path = self.resolve_path(&f.value);
        let key = "dkim.rotation.secret_file";
        let read = crate::files::read_bounded(&path, 4096)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(String::from_utf8_lossy(&b).trim().as_bytes())
                    .map_err(|e| format!("{}: not base64: {e}", path.display()))
            })
            .and_then(|b| {
                <[u8; 32]>::try_from(b.as_slice()).map_err(|_| {
                    format!(
                        "{}: {} bytes, expected 32 (openssl rand -base64 32)",
                        path.display(),
                        b.len()
                    )
                })
            });
        match read {
            Ok(k) => Some(SealKey(k)),
            Err(e) => {
                self.error(f.referenced.line(), key, e);
                None
            }
        }
    }

    fn reveal(&mut self, raw: &Spanned<RawReveal>) -> Option<Reveal> {
        let url = raw.value.url.value.trim();
        let ok = (url.starts_with("https://") || url.starts_with("http://"))
            && url.ends_with('/')
            && !url.contains([';', ' ', '"']);
        if !ok {
            self.error(
                raw.value.url.referenced.line(),
                "dkim.rotation.reveal.url",
                format!("expected an http(s) URL ending in / without ; or spaces, got \"{url}\""),
            );
            return None;
        }
        Some(Reveal {
            dir: self.resolve_path(&raw.value.dir.value),
            url: url.to_string(),
        })
    }

    fn rfc2136(&mut self, raw: &Spanned<RawRfc2136>) -> Option<Rfc2136Settings> {
        let r = &raw.value;
        let server = r.server.value.parse::<SocketAddr>().or_else(|_| {
            r.server
                .value
                .parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        let server = match server {
            Ok(s) => Some(s),
            Err(_) => {
                self.error(
                    r.server.referenced.line(),
                    "dkim.rotation.rfc2136.server",
                    format!("expected IP or IP:PORT, got \"{}\"", r.server.value),
                );
                None
            }
        };
        let zone = match Domain::parse(&r.zone.value) {
            Ok(z) => Some(z),
            Err(e) => {
                self.error(
                    r.zone.referenced.line(),
                    "dkim.rotation.rfc2136.zone",
                    format!("invalid zone \"{}\": {e}", r.zone.value),
                );
                None
            }
        };
        let path = self.resolve_path(&r.tsig_key_file.value);
        let key = match crate::files::read_bounded(&path, 64 * 1024) {
            Ok(b) => match parse_tsig_key(&String::from_utf8_lossy(&b)) {
                Ok(k) => Some(k),
                Err(e) => {
                    self.error(
                        r.tsig_key_file.referenced.line(),
                        "dkim.rotation.rfc2136.tsig_key_file",
                        format!("{}: {e}", path.display()),
                    );
                    None
                }
            },
            Err(e) => {
                self.error(
                    r.tsig_key_file.referenced.line(),
                    "dkim.rotation.rfc2136.tsig_key_file",
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        };
        Some(Rfc2136Settings {
            server: server?,
            zone: zone?,
            key: key?,
        })
    }
}

/// A selector template: `{date}` in it (else two keys would share a
/// selector), and nothing but letters, digits, `-` and `.`-separated
/// labels once filled in.
fn check_selector(t: &str) -> Result<(), String> {
    if !t.contains("{date}") {
        return Err(format!(
            "\"{t}\" has no {{date}}: every key needs a selector of its own"
        ));
    }
    let filled = t
        .replace("{algorithm}", "ed25519")
        .replace("{date}", "20261231");
    let ok = filled.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{t}\" does not make a DNS label: letters, digits, - and _ besides {{algorithm}} and {{date}}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsig_keys_are_read_as_tsig_keygen_writes_them() {
        let k = parse_tsig_key(
            "key \"egress-update\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\";\n};\n",
        )
        .unwrap();
        assert_eq!(k.name, "egress-update");
        assert_eq!(k.algorithm, "hmac-sha256");
        assert_eq!(k.secret, b"secret-secret-secret");
        assert!(
            parse_tsig_key("key \"x\" { algorithm hmac-md5; secret \"AA==\"; };")
                .unwrap_err()
                .contains("hmac-md5")
        );
        assert!(parse_tsig_key("nothing").is_err());
    }

    #[test]
    fn a_selector_needs_a_date_and_must_make_a_label() {
        assert!(check_selector("{algorithm}{date}").is_ok());
        assert!(check_selector("{algorithm}-{date}").is_ok());
        assert!(check_selector("{algorithm}").is_err());
        assert!(check_selector("k {date}").is_err());
    }
}
