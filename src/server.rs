//! The listener, the milter server, signals (SIGTERM/SIGINT stop, SIGHUP
//! reloads) and graceful shutdown.

use crate::config::{Config, Listen};
use crate::milter;
use crate::state::Shared;
pub use crate::tcp::{MilterTcpListener, MilterTcpStream};
use indymilter::{EitherListener, EitherStream, Listener};
use std::{
    future::Future,
    io,
    os::unix::fs::PermissionsExt,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tracing::{error, info, warn};

/// The socket the milter listens on.
pub type MilterListener = Resilient<EitherListener<MilterTcpListener, UnixListener>>;

/// Binds the configured socket. A stale unix socket left by a crashed run is
/// removed; one that a live process still answers on is not.
pub async fn bind(listen: &Listen, socket_mode: u32) -> io::Result<MilterListener> {
    let inner = match listen {
        Listen::Inet(addr) => {
            EitherListener::Tcp(MilterTcpListener(TcpListener::bind(addr.as_str()).await?))
        }
        Listen::Unix(path) => {
            crate::files::remove_stale_socket(path).await?;
            let l = UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(socket_mode))?;
            EitherListener::Unix(l)
        }
    };
    Ok(Resilient { inner, pause: None })
}

/// Wraps a listener so that a failed `accept` (a client that reset before
/// being accepted, or running out of file descriptors) is logged and retried
/// instead of ending the milter, which is what the MTA would see as every
/// later message failing.
pub struct Resilient<L> {
    inner: L,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long to wait before accepting again after a resource error
/// (EMFILE, ENFILE, ENOMEM): long enough for connections to close.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

impl<L: Listener> Listener for Resilient<L> {
    type Io = L::Io;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        loop {
            if let Some(pause) = self.pause.as_mut() {
                if pause.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.pause = None;
            }
            match self.inner.poll_accept(cx) {
                Poll::Ready(Err(e)) => {
                    warn!("accept failed, retrying: {e}");
                    self.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_PAUSE)));
                }
                other => return other,
            }
        }
    }
}

/// The stream type of an accepted milter connection.
pub type MilterStream = EitherStream<MilterTcpStream, UnixStream>;

/// Serves milter connections on `listener` until `shutdown` completes; then
/// lets in-flight commands finish and returns.
pub async fn run(
    listener: impl Listener,
    shared: Arc<Shared>,
    shutdown: impl Future,
) -> io::Result<()> {
    let config = shared.config();
    let milter_config = indymilter::Config {
        max_connections: config.max_connections,
        connection_timeout: config.milter_timeout,
        ..Default::default()
    };
    let sweeper = tokio::spawn(sweep_limiter(shared.clone()));
    let incidents = incident_tasks(shared.clone(), gateway_name(&config));
    let files = shared.sources.watch();
    let saver = shared.learned.clone().run_saver();
    let rotation = tokio::spawn(rotate_dkim_keys(shared.clone()));
    let reputation = tokio::spawn(watch_reputation(shared.clone()));
    let suppressions = tokio::spawn(sync_suppressions(shared.clone()));
    let learned = shared.learned.clone();
    let result =
        indymilter::run(listener, milter::callbacks(shared), milter_config, shutdown).await;
    sweeper.abort();
    rotation.abort();
    reputation.abort();
    suppressions.abort();
    files.abort();
    saver.abort();
    learned.save();
    for task in incidents {
        task.abort();
    }
    result
}

/// The incidents' background work: delivering notices, and every second
/// closing the incidents whose time is up.
fn incident_tasks(shared: Arc<Shared>, gateway: String) -> [tokio::task::JoinHandle<()>; 2] {
    let notices = {
        let shared = shared.clone();
        tokio::spawn(async move { shared.incidents.notifier.run(gateway).await })
    };
    let expiry = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let config = shared.config();
            shared
                .incidents
                .expire(
                    shared.limiter.redis.as_ref(),
                    crate::incidents::now_ms(),
                    &config.incidents,
                )
                .await;
        }
    });
    [notices, expiry]
}

/// `dkim.rotation`: a step of the schedule every `check_every`, and the
/// signing keys swapped at each moment the ring records in between;
/// without it, looked for again every few seconds (a reload may turn it
/// on).
async fn rotate_dkim_keys(shared: Arc<Shared>) {
    loop {
        let config = shared.config();
        let Some(settings) = config.dkim.rotation.clone() else {
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        };
        let redis = shared.limiter.redis.as_ref();
        if let Some((ring, changes)) =
            crate::rotation::driver::step(&shared.rotated, &settings, &config.dns, redis).await
        {
            shared.metrics.dkim_keys(&ring);
            notify_dkim(&shared, &config, &changes);
        }
        let next_step = tokio::time::Instant::now() + settings.check_every;
        loop {
            let now_ms = crate::incidents::now_ms();
            let switch = shared.rotated.next_switch(now_ms / 1000);
            let at = switch.map(|t| {
                tokio::time::Instant::now()
                    + Duration::from_millis((t * 1000).saturating_sub(now_ms))
            });
            match at {
                Some(at) if at < next_step => {
                    tokio::time::sleep_until(at).await;
                    let now = crate::incidents::now_ms() / 1000;
                    for e in shared.rotated.switch(now) {
                        tracing::error!(target: "egress_milter::dkim", "dkim rotation: a key that should sign cannot: {e}");
                    }
                    tracing::info!(target: "egress_milter::dkim", "dkim rotation: signing with the keys recorded for {}", crate::incidents::rfc3339(now));
                }
                _ => {
                    tokio::time::sleep_until(next_step).await;
                    break;
                }
            }
        }
    }
}

/// `reputation`: a round every `every` while configured (looked for
/// again every few seconds: a reload may turn it on). With Redis, only
/// the gateway holding the lease runs it, taking up the state the last
/// one left; the others read that state every few seconds; every gateway
/// adds its counts of senders. While Redis fails, each gateway watches
/// alone from the state it last knew (a listing is never missed, though
/// each gateway then tells it).
async fn watch_reputation(shared: Arc<Shared>) {
    use crate::reputation::shared as on_redis;
    loop {
        let config = shared.config();
        let (Some(settings), Ok(resolver)) = (config.reputation.clone(), &shared.dns) else {
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        };
        let start = tokio::time::Instant::now();
        let mut redis = shared.limiter.redis.as_ref();
        if let Some(r) = redis {
            if let Err(e) = on_redis::flush(r, &shared.reputation.tally).await {
                tracing::warn!(target: "egress_milter::reputation", "reputation: sender counts not shared: {e}");
            }
            let drives = on_redis::drive(r, settings.every).await;
            let state = on_redis::load(r).await;
            match (drives, state) {
                (Ok(drives), Ok(state)) => {
                    if let Some(state) = state {
                        shared.reputation.set(state);
                    }
                    if !drives {
                        tokio::time::sleep(settings.every.min(Duration::from_secs(5))).await;
                        continue;
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(target: "egress_milter::reputation", "reputation: Redis fails ({e}): this gateway watches alone until it answers");
                    redis = None;
                }
            }
        }
        crate::reputation::round(
            &shared.reputation,
            resolver,
            &shared.incidents.notifier,
            redis,
            &config,
            &settings,
            Some(settings.every),
        )
        .await;
        tokio::time::sleep_until(start + settings.every).await;
    }
}

/// `bounces` on several gateways: the shared list read again whenever it
/// changed, every two seconds.
async fn sync_suppressions(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut failing = false;
    loop {
        tick.tick().await;
        let config = shared.config();
        let (Some(_), Some(r)) = (&config.bounces, shared.limiter.redis.as_ref()) else {
            continue;
        };
        match crate::bounces::sync(&shared.suppressions, r).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(target: "egress_milter::bounces", "suppressions: the shared list is not readable, this gateway's copy stays: {e}");
            }
            Err(_) => {}
        }
    }
}

/// The notice of each change a step made.
fn notify_dkim(
    shared: &Shared,
    config: &crate::config::Config,
    changes: &[crate::rotation::ring::Change],
) {
    let now = crate::incidents::now_ms() / 1000;
    for c in changes {
        let k = c.key();
        let record = match c {
            crate::rotation::ring::Change::Removed(_) => String::new(),
            _ => k.published(),
        };
        shared.incidents.notifier.send_dkim(
            crate::incidents::DkimNotice {
                change: c.verb(),
                domain: k.domain.clone(),
                selector: k.selector.clone(),
                algorithm: k.algorithm.as_str(),
                name: k.name(),
                record,
                waiting: k.waiting.clone(),
                at: now,
            },
            &config.incidents.notify,
        );
    }
}

/// This gateway's name in notifications: `hostname`, else the system's.
fn gateway_name(config: &crate::config::Config) -> String {
    config
        .hostname
        .as_ref()
        .map(|h| h.to_string())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into())
}

/// An error with what was being done and the key that asked for it.
fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// How often the in-process limiter forgets keys whose budget is full again.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

async fn sweep_limiter(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        let dropped = shared.limiter.local.sweep();
        tracing::debug!(
            dropped,
            tracked = shared.limiter.local.tracked_keys(),
            "limiter swept"
        );
    }
}

/// The daemon: binds, serves, reloads on SIGHUP, stops on SIGTERM/SIGINT.
pub async fn serve(config: Config) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // The handlers first: a SIGHUP or SIGTERM that comes as soon as the
    // socket is bound (or the start is logged) is taken, not fatal.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    for w in &config.warnings {
        warn!("configuration: {w}");
    }
    let listen = config.listen.clone();
    // Each start-up error names what could not be bound and the key that
    // set it, once.
    let listener = bind(&config.listen, config.socket_mode)
        .await
        .map_err(|e| context(e, format!("listen: cannot listen on {listen}")))?;
    let (mode, classes) = (config.mode, config.classes.len());
    let admin_settings = config.admin.clone();
    let metrics_listen = config.metrics_listen;
    let console_listener = match &config.console {
        Some(c) => Some(crate::console::bind(c).await.map_err(|e| {
            context(
                e,
                format!("console.listen: cannot serve the console on {}", c.listen),
            )
        })?),
        None => None,
    };
    let shared = Shared::new(config);
    // Bound here, before serving: a taken port is a start-up error. The
    // default unix socket is not: without its directory (a run outside
    // the package), the daemon runs without the endpoint.
    let admin_listener = match crate::admin::bind(&admin_settings).await {
        Ok(l) => l,
        // Another daemon (the packaged one) answers on it: never taken
        // over.
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            return Err(context(
                e,
                format!(
                    "admin.listen: the admin endpoint {} belongs to a running daemon; give this one its own (admin: {{ listen: ... }}) or admin: {{ listen: off }}",
                    crate::admin::describe(&admin_settings)
                ),
            ))
        }
        Err(e) if admin_settings.listen == crate::config::AdminSettings::default().listen => {
            // Not an error: mail flows without it, and a daemon run by
            // hand (or beside the packaged one) has no use for it.
            info!(
                "admin endpoint not started at {}: {e}",
                crate::admin::describe(&admin_settings)
            );
            None
        }
        Err(e) => {
            return Err(context(
                e,
                format!(
                    "admin.listen: cannot listen on {}",
                    crate::admin::describe(&admin_settings)
                ),
            ))
        }
    };
    let admin_path = admin_listener
        .as_ref()
        .and_then(|l| l.path().map(Path::to_path_buf));
    let admin = admin_listener.map(|l| tokio::spawn(crate::admin::serve(l, shared.clone())));
    let console_path = console_listener
        .as_ref()
        .and_then(|l| l.path().map(Path::to_path_buf));
    let console_at = shared
        .config()
        .console
        .as_ref()
        .map(|c| c.listen.to_string());
    let console = console_listener.map(|l| {
        info!(
            listen = console_at.as_deref().unwrap_or("-"),
            "console listening"
        );
        tokio::spawn(crate::console::serve(l, shared.clone()))
    });
    let metrics = match metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| context(e, format!("metrics.listen: cannot listen on {addr}")))?;
            info!(%addr, "metrics endpoint listening");
            let shared = shared.clone();
            Some(tokio::spawn(crate::metrics::serve(listener, move || {
                shared.metrics_text()
            })))
        }
        None => None,
    };
    let reloader = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                info!("SIGHUP received, reloading the configuration");
                // Reading and checking the file (regexes compiled, keys
                // read) is blocking work, done off the runtime's workers so
                // that milter traffic goes on meanwhile.
                let s = shared.clone();
                let outcome = match tokio::task::spawn_blocking(move || s.reload()).await {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        error!("reload failed, old configuration kept: {e}");
                        continue;
                    }
                };
                match outcome {
                    Ok(restart) if restart.is_empty() => {
                        shared.metrics.reloaded("ok");
                        info!("configuration reloaded")
                    }
                    Ok(restart) => {
                        shared.metrics.reloaded("ok");
                        warn!(
                            "configuration reloaded; changes to {} take effect after a restart",
                            restart.join("; ")
                        )
                    }
                    Err(errors) => {
                        shared.metrics.reloaded("refused");
                        for e in &errors.0 {
                            error!("reload refused, old configuration kept: {e}");
                        }
                    }
                }
            }
        })
    };
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received, finishing in-flight commands"),
            _ = int.recv() => info!("SIGINT received, finishing in-flight commands"),
        }
    };
    info!(listen = %listen, mode = ?mode, classes, "egress-milter started");
    // Every socket is bound: tell systemd (Type=notify) the milter is ready.
    // Without NOTIFY_SOCKET (not started by systemd) this does nothing.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!("could not notify systemd of readiness: {e}");
    }
    let result = run(listener, shared.clone(), shutdown).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    reloader.abort();
    for task in [admin, metrics, console].into_iter().flatten() {
        task.abort();
    }
    for path in [admin_path, console_path].into_iter().flatten() {
        let _ = std::fs::remove_file(path);
    }
    if let Listen::Unix(path) = &listen {
        let _ = std::fs::remove_file(path);
    }
    let messages = shared.metrics.messages();
    let n = |verdicts: &[&str]| -> u64 { verdicts.iter().filter_map(|v| messages.get(*v)).sum() };
    info!(
        accepted = n(&["accept", "would_reject", "would_tempfail", "would_hold"]),
        rejected = n(&["reject"]),
        tempfailed = n(&["tempfail"]),
        held = n(&["hold"]),
        would_reject = n(&["would_reject"]),
        would_tempfail = n(&["would_tempfail"]),
        errors = shared.metrics.errors(),
        redis_failures = shared.limiter.redis_failures(),
        limiter_fallbacks = shared
            .limiter
            .fallbacks
            .load(std::sync::atomic::Ordering::Relaxed),
        limiter_evictions = shared.limiter.local.evictions(),
        "egress-milter stopped"
    );
    result
}
