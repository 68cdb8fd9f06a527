//! The settings a reload cannot change: they are bound or built once, at
//! start (sockets, the resolver, backend clients). One list, read by the
//! reload, by the documentation test, and by whoever wonders why a change
//! did not take.

use super::Config;

/// A setting that needs a restart: the keys as the documentation names
/// them, and whether two configurations differ in it.
pub struct RestartKey {
    pub keys: &'static str,
    pub differs: fn(&Config, &Config) -> bool,
}

/// Every setting that needs a restart to take effect.
pub const RESTART_KEYS: &[RestartKey] = &[
    RestartKey {
        keys: "listen, socket_mode",
        differs: |a, b| a.listen != b.listen || a.socket_mode != b.socket_mode,
    },
    RestartKey {
        keys: "milter.max_connections, milter.timeout",
        differs: |a, b| {
            a.max_connections != b.max_connections || a.milter_timeout != b.milter_timeout
        },
    },
    RestartKey {
        keys: "dns",
        differs: |a, b| a.dns != b.dns,
    },
    RestartKey {
        keys: "content.rspamd",
        differs: |a, b| a.content.rspamd != b.content.rspamd,
    },
    RestartKey {
        keys: "antivirus.clamd",
        differs: |a, b| {
            a.antivirus.as_ref().map(|v| &v.clamd) != b.antivirus.as_ref().map(|v| &v.clamd)
        },
    },
    RestartKey {
        keys: "metrics.listen",
        differs: |a, b| a.metrics_listen != b.metrics_listen,
    },
    RestartKey {
        keys: "log.format",
        differs: |a, b| a.log_format != b.log_format,
    },
    RestartKey {
        keys: "rate_limits.backend, rate_limits.redis, rate_limits.max_keys",
        differs: |a, b| {
            let (a, b) = (&a.rate_limits, &b.rate_limits);
            a.backend != b.backend || a.redis != b.redis || a.max_keys != b.max_keys
        },
    },
    RestartKey {
        keys: "admin",
        differs: |a, b| a.admin != b.admin,
    },
    RestartKey {
        keys: "console.listen, console.tls, console.decisions",
        differs: |a, b| {
            let part = |c: &Config| {
                c.console
                    .as_ref()
                    .map(|c| (c.listen.clone(), c.tls.clone(), c.decisions))
            };
            part(a) != part(b)
        },
    },
    RestartKey {
        keys: "incidents.state_dir",
        differs: |a, b| a.incidents.state_dir != b.incidents.state_dir,
    },
];

/// The settings in which a new configuration differs from the one the
/// daemon started with (not the one last read: a change reverted before
/// a restart needs none).
pub fn restart_needed(running: &Config, new: &Config) -> Vec<&'static str> {
    RESTART_KEYS
        .iter()
        .filter(|k| (k.differs)(running, new))
        .map(|k| k.keys)
        .collect()
}
