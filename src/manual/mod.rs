//! The documents made from the code, each fact from one source. Here the
//! configuration reference, from the doc comments of the configuration's
//! types as the JSON Schema carries them (`config::schema`): the book's
//! reference page (Markdown) and `milter.yaml(5)` (roff). In `pages.rs`,
//! `egress-milter(8)` and its commands' pages, from the command line's
//! definitions. In `example.rs`, the shipped `milter.yaml`, from a template
//! whose marks take the keys' doc comments. `egress-milter-docs` writes them all, and the test suite
//! fails when a shipped copy is stale.

mod example;
mod pages;

pub use example::milter_yaml;
pub use pages::pages;

use crate::config::RESTART_KEYS;
use serde_json::Value;
use std::fmt::Write as _;

/// One key of the file, as the reference shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// Dotted, with `[]` for the entries of a list: `classes[].name`.
    pub path: String,
    /// What it takes: `string`, `true | false`, `enforce | monitor`, ...
    pub takes: String,
    pub description: String,
    /// Only a restart applies a change.
    pub restart: bool,
}

/// Every key of the file, each section's keys in alphabetical order (as
/// the schema lists them), a section's own keys after the section.
pub fn keys() -> Vec<Key> {
    let schema: Value = serde_json::from_str(&crate::config::schema()).unwrap_or(Value::Null);
    let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
    let mut out = Vec::new();
    walk(&schema, &defs, "", &mut out);
    out
}

fn resolve<'a>(v: &'a Value, defs: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|name| defs.get(name))
            .unwrap_or(v),
        None => v,
    }
}

/// The object schema a property's value is, past `Option`'s `anyOf` with
/// null and a list's `items`; with the suffix its path takes.
fn object<'a>(v: &'a Value, defs: &'a Value) -> Option<(&'a Value, &'static str)> {
    let v = resolve(v, defs);
    if v.get("properties").is_some() {
        return Some((v, ""));
    }
    if let Some(items) = v.get("items") {
        return object(items, defs).map(|(o, _)| (o, "[]"));
    }
    if let Some(alts) = v.get("anyOf").and_then(Value::as_array) {
        let not_null: Vec<&Value> = alts
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
            .collect();
        if let [one] = not_null.as_slice() {
            return object(one, defs);
        }
    }
    if let Some(extra) = v.get("additionalProperties").filter(|a| a.is_object()) {
        return object(extra, defs).map(|(o, _)| (o, ".NAME"));
    }
    None
}

fn walk(node: &Value, defs: &Value, prefix: &str, out: &mut Vec<Key>) {
    let Some(props) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, v) in props {
        let path = format!("{prefix}{name}");
        let description = v
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match object(v, defs) {
            Some((inner, suffix)) => {
                out.push(Key {
                    takes: match suffix {
                        "[]" => "a list of entries:".into(),
                        ".NAME" => "named entries:".into(),
                        _ => "a section:".into(),
                    },
                    restart: restarts(&path),
                    path: path.clone(),
                    description,
                });
                walk(inner, defs, &format!("{path}{suffix}."), out);
            }
            None => out.push(Key {
                takes: takes(v, defs),
                restart: restarts(&path),
                path,
                description,
            }),
        }
    }
}

/// Whether a change of the key needs a restart (`config::RESTART_KEYS`):
/// a key listed there, or one inside a section listed there.
fn restarts(path: &str) -> bool {
    RESTART_KEYS
        .iter()
        .flat_map(|k| k.keys.split(", "))
        .any(|k| path == k || path.starts_with(&format!("{k}.")))
}

/// What a value takes, in words.
fn takes(v: &Value, defs: &Value) -> String {
    let named = v
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"));
    match named {
        Some("List") => return "a list, or { source: NAME }".into(),
        Some("OneOrMany") => return "one value, or a list".into(),
        Some("RawAuth") => return "any | a list of logins".into(),
        _ => {}
    }
    let v = resolve(v, defs);
    if let Some(words) = v.get("enum").and_then(Value::as_array) {
        return words
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | ");
    }
    if let Some(c) = v.get("const").and_then(Value::as_str) {
        return c.to_string();
    }
    for alt in ["oneOf", "anyOf"] {
        if let Some(alts) = v.get(alt).and_then(Value::as_array) {
            let words: Vec<String> = alts
                .iter()
                .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
                .map(|a| takes(a, defs))
                .collect();
            if words.len() == 1 {
                return words[0].clone();
            }
            return words.join(" | ");
        }
    }
    let types: Vec<&str> = match v.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    };
    match types.as_slice() {
        ["boolean"] => "true | false".into(),
        ["integer"] => "a whole number".into(),
        ["number"] => "a number".into(),
        ["array"] => "a list".into(),
        ["string"] => "a string".into(),
        // Any scalar, read as written.
        [_, _, ..] => "text".into(),
        _ => "a value".into(),
    }
}

/// The book's configuration reference page.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Made by `egress-milter-docs` from the doc comments of the configuration's \
         types; edit those, not this page. -->\n\n\
         Every key of `milter.yaml`, what it takes and what it does. Unknown keys are \
         refused; every error names the file, the line and the dotted key. Keys marked \
         *restart* take effect only after a restart (a reload that changes one says so).\n\n",
    );
    for k in keys() {
        let _ = writeln!(out, "### `{}`\n", k.path);
        let mut line = format!("*{}*", k.takes.trim_end_matches(':'));
        if k.restart {
            line.push_str(" · *restart*");
        }
        let _ = writeln!(out, "{line}\n");
        if !k.description.is_empty() {
            let _ = writeln!(out, "{}\n", k.description);
        }
    }
    out
}

/// `milter.yaml(5)`.
pub fn milter_yaml_5() -> String {
    let mut out = String::from(MAN_HEAD);
    let mut section = String::new();
    for k in keys() {
        let top = k.path.split(['.', '[']).next().unwrap_or("").to_string();
        if top != section && !k.path.contains(['.', '[']) && k.takes.ends_with(':') {
            let _ = writeln!(out, ".SS {}", roff(&top));
            section = top;
        }
        let _ = writeln!(out, ".TP\n.B {}", roff(&k.path));
        let mut text = format!("({}", k.takes.trim_end_matches(':'));
        if k.restart {
            text.push_str("; restart");
        }
        text.push_str(") ");
        text.push_str(&k.description);
        let _ = writeln!(out, "{}", roff(&text));
    }
    out.push_str(MAN_TAIL);
    out
}

/// Text for roff: escapes, `code` in bold, a paragraph per blank line.
fn roff(text: &str) -> String {
    let mut out = String::new();
    for (i, para) in text.split("\n\n").enumerate() {
        if i > 0 {
            out.push_str("\n.IP\n");
        }
        let mut bold = false;
        let mut line = String::new();
        for ch in para.chars() {
            match ch {
                '`' => {
                    line.push_str(if bold { "\\fR" } else { "\\fB" });
                    bold = !bold;
                }
                '\\' => line.push_str("\\e"),
                '-' => line.push_str("\\-"),
                '\n' => line.push(' '),
                c => line.push(c),
            }
        }
        // A line may not start with a control character.
        let line = line.replace(". ", ".\n");
        for l in line.lines() {
            let l = l.trim_start();
            if l.starts_with(['.', '\'']) {
                out.push_str("\\&");
            }
            out.push_str(l);
            out.push('\n');
        }
    }
    out.trim_end().to_string()
}

const MAN_HEAD: &str = r#".\" Made by egress-milter-docs from the doc comments of the configuration's types.
.TH MILTER.YAML 5 "" "egress-milter" "File Formats"
.SH NAME
milter.yaml \- egress-milter configuration
.SH DESCRIPTION
.B egress-milter
reads a YAML file, by default
.IR /etc/egress-milter/milter.yaml .
Unknown keys are refused. Every error names the file, the line and the
dotted key, for instance
.PP
.RS
milter.yaml:12: classes[1].clients[0]: invalid network "10.1.2.0/33"
.RE
.PP
.B egress-milter check-config
lists every error at once. SIGHUP reloads the file; a file with errors is
refused and the running configuration kept. Keys marked
.I restart
take effect only after a restart (a reload that changes one says so).
.PP
Durations are written
.BR 250ms ,
.BR 5s ,
.BR 10m ,
.BR 1h ;
sizes
.BR 512KB ,
.BR 25MB ;
rates
.BR N/s ,
.BR N/m ,
.BR N/h ,
.BR N/d ,
.BR N/w ,
a period of several units such as
.BR N/10m ,
or
.BR unlimited ;
a unit may also be written as an abbreviation or a word, singular or
plural, in any case, so
.BR 50/h ,
.B 50/hour
and
.B 50/hours
are one rate.
A list may be written inline, or as
.B "{ source: NAME }"
naming a source.
The JSON Schema of the file is
.IR /usr/share/egress-milter/milter.schema.json .
.SH KEYS
"#;

const MAN_TAIL: &str = r#".SH FILES
.TP
.I /etc/egress-milter/milter.yaml
The configuration.
.TP
.I /usr/share/egress-milter/milter.schema.json
Its JSON Schema, for editors and validators.
.SH SEE ALSO
.BR egress-milter (8)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every setting the reload cannot change names keys of the file, and
    /// the reference marks exactly those (and what is inside them).
    #[test]
    fn the_reference_marks_every_restart_key() {
        let keys = keys();
        for k in RESTART_KEYS.iter().flat_map(|k| k.keys.split(", ")) {
            let key = keys.iter().find(|key| key.path == k);
            assert!(key.is_some_and(|key| key.restart), "{k}");
        }
        let marked: Vec<&str> = keys
            .iter()
            .filter(|k| k.restart)
            .map(|k| k.path.as_str())
            .collect();
        assert!(
            marked.contains(&"rate_limits.redis.sentinel.nodes"),
            "{marked:?}"
        );
        assert!(
            !marked.contains(&"rate_limits.messages_per_sender"),
            "{marked:?}"
        );
    }

    /// Every key has its documentation, bar the inner key of `{ source: NAME }`.
    #[test]
    fn every_key_is_documented() {
        for k in keys() {
            assert!(!k.description.is_empty(), "{} has no doc comment", k.path);
        }
    }
}
