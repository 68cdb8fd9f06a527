//! Each egress IP on none of `selfcheck.dnsbl`.

use super::{addresses, row, Row, Status};
use crate::config::Config;
use mail_auth::MessageAuthenticator;
use std::net::IpAddr;

fn reversed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut nibbles = Vec::with_capacity(32);
            for b in v6.octets().iter().rev() {
                nibbles.push(format!("{:x}", b & 0x0f));
                nibbles.push(format!("{:x}", b >> 4));
            }
            nibbles.join(".")
        }
    }
}

pub(super) async fn check_dnsbl(
    resolver: &MessageAuthenticator,
    config: &Config,
    rows: &mut Vec<Row>,
) {
    for ip in &config.egress_ips {
        for zone in &config.dnsbl {
            let query = format!("{}.{zone}", reversed(ip));
            let subject = format!("{ip} on {zone}");
            match addresses(resolver, &query).await {
                Ok(a) if a.is_empty() => {
                    rows.push(row("dnsbl", subject, Status::Ok, "not listed", ""))
                }
                Ok(a) => {
                    let codes: Vec<String> = a.iter().map(|x| x.to_string()).collect();
                    // 127.255.255.x: the list refused the query (Spamhaus
                    // does so for public and unregistered resolvers).
                    if a.iter().all(|x| x.to_string().starts_with("127.255.255.")) {
                        rows.push(row(
                            "dnsbl",
                            subject,
                            Status::Warn,
                            format!("query refused ({})", codes.join(" ")),
                            "query through your own resolver (dns.nameservers)",
                        ));
                    } else {
                        rows.push(row("dnsbl", subject, Status::Fail, format!("listed ({})", codes.join(" ")), format!("find out why on {zone}'s site, fix the cause, then request delisting")));
                    }
                }
                Err(e) => rows.push(row(
                    "dnsbl",
                    subject,
                    Status::Warn,
                    format!("no answer: {e}"),
                    "check dns.nameservers",
                )),
            }
        }
    }
}
