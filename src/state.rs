//! What all connections share: the configuration in force (swapped whole on
//! reload), the limiter, the clients of the backends, the metrics.

use crate::config::{Config, ConfigErrors};
use crate::limiter::Limiter;
use arc_swap::ArcSwap;
use std::fmt::Write as _;
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

pub struct Shared {
    config: ArcSwap<Config>,
    /// The configuration the daemon started with: what its sockets and
    /// clients were built from.
    started: Arc<Config>,
    next_conn: AtomicU64,
    /// Limiter state outlives configurations: a reload keeps the counters
    /// of every limit whose rate did not change.
    pub limiter: Limiter,
    /// The one DNS resolver (with its cache), or why there is none.
    pub dns: Result<mail_auth::MessageAuthenticator, String>,
    /// The clamd client, when `antivirus` is set.
    pub clamd: Option<crate::content::clamd::Client>,
    /// The rspamd client, when `content.rspamd` is set.
    pub rspamd: Option<Result<crate::content::rspamd::Client, String>>,
    pub metrics: crate::metrics::Metrics,
    /// Signals and open incidents outlive configurations too.
    pub incidents: Arc<crate::incidents::Incidents>,
    /// The named lookups and their caches.
    pub sources: Arc<crate::sources::Sources>,
    /// The senders classes in monitor mode were seen using.
    pub learned: Arc<crate::learning::Learned>,
    /// The rotated DKIM keys that sign now (`dkim.rotation`).
    pub rotated: crate::rotation::Rotated,
    /// What the reputation watch knows (`reputation`), and who sent what.
    pub reputation: crate::reputation::Watch,
    /// The recipients refused after hard bounces (`bounces`).
    pub suppressions: crate::bounces::Suppressions,
    /// Who recently sent as each sender (`bounces`: a bounce counts
    /// against them).
    pub recent_senders: crate::bounces::recent::Recent,
    /// The recent decisions and why held mail was held (`console`).
    pub history: crate::history::History,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Self> {
        let limiter = Limiter::new(&config.rate_limits);
        let dns = crate::dns::resolver(&config.dns);
        if let Err(e) = &dns {
            tracing::error!("no DNS resolver, checks that need DNS follow on_error: {e}");
        }
        let rspamd = config
            .content
            .rspamd
            .as_ref()
            .map(|r| crate::content::rspamd::Client::new(&r.url, r.timeout));
        let incidents = Arc::new(crate::incidents::Incidents::new(&config.incidents));
        let clamd = config
            .antivirus
            .as_ref()
            .map(crate::content::clamd::Client::new);
        let sources = Arc::new(crate::sources::Sources::new(&config));
        let learned = Arc::new(crate::learning::Learned::new(
            config.incidents.state_dir.as_deref(),
        ));
        let (rotated, errors) = crate::rotation::Rotated::load(config.dkim.rotation.as_ref());
        for e in errors {
            tracing::error!(target: "egress_milter::dkim", "dkim rotation: a key that should sign cannot: {e}");
        }
        let reputation = crate::reputation::Watch::load(config.incidents.state_dir.as_deref());
        let suppressions =
            crate::bounces::Suppressions::load(config.incidents.state_dir.as_deref());
        let history = crate::history::History::new(
            config.console.as_ref().map_or(0, |c| c.decisions),
            config.incidents.state_dir.as_deref(),
        );
        incidents
            .notifier
            .set_linker(crate::links::linker(config.console.as_ref()));
        Arc::new(Self {
            history,
            recent_senders: Default::default(),
            suppressions,
            reputation,
            rotated,
            learned,
            sources,
            clamd,
            incidents,
            limiter,
            dns,
            rspamd,
            metrics: crate::metrics::Metrics::default(),
            started: Arc::new(config.clone()),
            config: ArcSwap::from_pointee(config),
            next_conn: AtomicU64::new(1),
        })
    }

    /// Every metric, as Prometheus scrapes it.
    pub fn metrics_text(&self) -> String {
        let mut out = self.metrics.render(&self.limiter, &self.incidents);
        let _ = writeln!(out, "# HELP egress_callouts_allowed_per_minute verify_callouts.rate, in callouts per minute (absent: unlimited).\n# TYPE egress_callouts_allowed_per_minute gauge");
        if let Some(cap) = self.sources.callout_cap.per_minute() {
            let _ = writeln!(out, "egress_callouts_allowed_per_minute {cap}");
        }
        self.reputation.render_metrics(&mut out);
        let _ = writeln!(out, "# HELP egress_suppressed_recipients Recipients refused now after hard bounces (bounces.suppress).\n# TYPE egress_suppressed_recipients gauge\negress_suppressed_recipients {}", self.suppressions.list(crate::incidents::now_ms() / 1000).len());
        out
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The sources as a stage uses them; `record` keeps every lookup for
    /// `explain`.
    pub fn lists(&self, record: bool) -> crate::sources::Lists<'_> {
        crate::sources::Lists::new(
            &self.sources,
            self.limiter.redis.as_ref(),
            &self.metrics,
            record,
        )
    }

    pub(crate) fn next_connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Reads the configuration file again and, if it is valid in full,
    /// swaps it in. On error the old configuration stays in force. Returns
    /// the keys that differ from those the daemon started with and need a
    /// restart to take effect.
    pub fn reload(&self) -> Result<Vec<&'static str>, ConfigErrors> {
        let old = self.config();
        let new = Config::load(&old.path)?;
        for w in &new.warnings {
            tracing::warn!("configuration: {w}");
        }
        let restart = crate::config::restart_needed(&self.started, &new);
        self.incidents.reconfigure(&new.incidents);
        self.incidents
            .notifier
            .set_linker(crate::links::linker(new.console.as_ref()));
        self.sources.reconfigure(&new);
        self.config.store(Arc::new(new));
        Ok(restart)
    }
}
