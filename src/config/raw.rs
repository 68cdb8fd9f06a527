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

/// One of `rate_limits.custom`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCustomOverride {
    #[serde(rename = "match")]
    pub matcher: Text,
    pub rate: Text,
}

pub type Text = Spanned<String>;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    #[serde(default)]
    pub listen: Option<Text>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSelfcheck {
    #[serde(default)]
    pub dnsbl: Option<Vec<Text>>,
}

// serde's `flatten` does not combine with `deny_unknown_fields`, so the
// seven limits are spelled out in both structs that hold them.

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFromHeader {
    #[serde(default)]
    pub strict: Option<bool>,
    #[serde(default)]
    pub max_length: Option<Spanned<usize>>,
    #[serde(default)]
    pub inbound_own_domain: Option<super::InboundOwnDomain>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRecipients {
    #[serde(default)]
    pub max_per_message: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default)]
    pub format: Option<super::LogFormat>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
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
    pub source: Text,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    #[serde(default)]
    pub file: Option<Text>,
    #[serde(default)]
    pub ldap: Option<RawLdap>,
    #[serde(default)]
    pub cache: Option<RawCache>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Deserialize, schemars::JsonSchema)]
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
