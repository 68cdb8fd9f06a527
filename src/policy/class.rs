//! Client classes: the first class, top to bottom, whose `clients` holds the
//! client IP and whose `auth` accepts the SASL login.

use crate::address::canonical_ip as canonical;
use crate::config::{AuthMatch, Class, Config};
use std::net::IpAddr;

/// The class of a client, or `None` for an unknown client. A class with
/// both `clients` and `auth` needs both to match; a class with only one of
/// them needs that one.
pub fn resolve<'c>(
    config: &'c Config,
    ip: Option<IpAddr>,
    login: Option<&str>,
) -> Option<&'c Class> {
    config.classes.iter().find(|c| matches(c, ip, login))
}

fn matches(class: &Class, ip: Option<IpAddr>, login: Option<&str>) -> bool {
    let ip_ok = class.clients.is_empty()
        || ip.is_some_and(|ip| class.clients.iter().any(|n| n.contains(&canonical(ip))));
    let auth_ok = match (&class.auth, login) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(AuthMatch::Any), Some(_)) => true,
        (Some(AuthMatch::Logins(l)), Some(login)) => l.iter().any(|x| x == login),
    };
    ip_ok && auth_ok
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

    #[test]
    fn first_match_wins() {
        let c = config();
        let name = |ip: &str, login| {
            resolve(&c, Some(ip.parse().unwrap()), login).map(|c| c.name.as_str())
        };
        assert_eq!(name("10.1.2.9", None), Some("crm"));
        assert_eq!(name("10.1.2.9", Some("bob")), Some("crm"));
        assert_eq!(name("::ffff:10.1.3.7", None), Some("crm"));
        assert_eq!(name("10.1.3.8", None), None);
        assert_eq!(name("10.9.1.1", Some("alice")), Some("staff-vpn"));
        assert_eq!(name("10.9.1.1", Some("bob")), Some("staff"));
        assert_eq!(name("10.9.1.1", None), None);
        assert_eq!(
            resolve(&c, None, Some("x")).map(|c| c.name.as_str()),
            Some("staff")
        );
        assert_eq!(resolve(&c, None, None).map(|c| c.name.as_str()), None);
    }
}
