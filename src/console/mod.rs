//! The web console (`console`): open and recent incidents, held mail with
//! a safe preview, limit keys past `warn_at`, the reputation watch,
//! suppressed recipients, recent decisions and the audit log; and the
//! actions on them, through the MTA only (release, delete) or the same
//! requests the admin commands send (close, reopen, reset, remove).
//!
//! - `crate::users`: the users file and its Argon2 hashes;
//! - `auth.rs`: sessions, CSRF tokens, the login rate limit;
//! - `crate::links`: signed one-click links for the notices;
//! - `queue.rs`: the MTA's held mail;
//! - `preview.rs`: a held message made safe to show;
//! - `actions.rs`: what an administrator may do, logged in `audit.rs`;
//! - `pages.rs`: the pages (server-rendered, no script), `templates/console/`.
//!
//! Served by the daemon, on loopback or a unix socket, HTTPS with `tls`.
//! Every response forbids scripts, framing and caching.

pub mod actions;
mod audit;
pub mod auth;
mod pages;
pub mod preview;
pub mod queue;
mod rows;
mod serve;

pub use audit::Entry as AuditEntry;
pub use serve::{bind, serve, ConsoleListener};

use crate::state::Shared;
use std::sync::Arc;

/// What the console keeps while the daemon runs, beside what the daemon
/// shares with it.
pub struct App {
    pub shared: Arc<Shared>,
    pub sessions: auth::Sessions,
    pub audit: audit::Audit,
    pub used_links: crate::links::Used,
}

impl App {
    pub fn new(shared: Arc<Shared>) -> Self {
        let state_dir = shared.config().incidents.state_dir.clone();
        let state_dir = state_dir.as_deref();
        Self {
            sessions: auth::Sessions::default(),
            audit: audit::Audit::load(state_dir),
            used_links: crate::links::Used::load(state_dir, crate::incidents::now_ms() / 1000),
            shared,
        }
    }
}
