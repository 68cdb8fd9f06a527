//! The configuration file as written: serde structs that refuse unknown keys
//! and keep the line of every value that needs a semantic check, so that
//! validation can point at it. Here the small top-level sections and the
//! kinds of value every section uses (a list or a source, one value or
//! many); each larger section's raw form sits beside its validation in its
//! own file (`limits.rs`, `incidents.rs`, ...), and the whole file in
//! `document.rs`.

use serde::Deserialize;
use serde_saphyr::Location;
use std::borrow::Cow;

/// A value with where it was written, for the errors that point at it:
/// serde-saphyr's `Spanned`, as a type of ours so that the schema of the
/// file describes it as the value alone.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub referenced: Location,
    pub defined: Location,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(Spanned {
            value: s.value,
            referenced: s.referenced,
            defined: s.defined,
        })
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // A string key takes any scalar as written (`socket_mode: 0660`,
        // `timeout: 10`), and reads its text.
        if T::schema_id() == String::schema_id() {
            return schemars::json_schema!({ "type": ["string", "number", "boolean"] });
        }
        T::json_schema(generator)
    }
}

/// Any scalar as written: the schema of a [`Text`].
fn scalar() -> serde_json::Value {
    serde_json::json!({ "type": ["string", "number", "boolean"] })
}

/// A limit of one's own.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCustomLimit {
    /// (required) One word, unique among the limits; it names the limit in replies, logs,
    /// metrics and `limits show`.
    pub name: Text,
    /// (required) What is counted per: `client`, `client_network`, `sender`, `sender_domain`,
    /// `user`, `class`, `recipient`, `recipient_domain`, or a pair such as
    /// `user+recipient_domain`.
    pub key: Text,
    /// (required) What is counted: `messages`, `recipients`, `bytes` (charged at end of
    /// message: `552 5.3.4`), `bounces` or `distinct_recipients`.
    pub count: Text,
    /// (required) The budget, a rate as the seven limits take.
    pub rate: Text,
    /// `monitor`: log what it would refuse (`would_tempfail`) without refusing (default
    /// `enforce`).
    #[serde(default)]
    pub mode: Option<Spanned<super::Mode>>,
    /// Its own `warn_at` (default: `rate_limits.warn_at`).
    #[serde(default)]
    pub warn_at: Option<Text>,
    /// Other budgets for some keys; the first that matches wins.
    #[serde(default)]
    pub overrides: Vec<RawCustomOverride>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCustomOverride {
    /// (required) The key it applies to, written as the limit's `key` spells it.
    #[serde(rename = "match")]
    pub matcher: Text,
    /// (required) Its budget.
    pub rate: Text,
}

pub type Text = Spanned<String>;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Address (`HOST:PORT`) where Prometheus scrapes `/metrics`; off when absent.
    #[serde(default)]
    pub listen: Option<Text>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSelfcheck {
    /// DNS blocklists consulted by `egress-milter selfcheck` for each egress IP.
    #[serde(default)]
    pub dnsbl: Option<Vec<Text>>,
}

// serde's `flatten` does not combine with `deny_unknown_fields`, so the
// seven limits are spelled out in both structs that hold them.

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFromHeader {
    /// Mail that leaves (from a client in a class) must carry exactly one From: header holding
    /// exactly one mailbox in a local domain, and in the class's `from_domains` when set
    /// (default true). Inbound mail (from a client in no class) is not judged by it.
    #[serde(default)]
    pub strict: Option<bool>,
    /// Longer From: headers are refused as malformed (default 16384 bytes).
    #[serde(default)]
    pub max_length: Option<Spanned<usize>>,
    /// `accept` (default) or `reject`: inbound mail whose From: names a mailbox in a local
    /// domain is refused with `550 5.7.1 From: domain D may not be used from outside`. Every
    /// mailbox of every From: header counts; a malformed header is read for every @domain in
    /// it; one too long to read is refused when set to `reject`.
    #[serde(default)]
    pub inbound_own_domain: Option<super::InboundOwnDomain>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRecipients {
    /// RCPT TO beyond this many get `452 4.5.3 Too many recipients` (default 100).
    #[serde(default)]
    pub max_per_message: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` (default) or `json`: one line per decision and per message.
    #[serde(default)]
    pub format: Option<super::LogFormat>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMilter {
    /// Concurrent milter connections; more wait to be accepted (default 1000).
    #[serde(default)]
    pub max_connections: Option<Spanned<usize>>,
    /// A connection idle this long is closed (default `7210s`, as libmilter).
    #[serde(default)]
    pub timeout: Option<Text>,
}

/// A list: `[a, b]` written inline, or `{ source: NAME }`.
#[derive(Debug)]
pub enum RawList {
    Items(Vec<Text>),
    Source(Text),
}

impl schemars::JsonSchema for RawList {
    fn schema_name() -> Cow<'static, str> {
        "List".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A list written inline, or `{ source: NAME }`: the entries of a named source.",
            "oneOf": [
                { "type": "array", "items": scalar() },
                {
                    "type": "object",
                    "properties": { "source": { "type": "string" } },
                    "required": ["source"],
                    "additionalProperties": false
                }
            ]
        })
    }
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
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSourceRef {
    /// (required) The name of a source under `sources`.
    pub source: Text,
}

/// A named lookup: a file or an LDAP directory, and the cache of its answers. A source that
/// cannot answer fails the check that asked, and `on_error` decides.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// A file of one entry per line (`#` comments; `login address...` lines for a login map).
    /// Read again within a second of a change; a changed file with a bad line, or a removed
    /// file, keeps the entries read before.
    #[serde(default)]
    pub file: Option<Text>,
    /// An LDAP directory, asked per key.
    #[serde(default)]
    pub ldap: Option<RawLdap>,
    /// The cache of an LDAP source's answers (in Redis with `rate_limits.backend: redis`).
    #[serde(default)]
    pub cache: Option<RawCache>,
}

/// An LDAP directory, asked per key.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLdap {
    /// (required) One URL or a list, `ldap://` or `ldaps://`, tried in order.
    pub url: Spanned<OneOrMany>,
    /// The DN to bind as (default: anonymous).
    #[serde(default)]
    pub bind_dn: Option<Text>,
    /// A file whose first line is the bind password.
    #[serde(default)]
    pub password_file: Option<Text>,
    /// (required) The search base.
    pub base: Text,
    /// (required) The search filter, with `%s` for the key (escaped as RFC 4515 says), e.g.
    /// `(uid=%s)`.
    pub filter: Text,
    /// The attribute whose values a map returns (one; or `attributes`).
    #[serde(default)]
    pub attribute: Option<Text>,
    /// The attributes whose values a map returns.
    #[serde(default)]
    pub attributes: Vec<Text>,
    /// `sub` (default), `one` or `base`.
    #[serde(default)]
    pub scope: Option<Text>,
    /// The longest wait for one server (default `5s`).
    #[serde(default)]
    pub timeout: Option<Text>,
    /// StartTLS on `ldap://` URLs (default false).
    #[serde(default)]
    pub starttls: Option<bool>,
    /// The authority that signed the directory's certificate (default: the system's
    /// authorities).
    #[serde(default)]
    pub ca_file: Option<Text>,
}

/// How long answers are kept.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// How long an answer that found the key is kept (default `10m` for a source, `24h` for a
    /// callout).
    #[serde(default)]
    pub ttl: Option<Text>,
    /// How long an answer that did not find it is kept (default `1m` for a source, `2h` for a
    /// callout).
    #[serde(default)]
    pub negative_ttl: Option<Text>,
    /// The most answers kept (default 100000).
    #[serde(default)]
    pub max_entries: Option<Spanned<u64>>,
}

/// An address must exist: asked of a source, or of the internal mail store by an SMTP callout
/// (`EHLO`, `MAIL FROM:<>`, `RCPT TO:` the address, then a made-up address of the same domain,
/// `QUIT`; nothing is sent). A store that accepts the made-up address too is a catch-all, whose
/// yes proves nothing: logged, counted and flagged by `selfcheck`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    /// The source that holds the addresses.
    #[serde(default)]
    pub source: Option<Text>,
    /// The mail stores to ask, `HOST:PORT`, in order: one that cannot be reached, answers 4xx
    /// or exceeds `timeout` passes the question to the next. Only these hosts are ever asked.
    #[serde(default)]
    pub callout: Option<Vec<Text>>,
    /// The longest wait for one store (default `10s`).
    #[serde(default)]
    pub timeout: Option<Text>,
    /// The name given in EHLO (default: `hostname`).
    #[serde(default)]
    pub helo: Option<Text>,
    /// How long answers are kept (default `24h` found, `2h` not found).
    #[serde(default)]
    pub cache: Option<RawCache>,
}

/// One value, or a list of them.
#[derive(Debug)]
pub struct OneOrMany(pub Vec<String>);

impl schemars::JsonSchema for OneOrMany {
    fn schema_name() -> Cow<'static, str> {
        "OneOrMany".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "One value, or a list of them.",
            "oneOf": [scalar(), { "type": "array", "items": scalar() }]
        })
    }
}

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
