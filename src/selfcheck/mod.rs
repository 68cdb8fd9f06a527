//! `egress-milter selfcheck`: what receivers will check about our domains
//! and egress IPs, checked from here through DNS, with a fix per failure.
//! One file per check (`spf.rs`, `dkim.rs`, `dmarc.rs`, `hosts.rs`,
//! `dnsbl.rs`, `stores.rs`), each adding its rows; here the table, its
//! order and the DNS helpers they share.

mod dkim;
mod dmarc;
mod dnsbl;
mod hosts;
mod mx;
mod spf;
mod stores;

use dkim::{check_dkim, check_rotation};
use dmarc::check_dmarc;
use dnsbl::check_dnsbl;
use hosts::check_hosts;
use mx::check_mx;
use spf::check_spf;
use stores::check_stores;

use crate::address::DomainPattern;
use crate::config::Config;
use mail_auth::MessageAuthenticator;
use std::{fmt::Write as _, net::IpAddr};

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Clone, Debug)]
pub struct Row {
    pub check: &'static str,
    pub subject: String,
    pub status: Status,
    pub detail: String,
    /// What to do about a warning or a failure.
    pub fix: String,
    /// DNS gave no answer: the row says nothing about the record (the
    /// reputation watch keeps its last state).
    pub unanswered: bool,
}

fn row(
    check: &'static str,
    subject: impl Into<String>,
    status: Status,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Row {
    Row {
        check,
        subject: subject.into(),
        status,
        detail: detail.into(),
        fix: fix.into(),
        unanswered: false,
    }
}

/// A row for a lookup DNS did not answer.
fn unanswered(check: &'static str, subject: impl Into<String>, e: &dyn std::fmt::Display) -> Row {
    Row {
        unanswered: true,
        ..row(
            check,
            subject,
            Status::Fail,
            format!("DNS lookup failed: {e}"),
            "check dns.nameservers",
        )
    }
}

/// TXT strings at a name, each record's strings joined; empty when the name
/// has none (NXDOMAIN or no TXT).
async fn txt(resolver: &MessageAuthenticator, name: &str) -> Result<Vec<String>, String> {
    match resolver.resolver().txt_lookup(format!("{name}.")).await {
        Ok(lookup) => Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect()),
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

async fn addresses(resolver: &MessageAuthenticator, name: &str) -> Result<Vec<IpAddr>, String> {
    match resolver.resolver().lookup_ip(format!("{name}.")).await {
        Ok(l) => Ok(l.iter().collect()),
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs every check; the rows come in a stable order.
pub async fn run(config: &Config) -> Result<Vec<Row>, String> {
    let resolver = crate::dns::resolver(&config.dns)?;
    let mut rows = Vec::new();
    if config.egress_ips.is_empty() {
        rows.push(row(
            "config",
            "egress_ips",
            Status::Warn,
            "no egress IPs configured",
            "list the addresses your mail leaves from in egress_ips",
        ));
    }
    // Progress on stderr: with a resolver that does not answer, each
    // check waits out dns.timeout, and silence looks like a hang.
    let progress = |what: String| eprintln!("selfcheck: {what}");
    for domain in &listed_domains(&config.local_domains, config) {
        progress(format!("SPF and DMARC of {domain}"));
        check_spf(&resolver, config, domain, &mut rows).await;
        check_dmarc(&resolver, domain, &mut rows).await;
        check_mx(&resolver, domain, &mut rows).await;
    }
    progress("DKIM keys in DNS".into());
    check_dkim(&resolver, config, &mut rows).await;
    check_rotation(config, &mut rows);
    check_stores(config, &mut rows).await;
    progress("host name and reverse DNS".into());
    check_hosts(&resolver, config, &mut rows).await;
    progress("DNS blocklists".into());
    check_dnsbl(&resolver, config, &mut rows).await;
    Ok(rows)
}

/// The records the reputation watch follows: SPF, DMARC and MX of each
/// of `domains`, the DKIM keys in DNS, the host name and the reverse DNS
/// of each egress address.
pub async fn records(
    resolver: &MessageAuthenticator,
    config: &Config,
    domains: &[crate::address::Domain],
) -> Vec<Row> {
    let mut rows = Vec::new();
    for domain in domains {
        check_spf(resolver, config, domain, &mut rows).await;
        check_dmarc(resolver, domain, &mut rows).await;
        check_mx(resolver, domain, &mut rows).await;
    }
    check_dkim(resolver, config, &mut rows).await;
    check_hosts(resolver, config, &mut rows).await;
    rows
}

/// The exact domains of a list: written inline, or in a file source (a
/// directory cannot be listed).
pub(super) fn listed_domains(
    list: &crate::config::Entries<DomainPattern>,
    config: &Config,
) -> Vec<crate::address::Domain> {
    let exact = |p: &DomainPattern| match p {
        DomainPattern::Exact(d) => Some(d.clone()),
        DomainPattern::Subdomains(_) => None,
    };
    match list {
        crate::config::Entries::Inline(v) => v.iter().filter_map(exact).collect(),
        crate::config::Entries::Source(name) => config
            .sources
            .iter()
            .find(|s| &s.name == name)
            .and_then(|s| match &s.backend {
                crate::config::SourceBackend::File { contents, .. } => Some(contents.domains()),
                crate::config::SourceBackend::Ldap(_) => None,
            })
            .unwrap_or_default(),
    }
}

/// The table printed by the command.
pub fn render(rows: &[Row]) -> String {
    let w = rows
        .iter()
        .map(|r| r.subject.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let mut out = format!(
        "{:<12} {:<w$} {:<6} {}\n",
        "check", "subject", "result", "detail"
    );
    for r in rows {
        let status = match r.status {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        let _ = writeln!(
            out,
            "{:<12} {:<w$} {:<6} {}",
            r.check, r.subject, status, r.detail
        );
        if !r.fix.is_empty() {
            let _ = writeln!(out, "{:<12} {:<w$} {:<6}   fix: {}", "", "", "", r.fix);
        }
    }
    let fails = rows.iter().filter(|r| r.status == Status::Fail).count();
    let warns = rows.iter().filter(|r| r.status == Status::Warn).count();
    let _ = writeln!(
        out,
        "{} checks: {} failed, {} warnings",
        rows.len(),
        fails,
        warns
    );
    out
}
