//! Named lookups, declared once under `sources:` and used wherever a list
//! or a map is taken: a file (held in memory, read again when it changes)
//! or an LDAP directory (asked per key, the answers cached).
//!
//! - `file.rs`: the file format and its index;
//! - `ldap.rs`: the directory client;
//! - `cache.rs`: the answer cache, local or in Redis;
//! - `callout.rs`: asking a mail store over SMTP whether an address exists;
//! - `cap.rs`: one rate for every callout of this gateway.
//!
//! A lookup that fails is an error for the caller, who follows `on_error`:
//! a failure never reads as "found".

mod cache;
pub mod callout;
mod cap;
mod ldap;

pub use cache::Answer;
pub use cap::CalloutCap;

use crate::address::{Address, Domain, DomainPattern};
use crate::config::list_file::{self as file, FileIndex, Stamp};
use crate::config::{Config, Entries, SourceBackend, SourceSettings};
use crate::limiter::RedisLimiter;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use ipnet::IpNet;
use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How often file sources are checked for a change.
pub const FILE_POLL: Duration = Duration::from_secs(1);

/// A lookup that could not be answered.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct FileSource {
    path: PathBuf,
    contents: ArcSwap<FileIndex>,
    stamp: Mutex<Option<Stamp>>,
}

enum Backend {
    File(FileSource),
    Ldap(Box<ldap::Directory>),
    /// A directory whose TLS settings could not be used: every lookup
    /// fails, with this reason.
    Broken(String),
}

struct Source {
    settings: SourceSettings,
    backend: Backend,
    cache: cache::Cache,
}

/// Every source, and the callout cache.
pub struct Sources {
    by_name: ArcSwap<HashMap<String, Arc<Source>>>,
    callouts: cache::Cache,
    /// `verify_callouts.rate`.
    pub callout_cap: CalloutCap,
    /// Callouts that found a store accepting any address, by store.
    catch_all: Mutex<HashMap<String, Instant>>,
}

fn build(settings: &SourceSettings) -> Source {
    let backend = match &settings.backend {
        SourceBackend::File {
            path,
            contents,
            stamp,
        } => Backend::File(FileSource {
            path: path.clone(),
            contents: ArcSwap::new(contents.clone()),
            stamp: Mutex::new(*stamp),
        }),
        SourceBackend::Ldap(l) => match ldap::Directory::new(l) {
            Ok(d) => Backend::Ldap(Box::new(d)),
            Err(e) => {
                tracing::error!(source = %settings.name, "LDAP source unusable, its lookups fail: {e}");
                Backend::Broken(e)
            }
        },
    };
    Source {
        cache: cache::Cache::new(&settings.name, settings.cache.max_entries),
        settings: settings.clone(),
        backend,
    }
}

impl Sources {
    pub fn new(config: &Config) -> Self {
        let map = config
            .sources
            .iter()
            .map(|s| (s.name.clone(), Arc::new(build(s))))
            .collect();
        Self {
            by_name: ArcSwap::from_pointee(map),
            callouts: cache::Cache::new(
                "callout",
                crate::config::CacheSettings::CALLOUT.max_entries,
            ),
            catch_all: Mutex::new(HashMap::new()),
            callout_cap: CalloutCap::new(config.verify_callouts),
        }
    }

    /// Takes a new configuration's sources: one whose settings did not
    /// change keeps its connection and its cache; a file source takes the
    /// contents the configuration read.
    pub fn reconfigure(&self, config: &Config) {
        self.callout_cap.set(config.verify_callouts);
        let old = self.by_name.load_full();
        let map = config
            .sources
            .iter()
            .map(|s| {
                let keep = old.get(&s.name).filter(|o| o.settings == *s).cloned();
                let src = match keep {
                    Some(o) => {
                        if let (
                            Backend::File(f),
                            SourceBackend::File {
                                contents, stamp, ..
                            },
                        ) = (&o.backend, &s.backend)
                        {
                            f.contents.store(contents.clone());
                            *f.stamp.lock().unwrap_or_else(|p| p.into_inner()) = *stamp;
                        }
                        o
                    }
                    None => Arc::new(build(s)),
                };
                (s.name.clone(), src)
            })
            .collect();
        self.by_name.store(Arc::new(map));
    }

    /// No directory is asked from now on: every LDAP lookup fails
    /// (`egress-milter test --offline`), and `on_error` decides.
    pub fn go_offline(&self) {
        let map = self
            .by_name
            .load()
            .iter()
            .map(|(name, src)| {
                let src = match src.backend {
                    Backend::Ldap(_) => Arc::new(Source {
                        settings: src.settings.clone(),
                        backend: Backend::Broken("not asked (offline)".into()),
                        cache: cache::Cache::new(name, 1),
                    }),
                    _ => src.clone(),
                };
                (name.clone(), src)
            })
            .collect();
        self.by_name.store(Arc::new(map));
    }

    fn get(&self, name: &str) -> Result<Arc<Source>, Failure> {
        self.by_name
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| Failure(format!("no source named {name}")))
    }

    /// Reads again every file source whose file changed. A file that is
    /// now unreadable or wrong keeps the old contents, and says why once.
    pub fn poll_files(&self) {
        for src in self.by_name.load().values() {
            let Backend::File(f) = &src.backend else {
                continue;
            };
            let now = Stamp::of(&f.path).ok();
            let mut stamp = f.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if now.is_none() || now == *stamp {
                if now.is_none() && stamp.is_some() {
                    tracing::error!(source = %src.settings.name, path = %f.path.display(),
                        "source file is gone; the entries read before stay in force");
                    *stamp = None;
                }
                continue;
            }
            *stamp = now;
            match file::load(&f.path, src.settings.kind) {
                Ok((index, _)) => {
                    tracing::info!(source = %src.settings.name, path = %f.path.display(),
                        entries = index.entries, "source file read again");
                    f.contents.store(Arc::new(index));
                }
                Err(e) => tracing::error!(source = %src.settings.name,
                    "{}:{}: {}; the entries read before stay in force",
                    f.path.display(), e.line, e.message),
            }
        }
    }

    /// Checks the file sources every second, until aborted.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let sources = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FILE_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(s) = sources.upgrade() else { return };
                if tokio::task::spawn_blocking(move || s.poll_files())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    }

    /// The callout cache.
    pub(crate) fn callout_cache(&self) -> &cache::Cache {
        &self.callouts
    }

    /// Notes that a store accepted a made-up address.
    pub(crate) fn note_catch_all(&self, store: &str) {
        let mut m = self.catch_all.lock().unwrap_or_else(|p| p.into_inner());
        if m.insert(store.to_string(), Instant::now()).is_none() {
            tracing::warn!(store, "the mail store accepts any address (catch-all): verification against it proves nothing");
        }
    }

    /// `cache show KEY`: the cached answer for a key in every cache.
    pub async fn show(
        &self,
        key: &str,
        redis: Option<&RedisLimiter>,
    ) -> Vec<(String, Result<Option<cache::Shown>, String>)> {
        let mut out = Vec::new();
        let map = self.by_name.load_full();
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        for name in names {
            let src = &map[name];
            if matches!(src.backend, Backend::File(_)) {
                continue;
            }
            out.push((name.clone(), src.cache.show(key, redis).await));
        }
        out.push(("callout".into(), self.callouts.show(key, redis).await));
        out
    }

    /// `cache flush [KEY]`: forgets one key, or all, in every cache.
    pub async fn flush(
        &self,
        key: Option<&str>,
        redis: Option<&RedisLimiter>,
    ) -> Result<u64, String> {
        let map = self.by_name.load_full();
        let mut n = 0;
        for src in map.values() {
            n += src.cache.flush(key, redis).await?;
        }
        n += self.callouts.flush(key, redis).await?;
        if key.is_none() {
            self.catch_all
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        Ok(n)
    }
}

/// One lookup, as `explain` shows it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Lookup {
    pub source: String,
    pub key: String,
    /// found, not found, or the error.
    pub answer: String,
    /// Answered by the cache (not by the directory or the file).
    pub cached: bool,
}

impl std::fmt::Display for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "source {} asked for {}: {}{}",
            self.source,
            self.key,
            self.answer,
            if self.cached { " (cache)" } else { "" }
        )
    }
}

/// The sources as one stage uses them: with the Redis cache, the metrics,
/// and, for `explain`, a record of every lookup.
pub struct Lists<'a> {
    pub sources: &'a Sources,
    pub redis: Option<&'a RedisLimiter>,
    pub metrics: &'a Metrics,
    seen: Option<Mutex<Vec<Lookup>>>,
}

impl<'a> Lists<'a> {
    pub fn new(
        sources: &'a Sources,
        redis: Option<&'a RedisLimiter>,
        metrics: &'a Metrics,
        record: bool,
    ) -> Self {
        Self {
            sources,
            redis,
            metrics,
            seen: record.then(|| Mutex::new(Vec::new())),
        }
    }

    /// The lookups made so far.
    pub fn take(&self) -> Vec<Lookup> {
        self.seen
            .as_ref()
            .map(|m| std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner())))
            .unwrap_or_default()
    }

    fn record(&self, source: &str, key: &str, answer: &Result<Answer, Failure>, cached: bool) {
        let result = match answer {
            _ if cached => "cache_hit",
            Ok(Answer::Found(v))
                if source == "callout"
                    && v.first().map(String::as_str) == Some(callout::CATCH_ALL) =>
            {
                "catch_all"
            }
            Ok(Answer::Found(_)) => "found",
            Ok(Answer::Missing) => "not_found",
            Err(_) => "error",
        };
        self.metrics.source_lookup(source, result);
        if let Some(seen) = &self.seen {
            seen.lock().unwrap_or_else(|p| p.into_inner()).push(Lookup {
                source: source.to_string(),
                key: key.to_string(),
                answer: match answer {
                    Ok(Answer::Found(v)) if v.is_empty() => "found".into(),
                    Ok(Answer::Found(v)) => format!("found: {}", v.join(", ")),
                    Ok(Answer::Missing) => "not found".into(),
                    Err(e) => format!("error: {e}"),
                },
                cached,
            });
        }
    }

    /// Asks a source for a key: from memory for a file; from the cache, else
    /// the directory, for LDAP.
    pub async fn lookup(&self, name: &str, key: &str) -> Result<Answer, Failure> {
        let src = self.sources.get(name)?;
        self.lookup_in(&src, key, |f| {
            if let Some(v) = f.values(key) {
                Answer::Found(v.to_vec().into())
            } else if f.contains(key) {
                Answer::Found(Vec::new().into())
            } else {
                Answer::Missing
            }
        })
        .await
    }

    async fn lookup_in(
        &self,
        src: &Source,
        key: &str,
        in_file: impl FnOnce(&FileIndex) -> Answer,
    ) -> Result<Answer, Failure> {
        let name = &src.settings.name;
        let started = Instant::now();
        let directory = match &src.backend {
            Backend::File(f) => {
                let answer = Ok(in_file(&f.contents.load()));
                self.metrics.source_time(name, started.elapsed());
                self.record(name, key, &answer, false);
                return answer;
            }
            Backend::Broken(e) => {
                let answer = Err(Failure(format!("source {name}: {e}")));
                self.record(name, key, &answer, false);
                return answer;
            }
            Backend::Ldap(d) => d,
        };
        if let Some(hit) = src.cache.get(key, self.redis).await {
            let answer = Ok(hit);
            self.record(name, key, &answer, true);
            return answer;
        }
        let answer = match directory.search(key).await {
            Ok(Some(values)) => Ok(Answer::Found(values.into())),
            Ok(None) => Ok(Answer::Missing),
            Err(e) => Err(Failure(format!("source {name}: {e}"))),
        };
        self.metrics.source_time(name, started.elapsed());
        if let Ok(a) = &answer {
            let ttl = match a {
                Answer::Found(_) => src.settings.cache.ttl,
                Answer::Missing => src.settings.cache.negative_ttl,
            };
            src.cache.put(key, a.clone(), ttl, self.redis).await;
        }
        self.record(name, key, &answer, false);
        answer
    }

    /// Whether a domain is in a list of domain patterns. A directory is
    /// asked for the domain itself; a file also holds `*.parent` entries.
    pub async fn has_domain(
        &self,
        list: &Entries<DomainPattern>,
        domain: &Domain,
    ) -> Result<bool, Failure> {
        match list {
            Entries::Inline(v) => Ok(v.matches(domain)),
            Entries::Source(name) => {
                let src = self.sources.get(name)?;
                let a = self
                    .lookup_in(&src, domain.as_str(), |f| found(f.has_domain(domain)))
                    .await?;
                Ok(matches!(a, Answer::Found(_)))
            }
        }
    }

    /// Whether an address is in a list of addresses (its canonical text for
    /// a source).
    pub async fn has_address(
        &self,
        list: &Entries<Address>,
        address: &Address,
    ) -> Result<bool, Failure> {
        match list {
            Entries::Inline(v) => Ok(v.has(address)),
            Entries::Source(name) => {
                let key = address.to_string();
                let a = self.lookup(name, &key).await?;
                Ok(matches!(a, Answer::Found(_)))
            }
        }
    }

    /// Whether an IP is in a list of networks (a directory is asked for
    /// the address as text).
    pub async fn has_ip(&self, list: &Entries<IpNet>, ip: IpAddr) -> Result<bool, Failure> {
        match list {
            Entries::Inline(v) => Ok(v.holds(ip)),
            Entries::Source(name) => {
                let src = self.sources.get(name)?;
                let a = self
                    .lookup_in(&src, &ip.to_string(), |f| found(f.has_ip(ip)))
                    .await?;
                Ok(matches!(a, Answer::Found(_)))
            }
        }
    }
}

fn found(yes: bool) -> Answer {
    if yes {
        Answer::Found(Vec::new().into())
    } else {
        Answer::Missing
    }
}
