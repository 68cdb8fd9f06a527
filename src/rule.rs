//! The rules a decision names: in the decision line (`rule=`), the
//! `egress_decisions_total` metric, `explain` and the test cases. One
//! enum, so that a rule is compared as a value and spelled in one place.

use crate::rate::LimitId;
use std::fmt;

/// The rule behind a refusal, a warning or a hold.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Rule {
    UnknownClient,
    NullSender,
    SenderDomains,
    SenderAddresses,
    LoginMatch,
    Relay,
    InboundOwnDomain,
    VerifySender,
    VerifyRecipients,
    MaxRecipients,
    FromHeader,
    SpfEgress,
    DkimExisting,
    DkimSign,
    MaxMessageSize,
    BannedAttachment,
    UncheckedContent,
    ContentScore,
    Rspamd,
    Antivirus,
    Incident,
    /// Mail paused while listed (`reputation.on_listed`).
    Reputation,
    /// A recipient suppressed after hard failures (`bounces.suppress`).
    Suppressed,
    /// A rate limit, by its name.
    Limit(LimitId),
    InternalError,
    OutOfOrder,
}

impl Rule {
    /// The name the configuration, the logs and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownClient => "unknown_client",
            Self::NullSender => "null_sender",
            Self::SenderDomains => "sender_domains",
            Self::SenderAddresses => "sender_addresses",
            Self::LoginMatch => "login_match",
            Self::Relay => "relay",
            Self::InboundOwnDomain => "inbound_own_domain",
            Self::VerifySender => "verify_sender",
            Self::VerifyRecipients => "verify_recipients",
            Self::MaxRecipients => "max_recipients",
            Self::FromHeader => "from_header",
            Self::SpfEgress => "spf_egress",
            Self::DkimExisting => "dkim_existing",
            Self::DkimSign => "dkim_sign",
            Self::MaxMessageSize => "max_message_size",
            Self::BannedAttachment => "banned_attachment",
            Self::UncheckedContent => "unchecked_content",
            Self::ContentScore => "content_score",
            Self::Rspamd => "rspamd",
            Self::Antivirus => "antivirus",
            Self::Incident => "incident",
            Self::Reputation => "reputation",
            Self::Suppressed => "suppressed",
            Self::Limit(limit) => limit.as_str(),
            Self::InternalError => "internal_error",
            Self::OutOfOrder => "out_of_order",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
