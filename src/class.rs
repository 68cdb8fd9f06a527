//! Client classes: the first class, top to bottom, whose `clients` holds the
//! client IP and whose `auth` accepts the SASL login.

use crate::address::canonical_ip as canonical;
use crate::config::{AuthMatch, Class, Config, Entries};
use crate::sources::{Failure, Lists};
use std::net::IpAddr;

/// The class of a client, or `None` for an unknown client. A class with
/// both `clients` and `auth` needs both to match; a class with only one of
/// them needs that one. A `clients` source that cannot answer is an error:
/// the client is neither placed in a later class nor taken for a stranger.
pub async fn resolve<'c>(
    config: &'c Config,
    lists: &Lists<'_>,
    ip: Option<IpAddr>,
    login: Option<&str>,
) -> Result<Option<&'c Class>, Failure> {
    for class in &config.classes {
        if matches(class, lists, ip, login).await? {
            return Ok(Some(class));
        }
    }
    Ok(None)
}

async fn matches(
    class: &Class,
    lists: &Lists<'_>,
    ip: Option<IpAddr>,
    login: Option<&str>,
) -> Result<bool, Failure> {
    let auth_ok = match (&class.auth, login) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(AuthMatch::Any), Some(_)) => true,
        (Some(AuthMatch::Logins(l)), Some(login)) => l.iter().any(|x| x == login),
    };
    if !auth_ok {
        return Ok(false);
    }
    match (&class.clients, ip) {
        (Entries::Inline(v), _) if v.is_empty() => Ok(true),
        (_, None) => Ok(false),
        (list, Some(ip)) => lists.has_ip(list, canonical(ip)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        Config::parse(
            Path::new("t.yaml"),
            "
listen: inet:127.0.0.1:1
local_domains: [example.com]
classes:
  - { name: crm, clients: [10.1.2.0/24, 10.1.3.7] }
  - { name: staff-vpn, clients: [10.9.0.0/16], auth: [alice] }
  - { name: staff, auth: any }
",
        )
        .unwrap()
    }

    #[tokio::test]
    async fn first_match_wins() {
        let c = config();
        let shared = crate::state::Shared::new(c.clone());
        let lists = shared.lists(false);
        let name = async |ip: Option<&str>, login| {
            resolve(&c, &lists, ip.map(|i| i.parse().unwrap()), login)
                .await
                .unwrap()
                .map(|c| c.name.clone())
        };
        let n = |s: &str| Some(s.to_string());
        assert_eq!(name(Some("10.1.2.9"), None).await, n("crm"));
        assert_eq!(name(Some("10.1.2.9"), Some("bob")).await, n("crm"));
        assert_eq!(name(Some("::ffff:10.1.3.7"), None).await, n("crm"));
        assert_eq!(name(Some("10.1.3.8"), None).await, None);
        assert_eq!(name(Some("10.9.1.1"), Some("alice")).await, n("staff-vpn"));
        assert_eq!(name(Some("10.9.1.1"), Some("bob")).await, n("staff"));
        assert_eq!(name(Some("10.9.1.1"), None).await, None);
        assert_eq!(name(None, Some("x")).await, n("staff"));
        assert_eq!(name(None, None).await, None);
    }
}
