//! Private keys kept in Redis (`dkim.rotation` with the Redis backend) are
//! sealed with AES-256-GCM under the key of `secret_file`: a random nonce
//! per seal, and the key's name (`DOMAIN/SELECTOR`) bound in as associated
//! data, so a sealed key moved under another name does not open.

use crate::config::SealKey;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine;

fn key(seal: &SealKey) -> Result<LessSafeKey, String> {
    UnboundKey::new(&AES_256_GCM, &seal.0)
        .map(LessSafeKey::new)
        .map_err(|_| "the sealing key is unusable".to_string())
}

/// `pem` sealed under `name`: base64 of nonce, ciphertext and tag.
pub fn seal(seal: &SealKey, name: &str, pem: &str) -> Result<String, String> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "no random bytes for a nonce".to_string())?;
    let mut data = pem.as_bytes().to_vec();
    key(seal)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(name.as_bytes()),
            &mut data,
        )
        .map_err(|_| "sealing failed".to_string())?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

/// The PEM sealed under `name`, or why it does not open (another
/// `secret_file`, another name, altered).
pub fn open(seal: &SealKey, name: &str, sealed: &str) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed.trim().as_bytes())
        .map_err(|e| format!("not base64: {e}"))?;
    if bytes.len() < NONCE_LEN {
        return Err("too short".into());
    }
    let (nonce, data) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_string())?;
    let mut data = data.to_vec();
    let plain = key(seal)?
        .open_in_place(nonce, Aad::from(name.as_bytes()), &mut data)
        .map_err(|_| {
            "does not open with dkim.rotation.secret_file (another key on another gateway?)"
                .to_string()
        })?;
    String::from_utf8(plain.to_vec()).map_err(|_| "not text".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_with_its_secret_and_its_name() {
        let k = SealKey([7; 32]);
        let sealed = seal(&k, "example.com/rsa1", "-----BEGIN PRIVATE KEY-----").unwrap();
        assert!(!sealed.contains("PRIVATE"));
        assert_eq!(
            open(&k, "example.com/rsa1", &sealed).unwrap(),
            "-----BEGIN PRIVATE KEY-----"
        );
        assert!(open(&k, "example.com/rsa2", &sealed).is_err());
        assert!(open(&SealKey([8; 32]), "example.com/rsa1", &sealed).is_err());
        assert_ne!(
            sealed,
            seal(&k, "example.com/rsa1", "-----BEGIN PRIVATE KEY-----").unwrap()
        );
        assert!(open(&k, "example.com/rsa1", "AAAA").is_err());
    }
}
