//! Which rate limits apply to a connection, a message or a recipient, with
//! which rate and which key: the first override that matches the facts and
//! sets the limit wins, else the default. Overrides apply to every client,
//! trusted classes included.
//!
//! | limit | key | an override's match is tested against |
//! |---|---|---|
//! | connections_per_client, concurrent_per_client | client IP | IP/CIDR; class name (classes matched by IP alone) |
//! | messages_per_client | client IP | IP/CIDR; class name; login; sender address / @domain |
//! | messages_per_sender, recipients_per_sender | sender address | the same |
//! | messages_per_user | SASL login | the same |
//! | messages_per_recipient | recipient address | IP/CIDR; class name; login; recipient address / @domain |

use crate::address::{any_matches, canonical_ip, Address};
use crate::config::{LimitKeys, Matcher, RateLimits, Setting};
use crate::limiter::{client_key, Check, LimitName, LimiterError, Outcome};
use crate::policy::Verdict;
use crate::reply;
use std::net::IpAddr;

/// What is known of the client and the message at a stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts<'a> {
    pub ip: Option<IpAddr>,
    pub class: Option<&'a str>,
    pub login: Option<&'a str>,
    pub sender: Option<&'a Address>,
    pub rcpt: Option<&'a Address>,
}

fn matches(m: &Matcher, keys: &LimitKeys, name: LimitName, f: &Facts<'_>) -> bool {
    let address = if name == LimitName::MessagesPerRecipient {
        f.rcpt
    } else {
        f.sender
    };
    match m {
        Matcher::Network(n) => f.ip.is_some_and(|ip| n.contains(&canonical_ip(ip))),
        Matcher::Word(w) => {
            f.class == Some(w.as_str()) || f.login.is_some_and(|l| keys.same_login(l, w))
        }
        Matcher::Domain(p) => address
            .and_then(|a| a.domain.name())
            .is_some_and(|d| any_matches(std::slice::from_ref(p), d)),
        Matcher::Address(a) => address.is_some_and(|x| keys.same_address(x, a)),
    }
}

/// The setting of one limit for these facts.
pub fn setting(limits: &RateLimits, name: LimitName, facts: &Facts<'_>) -> Option<Setting> {
    limits
        .overrides
        .iter()
        .filter(|o| matches(&o.matcher, &limits.keys, name, facts))
        .find_map(|o| o.limits.get(name))
        .or_else(|| limits.defaults.get(name))
}

fn push(
    out: &mut Vec<Check>,
    limits: &RateLimits,
    name: LimitName,
    facts: &Facts<'_>,
    key: Option<String>,
) {
    if let (Some(Setting::Rate(rate)), Some(key)) = (setting(limits, name, facts), key) {
        out.push(Check {
            name,
            key,
            rate,
            n: 1,
        });
    }
}

fn ip_key(facts: &Facts<'_>) -> Option<String> {
    facts.ip.map(client_key)
}

/// The verdict on a batch of message or recipient limits: refused, with
/// when to retry, by the check that must wait longest; a limiter failure is
/// a [`Verdict::TempError`].
pub fn verdict(checks: &[Check], checked: Result<Outcome, LimiterError>) -> Verdict {
    match checked {
        Ok(Outcome::Allowed) => Verdict::Continue,
        Ok(Outcome::Denied { index, retry_after }) => match checks.get(index) {
            Some(c) => Verdict::Refuse(reply::rate_limited(c.name.as_str(), &c.key, retry_after)),
            None => Verdict::TempError(format!("rate limiter denied unknown check {index}")),
        },
        Err(e) => Verdict::TempError(format!("rate limiter failed: {e}")),
    }
}

/// The verdict on the connection limits for a client: refused with a 421,
/// which closes the connection.
pub fn connection_verdict(
    checks: &[Check],
    checked: Result<Outcome, LimiterError>,
    client: &str,
) -> Verdict {
    match checked {
        Ok(Outcome::Allowed) => Verdict::Continue,
        Ok(Outcome::Denied { index, .. }) => {
            let name = checks
                .get(index)
                .map_or("connections_per_client", |c| c.name.as_str());
            Verdict::Refuse(reply::too_many_connections(name, client))
        }
        Err(e) => Verdict::TempError(format!("rate limiter failed: {e}")),
    }
}

/// The verdict on the open-connection cap: `Ok(true)` when the client got a
/// place.
pub fn concurrent_verdict(got: Result<bool, &LimiterError>, client: &str) -> Verdict {
    match got {
        Ok(true) => Verdict::Continue,
        Ok(false) => Verdict::Refuse(reply::too_many_connections(
            LimitName::ConcurrentPerClient.as_str(),
            client,
        )),
        Err(e) => Verdict::TempError(format!("rate limiter failed: {e}")),
    }
}

/// At connect: the connection rate, and the cap on open connections.
pub fn connection(limits: &RateLimits, facts: &Facts<'_>) -> (Vec<Check>, Option<u32>) {
    let mut checks = Vec::new();
    push(
        &mut checks,
        limits,
        LimitName::ConnectionsPerClient,
        facts,
        ip_key(facts),
    );
    let concurrent = match setting(limits, LimitName::ConcurrentPerClient, facts) {
        Some(Setting::Count(n)) if facts.ip.is_some() => Some(n),
        _ => None,
    };
    (checks, concurrent)
}

/// At MAIL FROM: one message for the client, the sender and the login. A
/// null sender (a bounce) has no sender key.
pub fn message(limits: &RateLimits, facts: &Facts<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    push(
        &mut checks,
        limits,
        LimitName::MessagesPerClient,
        facts,
        ip_key(facts),
    );
    let sender = facts.sender.map(|a| limits.keys.address(a));
    push(
        &mut checks,
        limits,
        LimitName::MessagesPerSender,
        facts,
        sender,
    );
    let login = facts.login.map(|l| limits.keys.login(l));
    push(
        &mut checks,
        limits,
        LimitName::MessagesPerUser,
        facts,
        login,
    );
    checks
}

/// At RCPT TO: one message for the recipient, one recipient for the sender.
pub fn recipient(limits: &RateLimits, facts: &Facts<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    let rcpt = facts.rcpt.map(|a| limits.keys.address(a));
    push(
        &mut checks,
        limits,
        LimitName::MessagesPerRecipient,
        facts,
        rcpt,
    );
    let sender = facts.sender.map(|a| limits.keys.address(a));
    push(
        &mut checks,
        limits,
        LimitName::RecipientsPerSender,
        facts,
        sender,
    );
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn limits() -> RateLimits {
        Config::parse(
            Path::new("t.yaml"),
            r#"
listen: inet:127.0.0.1:1
local_domains: [example.com]
rate_limits:
  messages_per_client: 100/h
  messages_per_sender: 50/h
  messages_per_recipient: 30/h
  recipients_per_sender: 500/d
  concurrent_per_client: 20
  overrides:
    - { match: 192.168.123.10, messages_per_client: 500/h }
    - { match: jim@xyz.com, messages_per_sender: 2/m }
    - { match: "@bulk.example.com", messages_per_sender: unlimited, recipients_per_sender: unlimited }
    - { match: 10.0.0.0/8, messages_per_sender: 10/h, concurrent_per_client: unlimited }
    - { match: crm-app, messages_per_client: 1000/h }
    - { match: "@example.net", messages_per_recipient: 5/h }
"#,
        )
        .unwrap()
        .rate_limits
    }

    fn rate_of(checks: &[Check], name: LimitName) -> Option<String> {
        checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.rate.to_string())
    }

    #[test]
    fn first_matching_override_that_sets_the_limit_wins() {
        let l = limits();
        let jim = Address::parse("jim@xyz.com").unwrap();
        let bulk = Address::parse("news@bulk.example.com").unwrap();
        let ann = Address::parse("ann@xyz.com").unwrap();
        let f = |ip: &str, class, sender| Facts {
            ip: ip.parse().ok(),
            class,
            sender,
            ..Facts::default()
        };
        let c = message(&l, &f("192.168.123.10", None, Some(&jim)));
        assert_eq!(
            rate_of(&c, LimitName::MessagesPerClient).as_deref(),
            Some("500/h")
        );
        assert_eq!(
            rate_of(&c, LimitName::MessagesPerSender).as_deref(),
            Some("2/m")
        );
        // jim's own override comes before the 10/8 one.
        let c = message(&l, &f("10.1.1.1", None, Some(&jim)));
        assert_eq!(
            rate_of(&c, LimitName::MessagesPerSender).as_deref(),
            Some("2/m")
        );
        let c = message(&l, &f("10.1.1.1", None, Some(&ann)));
        assert_eq!(
            rate_of(&c, LimitName::MessagesPerSender).as_deref(),
            Some("10/h")
        );
        // unlimited: no check at all.
        let c = message(&l, &f("192.0.2.1", None, Some(&bulk)));
        assert_eq!(rate_of(&c, LimitName::MessagesPerSender), None);
        assert_eq!(
            rate_of(&c, LimitName::MessagesPerClient).as_deref(),
            Some("100/h")
        );
        // A trusted class is limited too, by its own override.
        let c = message(&l, &f("192.0.2.1", Some("crm-app"), Some(&ann)));
        assert_eq!(
            rate_of(&c, LimitName::MessagesPerClient).as_deref(),
            Some("1000/h")
        );
        // A null sender has no sender key.
        let c = message(&l, &f("192.0.2.1", None, None));
        assert_eq!(rate_of(&c, LimitName::MessagesPerSender), None);
    }

    #[test]
    fn recipient_limits_match_the_recipient() {
        let l = limits();
        let ann = Address::parse("ann@xyz.com").unwrap();
        let r1 = Address::parse("x@example.net").unwrap();
        let r2 = Address::parse("x@gmail.com").unwrap();
        let facts = |rcpt| Facts {
            ip: "192.0.2.1".parse().ok(),
            sender: Some(&ann),
            rcpt,
            ..Facts::default()
        };
        let c = recipient(&l, &facts(Some(&r1)));
        assert_eq!(
            rate_of(&c, LimitName::MessagesPerRecipient).as_deref(),
            Some("5/h")
        );
        assert_eq!(c[0].key, "x@example.net");
        let c = recipient(&l, &facts(Some(&r2)));
        assert_eq!(
            rate_of(&c, LimitName::MessagesPerRecipient).as_deref(),
            Some("30/h")
        );
        assert_eq!(
            rate_of(&c, LimitName::RecipientsPerSender).as_deref(),
            Some("500/d")
        );
    }

    fn keyed(extra: &str) -> RateLimits {
        Config::parse(
            Path::new("t.yaml"),
            &format!(
                "listen: inet:127.0.0.1:1
local_domains: [example.com]
rate_limits:
  messages_per_sender: 50/h
  messages_per_user: 50/h
  messages_per_recipient: 30/h
{extra}  overrides:
    - {{ match: Jim@XYZ.com, messages_per_sender: 2/m }}
    - {{ match: GINA, messages_per_user: 3/m }}
"
            ),
        )
        .unwrap()
        .rate_limits
    }

    fn keys_of(l: &RateLimits, sender: &str, login: &str, rcpt: &str) -> Vec<(String, String)> {
        let sender = Address::parse(sender).unwrap();
        let rcpt = Address::parse(rcpt).unwrap();
        let facts = Facts {
            ip: "192.0.2.1".parse().ok(),
            login: Some(login),
            sender: Some(&sender),
            rcpt: Some(&rcpt),
            ..Facts::default()
        };
        message(l, &facts)
            .into_iter()
            .chain(recipient(l, &facts))
            .map(|c| (c.key, c.rate.to_string()))
            .collect()
    }

    #[test]
    fn one_person_one_key_by_default() {
        let l = keyed("");
        // Case and subaddress folded, for senders, logins and recipients.
        let want = vec![
            ("w1@example.com".to_string(), "50/h".to_string()),
            ("gina".into(), "3/m".into()),
            ("w2@gmail.com".into(), "30/h".into()),
        ];
        for (sender, login, rcpt) in [
            ("w1@example.com", "gina", "w2@gmail.com"),
            ("W1@Example.COM", "GINA", "W2@gmail.com"),
            ("w1+news@example.com", "Gina", "w2+a+b@GMAIL.com"),
            ("\"W1+x\"@example.com", "gInA", "w2+@gmail.com"),
        ] {
            assert_eq!(
                keys_of(&l, sender, login, rcpt),
                want,
                "{sender} {login} {rcpt}"
            );
        }
        // Overrides match every spelling.
        let k = keys_of(&l, "jim+promo@xyz.com", "x", "a@b.example");
        assert_eq!(k[0], ("jim@xyz.com".into(), "2/m".into()));
        // A local part that starts with the delimiter stays whole.
        let k = keys_of(&l, "+tag@example.com", "x", "a@b.example");
        assert_eq!(k[0].0, "+tag@example.com");
    }

    #[test]
    fn key_forms_can_be_turned_off_or_widened() {
        let l = keyed("  keys: { fold_case: false, delimiter: \"\" }\n");
        let k = keys_of(&l, "W1+news@example.com", "GINA", "W2+x@gmail.com");
        assert_eq!(
            k,
            vec![
                ("W1+news@example.com".to_string(), "50/h".to_string()),
                ("GINA".into(), "3/m".into()),
                ("W2+x@gmail.com".into(), "30/h".into()),
            ]
        );
        // The override is spelt Jim@; jim@ is another sender now, and gina
        // another login.
        let k = keys_of(&l, "jim@xyz.com", "gina", "a@b.example");
        assert_eq!(k[0].1, "50/h");
        assert_eq!(k[1].1, "50/h");
        let l = keyed("  keys: { delimiter: \"+-\" }\n");
        let k = keys_of(&l, "w1-news@example.com", "x", "owner-list@example.org");
        assert_eq!(k[0].0, "w1@example.com");
        assert_eq!(k[2].0, "owner@example.org");
    }

    #[test]
    fn a_bad_delimiter_names_its_key() {
        for bad in ["a", "+ ", "@", "\\\\"] {
            let text = format!(
                "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\nrate_limits:\n  keys: {{ delimiter: \"{bad}\" }}\n"
            );
            let e = Config::parse(Path::new("t.yaml"), &text)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("t.yaml:4") && e.contains("rate_limits.keys.delimiter"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn concurrent_cap() {
        let l = limits();
        let f = |ip: &str| Facts {
            ip: ip.parse().ok(),
            ..Facts::default()
        };
        assert_eq!(connection(&l, &f("192.0.2.1")).1, Some(20));
        assert_eq!(connection(&l, &f("10.2.3.4")).1, None);
        assert_eq!(connection(&l, &Facts::default()).1, None);
    }
}
