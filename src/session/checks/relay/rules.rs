//! RCPT TO: open-relay prevention. A client in a class may send anywhere;
//! an unknown client (no class, or no login that a class accepts) may send
//! only to our own domains.
//!
//! A local domain is not enough: `user%remote@local` (percent hack),
//! `remote!user@local` (bang path) and `"user@remote"@local` (quoted local
//! part) name a remote mailbox behind a local one, and an MTA along the way
//! may still route them there. They are refused for unknown clients, as
//! Postfix's relay check does after its own address rewriting.

use crate::address::EnvelopeAddress;
use crate::config::{Class, Config};
use crate::reply;
use crate::sources::Lists;
use crate::verdict::{Backend, Verdict};

pub async fn check(
    config: &Config,
    lists: &Lists<'_>,
    class: Option<&Class>,
    rcpt: &Result<EnvelopeAddress, String>,
) -> Verdict {
    if class.is_some() {
        return Verdict::Continue;
    }
    let local = match rcpt {
        Ok(EnvelopeAddress::Address(a)) if !a.local.contains(['%', '!', '@']) => {
            match a.domain.name() {
                Some(d) => match lists.has_domain(&config.local_domains, d).await {
                    Ok(yes) => yes,
                    Err(e) => return Verdict::failed(Backend::Source, format!("relay check: {e}")),
                },
                None => false,
            }
        }
        // `RCPT TO:<>` is not a mailbox; an unparsable one is no local one.
        _ => false,
    };
    if local {
        Verdict::Continue
    } else {
        Verdict::Refuse(reply::relay_denied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::parse_envelope;
    use std::path::Path;

    #[tokio::test]
    async fn unknown_clients_reach_local_domains_only() {
        let config = Config::parse(
            Path::new("t.yaml"),
            "listen: inet:127.0.0.1:1\nlocal_domains: [example.com, \"*.example.org\"]\nclasses: [{name: app, clients: [10.0.0.0/8]}]\n",
        )
        .unwrap();
        let shared = crate::state::Shared::new(config.clone());
        let lists = shared.lists(false);
        let r = |s: &str| parse_envelope(s.as_bytes()).map_err(|_| s.to_string());
        let relay = Verdict::Refuse(reply::relay_denied());
        assert_eq!(
            check(&config, &lists, None, &r("<a@example.com>")).await,
            Verdict::Continue
        );
        assert_eq!(
            check(&config, &lists, None, &r("<a@EXAMPLE.com.>")).await,
            Verdict::Continue
        );
        assert_eq!(
            check(&config, &lists, None, &r("<a@x.example.org>")).await,
            Verdict::Continue
        );
        assert_eq!(
            check(&config, &lists, None, &r("<a@example.org>")).await,
            relay
        );
        assert_eq!(
            check(&config, &lists, None, &r("<a@gmail.com>")).await,
            relay
        );
        assert_eq!(
            check(&config, &lists, None, &r("<\"a@example.com\"@gmail.com>")).await,
            relay
        );
        assert_eq!(
            check(&config, &lists, None, &r("<@example.com:a@gmail.com>")).await,
            relay
        );
        assert_eq!(
            check(&config, &lists, None, &r("<a@[127.0.0.1]>")).await,
            relay
        );
        assert_eq!(
            check(&config, &lists, None, &r("<victim%gmail.com@example.com>")).await,
            relay
        );
        assert_eq!(
            check(&config, &lists, None, &r("<gmail.com!victim@example.com>")).await,
            relay
        );
        assert_eq!(
            check(
                &config,
                &lists,
                None,
                &r("<\"victim@gmail.com\"@example.com>")
            )
            .await,
            relay
        );
        assert_eq!(
            check(&config, &lists, None, &r("<first.last+tag@example.com>")).await,
            Verdict::Continue
        );
        assert_eq!(check(&config, &lists, None, &r("<a>")).await, relay);
        assert_eq!(
            check(
                &config,
                &lists,
                Some(&config.classes[0]),
                &r("<a@gmail.com>")
            )
            .await,
            Verdict::Continue
        );
    }
}
