//! MX: each domain names the hosts that take its mail (bounces and
//! replies come back there).

use super::{row, unanswered, Row, Status};
use crate::address::Domain;
use hickory_resolver::proto::rr::{RData, RecordType};
use mail_auth::MessageAuthenticator;

pub(super) async fn check_mx(
    resolver: &MessageAuthenticator,
    domain: &Domain,
    rows: &mut Vec<Row>,
) {
    let subject = domain.to_string();
    let hosts = match resolver
        .resolver()
        .lookup(format!("{domain}."), RecordType::MX)
        .await
    {
        Ok(l) => {
            let mut hosts: Vec<(u16, String)> = l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((
                        mx.preference,
                        mx.exchange
                            .to_string()
                            .trim_end_matches('.')
                            .to_ascii_lowercase(),
                    )),
                    _ => None,
                })
                .collect();
            hosts.sort();
            hosts
        }
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Vec::new(),
        Err(e) => return rows.push(unanswered("mx", subject, &e)),
    };
    if hosts.is_empty() {
        return rows.push(row(
            "mx",
            subject,
            Status::Warn,
            "no MX record: bounces and replies go to the domain's address record, if any",
            format!("publish {domain}. MX 10 <your inbound mail host>"),
        ));
    }
    let list: Vec<String> = hosts.iter().map(|(p, h)| format!("{p} {h}")).collect();
    rows.push(row("mx", subject, Status::Ok, list.join(", "), ""));
}
