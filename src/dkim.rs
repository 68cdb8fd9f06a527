//! DKIM keys and signing. Keys are loaded and checked with the
//! configuration (a bad key is a configuration error, not a surprise at the
//! first message); signing uses mail-auth, relaxed/relaxed, over the message
//! as the MTA handed it to the milter.

use crate::address::Domain;
use base64::Engine;
use mail_auth::{
    common::crypto::{Ed25519Key, RsaKey, Sha256},
    common::headers::HeaderWriter,
    dkim::DkimSigner,
};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use rustls_pki_types::{pem::PemObject, PrivateKeyDer};
use std::{fmt, path::Path, sync::Arc};

/// The headers signed by default (RFC 6376 §5.4.1's list, trimmed to what
/// receivers show or act on). From is listed twice: one instance is signed
/// and a second, absent one too, so a From: added in transit breaks the
/// signature (oversigning). Headers absent from a message are signed as
/// absent, so they cannot be added later either.
pub const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Sender",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Below this an RSA key is refused: RFC 8301 §3.2 requires at least 1024
/// bits and receivers increasingly distrust less than 2048.
pub const MIN_RSA_BITS: usize = 2048;

pub enum KeyMaterial {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

pub struct DkimKey {
    pub domain: Domain,
    pub selector: String,
    pub material: KeyMaterial,
    /// The `p=` value to publish (base64): SubjectPublicKeyInfo for RSA,
    /// the raw 32-byte key for Ed25519 (RFC 8463).
    pub public_key: String,
    /// RSA modulus size; 256 for Ed25519.
    pub bits: usize,
}

impl fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DkimKey({}._domainkey.{}, {})",
            self.selector,
            self.domain,
            self.algorithm()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: no PEM private key found (expected PKCS#8 \"PRIVATE KEY\" or PKCS#1 \"RSA PRIVATE KEY\")")]
    NoPem(String),
    #[error("{0}: not an RSA or Ed25519 private key")]
    Unsupported(String),
    #[error("{0}: RSA key of {1} bits, at least {MIN_RSA_BITS} are required")]
    Weak(String, usize),
}

impl DkimKey {
    pub fn algorithm(&self) -> &'static str {
        match self.material {
            KeyMaterial::Rsa(_) => "rsa",
            KeyMaterial::Ed25519(_) => "ed25519",
        }
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`.
    pub fn dns_record(&self) -> String {
        format!("v=DKIM1; k={}; p={}", self.algorithm(), self.public_key)
    }

    /// Loads a PEM private key (PKCS#8, or PKCS#1 for RSA).
    pub fn load(domain: Domain, selector: String, path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        // A PEM key is a few kilobytes: a bigger file is not one.
        let pem = crate::files::read_bounded(path, 64 << 10)
            .map_err(|e| KeyError::Read(shown.clone(), e))?;
        Self::from_pem(domain, selector, &pem, &shown)
    }

    pub fn from_pem(
        domain: Domain,
        selector: String,
        pem: &[u8],
        shown: &str,
    ) -> Result<Self, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NoPem(shown.into()))?;
        // The size first: the signing library refuses short RSA keys with
        // an error that does not say why.
        let rsa_bits = match &der {
            PrivateKeyDer::Pkcs8(p8) => {
                use rsa::pkcs8::DecodePrivateKey;
                rsa::RsaPrivateKey::from_pkcs8_der(p8.secret_pkcs8_der()).ok()
            }
            PrivateKeyDer::Pkcs1(p1) => {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                rsa::RsaPrivateKey::from_pkcs1_der(p1.secret_pkcs1_der()).ok()
            }
            _ => None,
        }
        .map(|k| k.size() * 8);
        if let Some(bits) = rsa_bits.filter(|b| *b < MIN_RSA_BITS) {
            return Err(KeyError::Weak(shown.into(), bits));
        }
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let (material, public_key, bits) = match &der {
            PrivateKeyDer::Pkcs8(p8) => match RsaKey::<Sha256>::from_key_der(der.clone_key()) {
                Ok(rsa) => {
                    let (spki, bits) = rsa_public(&rsa, shown)?;
                    (KeyMaterial::Rsa(rsa), b64(&spki), bits)
                }
                Err(_) => {
                    let ed = Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der())
                        .map_err(|_| KeyError::Unsupported(shown.into()))?;
                    let public = b64(&ed.public_key());
                    (KeyMaterial::Ed25519(ed), public, 256)
                }
            },
            PrivateKeyDer::Pkcs1(_) => {
                let rsa = RsaKey::<Sha256>::from_key_der(der.clone_key())
                    .map_err(|_| KeyError::Unsupported(shown.into()))?;
                let (spki, bits) = rsa_public(&rsa, shown)?;
                (KeyMaterial::Rsa(rsa), b64(&spki), bits)
            }
            _ => return Err(KeyError::Unsupported(shown.into())),
        };
        Ok(Self {
            domain,
            selector,
            material,
            public_key,
            bits,
        })
    }

    /// Signs a whole message (headers, blank line, body, CRLF line ends).
    /// Returns the DKIM-Signature value, folded with LF + TAB as milter
    /// header values are.
    pub fn sign(&self, message: &[u8], headers: &[String]) -> Result<String, mail_auth::Error> {
        let signature = match &self.material {
            KeyMaterial::Rsa(k) => DkimSigner::from_key(RsaKeyRef(k))
                .domain(self.domain.as_str())
                .selector(&self.selector)
                .headers(headers.iter().map(String::as_str))
                .sign(message)?,
            KeyMaterial::Ed25519(k) => DkimSigner::from_key(Ed25519Ref(k))
                .domain(self.domain.as_str())
                .selector(&self.selector)
                .headers(headers.iter().map(String::as_str))
                .sign(message)?,
        };
        let header = signature.to_header();
        let value = header
            .strip_prefix("DKIM-Signature: ")
            .unwrap_or(&header)
            .trim_end_matches(['\r', '\n']);
        // When the b= value fills its last line, the signer folds before the
        // closing ";". Verifiers that keep the whitespace after b= when they
        // empty it (python3-dkim among them) then hash "b= ;" where the
        // signature was made over "b=;" and fail. No fold there.
        let value = match value.strip_suffix(';') {
            Some(v) => format!("{};", v.trim_end()),
            None => value.to_string(),
        };
        Ok(value.replace("\r\n", "\n"))
    }
}

fn rsa_public(rsa: &RsaKey<Sha256>, shown: &str) -> Result<(Vec<u8>, usize), KeyError> {
    let public = rsa::RsaPublicKey::from_pkcs1_der(&rsa.public_key())
        .map_err(|_| KeyError::Unsupported(shown.into()))?;
    let spki = public
        .to_public_key_der()
        .map_err(|_| KeyError::Unsupported(shown.into()))?;
    Ok((spki.as_bytes().to_vec(), public.size() * 8))
}

/// mail-auth's signer takes its key by value; these borrow one that lives
/// in the configuration.
struct RsaKeyRef<'a>(&'a RsaKey<Sha256>);
struct Ed25519Ref<'a>(&'a Ed25519Key);

impl mail_auth::common::crypto::SigningKey for RsaKeyRef<'_> {
    type Hasher = Sha256;
    fn sign(&self, input: impl mail_auth::common::headers::Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }
    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        self.0.algorithm()
    }
}

impl mail_auth::common::crypto::SigningKey for Ed25519Ref<'_> {
    type Hasher = Sha256;
    fn sign(&self, input: impl mail_auth::common::headers::Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }
    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        self.0.algorithm()
    }
}

/// The keys to sign with for a From: domain: those of the domain itself,
/// else of its nearest parent that has any (all of them: an RSA and an
/// Ed25519 key for one domain sign twice).
pub fn keys_for<'k>(keys: &'k [Arc<DkimKey>], from: &Domain) -> Vec<&'k Arc<DkimKey>> {
    let mut candidate = from.as_str();
    loop {
        let found: Vec<_> = keys
            .iter()
            .filter(|k| k.domain.as_str() == candidate)
            .collect();
        if !found.is_empty() {
            return found;
        }
        match candidate.split_once('.') {
            Some((_, parent)) if parent.contains('.') => candidate = parent,
            _ => return Vec::new(),
        }
    }
}

/// A TXT record value as DNS zone files write it: quoted strings of 250
/// bytes at most (a string holds 255), which DNS joins back.
pub fn txt_strings(record: &str) -> String {
    record
        .as_bytes()
        .chunks(250)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A new key pair: the PEM private key and the key's TXT record value.
pub fn generate(algorithm: &str, bits: usize) -> Result<(String, String), String> {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    match algorithm {
        "rsa" => {
            if bits < MIN_RSA_BITS {
                return Err(format!("at least {MIN_RSA_BITS} bits"));
            }
            let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
                .map_err(|e| e.to_string())?;
            let pem = private
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| e.to_string())?;
            let spki = private
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| e.to_string())?;
            Ok((
                pem.to_string(),
                format!("v=DKIM1; k=rsa; p={}", b64(spki.as_bytes())),
            ))
        }
        "ed25519" => {
            let der = Ed25519Key::generate_pkcs8().map_err(|e| e.to_string())?;
            let key = Ed25519Key::from_pkcs8_der(&der).map_err(|e| e.to_string())?;
            let body = b64(&der);
            let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
            for chunk in body.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(chunk));
                pem.push('\n');
            }
            pem.push_str("-----END PRIVATE KEY-----\n");
            Ok((
                pem,
                format!("v=DKIM1; k=ed25519; p={}", b64(&key.public_key())),
            ))
        }
        other => Err(format!("unknown algorithm \"{other}\" (rsa or ed25519)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(domain: &str, algorithm: &str) -> Arc<DkimKey> {
        let (pem, _) = generate(algorithm, 2048).unwrap();
        Arc::new(
            DkimKey::from_pem(
                Domain::parse(domain).unwrap(),
                "s1".into(),
                pem.as_bytes(),
                "test",
            )
            .unwrap(),
        )
    }

    #[test]
    fn generated_keys_load_and_match_their_record() {
        for alg in ["rsa", "ed25519"] {
            let (pem, record) = generate(alg, 2048).unwrap();
            let k = DkimKey::from_pem(
                Domain::parse("example.com").unwrap(),
                "s".into(),
                pem.as_bytes(),
                "t",
            )
            .unwrap();
            assert_eq!(k.dns_record(), record);
            assert_eq!(k.algorithm(), alg);
        }
        assert!(generate("rsa", 1024).is_err());
        assert!(matches!(
            DkimKey::from_pem(
                Domain::parse("example.com").unwrap(),
                "s".into(),
                b"junk",
                "t"
            ),
            Err(KeyError::NoPem(_))
        ));
    }

    #[test]
    fn weak_rsa_is_refused() {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
        let r = DkimKey::from_pem(
            Domain::parse("example.com").unwrap(),
            "s".into(),
            pem.as_bytes(),
            "t",
        );
        assert!(matches!(r, Err(KeyError::Weak(_, 1024))), "{r:?}");
    }

    #[test]
    fn nearest_parent_with_keys() {
        let keys = vec![
            key("example.com", "rsa"),
            key("example.com", "ed25519"),
            key("sub.example.org", "ed25519"),
        ];
        let d = |s| Domain::parse(s).unwrap();
        assert_eq!(keys_for(&keys, &d("example.com")).len(), 2);
        assert_eq!(keys_for(&keys, &d("mail.eu.example.com")).len(), 2);
        assert_eq!(keys_for(&keys, &d("x.sub.example.org")).len(), 1);
        assert!(keys_for(&keys, &d("example.org")).is_empty());
        assert!(keys_for(&keys, &d("com")).is_empty());
    }
}
