//! `egress-milter selfcheck`: what receivers will check about our domains
//! and egress IPs, checked from here through DNS, with a fix per failure.

use crate::address::{Domain, DomainPattern};
use crate::config::Config;
use base64::Engine;
use mail_auth::{
    common::parse::TxtRecordParser,
    dmarc::{Dmarc, Policy},
    spf::{verify::SpfParameters, Macro, Mechanism, Spf},
    MessageAuthenticator, SpfResult,
};
use rsa::{pkcs1::DecodeRsaPublicKey, pkcs8::DecodePublicKey};
use std::{collections::HashSet, fmt::Write as _, net::IpAddr};

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
    }
}

/// RFC 7208 §4.6.4: at most 10 terms that cause DNS lookups.
const SPF_LOOKUP_LIMIT: usize = 10;

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

async fn check_spf(
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
        Err(e) => {
            return rows.push(row(
                "spf",
                subject,
                Status::Fail,
                format!("DNS lookup failed: {e}"),
                "check dns.nameservers",
            ))
        }
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

/// The key material of a `p=` value: SubjectPublicKeyInfo or bare PKCS#1
/// for RSA, raw bytes for Ed25519; compared as RSA (n, e) when both parse.
fn same_key(published: &[u8], ours: &[u8]) -> bool {
    if published == ours {
        return true;
    }
    let rsa = |b: &[u8]| {
        rsa::RsaPublicKey::from_public_key_der(b)
            .or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(b))
            .ok()
    };
    matches!((rsa(published), rsa(ours)), (Some(a), Some(b)) if a == b)
}

async fn check_dkim(resolver: &MessageAuthenticator, config: &Config, rows: &mut Vec<Row>) {
    let b64 = base64::engine::general_purpose::STANDARD;
    for key in &config.dkim.keys {
        let name = format!("{}._domainkey.{}", key.selector, key.domain);
        let publish = format!("publish {name}. TXT \"{}\"", key.dns_record());
        let records = match txt(resolver, &name).await {
            Ok(r) => r,
            Err(e) => {
                rows.push(row(
                    "dkim",
                    name,
                    Status::Fail,
                    format!("DNS lookup failed: {e}"),
                    "check dns.nameservers",
                ));
                continue;
            }
        };
        let Some(record) = records.first() else {
            rows.push(row("dkim", name, Status::Fail, "no key published", publish));
            continue;
        };
        let p: String = record
            .split(';')
            .filter_map(|t| t.trim().strip_prefix("p="))
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let ours = b64.decode(&key.public_key).unwrap_or_default();
        match b64.decode(&p) {
            Ok(published) if !published.is_empty() && same_key(&published, &ours) => {
                rows.push(row(
                    "dkim",
                    name,
                    Status::Ok,
                    format!("{} key published and ours", key.algorithm()),
                    "",
                ))
            }
            Ok(published) if published.is_empty() => rows.push(row(
                "dkim",
                name,
                Status::Fail,
                "key revoked (empty p=)",
                publish,
            )),
            _ => rows.push(row(
                "dkim",
                name,
                Status::Fail,
                "published key is not our private key's",
                publish,
            )),
        }
    }
}

async fn check_dmarc(resolver: &MessageAuthenticator, domain: &Domain, rows: &mut Vec<Row>) {
    let name = format!("_dmarc.{domain}");
    let publish = format!(
        "publish {name}. TXT \"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{domain}\""
    );
    let records = match txt(resolver, &name).await {
        Ok(r) => r
            .into_iter()
            .filter(|r| r.trim_start().to_ascii_lowercase().starts_with("v=dmarc1"))
            .collect::<Vec<_>>(),
        Err(e) => {
            return rows.push(row(
                "dmarc",
                name,
                Status::Fail,
                format!("DNS lookup failed: {e}"),
                "check dns.nameservers",
            ))
        }
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

async fn check_hosts(resolver: &MessageAuthenticator, config: &Config, rows: &mut Vec<Row>) {
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
            Err(e) => rows.push(row(
                "hostname",
                host.to_string(),
                Status::Fail,
                format!("DNS lookup failed: {e}"),
                "check dns.nameservers",
            )),
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
                rows.push(row(
                    "ptr",
                    ip.to_string(),
                    Status::Fail,
                    format!("DNS lookup failed: {e}"),
                    "check dns.nameservers",
                ));
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
        for n in &names {
            if addresses(resolver, n).await.is_ok_and(|a| a.contains(ip)) {
                confirmed = Some(n.clone());
                break;
            }
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

async fn check_dnsbl(resolver: &MessageAuthenticator, config: &Config, rows: &mut Vec<Row>) {
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
    }
    progress("DKIM keys in DNS".into());
    check_dkim(&resolver, config, &mut rows).await;
    check_stores(config, &mut rows).await;
    progress("host name and reverse DNS".into());
    check_hosts(&resolver, config, &mut rows).await;
    progress("DNS blocklists".into());
    check_dnsbl(&resolver, config, &mut rows).await;
    Ok(rows)
}

/// The mail stores that verify addresses: a catch-all proves nothing.
async fn check_stores(config: &Config, rows: &mut Vec<Row>) {
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

/// The exact domains of a list: written inline, or in a file source (a
/// directory cannot be listed).
fn listed_domains(
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
