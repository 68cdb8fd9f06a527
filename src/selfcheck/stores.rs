//! The mail stores that verify addresses: a catch-all proves nothing.

use super::{listed_domains, row, Row, Status};
use crate::config::Config;

/// The mail stores that verify addresses: a catch-all proves nothing.
pub(super) async fn check_stores(config: &Config, rows: &mut Vec<Row>) {
    let domain = listed_domains(&config.local_domains, config)
        .first()
        .map_or_else(|| "example.com".to_string(), |d| d.to_string());
    for p in crate::sources::callout::probe_stores(config, &domain).await {
        let subject = format!("{} ({})", p.host, p.used_by);
        rows.push(match p.catch_all {
            Ok(false) => row("mail store", subject, Status::Ok, "refuses an unknown address", ""),
            Ok(true) => row(
                "mail store",
                subject,
                Status::Warn,
                format!("catch-all: accepts any address at {domain}, so verification against it proves nothing"),
                "verify against a source (LDAP, a file) instead, or have the store refuse unknown users",
            ),
            Err(e) => row(
                "mail store",
                subject,
                Status::Fail,
                format!("cannot be asked: {e}"),
                "check the callout host and port, and that it accepts our connection",
            ),
        });
    }
}
