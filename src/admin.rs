//! The operators' endpoint, used by `egress-milter limits show|reset` and
//! `egress-milter incidents list|show|open|close`. One request line, a
//! text answer, then the connection closes.
//!
//! It listens on a unix socket by default (`admin.listen`), whose owner,
//! group and mode (0660) decide who may use it: the daemon's user and the
//! administrators in its group. On TCP (loopback only) every request must
//! first give the token read from `admin.token_file`: `auth TOKEN`.

use crate::address::Address;
use crate::config::{AdminListen, AdminSettings, Config, IncidentAction, KeyKind, Setting};
use crate::incidents::{now_ms, rfc3339, sendmail_release, Incident};
use crate::limiter::{LimitId, LimitName, Rate};
use crate::session::checks::rate::rules::{setting, Facts};
use crate::state::Shared;
use std::{fmt::Write as _, net::IpAddr, path::PathBuf, sync::Arc, time::Duration};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tracing::{info, warn};

/// A request line longer than this is refused: keys are addresses.
const MAX_REQUEST: usize = 1024;
/// A client that sends no request within this is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound endpoint.
pub enum Listener {
    Unix(UnixListener, PathBuf),
    /// TCP, with the token every request must give.
    Tcp(TcpListener, String),
}

/// Binds the endpoint the settings name (None for `listen: off`). The
/// socket's directory must exist (the package makes /run/egress-milter).
pub async fn bind(settings: &AdminSettings) -> std::io::Result<Option<Listener>> {
    match &settings.listen {
        AdminListen::Off => Ok(None),
        AdminListen::Unix { path, mode, group } => {
            crate::files::remove_stale_socket(path).await?;
            let l = UnixListener::bind(path)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
            if let Some(gid) = group {
                // The daemon's user must be a member of the group.
                std::os::unix::fs::chown(path, None, Some(*gid)).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot give {} to group {gid} (admin.socket_group; is the daemon's user a member?): {e}", path.display()),
                    )
                })?;
            }
            info!(path = %path.display(), mode = format!("{mode:o}"), "admin endpoint listening");
            Ok(Some(Listener::Unix(l, path.clone())))
        }
        AdminListen::Inet(addr) => {
            let token = settings
                .token()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "the TCP admin endpoint needs admin.token_file",
                    )
                })?;
            let l = TcpListener::bind(addr).await?;
            info!(%addr, "admin endpoint listening (token required)");
            Ok(Some(Listener::Tcp(l, token)))
        }
    }
}

impl Listener {
    /// The unix socket's path, to remove at shutdown.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Listener::Unix(_, p) => Some(p),
            Listener::Tcp(..) => None,
        }
    }
}

pub async fn serve(listener: Listener, shared: Arc<Shared>) {
    loop {
        let accepted = match &listener {
            Listener::Unix(l, _) => l.accept().await.map(|(s, _)| {
                let (r, w) = s.into_split();
                (
                    Box::new(r) as Box<dyn AsyncRead + Unpin + Send>,
                    Box::new(w) as Box<dyn AsyncWrite + Unpin + Send>,
                    None,
                )
            }),
            Listener::Tcp(l, token) => l.accept().await.map(|(s, peer)| {
                let (r, w) = s.into_split();
                (
                    Box::new(r) as Box<dyn AsyncRead + Unpin + Send>,
                    Box::new(w) as Box<dyn AsyncWrite + Unpin + Send>,
                    Some((token.clone(), peer)),
                )
            }),
        };
        let (read, mut write, tcp) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(read.take(2 * MAX_REQUEST as u64));
            let mut line = String::new();
            if let Some((token, peer)) = &tcp {
                let given = match read_line(&mut reader, &mut line).await {
                    Some(_) => line.trim().strip_prefix("auth ").unwrap_or("").to_string(),
                    None => String::new(),
                };
                if !same(given.as_bytes(), token.as_bytes()) {
                    warn!(%peer, "admin request refused: no valid token");
                    let _ = write.write_all(b"error: authentication required\n").await;
                    return;
                }
            }
            let answer = match read_line(&mut reader, &mut line).await {
                Some(n) if n > 0 && n <= MAX_REQUEST => answer(&shared, line.trim()).await,
                _ => "error: no request\n".to_string(),
            };
            info!(request = line.trim(), "admin request");
            let _ = write.write_all(answer.as_bytes()).await;
        });
    }
}

/// One line, within the request timeout.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut String,
) -> Option<usize> {
    line.clear();
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(line)).await {
        Ok(Ok(n)) => Some(n),
        _ => None,
    }
}

/// Compares in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The limits that key on this kind of key, each with every rate the
/// configuration can give it (its counters live under each), and the rate
/// that applies to the key by itself.
fn limits_for(
    config: &Config,
    key: &str,
    ip: Option<IpAddr>,
    class: Option<&str>,
) -> Vec<(LimitId, Rate, bool)> {
    let limits = &config.rate_limits;
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
        class,
        bounce: false,
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
                    out.push((name.into(), r, own == Some(r)));
                }
            }
        }
    }
    // Custom limits: every rate each can have; a limit whose key is of
    // this kind shows even when full.
    for c in &limits.custom {
        let kind_fits = custom_key_fits(c, key, ip.is_some(), address.is_some());
        let rates = std::iter::once(c.rate).chain(c.overrides.iter().map(|(_, r)| *r));
        for r in rates.flatten() {
            let id = LimitId::Custom(c.name);
            if !out.iter().any(|(n, x, _)| *n == id && *x == r) {
                out.push((id, r, kind_fits && c.rate == Some(r)));
            }
        }
    }
    out
}

/// The key's kind when it is written `KIND:KEY` (client, network, sender,
/// recipient, user, domain), checked against the key; None for a bare key,
/// whose kind is guessed from its form. An IPv6 address is a bare key.
fn key_kind(text: &str) -> Result<(Option<&'static str>, &str), String> {
    if text.parse::<IpAddr>().is_ok() || text.parse::<ipnet::IpNet>().is_ok() {
        return Ok((None, text));
    }
    let Some((kind, key)) = text.split_once(':') else {
        return Ok((None, text));
    };
    const KINDS: &[&str] = &["client", "network", "sender", "recipient", "user", "domain"];
    let Some(kind) = KINDS.iter().copied().find(|k| *k == kind) else {
        return Err(format!(
            "unknown key kind \"{kind}\" in \"{text}\" (KIND:KEY, KIND one of {})",
            KINDS.join(", ")
        ));
    };
    let fits = match kind {
        "client" => key.parse::<IpAddr>().is_ok(),
        "network" => key.parse::<ipnet::IpNet>().is_ok(),
        "sender" | "recipient" => Address::parse(key).is_ok(),
        "domain" => crate::address::Domain::parse(key).is_ok(),
        _ => !key.is_empty(),
    };
    if fits {
        Ok((Some(kind), key))
    } else {
        Err(format!("\"{key}\" is not a {kind} key"))
    }
}

/// Whether `key` looks like a key of this custom limit: an IP for
/// `client`, a network for `client_network`, an address, a domain, a pair
/// joined by `+`, else a login or a class.
fn custom_key_fits(c: &crate::config::CustomLimit, key: &str, ip: bool, address: bool) -> bool {
    use crate::config::KeyPart;
    if c.key.len() == 2 {
        return key.contains('+');
    }
    match c.key.first() {
        Some(KeyPart::Client) => ip,
        Some(KeyPart::ClientNetwork) => key.contains('/'),
        Some(KeyPart::Sender | KeyPart::Recipient) => address,
        Some(KeyPart::SenderDomain | KeyPart::RecipientDomain) => {
            !ip && !address && key.contains('.') && !key.contains('/')
        }
        Some(KeyPart::User | KeyPart::Class) => !ip && !address,
        None => false,
    }
}

async fn answer(shared: &Shared, request: &str) -> String {
    if let Some(rest) = request.strip_prefix("incidents") {
        return incidents(shared, rest.trim()).await;
    }
    if let Some(rest) = request.strip_prefix("senders ") {
        return senders(shared, rest.trim());
    }
    if let Some(rest) = request.strip_prefix("cache ") {
        return crate::sources::cache_command(
            &shared.sources,
            shared.limiter.redis.as_ref(),
            rest.trim(),
        )
        .await;
    }
    let (verb, rest) = request.split_once(' ').unwrap_or((request, ""));
    let (key, only) = match rest.split_once(" --limit ") {
        Some((k, l)) => (k.trim(), Some(l.trim())),
        None => (rest.trim(), None),
    };
    if key.is_empty() || !matches!(verb, "show" | "reset") {
        return "error: expected \"show KEY [--limit NAME]\" or \"reset KEY [--limit NAME]\"\n"
            .into();
    }
    let config = shared.config();
    let (kind, key) = match key_kind(key) {
        Ok(k) => k,
        Err(e) => return format!("error: {e}\n"),
    };
    let ip = key.parse::<IpAddr>().ok();
    // Keys are stored as the policy writes them: IPs canonical, addresses
    // and logins as `rate_limits.keys` spells them.
    let keys = &config.rate_limits.keys;
    // A dotted word is a domain for the limits keyed by domain, and a login
    // (spelt as `rate_limits.keys` says) for the others.
    let mut domain_key = None;
    let key = match (key.parse::<IpAddr>(), Address::parse(key)) {
        (Ok(ip), _) => keys.client(ip),
        (_, Ok(a)) => keys.address(&a),
        _ => match (
            key.parse::<ipnet::IpNet>(),
            crate::address::Domain::parse(key),
        ) {
            // A client_network key: canonical.
            (Ok(net), _) => net.trunc().to_string(),
            (_, Ok(domain)) if key.contains('.') && kind != Some("user") => {
                domain_key = Some(domain.to_string());
                if kind == Some("domain") {
                    domain.to_string()
                } else {
                    keys.login(key)
                }
            }
            _ => keys.login(key),
        },
    };
    // An IP's class, when a class matches by IP alone.
    let class = match ip {
        Some(ip) => crate::class::resolve(&config, &shared.lists(false), Some(ip), None)
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let class = class.map(|c| c.name.as_str());
    let mut limits = limits_for(&config, &key, ip, class);
    if let Some(name) = only {
        let known = |n: &str| {
            LimitName::ALL.iter().any(|l| l.as_str() == n)
                || config.rate_limits.custom.iter().any(|c| c.name == n)
        };
        if !known(name) {
            let mut names: Vec<&str> = LimitName::ALL.iter().map(|l| l.as_str()).collect();
            names.extend(config.rate_limits.custom.iter().map(|c| c.name));
            return format!(
                "error: no limit named \"{name}\" (the limits are {})\n",
                names.join(", ")
            );
        }
        limits.retain(|(id, _, _)| id.as_str() == name);
        if limits.is_empty() {
            return format!("error: {name} does not count keys like \"{key}\"\n");
        }
    }
    // Each limit's counters under its own spelling of the key.
    let by_domain = |id: &LimitId| {
        config
            .rate_limits
            .custom
            .iter()
            .any(|c| LimitId::Custom(c.name) == *id && c.keyed_by_domain())
    };
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, (id, _, _)) in limits.iter().enumerate() {
        let k = match &domain_key {
            Some(d) if by_domain(id) => d.as_str(),
            _ => key.as_str(),
        };
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(i),
            None => groups.push((k, vec![i])),
        }
    }
    let limiter = &shared.limiter;
    let pairs_of = |idx: &[usize]| -> Vec<(LimitId, Rate)> {
        idx.iter().map(|&i| (limits[i].0, limits[i].1)).collect()
    };
    if verb == "reset" {
        for (k, idx) in &groups {
            if let Err(e) = limiter.reset(&pairs_of(idx), k).await {
                return format!("error: {e}\n");
            }
        }
        return format!("reset {key}: {} counters full again\n", limits.len());
    }
    let mut budgets: Vec<Option<crate::limiter::Budget>> = vec![None; limits.len()];
    for (k, idx) in &groups {
        match limiter.show(&pairs_of(idx), k).await {
            Ok(b) => {
                for (&i, b) in idx.iter().zip(b) {
                    budgets[i] = Some(b);
                }
            }
            Err(e) => return format!("error: {e}\n"),
        }
    }
    let budgets: Vec<crate::limiter::Budget> = budgets.into_iter().flatten().collect();
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
    if let Some(ip) = ip.filter(|_| only.is_none_or(|n| n == "concurrent_per_client")) {
        let net = crate::address::client_net(ip, config.rate_limits.keys.ipv6_prefix);
        if let Ok(n) = limiter.open_connections(net).await {
            let facts = Facts {
                ip: Some(ip),
                class,
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

/// `senders CLASS [file]`: what learning mode saw the class use.
fn senders(shared: &Shared, request: &str) -> String {
    let (class, format) = match request.split_once(' ') {
        Some((c, "file")) => (c, crate::learning::Format::File),
        Some((c, "yaml")) | Some((c, "")) => (c, crate::learning::Format::Yaml),
        None => (request, crate::learning::Format::Yaml),
        Some(_) => return "error: expected \"senders CLASS [yaml|file]\"\n".into(),
    };
    let config = shared.config();
    if class.is_empty() || !config.classes.iter().any(|c| c.name == class) {
        return format!("error: no class named \"{class}\" in the configuration\n");
    }
    shared.learned.report(class, format)
}

/// The client side, for `egress-milter limits` and `incidents`: sends one
/// request to the daemon's endpoint and returns its answer.
pub async fn request(settings: &AdminSettings, request: &str) -> std::io::Result<String> {
    let timeout = |what: &'static str| std::io::Error::new(std::io::ErrorKind::TimedOut, what);
    let mut answer = String::new();
    match &settings.listen {
        AdminListen::Off => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the admin endpoint is off (admin.listen: off)",
            ))
        }
        AdminListen::Unix { path, .. } => {
            let mut s = tokio::time::timeout(REQUEST_TIMEOUT, UnixStream::connect(path))
                .await
                .map_err(|_| timeout("connect timed out"))??;
            s.write_all(format!("{request}\n").as_bytes()).await?;
            tokio::time::timeout(REQUEST_TIMEOUT, s.read_to_string(&mut answer))
                .await
                .map_err(|_| timeout("no answer"))??;
        }
        AdminListen::Inet(addr) => {
            let token = settings
                .token()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?
                .unwrap_or_default();
            let mut s = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
                .await
                .map_err(|_| timeout("connect timed out"))??;
            s.write_all(format!("auth {token}\n{request}\n").as_bytes())
                .await?;
            tokio::time::timeout(REQUEST_TIMEOUT, s.read_to_string(&mut answer))
                .await
                .map_err(|_| timeout("no answer"))??;
        }
    }
    Ok(answer)
}

/// Where the endpoint is, for messages.
pub fn describe(settings: &AdminSettings) -> String {
    match &settings.listen {
        AdminListen::Off => "nowhere (admin.listen: off)".into(),
        AdminListen::Unix { path, .. } => path.display().to_string(),
        AdminListen::Inet(a) => a.to_string(),
    }
}

/// `kind:key`, or a bare key: an IP (or an IPv6 network) is a client;
/// anything else must match one open incident's key. Keys are spelt as the
/// daemon counts them (`rate_limits.keys`, `incidents.ipv6_prefix`), so
/// `user:Walt` is the incident of `walt` and `sender:boss+1@x` that of
/// `boss@x`.
async fn incident_key(
    shared: &Shared,
    text: &str,
    open: bool,
) -> Result<(KeyKind, String), String> {
    let config = shared.config();
    let keys = &config.rate_limits.keys;
    let client = |key: &str| -> Result<String, String> {
        let ip = match (key.parse::<IpAddr>(), key.parse::<ipnet::IpNet>()) {
            (Ok(ip), _) => ip,
            (_, Ok(net)) => net.network(),
            _ => return Err(format!("\"{key}\" is not an IP address or network")),
        };
        Ok(crate::address::client_key(ip, config.incidents.ipv6_prefix))
    };
    if let Some((kind, key)) = text.split_once(':') {
        if let Some(kind) = KeyKind::parse(kind) {
            let key = match kind {
                KeyKind::Client => client(key)?,
                KeyKind::Sender => Address::parse(key)
                    .map(|a| keys.address(&a))
                    .map_err(|_| format!("\"{key}\" is not an address"))?,
                KeyKind::User => keys.login(key),
                KeyKind::Class => key.to_string(),
            };
            return Ok((kind, key));
        }
    }
    if let Ok(key) = client(text) {
        return Ok((KeyKind::Client, key));
    }
    if !open {
        let login = keys.login(text);
        let address = Address::parse(text).ok().map(|a| keys.address(&a));
        let matching: Vec<Incident> = shared
            .incidents
            .list(shared.limiter.redis.as_ref(), now_ms())
            .await
            .into_iter()
            .filter(|i| {
                i.key == text
                    || (i.kind == KeyKind::User && i.key == login)
                    || (i.kind == KeyKind::Sender && address.as_deref() == Some(i.key.as_str()))
                    || (i.kind == KeyKind::Class && i.key.eq_ignore_ascii_case(text))
            })
            .collect();
        if let [one] = matching.as_slice() {
            return Ok((one.kind, one.key.clone()));
        }
    }
    Err(format!(
        "give the key as KIND:KEY (KIND is client, user, sender or class), e.g. user:{text}"
    ))
}

async fn incidents(shared: &Shared, request: &str) -> String {
    let redis = shared.limiter.redis.as_ref();
    let config = shared.config();
    let settings = &config.incidents;
    let mut words = request.split_whitespace();
    let verb = words.next().unwrap_or("");
    let key = words.next();
    let now = now_ms();
    match (verb, key) {
        ("list", None) => {
            let open = shared.incidents.list(redis, now).await;
            if open.is_empty() {
                return "no open incident\n".into();
            }
            let mut out = format!(
                "{:<40} {:<16} {:<9} {:>8} {:>6}  {}\n",
                "incident", "signal", "action", "messages", "held", "until"
            );
            for i in open {
                let action = if i.monitor {
                    format!("{}*", i.action.as_str())
                } else {
                    i.action.as_str().to_string()
                };
                let _ = writeln!(
                    out,
                    "{:<40} {:<16} {:<9} {:>8} {:>6}  {}",
                    i.name(),
                    i.signal,
                    action,
                    i.messages,
                    i.held.len(),
                    rfc3339(i.until)
                );
            }
            out
        }
        ("show", Some(k)) => match incident_key(shared, k, false).await {
            Ok((kind, key)) => {
                let found = shared
                    .incidents
                    .list(redis, now)
                    .await
                    .into_iter()
                    .find(|i| i.kind == kind && i.key == key);
                match found {
                    Some(i) => show(&i),
                    None => format!("error: no open incident for {}:{key}\n", kind.as_str()),
                }
            }
            Err(e) => format!("error: {e}\n"),
        },
        ("close", Some(k)) => match incident_key(shared, k, false).await {
            Ok((kind, key)) => match shared.incidents.close(redis, kind, &key, settings).await {
                Some(i) => {
                    let mut out = format!("closed {}: mail from it goes through again\n", i.name());
                    if !i.held.is_empty() {
                        let _ = write!(
                            out,
                            "held meanwhile: {}\nrelease with:  postsuper -H {}\n       or:     {}\n",
                            i.held.join(" "),
                            i.held.join(" "),
                            sendmail_release(&i.held)
                        );
                    }
                    out
                }
                None => format!("error: no open incident for {}:{key}\n", kind.as_str()),
            },
            Err(e) => format!("error: {e}\n"),
        },
        ("open", Some(k)) => {
            let (kind, key) = match incident_key(shared, k, true).await {
                Ok(k) => k,
                Err(e) => return format!("error: {e}\n"),
            };
            let mut duration = settings.block_for;
            let mut action = None;
            let rest: Vec<&str> = words.collect();
            for pair in rest.chunks(2) {
                match pair {
                    ["--for", d] => match crate::config::parse_duration(d) {
                        Some(d) if !d.is_zero() => duration = d,
                        _ => return format!("error: invalid duration \"{d}\" (e.g. 30m, 2h)\n"),
                    },
                    ["--action", a] => match IncidentAction::parse(a) {
                        Some(a) => action = Some(a),
                        None => {
                            return format!(
                                "error: invalid action \"{a}\" (hold, tempfail, reject or monitor)\n"
                            )
                        }
                    },
                    other => return format!("error: unexpected {}\n", other.join(" ")),
                }
            }
            let before = shared
                .incidents
                .find(redis, now, &crate::incidents::keys_of(kind, &key))
                .await;
            let i = shared
                .incidents
                .open_by_hand(redis, kind, &key, duration, action, settings)
                .await;
            let said = match &before {
                None => "opened".to_string(),
                Some(b) if b.action != i.action => {
                    format!("action changed from {} on", b.action.as_str())
                }
                Some(_) => "already open".to_string(),
            };
            format!(
                "{said} {}: {} until {}\n",
                i.name(),
                i.action.as_str(),
                rfc3339(i.until)
            )
        }
        _ => "error: expected \"incidents list\", \"incidents show KEY\", \"incidents close KEY\" or \"incidents open KEY [--for DURATION] [--action ACTION]\"\n".into(),
    }
}

fn show(i: &Incident) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "incident  {}", i.name());
    let _ = writeln!(out, "signal    {}", i.signal);
    let _ = writeln!(out, "figures   {}", i.figures);
    let _ = writeln!(
        out,
        "action    {}{}",
        i.action.as_str(),
        if i.monitor {
            " (monitor mode: nothing held)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "opened    {}", rfc3339(i.opened));
    let _ = writeln!(out, "until     {}", rfc3339(i.until));
    let _ = writeln!(out, "messages  {}", i.messages);
    if !i.earlier.is_empty() {
        let _ = writeln!(
            out,
            "earlier   {}  (accepted in the window before it opened)",
            i.earlier.join(" ")
        );
    }
    if i.held.is_empty() {
        let _ = writeln!(out, "held      none");
    } else {
        let _ = writeln!(out, "held      {}", i.held.join(" "));
        let _ = writeln!(out, "release   postsuper -H {}", i.held.join(" "));
        let _ = writeln!(out, "          {}  (Sendmail)", sendmail_release(&i.held));
    }
    out
}
