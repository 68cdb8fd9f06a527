//! The whole configuration file: its raw form, every section in its
//! place, and [`Config::load`] / [`Config::parse`], which read it and
//! validate every section.

use super::admin::RawAdmin;
use super::antivirus::RawAntivirus;
use super::bounces::RawBounces;
use super::callouts::RawCallouts;
use super::classes::RawClass;
use super::console::RawConsole;
use super::content::{RawAttachments, RawContent};
use super::headers::RawHeaders;
use super::incidents::RawIncidents;
use super::limits::RawRateLimits;
use super::mail_auth::{RawDkim, RawDns, RawSpf};
use super::raw::Spanned;
use super::raw::{
    RawFromHeader, RawList, RawLog, RawMetrics, RawMilter, RawRecipients, RawSelfcheck, RawSource,
    RawVerify, Text,
};
use super::reading::{read_lenient, read_text, ConfigErrors};
use super::reputation::RawReputation;
use super::{Config, Validator};
use serde::Deserialize;
use std::path::Path;

/// The configuration file, `milter.yaml`. Unknown keys are refused; every error names the file,
/// the line and the dotted key.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// (required) Where the milter listens: `inet:HOST:PORT` (Sendmail's `inet:PORT@HOST` too)
    /// or `unix:/PATH`. A stale unix socket is removed at start; one another process answers on
    /// is not.
    pub listen: Text,
    /// Octal mode of a unix socket (default `"0660"`): the MTA's user must be able to connect.
    ///
    #[serde(default)]
    pub socket_mode: Option<Text>,
    /// `enforce` (default) refuses what policy forbids; `monitor` refuses nothing, and logs and
    /// counts each refusal as `would_reject` or `would_tempfail`. A class may set its own.
    #[serde(default)]
    pub mode: Option<Spanned<super::Mode>>,
    /// When a check itself fails (an unreachable service, an internal error): `tempfail`
    /// (default: `451 4.3.0 Temporary policy failure`, the client retries and nothing is lost)
    /// or `accept`.
    #[serde(default)]
    pub on_error: Option<super::OnError>,
    /// (required) Our domains: `example.com` is that domain, `*.example.org` any subdomain of
    /// example.org (not example.org itself). Compared after IDNA, in lower case, without a
    /// trailing dot. A list, or `{ source: NAME }`.
    pub local_domains: RawList,
    /// Named lookups (a file, an LDAP directory), usable wherever a list or a map is taken as
    /// `{ source: NAME }`: `local_domains`, and a class's `clients`, `sender_domains`,
    /// `sender_addresses`, `from_domains` and `login_map`. A file holds one entry per line (`#`
    /// comments; `login address...` lines for a login map) and is read again within a second
    /// of a change (a bad new file keeps the old entries). An LDAP source is asked per key,
    /// its answers cached. A source that cannot answer follows `on_error`.
    #[serde(default)]
    pub sources: indexmap::IndexMap<String, Spanned<RawSource>>,
    /// Inbound mail (a client in no class) to `local_domains`: the recipient must exist, by `{
    /// source: NAME }` or `{ callout: [HOST:PORT] }`. Refused with `550 5.1.1`; `451 4.1.1`
    /// when nothing could answer.
    #[serde(default)]
    pub verify_recipients: Option<Spanned<RawVerify>>,
    /// The callouts of this gateway, all together, under one rate.
    #[serde(default)]
    pub verify_callouts: Option<RawCallouts>,
    /// Who may send, first match wins, top to bottom. A class matches a client by its IP
    /// (`clients`), by its SASL login (`auth`), or by both when both are given.
    #[serde(default)]
    pub classes: Vec<RawClass>,
    /// Clients in no class: `relay_deny` (default: they may send only to `local_domains`, else
    /// `554 5.7.1 Relay access denied`) or `reject` (refused at MAIL FROM).
    #[serde(default)]
    pub unknown_clients: Option<super::UnknownClients>,
    /// The From: header of mail that leaves (strict relay), and of inbound mail.
    #[serde(default)]
    pub from_header: RawFromHeader,
    /// Recipients per message.
    #[serde(default)]
    pub recipients: RawRecipients,
    /// The log's format.
    #[serde(default)]
    pub log: RawLog,
    /// The milter connections.
    #[serde(default)]
    pub milter: RawMilter,
    /// Rate limits: budgets per client, sender, login and recipient, in this process or shared
    /// through Redis. A rate is `N/s`, `N/m`, `N/h`, `N/d`, `N/w` or a period of several units
    /// (`N/10m`), units in any case; `unlimited` (or a negative N) turns a limit off, and a limit
    /// not set is off. GCRA, as governor models it: `100/h` allows a burst of 100, then one
    /// every 36 s. Refusals answer `451 4.7.1 Rate limit NAME exceeded for KEY, retry in Ns`
    /// (`421 4.7.0 Too many connections from IP` at connect); a refused attempt consumes no
    /// budget.
    #[serde(default)]
    pub rate_limits: RawRateLimits,
    /// The addresses our mail leaves from, as receivers see them: used by the SPF check and by
    /// `selfcheck`.
    #[serde(default)]
    pub egress_ips: Vec<Text>,
    /// This gateway's public host name: used by the SPF check and by `selfcheck`.
    #[serde(default)]
    pub hostname: Option<Text>,
    /// DKIM signing, and the signatures already on a message.
    #[serde(default)]
    pub dkim: RawDkim,
    /// The SPF check of our own envelope senders.
    #[serde(default)]
    pub spf: RawSpf,
    /// The resolver every DNS check uses.
    #[serde(default)]
    pub dns: RawDns,
    /// Content checks: size, banned attachments, scored rules, rspamd.
    #[serde(default)]
    pub content: RawContent,
    /// Archives the checks cannot read whole.
    #[serde(default)]
    pub attachments: RawAttachments,
    /// What `egress-milter selfcheck` consults.
    #[serde(default)]
    pub selfcheck: RawSelfcheck,
    /// Networks whose addresses must not leave in Received: lines and the X-Forwarded-*,
    /// X-Originating-* and X-Received headers.
    #[serde(default)]
    pub internal_networks: Vec<Text>,
    /// Host names that must not leave either: `*.suffix` patterns and exact names (default
    /// `*.local`, `*.localdomain`, `*.internal`, `*.lan`, `*.corp`, `*.home.arpa`,
    /// `*.intranet`, `localhost`). Single-label host names always count as internal.
    #[serde(default)]
    pub internal_hostnames: Option<Vec<Text>>,
    /// Header scrubbing.
    #[serde(default)]
    pub headers: RawHeaders,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: RawMetrics,
    /// The endpoint of `egress-milter limits`, `incidents`, `cache` and `senders`.
    #[serde(default)]
    pub admin: RawAdmin,
    /// Compromised accounts and hosts: signals counted per key, incidents opened when one
    /// crosses its threshold, the key's mail held or refused while one is open, the postmaster
    /// told.
    #[serde(default)]
    pub incidents: RawIncidents,
    /// Virus scanning with clamd; off when absent. Every class is scanned unless it says
    /// `antivirus: false`.
    #[serde(default)]
    pub antivirus: Option<RawAntivirus>,
    /// The watch of our own reputation: every egress address and domain looked up on DNS
    /// blocklists, and the records receivers judge us by (SPF, DKIM, DMARC, MX, reverse DNS)
    /// compared with their last state, every `every`; a notice on each change; and, if asked,
    /// the mail of some classes paused while listed. Off when absent.
    #[serde(default)]
    pub reputation: Option<Spanned<RawReputation>>,
    /// Bounces read and dead recipients suppressed: every delivery-status notice that passes the
    /// milter (Postfix's own, with `internal_mail_filter_classes = bounce`, and those remote
    /// servers send back to our senders) is read; a recipient whose mailbox fails for good is
    /// refused at RCPT TO for a while. Off when absent.
    #[serde(default)]
    pub bounces: Option<RawBounces>,
    /// The web console for held mail, incidents, limits and suppressions, served by the daemon on
    /// loopback or a unix socket (HTTPS with `tls`); off when absent.
    #[serde(default)]
    pub console: Option<Spanned<RawConsole>>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        Self::parse(path, &read_text(path)?)
    }

    /// Validates configuration text; `path` is used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigErrors> {
        let (raw, early) = read_lenient::<RawConfig>(path, text)?;
        let mut v = Validator::new(path);
        let config = v.config(raw);
        v.errors.extend(early);
        v.errors.sort_by_key(|e| e.line);
        if v.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(v.errors))
        }
    }
}

/// The JSON Schema of the configuration file (draft 2020-12), made from
/// the types that read it: every key, its kind, and the doc comment that
/// documents it. Shipped as `milter.schema.json`; printed by
/// `egress-milter config-schema`.
pub fn schema() -> String {
    let mut schema = schemars::schema_for!(RawConfig);
    schema.insert(
        "$id".into(),
        "https://egress-milter.invalid/milter.schema.json".into(),
    );
    schema.insert(
        "title".into(),
        "egress-milter configuration (milter.yaml)".into(),
    );
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
