//! DMARC: a record per domain, its policy shown (`p=none` is a warning).

use super::{row, txt, unanswered, Row, Status};
use crate::address::Domain;
use mail_auth::{
    common::parse::TxtRecordParser,
    dmarc::{Dmarc, Policy},
    MessageAuthenticator,
};

pub(super) async fn check_dmarc(
    resolver: &MessageAuthenticator,
    domain: &Domain,
    rows: &mut Vec<Row>,
) {
    let name = format!("_dmarc.{domain}");
    let publish = format!(
        "publish {name}. TXT \"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{domain}\""
    );
    let records = match txt(resolver, &name).await {
        Ok(r) => r
            .into_iter()
            .filter(|r| r.trim_start().to_ascii_lowercase().starts_with("v=dmarc1"))
            .collect::<Vec<_>>(),
        Err(e) => return rows.push(unanswered("dmarc", name, &e)),
    };
    let Some(record) = records.first() else {
        return rows.push(row(
            "dmarc",
            name,
            Status::Fail,
            "no DMARC record (large receivers require one)",
            publish,
        ));
    };
    match Dmarc::parse(record.as_bytes()) {
        Ok(d) => {
            let policy = match d.p {
                Policy::None => "none",
                Policy::Quarantine => "quarantine",
                Policy::Reject => "reject",
                Policy::Unspecified => "unspecified",
            };
            let status = if d.p == Policy::None {
                Status::Warn
            } else {
                Status::Ok
            };
            let fix = if status == Status::Warn {
                "p=none only monitors: move to quarantine or reject once reports are clean"
            } else {
                ""
            };
            rows.push(row("dmarc", name, status, format!("p={policy}"), fix));
        }
        Err(e) => rows.push(row(
            "dmarc",
            name,
            Status::Fail,
            format!("invalid record \"{record}\": {e}"),
            publish,
        )),
    }
}
