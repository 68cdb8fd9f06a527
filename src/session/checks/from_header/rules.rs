//! End of headers: the From: header.
//!
//! Mail that leaves (from a client in a class) is held to strict relay:
//! exactly one From: header holding exactly one mailbox (RFC 5322 §3.6.2
//! allows a mailbox-list only with a Sender:, and DMARC receivers reject
//! those), whose domain is one of our local domains and, when the class
//! narrows it, one of its `from_domains`.
//!
//! Mail from a client in no class is inbound (`unknown_clients: relay_deny`
//! already confines it to our own domains): its From: is naturally someone
//! else's, and strict relay does not judge it. Only
//! `from_header.inbound_own_domain: reject` looks at it, refusing inbound
//! mail whose From: claims one of our own domains.

use crate::address::{AddressDomain, Domain};
use crate::config::{Class, Config, InboundOwnDomain};
use crate::mailbox::{parse_address_list, Entry};
use crate::reply;
use crate::sources::{Failure, Lists};
use crate::verdict::{Backend, Verdict};

/// The From: headers of a message as collected: their values, and whether
/// any was longer than `from_header.max_length` (and so not kept whole).
#[derive(Clone, Debug, Default)]
pub struct FromHeaders {
    pub values: Vec<Vec<u8>>,
    pub too_long: bool,
}

/// The From: check's verdict, and the From: domain when the header holds
/// exactly one mailbox with a domain name (whatever the policy says of
/// it; DKIM signing chooses its key by it).
pub struct Judgement {
    pub verdict: Verdict,
    pub domain: Option<crate::address::Domain>,
    /// That one mailbox.
    pub mailbox: Option<crate::address::Address>,
}

/// Parses the From: header once, for both the verdict and the domain.
pub async fn judge(
    config: &Config,
    lists: &Lists<'_>,
    class: Option<&Class>,
    from: &FromHeaders,
) -> Judgement {
    let parsed = match from.values.as_slice() {
        [one] if !from.too_long => Some(parse_address_list(one)),
        _ => None,
    };
    let mailbox = match parsed.as_ref().map(|p| p.as_ref().map(Vec::as_slice)) {
        Some(Ok([Entry::Mailbox(a)])) => Some(a.clone()),
        _ => None,
    };
    let domain = mailbox.as_ref().and_then(|a| a.domain.name().cloned());
    let verdict = match verdict(config, lists, class, from, parsed).await {
        Ok(v) => v,
        Err(e) => Verdict::failed(Backend::Source, format!("From: check: {e}")),
    };
    Judgement {
        verdict,
        domain,
        mailbox,
    }
}

async fn verdict(
    config: &Config,
    lists: &Lists<'_>,
    class: Option<&Class>,
    from: &FromHeaders,
    parsed: Option<Result<Vec<Entry>, crate::mailbox::ParseError>>,
) -> Result<Verdict, Failure> {
    let Some(class) = class else {
        return inbound(config, lists, from).await;
    };
    let from_domains = class.from_domains.as_ref();
    if !config.from_strict && from_domains.is_none() {
        return Ok(Verdict::Continue);
    }
    match from.values.as_slice() {
        [] => return Ok(Verdict::Refuse(reply::no_from_header())),
        [_] => {}
        many => return Ok(Verdict::Refuse(reply::several_from_headers(many.len()))),
    }
    let entries = match parsed {
        None => {
            return Ok(Verdict::Refuse(reply::malformed_from_header(&format!(
                "longer than {} bytes",
                config.from_max_length
            ))))
        }
        Some(Ok(e)) => e,
        Some(Err(e)) => {
            return Ok(Verdict::Refuse(reply::malformed_from_header(
                &e.to_string(),
            )))
        }
    };
    let address = match entries.as_slice() {
        [] => return Ok(Verdict::Refuse(reply::malformed_from_header("no mailbox"))),
        [Entry::Mailbox(a)] => a,
        list if list.iter().any(|e| matches!(e, Entry::Group(_))) => {
            return Ok(Verdict::Refuse(reply::from_group()))
        }
        list => return Ok(Verdict::Refuse(reply::several_from_mailboxes(list.len()))),
    };
    let allowed = match &address.domain {
        AddressDomain::Literal(_) => false,
        AddressDomain::Name(d) => {
            (!config.from_strict || lists.has_domain(&config.local_domains, d).await?)
                && match from_domains {
                    None => true,
                    Some(fd) => lists.has_domain(fd, d).await?,
                }
        }
    };
    Ok(if allowed {
        Verdict::Continue
    } else {
        Verdict::Refuse(reply::from_domain_not_authorised(
            &address.domain.to_string(),
        ))
    })
}

/// Inbound mail: refused only when `inbound_own_domain: reject` and a From:
/// mailbox is in one of our domains. Every mailbox of every From: header
/// counts, so that a second mailbox or header does not hide the claim.
async fn inbound(
    config: &Config,
    lists: &Lists<'_>,
    from: &FromHeaders,
) -> Result<Verdict, Failure> {
    if config.inbound_own_domain == InboundOwnDomain::Accept {
        return Ok(Verdict::Continue);
    }
    if from.too_long {
        // Too long to read whole, so a claim cannot be ruled out.
        return Ok(Verdict::Refuse(reply::malformed_from_header(&format!(
            "longer than {} bytes",
            config.from_max_length
        ))));
    }
    for d in from.values.iter().flat_map(|v| claimed_domains(v)) {
        if lists.has_domain(&config.local_domains, &d).await? {
            return Ok(Verdict::Refuse(reply::from_domain_from_outside(d.as_str())));
        }
    }
    Ok(Verdict::Continue)
}

/// The domains a From: value names: its mailboxes' (groups' members
/// included). A value that does not parse is read for every `@domain` in
/// it, as a lenient mail reader might display it.
fn claimed_domains(value: &[u8]) -> Vec<Domain> {
    match parse_address_list(value) {
        Ok(entries) => entries
            .iter()
            .flat_map(|e| match e {
                Entry::Mailbox(a) => std::slice::from_ref(a),
                Entry::Group(members) => members.as_slice(),
            })
            .filter_map(|a| a.domain.name().cloned())
            .collect(),
        Err(_) => value
            .split(|&b| b == b'@')
            .skip(1)
            .filter_map(|after| {
                let end = after
                    .iter()
                    .position(|&b| !(b.is_ascii_alphanumeric() || b"-.".contains(&b) || b >= 0x80))
                    .unwrap_or(after.len());
                Domain::parse_bytes(&after[..end]).ok()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::path::Path;

    #[derive(Deserialize)]
    struct Fixture {
        config: String,
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        class: Option<String>,
        /// `from_header.inbound_own_domain` for this case (default accept).
        #[serde(default)]
        inbound_own_domain: Option<InboundOwnDomain>,
        from: Vec<String>,
        #[serde(default)]
        too_long: bool,
        expect: String,
    }

    /// Vectors in tests/fixtures/from_header.yaml: headers in, reply out.
    #[tokio::test]
    async fn fixture_cases() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/from_header.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let fixture: Fixture = serde_saphyr::from_str(&text).unwrap();
        let mut config = Config::parse(Path::new("fixture"), &fixture.config).unwrap();
        let shared = crate::state::Shared::new(config.clone());
        let lists = shared.lists(false);
        assert!(fixture.cases.len() >= 20);
        for case in &fixture.cases {
            config.inbound_own_domain = case.inbound_own_domain.unwrap_or_default();
            let class = case
                .class
                .as_ref()
                .map(|n| config.classes.iter().find(|c| &c.name == n).unwrap());
            let from = FromHeaders {
                values: case.from.iter().map(|v| v.as_bytes().to_vec()).collect(),
                too_long: case.too_long,
            };
            let got = match judge(&config, &lists, class, &from).await.verdict {
                Verdict::Continue => "continue".to_string(),
                Verdict::Refuse(r) => r.reply.to_string(),
                Verdict::TempError(e) => format!("temperror: {e}"),
                Verdict::Hold(h) => format!("hold: {}", h.incident),
            };
            assert_eq!(
                got, case.expect,
                "From: {:?} class {:?} inbound_own_domain {:?}",
                case.from, case.class, case.inbound_own_domain
            );
        }
    }

    #[tokio::test]
    async fn not_strict_and_no_class_rule_checks_nothing() {
        let mut config = Config::parse(
            Path::new("t"),
            "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\n",
        )
        .unwrap();
        config.from_strict = false;
        let shared = crate::state::Shared::new(config.clone());
        let lists = shared.lists(false);
        assert_eq!(
            judge(&config, &lists, None, &FromHeaders::default())
                .await
                .verdict,
            Verdict::Continue
        );
    }
}
