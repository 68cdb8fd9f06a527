//! Each egress IP on none of `selfcheck.dnsbl`, the answers read as the
//! reputation watch reads them.

use super::{row, Row, Status};
use crate::config::Config;
use crate::dnsbl::{ask, query_name, Answer, Target};
use mail_auth::MessageAuthenticator;

pub(super) async fn check_dnsbl(
    resolver: &MessageAuthenticator,
    config: &Config,
    rows: &mut Vec<Row>,
) {
    for ip in &config.egress_ips {
        for zone in &config.dnsbl {
            let query = query_name(&Target::Address(*ip), zone, None);
            let subject = format!("{ip} on {zone}");
            match ask(resolver, &query).await {
                Answer::Clean => rows.push(row("dnsbl", subject, Status::Ok, "not listed", "")),
                Answer::Listed(codes) => {
                    let codes: Vec<String> = codes.iter().map(|x| x.to_string()).collect();
                    rows.push(row(
                        "dnsbl",
                        subject,
                        Status::Fail,
                        format!("listed ({})", codes.join(" ")),
                        format!(
                            "find out why on {zone}'s site, fix the cause, then request delisting"
                        ),
                    ));
                }
                Answer::Error(e) => rows.push(row(
                    "dnsbl",
                    subject,
                    Status::Warn,
                    format!("no answer to go by: {e}"),
                    "query through your own resolver (dns.nameservers)",
                )),
            }
        }
    }
}
