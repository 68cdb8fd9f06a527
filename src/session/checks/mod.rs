//! Every check of the policy, one unit each: what it keeps of a message,
//! the stages it hooks, and what it decides there. The session runs the
//! list below, in order, at each stage; a check says what it decided
//! through [`Cx::decide`](super::Cx::decide), the one door to the answer,
//! and what `explain` shows through [`Cx::note`](super::Cx::note).
//!
//! To add a check: a module here with a `new` that makes it from the
//! configuration (`None` when the configuration leaves it off), the
//! [`Check`] hooks it needs, and one line in [`LIST`].

mod antivirus;
mod content;
mod dkim;
mod from_header;
pub(crate) mod headers;
pub(crate) mod incident;
pub(crate) mod rate;
mod relay;
mod rspamd;
pub(crate) mod sender;
mod size;
mod spf;
mod verify;

use super::cx::Decision;
use super::{Cx, Flow};
use crate::config::Config;
use std::{future::Future, pin::Pin};

/// What an async hook returns.
pub(super) type Hook<'a> = Pin<Box<dyn Future<Output = Flow> + Send + 'a>>;

/// A hook with nothing to do: a future of no size, which boxing does not
/// allocate (most checks hook few stages, and every stage asks them all).
fn pass<'a>() -> Hook<'a> {
    Box::pin(Pass)
}

struct Pass;

impl Future for Pass {
    type Output = Flow;
    fn poll(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Flow> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A check: made for each message from the configuration in force, then
/// asked at each stage it hooks. (Before any message, at connect, only the
/// connection limits run: [`rate::connect`].) A hook that
/// answers `Err` has had its refusal decided (by `Cx::decide`): the stage
/// stops there.
pub(super) trait Check: Send + Sync {
    /// Whether it reads the whole message at end of message (which is then
    /// kept as it comes).
    fn reads_whole(&self) -> bool {
        false
    }
    /// MAIL FROM: the message begins, its class and sender known.
    fn mail<'a>(&'a mut self, _cx: &'a mut Cx<'_>) -> Hook<'a> {
        pass()
    }
    /// RCPT TO: one recipient (`Cx::rcpt`).
    fn rcpt<'a>(&'a mut self, _cx: &'a mut Cx<'_>) -> Hook<'a> {
        pass()
    }
    /// One header, as the MTA passed it.
    fn header(&mut self, _cx: &mut Cx<'_>, _name: &[u8], _value: &[u8]) -> Flow {
        Ok(())
    }
    /// End of headers.
    fn eoh<'a>(&'a mut self, _cx: &'a mut Cx<'_>) -> Hook<'a> {
        pass()
    }
    /// A body chunk.
    fn body(&mut self, _cx: &mut Cx<'_>, _chunk: &[u8]) -> Flow {
        Ok(())
    }
    /// End of message: the whole message is `Cx::whole`, when a check
    /// reads it.
    fn eom<'a>(&'a mut self, _cx: &'a mut Cx<'_>) -> Hook<'a> {
        pass()
    }
}

/// Makes a check from the configuration, or `None` when it is off.
type New = fn(&Config) -> Option<Box<dyn Check>>;

/// The checks, in the order each stage runs them. The order keeps a
/// refused attempt from consuming quota (the limits come after every
/// check that can refuse at the same stage), and an open incident from
/// being judged before the sender policy.
const LIST: &[New] = &[
    size::new,
    sender::new,
    relay::new,
    incident::open,
    verify::new,
    spf::new,
    from_header::new,
    content::new,
    rspamd::new,
    antivirus::new,
    dkim::verify,
    dkim::sign,
    rate::new,
    headers::new,
    incident::evidence,
];

/// The checks the configuration turns on, fresh.
pub(super) fn made(config: &Config) -> Vec<Box<dyn Check>> {
    LIST.iter().filter_map(|new| new(config)).collect()
}
