//! The configuration file as written: serde structs that refuse unknown keys
//! and keep the line of every value that needs a semantic check, so that
//! validation can point at it.

use serde::Deserialize;
use serde_saphyr::Spanned;

pub type Text = Spanned<String>;

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAntivirus {
    pub clamd: Vec<Text>,
    #[serde(default)]
    pub timeout: Option<Text>,
    #[serde(default)]
    pub action: Option<super::VirusAction>,
    #[serde(default)]
    pub allow: Vec<Text>,
    #[serde(default)]
    pub on_error: Option<super::OnError>,
    #[serde(default)]
    pub max_size: Option<Text>,
    #[serde(default)]
    pub backoff: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default)]
    pub listen: Option<Text>,
    #[serde(default)]
    pub socket_mode: Option<Text>,
    #[serde(default)]
    pub socket_group: Option<Text>,
    #[serde(default)]
    pub token_file: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIncidents {
    #[serde(default)]
    pub action: Option<Spanned<super::IncidentAction>>,
    #[serde(default)]
    pub block_for: Option<Text>,
    #[serde(default)]
    pub state_dir: Option<Text>,
    #[serde(default)]
    pub max_keys: Option<Spanned<usize>>,
    #[serde(default)]
    pub ipv6_prefix: Option<Spanned<u8>>,
    #[serde(default)]
    pub signals: Vec<RawSignal>,
    #[serde(default)]
    pub notify: RawNotify,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignal {
    pub name: Text,
    pub key: Spanned<super::KeyKind>,
    pub count: Spanned<super::Count>,
    #[serde(default)]
    pub above: Option<Text>,
    #[serde(default)]
    pub above_baseline: Option<Text>,
    #[serde(default)]
    pub min: Option<Text>,
    #[serde(default)]
    pub learn: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    #[serde(default)]
    pub webhook: Option<RawWebhook>,
    #[serde(default)]
    pub mail: Option<RawMailNotify>,
    #[serde(default)]
    pub max_per_hour: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: Text,
    #[serde(default)]
    pub timeout: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMailNotify {
    pub to: Text,
    pub from: Text,
    pub relay: Text,
    #[serde(default)]
    pub timeout: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    #[serde(default)]
    pub listen: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    #[serde(default)]
    pub strip_internal_received: Option<bool>,
    #[serde(default)]
    pub remove: Vec<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDkim {
    #[serde(default)]
    pub keys: Vec<RawDkimKey>,
    #[serde(default)]
    pub sign: Option<super::SignMode>,
    #[serde(default)]
    pub headers: Option<Vec<String>>,
    #[serde(default)]
    pub on_unsigned: Option<super::OnUnsigned>,
    #[serde(default)]
    pub verify_existing: Option<super::CheckMode>,
    #[serde(default)]
    pub max_signatures: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDkimKey {
    pub domain: Text,
    pub selector: Text,
    pub file: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpf {
    #[serde(default)]
    pub check_egress: Option<super::CheckMode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    #[serde(default)]
    pub nameservers: Vec<Text>,
    #[serde(default)]
    pub timeout: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContent {
    #[serde(default)]
    pub max_message_size: Option<Text>,
    #[serde(default)]
    pub banned_extensions: Option<Vec<Text>>,
    #[serde(default)]
    pub reject_score: Option<Spanned<f64>>,
    #[serde(default)]
    pub tempfail_score: Option<Spanned<f64>>,
    #[serde(default)]
    pub tag_score: Option<Spanned<f64>>,
    #[serde(default)]
    pub max_header_recipients: Option<Spanned<usize>>,
    #[serde(default)]
    pub rules: RawRuleWeights,
    #[serde(default)]
    pub custom: Vec<RawCustomRule>,
    #[serde(default)]
    pub rspamd: Option<RawRspamd>,
}

/// The `attachments` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttachments {
    #[serde(default)]
    pub unreadable_archives: Option<super::UnreadableArchives>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRspamd {
    pub url: Text,
    #[serde(default)]
    pub timeout: Option<Text>,
}

/// Built-in rule weights; 0 turns a rule off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleWeights {
    #[serde(default)]
    pub missing_date: Option<f64>,
    #[serde(default)]
    pub missing_message_id: Option<f64>,
    #[serde(default)]
    pub malformed_mime: Option<f64>,
    #[serde(default)]
    pub html_only: Option<f64>,
    #[serde(default)]
    pub link_mismatch: Option<f64>,
    #[serde(default)]
    pub many_recipients: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCustomRule {
    pub name: Text,
    #[serde(default)]
    pub subject: Option<Text>,
    #[serde(default)]
    pub body: Option<Text>,
    pub score: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelfcheck {
    #[serde(default)]
    pub dnsbl: Option<Vec<Text>>,
}

// serde's `flatten` does not combine with `deny_unknown_fields`, so the
// seven limits are spelled out in both structs that hold them.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    #[serde(default)]
    pub backend: Option<super::Backend>,
    #[serde(default)]
    pub redis: RawRedis,
    #[serde(default)]
    pub max_keys: Option<Spanned<usize>>,
    #[serde(default)]
    pub admin_listen: Option<Text>,
    #[serde(default)]
    pub keys: RawLimitKeys,
    #[serde(default)]
    pub warn_at: Option<Text>,
    #[serde(default)]
    pub warn_notify: Option<Spanned<bool>>,
    #[serde(default)]
    pub custom: Vec<RawCustomLimit>,
    #[serde(default)]
    pub overrides: Vec<RawOverride>,
    #[serde(default)]
    pub connections_per_client: Option<Text>,
    #[serde(default)]
    pub concurrent_per_client: Option<Text>,
    #[serde(default)]
    pub messages_per_client: Option<Text>,
    #[serde(default)]
    pub messages_per_sender: Option<Text>,
    #[serde(default)]
    pub messages_per_user: Option<Text>,
    #[serde(default)]
    pub messages_per_recipient: Option<Text>,
    #[serde(default)]
    pub recipients_per_sender: Option<Text>,
}

/// One of `rate_limits.custom`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCustomLimit {
    pub name: Text,
    pub key: Text,
    pub count: Text,
    pub rate: Text,
    #[serde(default)]
    pub mode: Option<Spanned<super::Mode>>,
    #[serde(default)]
    pub warn_at: Option<Text>,
    #[serde(default)]
    pub overrides: Vec<RawCustomOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCustomOverride {
    #[serde(rename = "match")]
    pub matcher: Text,
    pub rate: Text,
}

/// `rate_limits.keys`: how addresses and logins are spelt as limit keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimitKeys {
    #[serde(default)]
    pub fold_case: Option<bool>,
    #[serde(default)]
    pub delimiter: Option<Text>,
    #[serde(default)]
    pub ipv6_prefix: Option<Spanned<u8>>,
    #[serde(default)]
    pub ignore_dots_for: Vec<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    #[serde(rename = "match")]
    pub matcher: Text,
    #[serde(default)]
    pub connections_per_client: Option<Text>,
    #[serde(default)]
    pub concurrent_per_client: Option<Text>,
    #[serde(default)]
    pub messages_per_client: Option<Text>,
    #[serde(default)]
    pub messages_per_sender: Option<Text>,
    #[serde(default)]
    pub messages_per_user: Option<Text>,
    #[serde(default)]
    pub messages_per_recipient: Option<Text>,
    #[serde(default)]
    pub recipients_per_sender: Option<Text>,
}

/// The seven limits of a `rate_limits` section or of an override, in
/// `LimitName::ALL` order.
pub trait RawLimits {
    fn limits(&self) -> [&Option<Text>; 7];
}

macro_rules! raw_limits {
    ($t:ty) => {
        impl RawLimits for $t {
            fn limits(&self) -> [&Option<Text>; 7] {
                [
                    &self.connections_per_client,
                    &self.concurrent_per_client,
                    &self.messages_per_client,
                    &self.messages_per_sender,
                    &self.messages_per_user,
                    &self.messages_per_recipient,
                    &self.recipients_per_sender,
                ]
            }
        }
    };
}
raw_limits!(RawRateLimits);
raw_limits!(RawOverride);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    #[serde(default)]
    pub url: Option<Text>,
    #[serde(default)]
    pub key_prefix: Option<String>,
    #[serde(default)]
    pub on_failure: Option<super::OnFailure>,
    #[serde(default)]
    pub timeout: Option<Text>,
    #[serde(default)]
    pub lease: Option<Text>,
    #[serde(default)]
    pub ca_file: Option<Text>,
    #[serde(default)]
    pub username: Option<Text>,
    #[serde(default)]
    pub password_file: Option<Text>,
    #[serde(default)]
    pub sentinel: Option<Spanned<RawSentinel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub nodes: Vec<Text>,
    pub master_name: Text,
    #[serde(default)]
    pub username: Option<Text>,
    #[serde(default)]
    pub password_file: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClass {
    pub name: Text,
    #[serde(default)]
    pub clients: Option<RawList>,
    #[serde(default)]
    pub auth: Option<Spanned<RawAuth>>,
    #[serde(default)]
    pub sender_domains: Option<RawList>,
    #[serde(default)]
    pub sender_addresses: Option<RawList>,
    #[serde(default)]
    pub from_domains: Option<RawList>,
    #[serde(default)]
    pub login_match: bool,
    #[serde(default)]
    pub login_map: Option<RawSourceRef>,
    #[serde(default)]
    pub verify_sender: Option<Spanned<RawVerify>>,
    #[serde(default)]
    pub allow_null_sender: bool,
    #[serde(default)]
    pub mode: Option<super::Mode>,
    #[serde(default)]
    pub antivirus: Option<bool>,
}

/// `auth: any` or `auth: [alice, bob]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawAuth {
    Keyword(String),
    Logins(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFromHeader {
    #[serde(default)]
    pub strict: Option<bool>,
    #[serde(default)]
    pub max_length: Option<Spanned<usize>>,
    #[serde(default)]
    pub inbound_own_domain: Option<super::InboundOwnDomain>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecipients {
    #[serde(default)]
    pub max_per_message: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default)]
    pub format: Option<super::LogFormat>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMilter {
    #[serde(default)]
    pub max_connections: Option<Spanned<usize>>,
    #[serde(default)]
    pub timeout: Option<Text>,
}

/// A list: `[a, b]` written inline, or `{ source: NAME }`.
#[derive(Debug)]
pub enum RawList {
    Items(Vec<Text>),
    Source(Text),
}

impl<'de> Deserialize<'de> for RawList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> serde::de::Visitor<'de> for ListVisitor {
            type Value = RawList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list, or { source: NAME }")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawList, A::Error> {
                let mut items = Vec::new();
                while let Some(x) = seq.next_element::<Text>()? {
                    items.push(x);
                }
                Ok(RawList::Items(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawList, A::Error> {
                let mut source = None;
                while let Some(k) = map.next_key::<String>()? {
                    if k == "source" && source.is_none() {
                        source = Some(map.next_value::<Text>()?);
                    } else {
                        return Err(serde::de::Error::unknown_field(&k, &["source"]));
                    }
                }
                source
                    .map(RawList::Source)
                    .ok_or_else(|| serde::de::Error::missing_field("source"))
            }
        }
        d.deserialize_any(ListVisitor)
    }
}

/// `{ source: NAME }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSourceRef {
    pub source: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    #[serde(default)]
    pub file: Option<Text>,
    #[serde(default)]
    pub ldap: Option<RawLdap>,
    #[serde(default)]
    pub cache: Option<RawCache>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLdap {
    pub url: Spanned<OneOrMany>,
    #[serde(default)]
    pub bind_dn: Option<Text>,
    #[serde(default)]
    pub password_file: Option<Text>,
    pub base: Text,
    pub filter: Text,
    #[serde(default)]
    pub attribute: Option<Text>,
    #[serde(default)]
    pub attributes: Vec<Text>,
    #[serde(default)]
    pub scope: Option<Text>,
    #[serde(default)]
    pub timeout: Option<Text>,
    #[serde(default)]
    pub starttls: Option<bool>,
    #[serde(default)]
    pub ca_file: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    #[serde(default)]
    pub ttl: Option<Text>,
    #[serde(default)]
    pub negative_ttl: Option<Text>,
    #[serde(default)]
    pub max_entries: Option<Spanned<u64>>,
}

/// `verify_sender` / `verify_recipients`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    #[serde(default)]
    pub source: Option<Text>,
    #[serde(default)]
    pub callout: Option<Vec<Text>>,
    #[serde(default)]
    pub timeout: Option<Text>,
    #[serde(default)]
    pub helo: Option<Text>,
    #[serde(default)]
    pub cache: Option<RawCache>,
}

/// One value, or a list of them.
#[derive(Debug)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = seq.next_element::<String>()? {
                    out.push(x);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}
