//! MAIL FROM: would the sender domain's SPF pass for our egress IPs? A
//! receiver evaluates SPF against the IP our mail leaves from, so a sender
//! domain that does not list it fails there (and DMARC with it, unless DKIM
//! aligns). Fail, softfail and permerror refuse (or warn); none and neutral
//! pass, since receivers do not hold them against a message.

use crate::address::Address;
use crate::config::Config;
use crate::reply;
use crate::verdict::{Backend, Verdict};
use mail_auth::{spf::verify::SpfParameters, MessageAuthenticator, SpfResult};

/// Continues when SPF of the sender domain authorises every egress IP; a
/// DNS failure or timeout is a [`Verdict::TempError`].
pub async fn check(
    resolver: &MessageAuthenticator,
    config: &Config,
    sender: &Address,
    helo: &str,
) -> Verdict {
    let Some(domain) = sender.domain.name() else {
        return Verdict::Refuse(reply::spf_not_authorised(&sender.domain.to_string()));
    };
    let host = config.hostname.as_ref().map_or("localhost", |h| h.as_str());
    let sender_text = format!("{}@{}", sender.local, domain);
    for ip in &config.egress_ips {
        let params = SpfParameters::verify_mail_from(*ip, helo, host, &sender_text);
        let out = match tokio::time::timeout(config.dns.timeout * 2, resolver.verify_spf(params))
            .await
        {
            Ok(o) => o,
            Err(_) => {
                return Verdict::failed(Backend::Dns, format!("SPF lookup for {domain} timed out"))
            }
        };
        match out.result() {
            SpfResult::Pass | SpfResult::None | SpfResult::Neutral => {}
            SpfResult::TempError => {
                return Verdict::failed(Backend::Dns, format!("SPF lookup for {domain} failed"))
            }
            SpfResult::Fail | SpfResult::SoftFail | SpfResult::PermError => {
                return Verdict::Refuse(reply::spf_not_authorised(domain.as_str()))
            }
        }
    }
    Verdict::Continue
}
