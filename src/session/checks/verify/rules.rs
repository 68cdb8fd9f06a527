//! MAIL FROM and RCPT TO: the address must exist. `verify_sender` holds a
//! class's envelope senders to addresses that exist (no mail "from"
//! nobody, whose bounces go nowhere); `verify_recipients` refuses inbound
//! mail to a mailbox our store does not have at RCPT TO, instead of the
//! store bouncing it later to a forged sender (backscatter).
//!
//! A store that accepts any address (a catch-all) proves nothing: its yes
//! lets the mail through, and the catch-all is logged and shown by
//! `selfcheck`.

use crate::address::Address;
use crate::config::Verify;
use crate::reply::{self, Refusal};
use crate::sources::{callout::Exists, Lists};
use crate::verdict::{Backend, Cause, Verdict};

pub async fn sender(lists: &Lists<'_>, verify: &Verify, address: &Address, helo: &str) -> Verdict {
    check(
        lists,
        verify,
        address,
        helo,
        "sender",
        reply::sender_does_not_exist,
        reply::sender_unverified,
    )
    .await
}

pub async fn recipient(
    lists: &Lists<'_>,
    verify: &Verify,
    address: &Address,
    helo: &str,
) -> Verdict {
    check(
        lists,
        verify,
        address,
        helo,
        "recipient",
        reply::recipient_does_not_exist,
        reply::recipient_unverified,
    )
    .await
}

/// Asks whether `address` exists: its refusal when it does not, its
/// 4xx when nothing could tell.
async fn check(
    lists: &Lists<'_>,
    verify: &Verify,
    address: &Address,
    helo: &str,
    what: &str,
    missing: fn(&str) -> Refusal,
    unverified: fn(&str) -> Refusal,
) -> Verdict {
    let shown = address.to_string();
    match lists.exists(verify, address, helo).await {
        Ok(Exists::Yes | Exists::CatchAll) => Verdict::Continue,
        Ok(Exists::No(_)) => Verdict::Refuse(missing(&shown)),
        Err(e) => Verdict::TempError(
            Cause::new(Backend::Source, format!("{what} {shown} not verified: {e}"))
                .replying(unverified(&shown)),
        ),
    }
}
