//! Whether DNS serves a key's record as it should: asked of every
//! authoritative server of the zone (found by NS lookup), directly, and of
//! the configured resolver. A key is switched to only when each of them
//! answers with exactly its public key.

use super::ring::Key;
use crate::config::DnsSettings;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, SocketAddr};

/// A resolver without a cache: asked about each key afresh.
fn resolver(servers: &[SocketAddr], timeout: std::time::Duration) -> Result<TokioResolver, String> {
    let (config, mut opts) = crate::dns::resolver_config(servers, timeout)?;
    opts.cache_size = 0;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| e.to_string())
}

/// The `k=` and `p=` of a record (`p=` without its spaces).
fn tags(record: &str) -> (String, String) {
    let mut k = "rsa".to_string();
    let mut p = String::new();
    for tag in record.split(';') {
        let Some((name, value)) = tag.split_once('=') else {
            continue;
        };
        match name.trim() {
            "k" => k = value.trim().to_ascii_lowercase(),
            "p" => p = value.chars().filter(|c| !c.is_whitespace()).collect(),
            _ => {}
        }
    }
    (k, p)
}

/// What one server serves at the key's name, against what it should.
async fn ask(r: &TokioResolver, key: &Key) -> Result<(), String> {
    let records: Vec<String> = match r.txt_lookup(format!("{}.", key.name())).await {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect(),
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Vec::new(),
        Err(e) => return Err(format!("no answer ({e})")),
    };
    let wanted = tags(&key.record);
    match records.as_slice() {
        [] => Err("no TXT record".into()),
        [one] if tags(one) == wanted => Ok(()),
        [one] if tags(one).1.is_empty() => Err("an empty key (p=)".into()),
        [_] => Err("another key".into()),
        _ => Err(format!(
            "{} TXT records, where one is wanted",
            records.len()
        )),
    }
}

/// The zone's authoritative servers: the NS of the nearest name at or
/// above the key's domain that has any, each by address.
async fn authorities(
    r: &TokioResolver,
    key: &Key,
    port: u16,
) -> Result<Vec<(String, SocketAddr)>, String> {
    let mut name = key.domain.as_str();
    loop {
        match r.ns_lookup(format!("{name}.")).await {
            Ok(lookup) => {
                let hosts: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|rec| match &rec.data {
                        RData::NS(ns) => Some(ns.0.to_string()),
                        _ => None,
                    })
                    .collect();
                if !hosts.is_empty() {
                    let mut out = Vec::new();
                    for host in hosts {
                        let ips: Vec<IpAddr> = r
                            .lookup_ip(host.as_str())
                            .await
                            .map_err(|e| format!("the address of {host}: {e}"))?
                            .iter()
                            .collect();
                        out.extend(
                            ips.into_iter()
                                .map(|ip| (host.clone(), SocketAddr::new(ip, port))),
                        );
                    }
                    return Ok(out);
                }
            }
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {}
            Err(e) => return Err(format!("the NS of {name}: {e}")),
        }
        match name.split_once('.') {
            Some((_, parent)) if parent.contains('.') => name = parent,
            _ => return Err(format!("no NS record at or above {}", key.domain)),
        }
    }
}

/// Ok when every authoritative server and the resolver serve the key's
/// record; else what each that does not serves.
pub async fn served(dns: &DnsSettings, port: u16, key: &Key) -> Result<(), String> {
    let r = resolver(&dns.nameservers, dns.timeout)?;
    let servers = authorities(&r, key, port).await?;
    let mut wrong = Vec::new();
    for (host, addr) in &servers {
        let direct = resolver(&[*addr], dns.timeout)?;
        if let Err(e) = ask(&direct, key).await {
            wrong.push(format!("{host} ({addr}): {e}"));
        }
    }
    if let Err(e) = ask(&r, key).await {
        wrong.push(format!("the resolver: {e}"));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} not served as made by {}",
            key.name(),
            wrong.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_compared_by_algorithm_and_key_whatever_the_spacing() {
        use super::tags;
        assert_eq!(
            tags("v=DKIM1; k=ed25519; p=AB CD"),
            tags("v=DKIM1;k=ed25519;p=ABCD")
        );
        assert_ne!(tags("v=DKIM1; k=rsa; p=AB"), tags("v=DKIM1; k=rsa; p=AC"));
        // k= defaults to rsa.
        assert_eq!(tags("v=DKIM1; p=AB"), tags("v=DKIM1; k=rsa; p=AB"));
    }
}
