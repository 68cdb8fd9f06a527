//! The daemon's one DNS resolver: hickory, with its cache (answers kept for
//! their TTL), wrapped in mail-auth's authenticator, which DKIM and SPF
//! checks use. `dns.nameservers` picks the servers; by default those of
//! /etc/resolv.conf.

use crate::config::DnsSettings;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::MessageAuthenticator;

/// Cached answers: enough for the domains, keys and SPF includes of a large
/// gateway's traffic; hickory evicts the least recently used beyond it.
const CACHE_SIZE: u64 = 16_384;

/// The servers and options of a resolver: `servers` (IP:PORT), or the
/// system's when empty; one try per server within `timeout` (the whole
/// budget the MTA waits).
pub fn resolver_config(
    servers: &[std::net::SocketAddr],
    timeout: std::time::Duration,
) -> Result<(ResolverConfig, ResolverOpts), String> {
    let (config, mut opts) = if servers.is_empty() {
        hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?
    } else {
        let servers = servers
            .iter()
            .map(|sa| {
                let mut udp = ConnectionConfig::udp();
                udp.port = sa.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = sa.port();
                let mut ns = NameServerConfig::udp_and_tcp(sa.ip());
                ns.connections = vec![udp, tcp];
                ns
            })
            .collect();
        (
            ResolverConfig::from_name_servers(servers),
            ResolverOpts::default(),
        )
    };
    opts.timeout = timeout;
    opts.attempts = 1;
    Ok((config, opts))
}

pub fn resolver(settings: &DnsSettings) -> Result<MessageAuthenticator, String> {
    let (config, mut opts) = resolver_config(&settings.nameservers, settings.timeout)?;
    opts.cache_size = CACHE_SIZE;
    MessageAuthenticator::new(config, opts).map_err(|e| e.to_string())
}
