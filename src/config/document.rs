//! The whole configuration file: its raw form, every section in its
//! place, and [`Config::load`] / [`Config::parse`], which read it and
//! validate every section.

use super::admin::RawAdmin;
use super::antivirus::RawAntivirus;
use super::classes::RawClass;
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
use super::{Config, Validator};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Text,
    #[serde(default)]
    pub socket_mode: Option<Text>,
    #[serde(default)]
    pub mode: Option<Spanned<super::Mode>>,
    #[serde(default)]
    pub on_error: Option<super::OnError>,
    pub local_domains: RawList,
    #[serde(default)]
    pub sources: indexmap::IndexMap<String, Spanned<RawSource>>,
    #[serde(default)]
    pub verify_recipients: Option<Spanned<RawVerify>>,
    #[serde(default)]
    pub classes: Vec<RawClass>,
    #[serde(default)]
    pub unknown_clients: Option<super::UnknownClients>,
    #[serde(default)]
    pub from_header: RawFromHeader,
    #[serde(default)]
    pub recipients: RawRecipients,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub milter: RawMilter,
    #[serde(default)]
    pub rate_limits: RawRateLimits,
    #[serde(default)]
    pub egress_ips: Vec<Text>,
    #[serde(default)]
    pub hostname: Option<Text>,
    #[serde(default)]
    pub dkim: RawDkim,
    #[serde(default)]
    pub spf: RawSpf,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub content: RawContent,
    #[serde(default)]
    pub attachments: RawAttachments,
    #[serde(default)]
    pub selfcheck: RawSelfcheck,
    #[serde(default)]
    pub internal_networks: Vec<Text>,
    #[serde(default)]
    pub internal_hostnames: Option<Vec<Text>>,
    #[serde(default)]
    pub headers: RawHeaders,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub incidents: RawIncidents,
    #[serde(default)]
    pub antivirus: Option<RawAntivirus>,
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
