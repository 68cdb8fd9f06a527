//! The host name resolves; each egress IP has a PTR whose name resolves back to it.

use super::{addresses, row, unanswered, Row, Status};
use crate::config::Config;
use mail_auth::MessageAuthenticator;

pub(super) async fn check_hosts(
    resolver: &MessageAuthenticator,
    config: &Config,
    rows: &mut Vec<Row>,
) {
    if let Some(host) = &config.hostname {
        match addresses(resolver, host.as_str()).await {
            Ok(a) if !a.is_empty() => rows.push(row(
                "hostname",
                host.to_string(),
                Status::Ok,
                a.iter()
                    .map(|ip| ip.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                "",
            )),
            Ok(_) => rows.push(row(
                "hostname",
                host.to_string(),
                Status::Fail,
                "no A/AAAA record",
                format!("publish {host}. A <egress IP>"),
            )),
            Err(e) => rows.push(unanswered("hostname", host.to_string(), &e)),
        }
    }
    for ip in &config.egress_ips {
        let names: Vec<String> = match resolver.resolver().reverse_lookup(*ip).await {
            Ok(l) => l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_resolver::proto::rr::RData::PTR(p) => {
                        Some(p.0.to_string().trim_end_matches('.').to_string())
                    }
                    _ => None,
                })
                .collect(),
            // No PTR record is a finding; no answer is a DNS failure, said
            // as the other checks say it.
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Vec::new(),
            Err(e) => {
                rows.push(unanswered("ptr", ip.to_string(), &e));
                continue;
            }
        };
        let hint = format!(
            "ask the owner of {ip} to set its PTR to {}, which must resolve back to {ip}",
            config
                .hostname
                .as_ref()
                .map_or("the gateway's name".to_string(), |h| h.to_string())
        );
        if names.is_empty() {
            rows.push(row(
                "ptr",
                ip.to_string(),
                Status::Fail,
                "no PTR record",
                hint,
            ));
            continue;
        }
        let mut confirmed = None;
        let mut failed = None;
        for n in &names {
            match addresses(resolver, n).await {
                Ok(a) if a.contains(ip) => {
                    confirmed = Some(n.clone());
                    break;
                }
                Ok(_) => {}
                Err(e) => failed = Some(e),
            }
        }
        if let (None, Some(e)) = (&confirmed, failed) {
            rows.push(unanswered("ptr", ip.to_string(), &e));
            continue;
        }
        match confirmed {
            Some(n) => rows.push(row(
                "ptr",
                ip.to_string(),
                Status::Ok,
                format!("{n}, which resolves back"),
                "",
            )),
            None => rows.push(row(
                "ptr",
                ip.to_string(),
                Status::Fail,
                format!(
                    "{} does not resolve back to {ip} (no forward-confirmed reverse DNS)",
                    names.join(" ")
                ),
                hint,
            )),
        }
    }
}
