//! End of message: header scrubbing. Received: lines whose from-clause
//! names an address inside `internal_networks` hand outsiders the internal
//! network map; they are removed, except the topmost such line, which is
//! our gateway's own hop and is kept with its internal addresses and names
//! replaced by `[redacted]`.

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

static BRACKETED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]").expect("ip literal regex"));

static BY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\s+by\s").expect("by regex"));

/// The from-clause of a Received: value: what comes before the first
/// "by" (RFC 5321 §4.4), without the white space that ends it.
fn from_clause(value: &str) -> &str {
    match BY.find(value) {
        Some(m) => &value[..m.start()],
        None => value,
    }
}

fn internal(clause: &str, networks: &[IpNet]) -> bool {
    BRACKETED.captures_iter(clause).any(|c| {
        c.get(1)
            .and_then(|m| m.as_str().parse::<IpAddr>().ok())
            .map(crate::address::canonical_ip)
            .is_some_and(|ip| networks.iter().any(|n| n.contains(&ip)))
    })
}

/// The edits for the Received: values of a message, top first.
pub fn scrub_received(values: &[Vec<u8>], networks: &[IpNet]) -> Vec<Edit> {
    let mut edits = Vec::new();
    let mut kept_top = false;
    for (i, raw) in values.iter().enumerate() {
        let value = String::from_utf8_lossy(raw);
        let clause = from_clause(&value);
        if !internal(clause, networks) {
            continue;
        }
        let replacement = if kept_top {
            None
        } else {
            kept_top = true;
            let rest = &value[clause.len()..];
            Some(format!("from [redacted]{rest}"))
        };
        edits.push(Edit {
            name: "Received".into(),
            index: i + 1,
            value: replacement,
        });
    }
    // Deleting shifts the indexes of later headers of the same name: apply
    // from the bottom up.
    edits.reverse();
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

    #[test]
    fn internal_hops_go_and_the_top_one_is_redacted() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let received: Vec<Vec<u8>> = [
            "from app1.corp.internal (app1.corp.internal [10.1.2.3])\n\tby out1.example.com (Postfix) with ESMTP id 4XyZ; Mon, 23 Nov 2026 01:00:00 +0000",
            "from build7 (unknown [IPv6:fd00::7]) by app1.corp.internal (Postfix) with ESMTP id 1; Mon, 23 Nov 2026 00:59:00 +0000",
            "from partner.example.net (partner.example.net [198.51.100.9]) by app1.corp.internal with ESMTP; Mon, 23 Nov 2026 00:58:00 +0000",
            "from localhost by app1 (via [10.9.9.9]); whatever",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let edits = scrub_received(&received, &nets);
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
        assert!(
            scrub_received(&received[2..], &nets).is_empty(),
            "an external hop and a by-clause address stay"
        );
    }
}
