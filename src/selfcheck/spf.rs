//! SPF: one record per domain, valid, authorising every egress IP, within the ten DNS lookups.

use super::{row, txt, unanswered, Row, Status};
use crate::address::Domain;
use crate::config::Config;
use mail_auth::{
    common::parse::TxtRecordParser,
    spf::{verify::SpfParameters, Macro, Mechanism, Spf},
    MessageAuthenticator, SpfResult,
};
use std::collections::HashSet;

/// RFC 7208 §4.6.4: at most 10 terms that cause DNS lookups.
const SPF_LOOKUP_LIMIT: usize = 10;

/// Counts the DNS-querying terms of an SPF record and of those it includes
/// or redirects to (RFC 7208 §4.6.4).
async fn spf_lookups(resolver: &MessageAuthenticator, record: &Spf) -> usize {
    let mut count = 0;
    let mut queue: Vec<Spf> = vec![record.clone()];
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(spf) = queue.pop() {
        let mut follow = Vec::new();
        for d in spf.directives.iter() {
            match &d.mechanism {
                Mechanism::Include { macro_string } => {
                    count += 1;
                    follow.push(macro_string.clone());
                }
                Mechanism::A { .. }
                | Mechanism::Mx { .. }
                | Mechanism::Ptr { .. }
                | Mechanism::Exists { .. } => count += 1,
                _ => {}
            }
        }
        if let Some(r) = &spf.redirect {
            count += 1;
            follow.push(r.clone());
        }
        for m in follow {
            // Only literal domains can be followed without a message.
            let Macro::Literal(name) = m else { continue };
            let name = String::from_utf8_lossy(&name).into_owned();
            if count > SPF_LOOKUP_LIMIT * 2 || !seen.insert(name.clone()) {
                continue;
            }
            if let Ok(records) = txt(resolver, &name).await {
                if let Some(r) = records.iter().find(|r| is_spf(r)) {
                    if let Ok(parsed) = Spf::parse(r.as_bytes()) {
                        queue.push(parsed);
                    }
                }
            }
        }
    }
    count
}

fn is_spf(r: &str) -> bool {
    let r = r.trim_start().to_ascii_lowercase();
    r == "v=spf1" || r.starts_with("v=spf1 ")
}

pub(super) async fn check_spf(
    resolver: &MessageAuthenticator,
    config: &Config,
    domain: &Domain,
    rows: &mut Vec<Row>,
) {
    let subject = domain.to_string();
    let suggested = format!(
        "publish {domain}. TXT \"v=spf1 {} -all\"",
        config
            .egress_ips
            .iter()
            .map(|ip| if ip.is_ipv4() {
                format!("ip4:{ip}")
            } else {
                format!("ip6:{ip}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let records = match txt(resolver, domain.as_str()).await {
        Ok(r) => r.into_iter().filter(|r| is_spf(r)).collect::<Vec<_>>(),
        Err(e) => return rows.push(unanswered("spf", subject, &e)),
    };
    let record = match records.as_slice() {
        [] => {
            return rows.push(row(
                "spf",
                subject,
                Status::Fail,
                "no SPF record",
                suggested,
            ))
        }
        [one] => one,
        many => {
            return rows.push(row(
                "spf",
                subject,
                Status::Fail,
                format!(
                    "{} SPF records: receivers treat that as an error (RFC 7208 §4.5)",
                    many.len()
                ),
                "merge them into one record",
            ))
        }
    };
    let parsed = match Spf::parse(record.as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            return rows.push(row(
                "spf",
                subject,
                Status::Fail,
                format!("invalid record \"{record}\": {e}"),
                suggested,
            ))
        }
    };
    let lookups = spf_lookups(resolver, &parsed).await;
    if lookups > SPF_LOOKUP_LIMIT {
        rows.push(row(
            "spf lookups",
            subject.clone(),
            Status::Fail,
            format!("{lookups} DNS lookups, the limit is {SPF_LOOKUP_LIMIT} (RFC 7208 §4.6.4): receivers return permerror"),
            "replace include:/a/mx terms by ip4:/ip6: ranges, or flatten the record",
        ));
    } else {
        rows.push(row(
            "spf lookups",
            subject.clone(),
            Status::Ok,
            format!("{lookups} of {SPF_LOOKUP_LIMIT}"),
            "",
        ));
    }
    let host = config
        .hostname
        .as_ref()
        .map_or("localhost", |h| h.as_str())
        .to_string();
    let sender = format!("postmaster@{domain}");
    for ip in &config.egress_ips {
        let out = resolver
            .verify_spf(SpfParameters::verify_mail_from(*ip, &host, &host, &sender))
            .await;
        let subject = format!("{domain} for {ip}");
        match out.result() {
            SpfResult::Pass => rows.push(row("spf", subject, Status::Ok, "pass", "")),
            SpfResult::TempError => rows.push(unanswered("spf", subject, &"a temporary error")),
            r => rows.push(row(
                "spf",
                subject,
                Status::Fail,
                format!("{r:?}: this IP is not authorised"),
                format!(
                    "add {}:{ip} to the SPF record of {domain}",
                    if ip.is_ipv4() { "ip4" } else { "ip6" }
                ),
            )),
        }
    }
}
