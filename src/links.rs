//! The console's one-click links for the notices: an action on a target, signed with
//! HMAC-SHA256 under `console.link_secret_file`, valid 24 hours and once.
//! Opening one shows what it will do; only the confirming POST acts.
//!
//! A link is `base64url(payload) "." base64url(mac)`, the payload
//! `action "\n" target "\n" expires "\n" nonce`.

use aws_lc_rs::hmac;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

/// How long a link is valid.
pub const LINK_TTL_SECS: u64 = 24 * 3600;
/// The file of used links' nonces under the state directory.
const USED_FILE: &str = "console-links-used";

/// What a link does.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Link {
    /// `release` or `delete`.
    pub action: String,
    /// `incident:KIND:KEY` (all its held messages) or `message:ID`.
    pub target: String,
    pub expires: u64,
    pub nonce: String,
}

/// Why a link is refused.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Refused {
    /// Not made with our secret (or mangled).
    Forged,
    Expired,
    Used,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Forged => "this link is not valid (altered, or made under another secret)",
            Self::Expired => "this link has expired (links are valid 24 hours)",
            Self::Used => "this link has been used already (each link acts once)",
        })
    }
}

/// A link signed with `secret`, valid from `now` for [`LINK_TTL_SECS`].
pub fn sign(secret: &[u8], action: &str, target: &str, now: u64) -> String {
    let mut nonce = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut nonce);
    let payload = format!(
        "{action}\n{target}\n{}\n{}",
        now + LINK_TTL_SECS,
        URL_SAFE_NO_PAD.encode(nonce)
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mac = hmac::sign(&key, payload.as_bytes());
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload.as_bytes()),
        URL_SAFE_NO_PAD.encode(mac.as_ref())
    )
}

/// The link `token` says, if `secret` signed it and it is not expired at
/// `now` (whether it was used is [`Used`]'s to say).
pub fn open(secret: &[u8], token: &str, now: u64) -> Result<Link, Refused> {
    let (payload, mac) = token.split_once('.').ok_or(Refused::Forged)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| Refused::Forged)?;
    let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| Refused::Forged)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &payload, &mac).map_err(|_| Refused::Forged)?;
    let text = String::from_utf8(payload).map_err(|_| Refused::Forged)?;
    let mut parts = text.split('\n');
    let (Some(action), Some(target), Some(expires), Some(nonce), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(Refused::Forged);
    };
    let expires: u64 = expires.parse().map_err(|_| Refused::Forged)?;
    if expires <= now {
        return Err(Refused::Expired);
    }
    Ok(Link {
        action: action.to_string(),
        target: target.to_string(),
        expires,
        nonce: nonce.to_string(),
    })
}

/// The nonces of the links used, each until its link expires; kept under
/// the state directory so a restart does not make a used link good again.
#[derive(Default)]
pub struct Used {
    nonces: Mutex<HashMap<String, u64>>,
    file: Option<PathBuf>,
}

impl Used {
    pub fn load(state_dir: Option<&std::path::Path>, now: u64) -> Self {
        let file = state_dir.map(|d| d.join(USED_FILE));
        let mut nonces = HashMap::new();
        if let Some(text) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
            for line in text.lines() {
                if let Some((nonce, until)) = line.split_once(' ') {
                    if let Ok(until) = until.parse::<u64>() {
                        if until > now {
                            nonces.insert(nonce.to_string(), until);
                        }
                    }
                }
            }
        }
        Self {
            nonces: Mutex::new(nonces),
            file,
        }
    }

    /// Marks the link used; false when it already was. Written to the
    /// file before the action is done: a crash after it loses the click,
    /// never repeats it.
    pub fn take(&self, link: &Link, now: u64) -> bool {
        let mut nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        nonces.retain(|_, until| *until > now);
        if nonces.contains_key(&link.nonce) {
            return false;
        }
        nonces.insert(link.nonce.clone(), link.expires);
        if let Some(path) = &self.file {
            let mut out = String::new();
            for (n, until) in nonces.iter() {
                out.push_str(&format!("{n} {until}\n"));
            }
            let written = std::fs::File::create(path).and_then(|mut f| {
                f.write_all(out.as_bytes())?;
                f.sync_all()
            });
            if let Err(e) = written {
                tracing::error!(target: "egress_milter::console", "cannot keep the used links in {}: {e}", path.display());
            }
        }
        true
    }

    pub fn was_used(&self, link: &Link) -> bool {
        let nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        nonces.contains_key(&link.nonce)
    }
}

/// What makes the links a notice of an incident carries: release and
/// delete all its held mail, each signed; None without a console or a
/// link secret.
pub fn linker(
    settings: Option<&crate::config::ConsoleSettings>,
) -> Option<crate::incidents::Linker> {
    let c = settings?;
    let secret = c.link_secret.clone()?;
    let base = c.public_url.clone();
    Some(Box::new(move |incident: &str| {
        let now = crate::incidents::now_ms() / 1000;
        ["release", "delete"]
            .into_iter()
            .map(|action| {
                let token = sign(&secret, action, &format!("incident:{incident}"), now);
                (action.to_string(), format!("{base}/l/{token}"))
            })
            .collect()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_link_opens_under_its_secret_until_it_expires() {
        let t = sign(SECRET, "release", "incident:user:walt", 1000);
        let l = open(SECRET, &t, 1000).unwrap();
        assert_eq!(
            (l.action.as_str(), l.target.as_str()),
            ("release", "incident:user:walt")
        );
        assert_eq!(l.expires, 1000 + LINK_TTL_SECS);
        assert_eq!(
            open(SECRET, &t, 1000 + LINK_TTL_SECS),
            Err(Refused::Expired)
        );
        assert_eq!(
            open(b"another secret of thirty-two bytes!", &t, 1000),
            Err(Refused::Forged)
        );
        // Any byte of the payload changed breaks the signature.
        let (p, m) = t.split_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(p).unwrap();
        raw[0] = b'd';
        let forged = format!("{}.{m}", URL_SAFE_NO_PAD.encode(raw));
        assert_eq!(open(SECRET, &forged, 1000), Err(Refused::Forged));
        assert_eq!(open(SECRET, "garbage", 1000), Err(Refused::Forged));
    }

    #[test]
    fn a_link_acts_once_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let l = open(SECRET, &sign(SECRET, "delete", "message:ABC123", 10), 10).unwrap();
        let used = Used::load(Some(dir.path()), 10);
        assert!(!used.was_used(&l));
        assert!(used.take(&l, 10));
        assert!(!used.take(&l, 11));
        let again = Used::load(Some(dir.path()), 12);
        assert!(again.was_used(&l) && !again.take(&l, 12));
    }
}
