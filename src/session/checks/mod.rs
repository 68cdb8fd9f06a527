//! Every check of the policy, one unit each: what it keeps of a message,
//! the stages it hooks, and what it decides there. The session runs the
//! list below, in order, at each stage; a check says what it decided
//! through [`Cx::decide`](super::Cx::decide), the one door to the answer,
//! and what `explain` shows through [`Cx::note`](super::Cx::note).
//!
//! To add a check: a module here with a `new` that makes it from the
//! configuration (`None` when the configuration leaves it off), the
//! [`Check`] hooks it needs, and one line in the `list!` at the end.

mod antivirus;
mod bounces;
mod content;
mod dkim;
mod from_header;
pub(crate) mod headers;
pub(crate) mod incident;
pub(crate) mod rate;
mod relay;
mod reputation;
mod rspamd;
pub(crate) mod sender;
mod size;
mod spf;
mod verify;

use super::cx::Decision;
use super::{Cx, Flow};
use crate::config::Config;

/// A check: made for each message from the configuration in force, then
/// asked at each stage it hooks. (Before any message, at connect, only the
/// connection limits run: [`rate::connect`].) A hook that
/// answers `Err` has had its refusal decided (by `Cx::decide`): the stage
/// stops there.
pub(super) trait Check: Send + Sync {
    /// Whether it reads the whole message at end of message (which is then
    /// kept as it comes); `null_sender`: the envelope sender is `<>`.
    fn reads_whole(&self, _null_sender: bool) -> bool {
        false
    }
    /// MAIL FROM: the message begins, its class and sender known.
    async fn mail(&mut self, _cx: &mut Cx<'_>) -> Flow {
        Ok(())
    }
    /// RCPT TO: one recipient (`Cx::rcpt`).
    async fn rcpt(&mut self, _cx: &mut Cx<'_>) -> Flow {
        Ok(())
    }
    /// One header, as the MTA passed it.
    fn header(&mut self, _cx: &mut Cx<'_>, _name: &[u8], _value: &[u8]) -> Flow {
        Ok(())
    }
    /// End of headers.
    async fn eoh(&mut self, _cx: &mut Cx<'_>) -> Flow {
        Ok(())
    }
    /// A body chunk.
    fn body(&mut self, _cx: &mut Cx<'_>, _chunk: &[u8]) -> Flow {
        Ok(())
    }
    /// End of message: the whole message is `Cx::whole`, when a check
    /// reads it.
    async fn eom(&mut self, _cx: &mut Cx<'_>) -> Flow {
        Ok(())
    }
}

/// The checks, in the order each stage runs them: one line each, the
/// check's name, its type, and what makes it from the configuration
/// (`None` when it is off). The order keeps a refused attempt from
/// consuming quota (the limits come after every check that can refuse at
/// the same stage), and an open incident from being judged before the
/// sender policy.
macro_rules! list {
    ($($name:ident: $ty:ty = $new:path,)*) => {
        /// One check of the list, by its own type: a stage calls each
        /// check's hook directly, with no boxed future between.
        pub(super) struct Any(One);

        enum One {
            $($name($ty),)*
        }

        /// The checks the configuration turns on, fresh, in order.
        pub(super) fn made(config: &Config) -> Vec<Any> {
            let mut made = Vec::new();
            $(if let Some(check) = $new(config) {
                made.push(Any(One::$name(check)));
            })*
            made
        }

        impl Check for Any {
            fn reads_whole(&self, null_sender: bool) -> bool {
                match &self.0 { $(One::$name(c) => c.reads_whole(null_sender),)* }
            }
            async fn mail(&mut self, cx: &mut Cx<'_>) -> Flow {
                match &mut self.0 { $(One::$name(c) => c.mail(cx).await,)* }
            }
            async fn rcpt(&mut self, cx: &mut Cx<'_>) -> Flow {
                match &mut self.0 { $(One::$name(c) => c.rcpt(cx).await,)* }
            }
            fn header(&mut self, cx: &mut Cx<'_>, name: &[u8], value: &[u8]) -> Flow {
                match &mut self.0 { $(One::$name(c) => c.header(cx, name, value),)* }
            }
            async fn eoh(&mut self, cx: &mut Cx<'_>) -> Flow {
                match &mut self.0 { $(One::$name(c) => c.eoh(cx).await,)* }
            }
            fn body(&mut self, cx: &mut Cx<'_>, chunk: &[u8]) -> Flow {
                match &mut self.0 { $(One::$name(c) => c.body(cx, chunk),)* }
            }
            async fn eom(&mut self, cx: &mut Cx<'_>) -> Flow {
                match &mut self.0 { $(One::$name(c) => c.eom(cx).await,)* }
            }
        }
    };
}

list! {
    Size: size::Size = size::new,
    Sender: sender::Sender = sender::new,
    Relay: relay::Relay = relay::new,
    IncidentOpen: incident::Open = incident::open,
    Verify: verify::Verify = verify::new,
    Bounces: bounces::Bounces = bounces::new,
    Spf: spf::Spf = spf::new,
    FromHeader: from_header::FromHeader = from_header::new,
    Content: content::Content = content::new,
    Rspamd: rspamd::Rspamd = rspamd::new,
    Antivirus: antivirus::Antivirus = antivirus::new,
    DkimVerify: dkim::Verify = dkim::verify,
    DkimSign: dkim::Sign = dkim::sign,
    Reputation: reputation::Reputation = reputation::new,
    Rate: rate::Rate = rate::new,
    Headers: headers::Headers = headers::new,
    IncidentEvidence: incident::Evidence = incident::evidence,
}
