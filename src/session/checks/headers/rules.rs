//! End of message: header scrubbing. Headers that trace a message's path
//! (Received:, X-Received:, X-Forwarded-For: and the like) hand outsiders
//! the internal network map when they name an address inside
//! `internal_networks` or a host of `internal_hostnames`. Every such
//! Received: line is removed, except the topmost, which is our gateway's
//! own hop: it is kept with its from-clause and every internal name and
//! address replaced by `[redacted]`. The other tracing headers that name
//! anything internal are removed. Our own `X-Egress-Score` and
//! `X-Egress-Rules` are ours alone: any a client wrote are removed.

use crate::config::{HostPatterns, Set};
use ipnet::IpNet;
use regex::Regex;
use std::{net::IpAddr, sync::LazyLock};

/// An edit of one header: the `index`-th (1-based) of its name, replaced
/// by `Some(value)` or deleted.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Edit {
    pub name: String,
    pub index: usize,
    pub value: Option<String>,
}

/// A header kept for scrubbing: its name as written, its index among the
/// headers of that name (1-based), its value.
#[derive(Clone, Debug)]
pub struct Traced {
    pub name: String,
    pub index: usize,
    pub value: Vec<u8>,
}

/// Whether a header is one scrubbing reads: Received: and the headers
/// proxies and mail systems use to say where a message came from.
pub fn traced(name: &[u8]) -> bool {
    // Every header of every message passes here: no allocation.
    let prefix = |p: &[u8]| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p);
    [
        &b"received"[..],
        b"x-received",
        b"x-real-ip",
        b"x-client-ip",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
        || [
            &b"x-forwarded"[..],
            b"x-original-forwarded",
            b"x-originating",
        ]
        .iter()
        .any(|p| prefix(p))
}

/// Headers of ours that no client may set.
pub const OURS: [&str; 2] = ["X-Egress-Score", "X-Egress-Rules"];

/// An address in brackets, or bare (IPv4 dotted quad, IPv6 with at least
/// two colons), as Received: lines write them.
static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:\[(?:IPv6:)?([0-9a-f:.]+)\])|\b(\d{1,3}(?:\.\d{1,3}){3})\b|([0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?:\d{1,3}(?:\.\d{1,3}){3})?)")
        .expect("address regex")
});

/// A host name: dotted labels.
static HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+\b")
        .expect("host regex")
});

/// A single-label name where a host name stands: after from, by, HELO,
/// EHLO, helo=, or first in parentheses.
static LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:\bfrom\s+|\bby\s+|\bhelo\s+|\behlo\s+|helo=|\(\s*)([a-z0-9][a-z0-9-]*)\b")
        .expect("label regex")
});

static BY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)(?:^|\s+)by\s").expect("by regex"));

/// What scrubbing treats as internal.
pub struct Internal<'a> {
    pub networks: &'a Set<IpNet>,
    /// `*.suffix` or an exact name, lower case.
    pub hostnames: &'a HostPatterns,
}

/// Words that follow "from"/"by" or open a parenthesis in Received:
/// lines without being host names.
const NOT_HOSTS: [&str; 12] = [
    "unknown",
    "userid",
    "uid",
    "local",
    "with",
    "via",
    "envelope",
    "postfix",
    "authenticated",
    "qmail",
    "invoked",
    "helo",
];

impl Internal<'_> {
    fn ip(&self, text: &str) -> bool {
        text.parse::<IpAddr>()
            .ok()
            .map(crate::address::canonical_ip)
            .is_some_and(|ip| self.networks.holds(ip))
    }

    fn host(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.hostnames.matches(&name)
    }

    /// The spans of `text` that are internal addresses or names.
    fn spans(&self, text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for c in ADDRESS.captures_iter(text) {
            let Some(whole) = c.get(0) else { continue };
            let ip = c
                .get(1)
                .or(c.get(2))
                .or(c.get(3))
                .map_or("", |m| m.as_str());
            if self.ip(ip) {
                out.push((whole.start(), whole.end()));
            }
        }
        for m in HOST.find_iter(text) {
            if m.as_str().parse::<IpAddr>().is_err() && self.host(m.as_str()) {
                out.push((m.start(), m.end()));
            }
        }
        for c in LABEL.captures_iter(text) {
            if let Some(m) = c.get(1) {
                let w = m.as_str().to_ascii_lowercase();
                let after = text[m.end()..].chars().next();
                // A single label standing as a host name is no public
                // name; a number or a keyword is no host at all.
                if after != Some('.')
                    && !w.bytes().all(|b| b.is_ascii_digit())
                    && !NOT_HOSTS.contains(&w.as_str())
                {
                    out.push((m.start(), m.end()));
                }
            }
        }
        out.sort();
        out
    }
}

/// A Received: value without its date (after the last `;`), which names
/// nothing.
fn path_part(value: &str) -> &str {
    value.rsplit_once(';').map_or(value, |(p, _)| p)
}

/// `text` with the spans replaced by `[redacted]`.
fn redact(text: &str, spans: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for &(s, e) in spans {
        if s < at {
            continue;
        }
        out.push_str(&text[at..s]);
        out.push_str("[redacted]");
        at = e;
    }
    out.push_str(&text[at..]);
    out
}

/// The edits for a message's traced headers (in header order) and the
/// count of each of our own header names a client wrote.
pub fn scrub(headers: &[Traced], internal: &Internal<'_>, ours: &[(String, usize)]) -> Vec<Edit> {
    let mut edits = Vec::new();
    let mut kept_top = false;
    for h in headers {
        let value = String::from_utf8_lossy(&h.value);
        let path = path_part(&value);
        let spans = internal.spans(path);
        if spans.is_empty() {
            continue;
        }
        let received = h.name.eq_ignore_ascii_case("received");
        let replacement = if received && !kept_top {
            kept_top = true;
            // The from-clause goes whole; what follows keeps its words,
            // its internal names and addresses redacted.
            let by = BY.find(&value).map_or(value.len(), |m| m.start());
            let from = value[..by].trim_start();
            let rest = &value[by..];
            let rest_spans: Vec<(usize, usize)> = spans
                .iter()
                .filter(|(s, _)| *s >= by)
                .map(|(s, e)| (s - by, e - by))
                .collect();
            let redacted = redact(rest, &rest_spans);
            Some(if from.is_empty() {
                redacted.trim_start().to_string()
            } else {
                format!("from [redacted]{redacted}")
            })
        } else {
            None
        };
        edits.push(Edit {
            name: h.name.clone(),
            index: h.index,
            value: replacement,
        });
    }
    for (name, n) in ours {
        edits.extend(remove_all(name, *n));
    }
    // Deleting shifts the indexes of later headers of the same name: apply
    // from the bottom up.
    edits.sort_by(|a, b| {
        a.name
            .to_ascii_lowercase()
            .cmp(&b.name.to_ascii_lowercase())
            .then(b.index.cmp(&a.index))
    });
    edits
}

/// Deletes every instance of a header: `count` of them, bottom up.
pub fn remove_all(name: &str, count: usize) -> Vec<Edit> {
    (1..=count)
        .rev()
        .map(|index| Edit {
            name: name.to_string(),
            index,
            value: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traced(list: &[(&str, &str)]) -> Vec<Traced> {
        let mut counts: std::collections::HashMap<String, usize> = Default::default();
        list.iter()
            .map(|(n, v)| {
                let c = counts.entry(n.to_ascii_lowercase()).or_default();
                *c += 1;
                Traced {
                    name: n.to_string(),
                    index: *c,
                    value: v.as_bytes().to_vec(),
                }
            })
            .collect()
    }

    fn internal() -> (Set<IpNet>, HostPatterns) {
        (
            vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()].into(),
            HostPatterns::new(vec!["*.corp.local".into(), "localhost".into()]),
        )
    }

    #[test]
    fn internal_hops_go_and_the_top_one_is_redacted() {
        let (nets, names) = internal();
        let i = Internal {
            networks: &nets,
            hostnames: &names,
        };
        let h = traced(&[
            ("Received", "from app1.corp.internal (app1.corp.internal [10.1.2.3])\n\tby out1.example.com (Postfix) with ESMTP id 4XyZ; Mon, 23 Nov 2026 01:00:00 +0000"),
            ("Received", "from build7 (unknown [IPv6:fd00::7]) by app1.corp.internal (Postfix) with ESMTP id 1; Mon, 23 Nov 2026 00:59:00 +0000"),
            ("Received", "from partner.example.net (partner.example.net [198.51.100.9]) by mx.partner.example.net with ESMTP; Mon, 23 Nov 2026 00:58:00 +0000"),
        ]);
        let edits = scrub(&h, &i, &[]);
        assert_eq!(
            edits,
            vec![
                Edit { name: "Received".into(), index: 2, value: None },
                Edit {
                    name: "Received".into(),
                    index: 1,
                    value: Some("from [redacted]\n\tby out1.example.com (Postfix) with ESMTP id 4XyZ; Mon, 23 Nov 2026 01:00:00 +0000".into())
                },
            ]
        );
    }

    /// Each form an internal hop takes, and what becomes of it.
    #[test]
    fn every_form_of_an_internal_hop() {
        let (nets, names) = internal();
        let i = Internal {
            networks: &nets,
            hostnames: &names,
        };
        let cases: &[(&str, &str, Option<&str>)] = &[
            // Exchange: the address in parentheses, no brackets.
            ("Received", "from EXCH01.corp.local (10.1.2.3) by EXCH02.corp.local (10.1.2.4) with Microsoft SMTP Server id 15.1; Mon, 1 Jan 2026", None),
            ("Received", "from web (fd00::5) by out.example.com; Mon, 1 Jan 2026", None),
            // qmail.
            ("Received", "from unknown (HELO crm01) (10.1.2.3) by out.example.com with SMTP; 1 Jan 2026", None),
            // No from-clause: a local submission on an internal host.
            ("Received", "by crm01.corp.local (Postfix, from userid 33) id 4Ab; Mon, 1 Jan 2026", None),
            // An internal address in the by-clause only.
            ("Received", "from mail.partner.test (mail.partner.test [198.51.100.9]) by relay7 ([10.3.3.3]) with ESMTP; Mon, 1 Jan 2026", None),
            ("X-Forwarded-For", "203.0.113.5, 10.0.0.17", None),
            ("X-Originating-IP", "[10.20.30.40]", None),
            ("X-Received", "by 2002:a17:90a:1234 with SMTP id x; Mon, 1 Jan 2026", Some("kept")),
            ("X-Received", "from crm01.corp.local by gw (Postfix); Mon, 1 Jan 2026", None),
        ];
        for (name, value, want) in cases {
            let got = scrub(&traced(&[(name, value)]), &i, &[]);
            match want {
                None => assert_eq!(got.len(), 1, "{name}: {value}"),
                Some(_) => assert!(got.is_empty(), "{name}: {value}: {got:?}"),
            }
        }
        // As the top Received: line, each keeps its by-clause words with
        // the internal parts redacted.
        let top = scrub(
            &traced(&[("Received", "from EXCH01.corp.local (10.1.2.3) by relay7.corp.local (10.1.2.4) with ESMTP; Mon, 1 Jan 2026")]),
            &i,
            &[],
        );
        assert_eq!(
            top[0].value.as_deref(),
            Some("from [redacted] by [redacted] ([redacted]) with ESMTP; Mon, 1 Jan 2026")
        );
        let top = scrub(
            &traced(&[(
                "Received",
                "by crm01.corp.local (Postfix, from userid 33) id 4Ab; Mon, 1 Jan 2026",
            )]),
            &i,
            &[],
        );
        assert_eq!(
            top[0].value.as_deref(),
            Some("by [redacted] (Postfix, from userid 33) id 4Ab; Mon, 1 Jan 2026")
        );
    }

    #[test]
    fn public_hops_and_our_own_headers() {
        let (nets, names) = internal();
        let i = Internal {
            networks: &nets,
            hostnames: &names,
        };
        let public = traced(&[
            ("Received", "from mail-ej1-f41.google.com (mail-ej1-f41.google.com [209.85.218.41]) by mx.example.com (Postfix) with ESMTPS id 1; Mon, 1 Jan 2026 00:00:00 +0000"),
            ("X-Forwarded-For", "203.0.113.5"),
        ]);
        assert!(scrub(&public, &i, &[]).is_empty());
        let ours = scrub(&[], &i, &[("X-Egress-Score".into(), 2)]);
        assert_eq!(ours.len(), 2);
        assert_eq!((ours[0].index, ours[1].index), (2, 1));
    }
}
