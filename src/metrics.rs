//! Prometheus metrics, in the text exposition format, on `metrics.listen`
//! (a loopback address by default): decisions by stage, rule, class and
//! verdict (monitor mode's `would_*` included), messages by final verdict,
//! DKIM signatures made, Redis and DNS failures, open milter connections,
//! the milter's own time per stage, and Redis, DNS and rspamd round trips.

use crate::incidents::Incidents;
use crate::limiter::Limiter;
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// Upper bounds (seconds) of the stage-time histogram buckets: a policy
/// stage takes microseconds, a DNS or Redis round trip milliseconds.
const BUCKETS: [f64; 10] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A histogram updated with atomics only: observing takes no lock.
#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum of the observations, in nanoseconds.
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            // Cumulative buckets are summed when rendered.
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// Histograms by label value. The set of values is small and fixed (the
/// stages, the backends): the map is written once per value, then only
/// read.
#[derive(Default)]
struct Histograms(RwLock<BTreeMap<String, Arc<Histogram>>>);

impl Histograms {
    fn observe(&self, key: &str, took: Duration) {
        let found = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        let h = match found {
            Some(h) => h,
            None => self
                .0
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key.to_string())
                .or_default()
                .clone(),
        };
        h.observe(took);
    }
}

/// Writes a family of histograms, one per value of the label `label_name`.
fn render_histograms(out: &mut String, name: &str, label_name: &str, map: &Histograms) {
    for (key, h) in map.0.read().unwrap_or_else(|p| p.into_inner()).iter() {
        let key = label(key);
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += h.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{label_name}=\"{key}\",le=\"{b}\"}} {cumulative}"
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "{name}_bucket{{{label_name}=\"{key}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "{name}_sum{{{label_name}=\"{key}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{{label_name}=\"{key}\"}} {count}");
    }
}

#[derive(Default)]
pub struct Metrics {
    /// (stage, rule, class, verdict) -> count.
    decisions: Mutex<BTreeMap<(String, String, String, String), u64>>,
    /// final verdict -> count.
    messages: Mutex<BTreeMap<String, u64>>,
    /// Virus scans by result.
    scans: Mutex<BTreeMap<String, u64>>,
    /// Viruses found (allowed ones included) by signature.
    viruses: Mutex<BTreeMap<String, u64>>,
    /// (domain, algorithm) -> signatures made.
    signatures: Mutex<BTreeMap<(String, String), u64>>,
    /// The rotated DKIM keys as last stepped (each shown in the state in
    /// effect when scraped: a switch recorded ahead shows at its moment).
    dkim_keys: Mutex<Vec<crate::rotation::ring::Key>>,
    /// limit -> warnings (`warn_at` crossed, once per key per window).
    limit_warnings: Mutex<BTreeMap<&'static str, u64>>,
    /// Actions taken in the console or through its links, by action.
    console_actions: Mutex<BTreeMap<&'static str, u64>>,
    /// Reloads (SIGHUP) by result: `ok`, `refused` (the file has errors:
    /// the old configuration serves on).
    reloads: Mutex<BTreeMap<&'static str, u64>>,
    stage_time: Histograms,
    /// Round trips to Redis, DNS and rspamd, by backend.
    backend_time: Histograms,
    pub open_connections: AtomicI64,
    pub dns_failures: AtomicU64,
    /// Checks that could not decide, answered as `on_error` says.
    errors: AtomicU64,
    /// (source, result) -> lookups.
    source_lookups: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Lookups that reached a source (a file, a directory, a mail store).
    source_time: Histograms,
    /// Callouts by result: `made`, `capped` (over `verify_callouts.rate`).
    callouts: Mutex<BTreeMap<&'static str, u64>>,
    /// Delivery-status notices read, by kind: `hard`, `soft` (per
    /// recipient), `unreadable` (per notice).
    bounces: Mutex<BTreeMap<&'static str, u64>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    *m.entry(key).or_insert(0) += 1;
}

/// Label values are quoted; `\`, `"` and newlines escaped (the format's rule).
pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn decision(&self, stage: &str, rule: &str, class: &str, verdict: &str) {
        bump(
            &self.decisions,
            (stage.into(), rule.into(), class.into(), verdict.into()),
        );
    }

    pub fn message(&self, verdict: &str) {
        bump(&self.messages, verdict.to_string());
    }

    /// A limit's `warn_at` crossed by a key.
    pub fn limit_warning(&self, limit: &'static str) {
        bump(&self.limit_warnings, limit);
    }
    /// An action taken in the console (one of its action names).
    pub fn console_action(&self, action: &'static str) {
        bump(&self.console_actions, action);
    }
    /// A reload, `ok` or `refused`.
    pub fn reloaded(&self, result: &'static str) {
        bump(&self.reloads, result);
    }

    pub fn signature(&self, domain: &str, algorithm: &str) {
        bump(
            &self.signatures,
            (domain.to_string(), algorithm.to_string()),
        );
    }

    /// The rotated keys, for `egress_dkim_key_age_seconds` and
    /// `egress_dkim_key_state`.
    pub fn dkim_keys(&self, ring: &crate::rotation::ring::Ring) {
        *self.dkim_keys.lock().unwrap_or_else(|p| p.into_inner()) = ring.keys.clone();
    }

    /// A DNS-based check that got no answer.
    /// A check that could not decide (a backend failed or timed out, a
    /// command out of order, a fault in a stage).
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages by final verdict so far.
    pub fn messages(&self) -> BTreeMap<String, u64> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks that could not decide so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn dns_failed(&self) {
        self.dns_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A virus scan, by result (`clean`, `virus`, `allowed`, `error`), and
    /// the signature of a virus found.
    pub fn scan(&self, result: &str, signature: Option<&str>) {
        bump(&self.scans, result.to_string());
        if let Some(s) = signature {
            bump(&self.viruses, s.to_string());
        }
    }

    pub fn stage_time(&self, stage: &'static str, took: Duration) {
        self.stage_time.observe(stage, took);
    }

    /// A round trip to a backend: `redis`, `dns` or `rspamd`.
    pub fn backend_time(&self, backend: &'static str, took: Duration) {
        self.backend_time.observe(backend, took);
    }

    /// A lookup in a source (`callout` for the mail stores), by result:
    /// `cache_hit`, or `found`, `not_found`, `error` from the source itself.
    pub fn source_lookup(&self, source: &str, result: &'static str) {
        bump(&self.source_lookups, (source.to_string(), result));
    }

    pub fn bounce(&self, kind: &'static str) {
        bump(&self.bounces, kind);
    }

    pub fn callout(&self, result: &'static str) {
        bump(&self.callouts, result);
    }

    pub fn source_time(&self, source: &str, took: Duration) {
        self.source_time.observe(source, took);
    }

    /// The text exposition of every metric.
    pub fn render(&self, limiter: &Limiter, incidents: &Incidents) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP egress_decisions_total Refusals (and would-be refusals in monitor mode) by stage, rule, class and verdict.\n# TYPE egress_decisions_total counter");
        for ((stage, rule, class, verdict), n) in self
            .decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(out, "egress_decisions_total{{stage=\"{}\",rule=\"{}\",class=\"{}\",verdict=\"{}\"}} {n}", label(stage), label(rule), label(class), label(verdict));
        }
        let _ = writeln!(out, "# HELP egress_messages_total Messages by final verdict.\n# TYPE egress_messages_total counter");
        for (verdict, n) in self
            .messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "egress_messages_total{{verdict=\"{}\"}} {n}",
                label(verdict)
            );
        }
        let _ = writeln!(out, "# HELP egress_config_reloads_total Configuration reloads (SIGHUP) by result: ok, or refused (the old configuration serves on).\n# TYPE egress_config_reloads_total counter");
        for result in ["ok", "refused"] {
            let n = self
                .reloads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(result)
                .copied()
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "egress_config_reloads_total{{result=\"{result}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP egress_limit_warnings_total Keys that crossed a rate limit's warn_at, once per key per window.\n# TYPE egress_limit_warnings_total counter");
        for (limit, n) in self
            .limit_warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "egress_limit_warnings_total{{limit=\"{}\"}} {n}",
                label(limit)
            );
        }
        let _ = writeln!(out, "# HELP egress_console_actions_total Actions taken in the console or through its links, by action.\n# TYPE egress_console_actions_total counter");
        for (action, n) in self
            .console_actions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "egress_console_actions_total{{action=\"{action}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP egress_dkim_signatures_total DKIM signatures made.\n# TYPE egress_dkim_signatures_total counter");
        for ((domain, alg), n) in self
            .signatures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "egress_dkim_signatures_total{{domain=\"{}\",algorithm=\"{}\"}} {n}",
                label(domain),
                label(alg)
            );
        }
        let redis = limiter.redis_failures();
        {
            // The families are declared without keys too (a dashboard's
            // panels stay valid); their series come with dkim.rotation.
            let keys = self.dkim_keys.lock().unwrap_or_else(|p| p.into_inner());
            {
                let now = crate::incidents::now_ms() / 1000;
                let _ = writeln!(out, "# HELP egress_dkim_key_age_seconds Age of each rotated DKIM key (dkim.rotation).\n# TYPE egress_dkim_key_age_seconds gauge");
                for k in keys.iter() {
                    let _ = writeln!(
                        out,
                        "egress_dkim_key_age_seconds{{domain=\"{}\",selector=\"{}\",algorithm=\"{}\"}} {}",
                        label(&k.domain),
                        label(&k.selector),
                        k.algorithm.as_str(),
                        now.saturating_sub(k.created)
                    );
                }
                let _ = writeln!(out, "# HELP egress_dkim_key_state State of each rotated DKIM key: 0 pending (record not yet served, or its switch moment ahead), 1 active (signs), 2 retiring (published, not signing), 3 revoked (record p=).\n# TYPE egress_dkim_key_state gauge");
                for k in keys.iter() {
                    let _ = writeln!(
                        out,
                        "egress_dkim_key_state{{domain=\"{}\",selector=\"{}\",algorithm=\"{}\"}} {}",
                        label(&k.domain),
                        label(&k.selector),
                        k.algorithm.as_str(),
                        k.state_at(now).number()
                    );
                }
            }
        }
        let _ = writeln!(out, "# HELP egress_redis_failures_total Redis calls that failed or timed out.\n# TYPE egress_redis_failures_total counter\negress_redis_failures_total {redis}");
        let fallbacks = limiter.fallbacks.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP egress_limiter_fallbacks_total Rate decisions taken by on_failure.\n# TYPE egress_limiter_fallbacks_total counter\negress_limiter_fallbacks_total {fallbacks}");
        let dns = self.dns_failures.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP egress_dns_failures_total DNS-based checks that could not get an answer.\n# TYPE egress_dns_failures_total counter\negress_dns_failures_total {dns}");
        let errors = self.errors();
        let _ = writeln!(out, "# HELP egress_errors_total Checks that could not decide (a backend failed or timed out, a command out of order), answered as on_error says.\n# TYPE egress_errors_total counter\negress_errors_total {errors}");
        let open = self.open_connections.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP egress_open_connections Milter connections open now.\n# TYPE egress_open_connections gauge\negress_open_connections {open}");
        let keys = limiter.local.tracked_keys();
        let _ = writeln!(out, "# HELP egress_limiter_keys Keys the in-process limiter tracks.\n# TYPE egress_limiter_keys gauge\negress_limiter_keys {keys}");
        let _ = writeln!(out, "# HELP egress_antivirus_scans_total Virus scans by result: clean, virus, allowed (a virus whose signature antivirus.allow lists), error (no verdict: on_error).\n# TYPE egress_antivirus_scans_total counter");
        for (result, n) in self.scans.lock().map(|m| m.clone()).unwrap_or_default() {
            let _ = writeln!(
                out,
                "egress_antivirus_scans_total{{result=\"{}\"}} {n}",
                label(&result)
            );
        }
        let _ = writeln!(out, "# HELP egress_viruses_total Viruses found, by signature.\n# TYPE egress_viruses_total counter");
        for (sig, n) in self.viruses.lock().map(|m| m.clone()).unwrap_or_default() {
            let _ = writeln!(
                out,
                "egress_viruses_total{{signature=\"{}\"}} {n}",
                label(&sig)
            );
        }
        let _ = writeln!(out, "# HELP egress_incidents_opened_total Incidents opened, by signal (operator: by hand) and key kind.\n# TYPE egress_incidents_opened_total counter");
        for ((signal, kind), n) in incidents.opened() {
            let _ = writeln!(
                out,
                "egress_incidents_opened_total{{signal=\"{}\",key=\"{kind}\"}} {n}",
                label(&signal)
            );
        }
        let open = incidents.open_now();
        let _ = writeln!(out, "# HELP egress_incidents_open Incidents open now.\n# TYPE egress_incidents_open gauge\negress_incidents_open {open}");
        let held = incidents.held.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP egress_messages_held_total Messages held for review (quarantined) because of an open incident.\n# TYPE egress_messages_held_total counter\negress_messages_held_total {held}");
        let n = &incidents.notifier;
        let _ = writeln!(out, "# HELP egress_incident_notifications_total Incident notices by result: sent, failed (after retries), suppressed (hourly cap, full queue).\n# TYPE egress_incident_notifications_total counter");
        for (result, counter) in [
            ("sent", &n.sent),
            ("failed", &n.failed),
            ("suppressed", &n.suppressed),
        ] {
            let _ = writeln!(
                out,
                "egress_incident_notifications_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let keys = incidents.tracked_keys();
        let _ = writeln!(out, "# HELP egress_incident_keys Keys the incident signals track in this process.\n# TYPE egress_incident_keys gauge\negress_incident_keys {keys}");
        let (evicted, untracked) = incidents.evictions();
        let _ = writeln!(out, "# HELP egress_incident_key_evictions_total Keys the incident signals forgot to make room (max_keys), the smallest counts first.\n# TYPE egress_incident_key_evictions_total counter\negress_incident_key_evictions_total {evicted}");
        let _ = writeln!(out, "# HELP egress_incident_events_untracked_total Events of a new key not counted: every key sampled to make room was past half its threshold.\n# TYPE egress_incident_events_untracked_total counter\negress_incident_events_untracked_total {untracked}");
        let _ = writeln!(out, "# HELP egress_source_lookups_total Lookups in sources (callout: the mail stores) by result: cache_hit, or found, not_found, error as the source answered, catch_all for a mail store that accepts any address.\n# TYPE egress_source_lookups_total counter");
        for ((source, result), n) in self
            .source_lookups
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
        {
            let _ = writeln!(
                out,
                "egress_source_lookups_total{{source=\"{}\",result=\"{result}\"}} {n}",
                label(&source)
            );
        }
        let _ = writeln!(out, "# HELP egress_bounces_total Delivery-status notices read (bounces): hard and soft failures per recipient, unmatched recipients (no sender here wrote to them: not used), unreadable notices.\n# TYPE egress_bounces_total counter");
        for (kind, n) in self.bounces.lock().map(|m| m.clone()).unwrap_or_default() {
            let _ = writeln!(out, "egress_bounces_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP egress_callouts_total Callouts to the mail stores by result: made, or capped (over verify_callouts.rate: not asked, on_error followed).\n# TYPE egress_callouts_total counter");
        for (result, n) in self.callouts.lock().map(|m| m.clone()).unwrap_or_default() {
            let _ = writeln!(out, "egress_callouts_total{{result=\"{result}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP egress_source_lookup_seconds Lookups that reached a source (not the cache).\n# TYPE egress_source_lookup_seconds histogram");
        render_histograms(
            &mut out,
            "egress_source_lookup_seconds",
            "source",
            &self.source_time,
        );
        let _ = writeln!(out, "# HELP egress_stage_seconds The milter's own time per stage.\n# TYPE egress_stage_seconds histogram");
        render_histograms(&mut out, "egress_stage_seconds", "stage", &self.stage_time);
        let _ = writeln!(out, "# HELP egress_backend_seconds Round trips to Redis, DNS and rspamd.\n# TYPE egress_backend_seconds histogram");
        render_histograms(
            &mut out,
            "egress_backend_seconds",
            "backend",
            &self.backend_time,
        );
        out
    }
}

/// Serves `GET /metrics` (any path, in fact) over HTTP/1.0-style
/// request-response on the listener: Prometheus needs nothing more. Each
/// request gets what `render` returns at that moment.
pub async fn serve(listener: TcpListener, render: impl Fn() -> String + Send + Sync + 'static) {
    let render = Arc::new(render);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            // Read the request head (bounded), whatever it asks.
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 16_384 {
                match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let body = render();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let h = Histograms::default();
        h.observe("mail", Duration::from_micros(50));
        h.observe("mail", Duration::from_millis(3));
        h.observe("mail", Duration::from_secs(9));
        let mut out = String::new();
        render_histograms(&mut out, "x_seconds", "stage", &h);
        for want in [
            "x_seconds_bucket{stage=\"mail\",le=\"0.0001\"} 1\n",
            "x_seconds_bucket{stage=\"mail\",le=\"0.001\"} 1\n",
            "x_seconds_bucket{stage=\"mail\",le=\"0.005\"} 2\n",
            "x_seconds_bucket{stage=\"mail\",le=\"5\"} 2\n",
            "x_seconds_bucket{stage=\"mail\",le=\"+Inf\"} 3\n",
            "x_seconds_count{stage=\"mail\"} 3\n",
            "x_seconds_sum{stage=\"mail\"} 9.00305\n",
        ] {
            assert!(out.contains(want), "{want} missing:\n{out}");
        }
    }
}
