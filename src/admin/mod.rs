//! The operators' endpoint, behind `egress-milter limits`, `incidents`,
//! `cache` and `senders`. The command line sends one [`Request`] and the
//! daemon gives one [`Answer`], each a line of JSON, then the connection
//! closes. The request types are the command line's and the daemon's
//! both; each family (limits, incidents, cache, senders, reputation,
//! suppressions) has its own file
//! with its requests and the daemon's answers to them.
//!
//! It listens on a unix socket by default (`admin.listen`), whose owner,
//! group and mode (0660) decide who may use it: the daemon's user and the
//! administrators in its group. On TCP (loopback only) every request must
//! carry the token read from `admin.token_file`.

mod cache;
mod incidents;
mod limits;
mod reputation;
mod senders;
mod suppressions;
mod transport;

pub use cache::Cache;
pub use incidents::Incidents;
pub use limits::Limits;
pub use reputation::Reputation;
pub use senders::Senders;
pub use suppressions::Suppressions;
pub use transport::{bind, describe, request, serve, Listener};

use crate::state::Shared;
use serde::{Deserialize, Serialize};

/// What an operator asks the daemon.
#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Limits(Limits),
    Incidents(Incidents),
    Cache(Cache),
    Senders(Senders),
    Reputation(Reputation),
    Suppressions(Suppressions),
}

/// The daemon's answer: the text the command prints, or why the request
/// could not be done (printed as `error: ...`, exit 1).
#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Ok(String),
    Error(String),
}

impl Answer {
    pub fn error(why: impl Into<String>) -> Self {
        Self::Error(why.into())
    }
}

/// As the command line shows it: the text, or `error: why`.
impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok(text) => f.write_str(text),
            Self::Error(why) => write!(f, "error: {why}"),
        }
    }
}

/// A request as it goes on the wire: on TCP with the token.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    request: Request,
}

/// The daemon's answer to a request, as the endpoint gives it (and as a
/// program that embeds the daemon may ask it directly).
pub async fn answer(shared: &Shared, request: Request) -> Answer {
    match request {
        Request::Limits(r) => limits::answer(shared, r).await,
        Request::Incidents(r) => incidents::answer(shared, r).await,
        Request::Cache(r) => cache::answer(shared, r).await,
        Request::Senders(r) => senders::answer(shared, r),
        Request::Reputation(r) => reputation::answer(shared, r).await,
        Request::Suppressions(r) => suppressions::answer(shared, r).await,
    }
}
