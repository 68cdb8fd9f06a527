//! Who is logged in: sessions behind a random cookie (Secure, HttpOnly,
//! SameSite=Strict), each with its own CSRF token for the forms; logins
//! limited per user name and in all, so that passwords cannot be guessed
//! at speed.

use crate::users::Role;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "egress_console";
/// A session ends this long after the login.
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The most sessions kept (the oldest ends first).
const MAX_SESSIONS: usize = 1000;

#[derive(Clone, Debug)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    started: Instant,
}

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    let _ = aws_lc_rs::rand::fill(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// Compares two tokens in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
    /// Login attempts per user name.
    per_user: DefaultKeyedRateLimiter<String>,
    /// Login attempts in all.
    all: governor::DefaultDirectRateLimiter,
    /// Signs the login form's token (a per-process secret).
    login_key: aws_lc_rs::hmac::Key,
}

impl Default for Sessions {
    fn default() -> Self {
        let per_minute = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        let mut secret = [0u8; 32];
        let _ = aws_lc_rs::rand::fill(&mut secret);
        Self {
            by_token: Mutex::new(HashMap::new()),
            per_user: RateLimiter::keyed(per_minute(5)),
            all: RateLimiter::direct(per_minute(30)),
            login_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
        }
    }
}

impl Sessions {
    /// Whether a login attempt for `user` may be tried now.
    pub fn may_try(&self, user: &str) -> bool {
        self.per_user.check_key(&user.to_string()).is_ok() && self.all.check().is_ok()
    }

    /// A new session; its cookie value.
    pub fn start(&self, user: &str, role: Role) -> String {
        let token = random_token();
        let mut s = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|_, v| v.started.elapsed() < SESSION_TTL);
        if s.len() >= MAX_SESSIONS {
            if let Some(oldest) = s
                .iter()
                .min_by_key(|(_, v)| v.started)
                .map(|(k, _)| k.clone())
            {
                s.remove(&oldest);
            }
        }
        s.insert(
            token.clone(),
            Session {
                user: user.to_string(),
                role,
                csrf: random_token(),
                started: Instant::now(),
            },
        );
        token
    }

    pub fn get(&self, token: &str) -> Option<Session> {
        let s = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        s.get(token)
            .filter(|v| v.started.elapsed() < SESSION_TTL)
            .cloned()
    }

    pub fn end(&self, token: &str) {
        let mut s = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        s.remove(token);
    }

    /// Ends every session of `user` (a user removed or demoted takes
    /// effect at the next request: see [`Self::get`]'s callers).
    pub fn end_user(&self, user: &str) {
        let mut s = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|_, v| v.user != user);
    }

    /// The login form's token for the current ten minutes.
    pub fn login_token(&self, now_secs: u64) -> String {
        self.login_token_at(now_secs / 600)
    }

    fn login_token_at(&self, slot: u64) -> String {
        let mac = aws_lc_rs::hmac::sign(&self.login_key, &slot.to_be_bytes());
        URL_SAFE_NO_PAD.encode(mac.as_ref())
    }

    /// Whether `token` is the login form's, of now or the ten minutes
    /// before.
    pub fn login_token_ok(&self, token: &str, now_secs: u64) -> bool {
        let slot = now_secs / 600;
        same(token, &self.login_token_at(slot))
            || same(token, &self.login_token_at(slot.saturating_sub(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_limited_per_name_and_in_all() {
        let s = Sessions::default();
        for _ in 0..5 {
            assert!(s.may_try("alice"));
        }
        assert!(!s.may_try("alice"));
        // Other names may still try, until the total is spent.
        let mut tried = 6;
        let mut n = 0;
        while s.may_try(&format!("user{n}")) {
            n += 1;
            tried += 1;
            assert!(n < 100);
        }
        assert!(tried <= 31, "{tried}");
    }

    #[test]
    fn sessions_and_login_tokens() {
        let s = Sessions::default();
        let t = s.start("alice", Role::Viewer);
        let got = s.get(&t).unwrap();
        assert_eq!((got.user.as_str(), got.role), ("alice", Role::Viewer));
        assert!(s.get("nope").is_none());
        s.end(&t);
        assert!(s.get(&t).is_none());
        let lt = s.login_token(6000);
        assert!(s.login_token_ok(&lt, 6000) && s.login_token_ok(&lt, 6599 + 600));
        assert!(!s.login_token_ok(&lt, 6000 + 1200));
        assert!(!s.login_token_ok("forged", 6000));
    }
}
