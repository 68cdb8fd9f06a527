//! Client classes: the first class, top to bottom, whose `clients` holds the
//! client IP and whose `auth` accepts the SASL login. Only the classes the
//! index finds for the client's address and login are judged
//! ([`crate::config::Classes::candidates`]), in order.

use crate::address::canonical_ip as canonical;
use crate::config::{AuthMatch, Class, Config, Entries};
use crate::sources::{Failure, Lists};
use std::net::IpAddr;

/// The class of a client and its position, or `None` for an unknown client. A class with
/// both `clients` and `auth` needs both to match; a class with only one of
/// them needs that one. A `clients` source that cannot answer is an error:
/// the client is neither placed in a later class nor taken for a stranger.
pub async fn resolve<'c>(
    config: &'c Config,
    lists: &Lists<'_>,
    ip: Option<IpAddr>,
    login: Option<&str>,
) -> Result<Option<(usize, &'c Class)>, Failure> {
    let ip = ip.map(canonical);
    for i in config.classes.candidates(ip, login) {
        let Some(class) = config.classes.get(i) else {
            continue;
        };
        if matches(class, lists, ip, login).await? {
            return Ok(Some((i, class)));
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
        (list, Some(ip)) => lists.has_ip(list, ip).await,
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
                .map(|(_, c)| c.name.clone())
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

    /// Overlapping networks in several classes, a login class before and
    /// after a network class, an IPv4-mapped client, a class from a source:
    /// the index finds the class reading every class in order finds.
    #[tokio::test]
    async fn the_index_finds_the_first_class_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vpn.txt");
        std::fs::write(&file, "10.7.0.0/16\n").unwrap();
        let c = Config::parse(
            &dir.path().join("t.yaml"),
            &format!(
                "
listen: inet:127.0.0.1:1
local_domains: [example.com]
sources: {{ vpn: {{ file: {} }} }}
classes:
  - {{ name: alice-anywhere, auth: [alice] }}
  - {{ name: small, clients: [10.1.2.0/28] }}
  - {{ name: wide, clients: [10.0.0.0/8, \"2001:db8::/32\"] }}
  - {{ name: narrow-after-wide, clients: [10.1.2.0/24] }}
  - {{ name: vpn, clients: {{ source: vpn }} }}
  - {{ name: bob-on-net, clients: [192.168.0.0/16], auth: [bob] }}
  - {{ name: net-only, clients: [192.168.1.0/24] }}
  - {{ name: anyone-logged-in, auth: any }}
  - {{ name: mapped, clients: [\"::ffff:172.16.0.0/108\"] }}
",
                file.display()
            ),
        )
        .unwrap();
        let shared = crate::state::Shared::new(c.clone());
        let lists = shared.lists(false);
        let mut compared = 0;
        for ip in [
            None,
            Some("10.1.2.3"),
            Some("10.1.2.200"),
            Some("10.7.1.1"),
            Some("192.168.1.9"),
            Some("192.168.2.9"),
            Some("::ffff:10.1.2.3"),
            Some("172.16.0.1"),
            Some("2001:db8::7"),
            Some("203.0.113.1"),
        ] {
            let ip: Option<IpAddr> = ip.map(|i| i.parse().unwrap());
            for login in [None, Some("alice"), Some("bob"), Some("Bob"), Some("carol")] {
                let mut want = None;
                for (i, class) in c.classes.iter().enumerate() {
                    if matches(class, &lists, ip.map(canonical), login)
                        .await
                        .unwrap()
                    {
                        want = Some(class.name.clone());
                        assert_eq!(c.classes.get(i).map(|k| &k.name), want.as_ref());
                        break;
                    }
                }
                let got = resolve(&c, &lists, ip, login).await.unwrap();
                assert_eq!(got.map(|(_, k)| k.name.clone()), want, "{ip:?} {login:?}");
                if let Some((i, k)) = got {
                    assert_eq!(c.classes[i].name, k.name);
                }
                compared += 1;
            }
        }
        assert_eq!(compared, 50);
        // Each class is reached by some client.
        for (ip, login, want) in [
            ("10.1.2.3", None, "small"),
            ("10.1.2.200", None, "wide"),
            ("192.168.1.9", Some("bob"), "bob-on-net"),
            ("192.168.1.9", None, "net-only"),
            ("192.168.2.9", Some("carol"), "anyone-logged-in"),
            ("172.16.0.1", None, "mapped"),
            ("10.1.2.3", Some("alice"), "alice-anywhere"),
        ] {
            let got = resolve(&c, &lists, ip.parse().ok(), login).await.unwrap();
            assert_eq!(
                got.map(|(_, k)| k.name.as_str()),
                Some(want),
                "{ip} {login:?}"
            );
        }
    }
}
