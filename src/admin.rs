//! The operators' endpoint for rate limits, on a loopback TCP port
//! (`rate_limits.admin_listen`), used by `egress-milter limits show|reset`.
//! One request line (`show KEY` or `reset KEY`), a text answer, then the
//! connection closes. It has no authentication, so the configuration only
//! accepts loopback addresses for it.

use crate::address::Address;
use crate::config::{Config, Setting};
use crate::limiter::{LimitName, Rate};
use crate::policy::rate::{setting, Facts};
use crate::state::Shared;
use std::{fmt::Write as _, net::IpAddr, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpStream;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};
use tracing::{info, warn};

/// A request line longer than this is refused: keys are addresses.
const MAX_REQUEST: usize = 1024;
/// A client that sends no request within this is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    info!(%addr, "rate-limit admin endpoint listening");
    Ok(listener)
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
            let answer =
                match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
                    Ok(Ok(_)) => answer(&shared, line.trim()).await,
                    _ => "error: no request\n".to_string(),
                };
            info!(%peer, request = line.trim(), "admin request");
            let _ = write.write_all(answer.as_bytes()).await;
        });
    }
}

/// The limits that key on this kind of key, each with every rate the
/// configuration can give it (its counters live under each), and the rate
/// that applies to the key by itself.
fn limits_for(config: &Config, key: &str) -> Vec<(LimitName, Rate, bool)> {
    let limits = &config.rate_limits;
    let ip: Option<IpAddr> = key.parse().ok();
    let address = Address::parse(key).ok();
    let names: &[LimitName] = if ip.is_some() {
        &[
            LimitName::ConnectionsPerClient,
            LimitName::MessagesPerClient,
        ]
    } else if address.is_some() {
        &[
            LimitName::MessagesPerSender,
            LimitName::RecipientsPerSender,
            LimitName::MessagesPerRecipient,
        ]
    } else {
        &[LimitName::MessagesPerUser]
    };
    let facts = Facts {
        ip,
        login: (ip.is_none() && address.is_none()).then_some(key),
        sender: address.as_ref(),
        rcpt: address.as_ref(),
        // An IP's class, when a class matches by IP alone.
        class: ip
            .and_then(|ip| crate::policy::class::resolve(config, Some(ip), None))
            .map(|c| c.name.as_str()),
    };
    let mut out = Vec::new();
    for &name in names {
        let own = match setting(limits, name, &facts) {
            Some(Setting::Rate(r)) => Some(r),
            _ => None,
        };
        let all = std::iter::once(limits.defaults.get(name))
            .chain(limits.overrides.iter().map(|o| o.limits.get(name)));
        for s in all {
            if let Some(Setting::Rate(r)) = s {
                if !out.iter().any(|(n, x, _)| *n == name && *x == r) {
                    out.push((name, r, own == Some(r)));
                }
            }
        }
    }
    out
}

async fn answer(shared: &Shared, request: &str) -> String {
    let (verb, key) = request.split_once(' ').unwrap_or((request, ""));
    let key = key.trim();
    if key.is_empty() || !matches!(verb, "show" | "reset") {
        return "error: expected \"show KEY\" or \"reset KEY\"\n".into();
    }
    // Keys are stored as the policy writes them: IPs canonical, addresses
    // as `Address::limit_key` spells them.
    let key = match (key.parse::<IpAddr>(), Address::parse(key)) {
        (Ok(ip), _) => crate::limiter::client_key(ip),
        (_, Ok(a)) => a.limit_key(),
        _ => key.to_string(),
    };
    let config = shared.config();
    let limits = limits_for(&config, &key);
    let pairs: Vec<(LimitName, Rate)> = limits.iter().map(|(n, r, _)| (*n, *r)).collect();
    let limiter = &shared.limiter;
    if verb == "reset" {
        return match limiter.reset(&pairs, &key).await {
            Ok(()) => format!("reset {key}: {} counters full again\n", pairs.len()),
            Err(e) => format!("error: {e}\n"),
        };
    }
    let budgets = match limiter.show(&pairs, &key).await {
        Ok(b) => b,
        Err(e) => return format!("error: {e}\n"),
    };
    let mut out = format!(
        "{:<24} {:>10} {:>10} {:>10}\n",
        "limit", "rate", "remaining", "full in"
    );
    for ((_, _, own), b) in limits.iter().zip(&budgets) {
        // Rates from overrides that do not apply to the key are shown only
        // when they hold something.
        if !own && b.full_in.is_zero() {
            continue;
        }
        let _ = writeln!(
            out,
            "{:<24} {:>10} {:>10} {:>9}s",
            b.name.as_str(),
            b.rate.to_string(),
            b.remaining,
            b.full_in.as_secs_f64().ceil() as u64
        );
    }
    if let Ok(ip) = key.parse::<IpAddr>() {
        if let Ok(n) = limiter.open_connections(ip).await {
            let class = crate::policy::class::resolve(&config, Some(ip), None);
            let facts = Facts {
                ip: Some(ip),
                class: class.map(|c| c.name.as_str()),
                ..Facts::default()
            };
            let cap = match setting(&config.rate_limits, LimitName::ConcurrentPerClient, &facts) {
                Some(Setting::Count(c)) => c.to_string(),
                _ => "unlimited".into(),
            };
            let _ = writeln!(
                out,
                "{:<24} {:>10} {:>10}",
                "concurrent_per_client",
                cap,
                format!("{n} open")
            );
        }
    }
    out
}

/// The client side, for `egress-milter limits`: sends one request to the
/// daemon's endpoint and returns its answer.
pub async fn request(addr: SocketAddr, request: &str) -> std::io::Result<String> {
    let mut stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.write_all(format!("{request}\n").as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(REQUEST_TIMEOUT, stream.read_to_string(&mut answer))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    Ok(answer)
}
