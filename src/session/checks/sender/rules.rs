//! MAIL FROM: may this client use this envelope sender?

use crate::address::{Address, EnvelopeAddress};
use crate::config::{Class, Config, UnknownClients};
use crate::reply;
use crate::sources::{Answer, Failure, Lists};
use crate::verdict::{Backend, Verdict};

/// The envelope sender as received: parsed, or the raw text when it could
/// not be parsed (it then matches no rule that needs a domain).
pub type Sender = Result<EnvelopeAddress, String>;

pub async fn check(
    config: &Config,
    lists: &Lists<'_>,
    class: Option<&Class>,
    client: &str,
    sender: &Sender,
    login: Option<&str>,
) -> Verdict {
    match judge(config, lists, class, client, sender, login).await {
        Ok(v) => v,
        Err(e) => Verdict::failed(Backend::Source, format!("sender check: {e}")),
    }
}

async fn judge(
    config: &Config,
    lists: &Lists<'_>,
    class: Option<&Class>,
    client: &str,
    sender: &Sender,
    login: Option<&str>,
) -> Result<Verdict, Failure> {
    let Some(class) = class else {
        return Ok(match config.unknown_clients {
            UnknownClients::Reject => Verdict::Refuse(reply::client_not_authorised(client)),
            // Unknown clients are held to local recipients at RCPT TO.
            UnknownClients::RelayDeny => Verdict::Continue,
        });
    };
    let address = match sender {
        Ok(EnvelopeAddress::Null) if class.allow_null_sender => return Ok(Verdict::Continue),
        Ok(EnvelopeAddress::Null) => return Ok(Verdict::Refuse(reply::null_sender(&class.name))),
        Ok(EnvelopeAddress::Address(a)) => a,
        Err(raw) => {
            return Ok(Verdict::Refuse(reply::sender_not_authorised(
                reply::Rule::SenderDomains,
                raw,
                &class.name,
            )))
        }
    };
    let shown = address.to_string();
    let domain_ok = match address.domain.name() {
        Some(d) => lists.has_domain(&class.sender_domains, d).await?,
        None => false,
    };
    if !domain_ok {
        return Ok(Verdict::Refuse(reply::sender_not_authorised(
            reply::Rule::SenderDomains,
            &shown,
            &class.name,
        )));
    }
    if let Some(list) = &class.sender_addresses {
        if !lists.has_address(list, address).await? {
            return Ok(Verdict::Refuse(reply::sender_not_authorised(
                reply::Rule::SenderAddresses,
                &shown,
                &class.name,
            )));
        }
    }
    if class.login_match {
        let owned = match (login, &class.login_map) {
            (None, _) => false,
            (Some(l), None) => owns(l, address),
            (Some(l), Some(map)) => owns_by_map(lists, map, l, address).await?,
        };
        if !owned {
            return Ok(Verdict::Refuse(reply::sender_not_owned(
                &shown,
                login.unwrap_or("-"),
            )));
        }
    }
    Ok(Verdict::Continue)
}

/// With a login map, the map alone says what a login may send as: its
/// addresses (aliases, shared mailboxes) and the domains it holds as
/// `@domain`. Local parts compare without regard to case, as directories
/// and mail stores compare them; a login the map does not know owns
/// nothing.
async fn owns_by_map(
    lists: &Lists<'_>,
    map: &str,
    login: &str,
    address: &Address,
) -> Result<bool, Failure> {
    let Answer::Found(values) = lists.lookup(map, login).await? else {
        return Ok(false);
    };
    let whole_domain = format!("@{}", address.domain);
    Ok(values.iter().any(
        |v| match crate::config::list_file::owned_address(v.trim()) {
            Some(owned) if owned.starts_with('@') => owned == whole_domain,
            Some(owned) => Address::parse(&owned).is_ok_and(|o| o.same_limit_key(address)),
            None => false,
        },
    ))
}

/// A login that is an address owns exactly that address; a plain login
/// `alice` owns `alice@` any of the class's sender domains (the domain was
/// checked before).
fn owns(login: &str, address: &Address) -> bool {
    if login.contains('@') {
        Address::parse(login).is_ok_and(|l| &l == address)
    } else {
        address.local == login
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::parse_envelope;
    use std::path::Path;

    const CONFIG: &str = "
listen: inet:127.0.0.1:1
local_domains: [example.com, \"*.example.org\"]
classes:
  - { name: crm, clients: [10.1.2.0/24], sender_domains: [example.com], sender_addresses: [noreply@example.com] }
  - { name: bounces, clients: [10.1.4.0/24], allow_null_sender: true }
  - { name: staff, auth: any, login_match: true }
  - { name: any-app, clients: [10.1.5.0/24] }
";

    /// Table: class, sender, login, expected reply ("" = continue).
    #[tokio::test]
    async fn sender_rules() {
        let config = Config::parse(Path::new("t.yaml"), CONFIG).unwrap();
        let shared = crate::state::Shared::new(config.clone());
        let lists = shared.lists(false);
        let class = |n: &str| config.classes.iter().find(|c| c.name == n);
        let cases: &[(&str, &str, Option<&str>, &str)] = &[
            ("crm", "<noreply@example.com>", None, ""),
            (
                "crm",
                "<NoReply@example.com>",
                None,
                "550 5.7.1 Sender <NoReply@example.com> not authorised for crm",
            ),
            ("crm", "<noreply@EXAMPLE.COM.>", None, ""),
            (
                "crm",
                "<sales@example.com>",
                None,
                "550 5.7.1 Sender <sales@example.com> not authorised for crm",
            ),
            (
                "crm",
                "<noreply@evil.com>",
                None,
                "550 5.7.1 Sender <noreply@evil.com> not authorised for crm",
            ),
            (
                "crm",
                "<>",
                None,
                "550 5.7.1 Null sender not allowed for crm",
            ),
            ("bounces", "<>", None, ""),
            ("bounces", "<x@a.example.org>", None, ""),
            (
                "bounces",
                "<x@example.org>",
                None,
                "550 5.7.1 Sender <x@example.org> not authorised for bounces",
            ),
            ("staff", "<alice@example.com>", Some("alice"), ""),
            ("staff", "<alice@b.example.org>", Some("alice"), ""),
            (
                "staff",
                "<bob@example.com>",
                Some("alice"),
                "553 5.7.1 Sender <bob@example.com> not owned by user alice",
            ),
            (
                "staff",
                "<alice@example.com>",
                Some("alice@example.com"),
                "",
            ),
            (
                "staff",
                "<alice@a.example.org>",
                Some("alice@example.com"),
                "553 5.7.1 Sender <alice@a.example.org> not owned by user alice@example.com",
            ),
            (
                "staff",
                "<Alice@example.com>",
                Some("alice"),
                "553 5.7.1 Sender <Alice@example.com> not owned by user alice",
            ),
            // Every spelling of an address is that address (RFC 5322
            // §3.2.4): quoting neither evades nor fails an allowlist.
            ("crm", "<\"noreply\"@example.com>", None, ""),
            ("crm", "<\"no\\reply\"@example.com>", None, ""),
            (
                "crm",
                "<\"NoReply\"@example.com>",
                None,
                "550 5.7.1 Sender <NoReply@example.com> not authorised for crm",
            ),
            (
                "crm",
                "<\"noreply \"@example.com>",
                None,
                "550 5.7.1 Sender <\"noreply \"@example.com> not authorised for crm",
            ),
            ("staff", "<\"alice\"@example.com>", Some("alice"), ""),
            (
                "staff",
                "<\"alice\"@example.com>",
                Some("alice@example.com"),
                "",
            ),
            (
                "staff",
                "<\"alice.\"@example.com>",
                Some("alice"),
                "553 5.7.1 Sender <\"alice.\"@example.com> not owned by user alice",
            ),
            (
                "any-app",
                "<x@[10.0.0.1]>",
                None,
                "550 5.7.1 Sender <x@[10.0.0.1]> not authorised for any-app",
            ),
            (
                "any-app",
                "<\"x@example.com\"@evil.com>",
                None,
                "550 5.7.1 Sender <\"x@example.com\"@evil.com> not authorised for any-app",
            ),
        ];
        for (cls, sender, login, want) in cases {
            let s = parse_envelope(sender.as_bytes()).map_err(|_| sender.to_string());
            let got = match check(&config, &lists, class(cls), "10.0.0.1", &s, *login).await {
                Verdict::Continue => String::new(),
                Verdict::Refuse(r) => r.reply.to_string(),
                Verdict::TempError(e) => format!("temperror: {e}"),
                Verdict::Hold(h) => format!("hold: {}", h.incident),
            };
            assert_eq!(&got, want, "{cls} {sender} {login:?}");
        }
    }

    #[tokio::test]
    async fn unknown_clients() {
        let mut config = Config::parse(Path::new("t.yaml"), CONFIG).unwrap();
        let shared = crate::state::Shared::new(config.clone());
        let lists = shared.lists(false);
        let s = parse_envelope(b"<x@evil.com>").map_err(|_| String::new());
        assert_eq!(
            check(&config, &lists, None, "192.0.2.1", &s, None).await,
            Verdict::Continue
        );
        config.unknown_clients = UnknownClients::Reject;
        let Verdict::Refuse(r) = check(&config, &lists, None, "192.0.2.1", &s, None).await else {
            panic!("unknown client accepted")
        };
        assert_eq!(
            r.reply.to_string(),
            "550 5.7.1 Client 192.0.2.1 not authorised to send mail"
        );
    }
}
