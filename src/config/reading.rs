//! Reading a configuration file: bounded UTF-8 text, serde's reading with
//! the line and dotted key of its first error, values of the wrong kind set
//! aside so that one run reports them all, and the errors as printed. For
//! any reading of the file: the whole (`document.rs`) or the sections a
//! command needs (`admin.rs`).

use crate::files::read_bounded;
use std::{
    fmt,
    path::{Path, PathBuf},
};

/// One configuration error: where, which key, what is wrong.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: u64,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: the file as a whole (it could not be read).
        if self.line == 0 {
            write!(f, "{}: ", self.file.display())?;
        } else {
            write!(f, "{}:{}: ", self.file.display(), self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error found in one configuration file.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The largest configuration file read: a hundred thousand classes,
/// domains or overrides fit.
pub(super) const MAX_CONFIG_SIZE: u64 = 64 << 20;

/// What the YAML reader may build of one file: the reader's own limits
/// (250,000 nodes) are for untrusted documents; a configuration of a
/// hundred thousand entries has about a million nodes. Aliases keep their
/// default limits, so that a small file cannot expand into a large one.
fn options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = 16_000_000;
    budget.max_events = 32_000_000;
    budget.max_total_scalar_bytes = MAX_CONFIG_SIZE as usize;
    options.budget = Some(budget);
    options
}

/// The text read as `T`. A value of the wrong kind (an unknown word, a
/// negative number) stops serde at the first; to report every one at
/// once, its line is set aside and the text read again, the key then at
/// its default, up to MAX_SET_ASIDE times. Returns the reading and the
/// errors set aside (the validation's come on top), or the errors when
/// the text cannot be read at all.
pub(super) fn read_lenient<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<(T, Vec<ConfigError>), ConfigErrors> {
    let mut text = std::borrow::Cow::Borrowed(text);
    let mut early: Vec<ConfigError> = Vec::new();
    loop {
        match read_yaml::<T>(path, &text) {
            Ok(raw) => return Ok((raw, early)),
            Err(mut e) => {
                let line = e.line as usize;
                let written = text.lines().nth(line.wrapping_sub(1)).unwrap_or("");
                e.message = plain_message(&e.message, written);
                let recoverable = early.len() < MAX_SET_ASIDE
                    && value_error(&e.message)
                    && text
                        .lines()
                        .nth(line.wrapping_sub(1))
                        .is_some_and(scalar_line);
                // A key missing after one was set aside is not the
                // user's mistake.
                let missing = e.message.starts_with("missing field");
                if !missing || early.is_empty() {
                    early.push(e);
                }
                if !recoverable {
                    return Err(ConfigErrors(early));
                }
                text = std::borrow::Cow::Owned(set_aside(&text, line));
            }
        }
    }
}

/// Values of the wrong kind set aside and reported in one reading, at most.
const MAX_SET_ASIDE: usize = 50;

/// A configuration file's text: bounded, UTF-8, or an error naming the
/// file.
pub(super) fn read_text(path: &Path) -> Result<String, ConfigErrors> {
    read_bounded(path, MAX_CONFIG_SIZE)
        .and_then(|b| {
            String::from_utf8(b)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
        })
        .map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })
}

/// The serde reading of a configuration text as `T` (the whole file, or
/// the sections a command reads), or its first error with line and key.
pub(super) fn read_yaml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    // serde_path_to_error names the dotted key of a syntax or type error
    // (`classes[0].client`); serde-saphyr gives its line.
    let mut key = String::new();
    let raw: Result<T, _> =
        serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                // Spanned<T> shows up as a `.value` segment: not a key.
                let path = e.path().to_string();
                key = path
                    .split('.')
                    .filter(|s| *s != "value")
                    .collect::<Vec<_>>()
                    .join(".");
                e.into_inner()
            })
        });
    raw.map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: e.location().map(|l| l.line()).unwrap_or(0),
        key: if key == "." { String::new() } else { key },
        message: serde_message(&e),
    })
}

/// The text with line `line` (1-based) blanked, and its parent keys too
/// when it was their only child (an empty mapping would be an error of its
/// own).
fn set_aside(text: &str, line: usize) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let content = |l: &str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    let mut at = line.saturating_sub(1);
    while let Some(current) = lines.get(at).copied() {
        let depth = indent(current);
        lines[at] = "";
        if depth == 0 {
            break;
        }
        // The parent: the nearest line above, less indented.
        let Some(parent) = (0..at)
            .rev()
            .find(|&i| content(lines[i]) && indent(lines[i]) < depth)
        else {
            break;
        };
        let siblings = (parent + 1..lines.len())
            .take_while(|&i| !content(lines[i]) || indent(lines[i]) > indent(lines[parent]))
            .any(|i| content(lines[i]));
        if siblings {
            break;
        }
        at = parent;
    }
    lines.join("\n")
}

/// serde's word for a number of the wrong kind, said as an administrator
/// would: what is expected, and what the line has.
fn plain_message(message: &str, line: &str) -> String {
    let got = line
        .split_once(':')
        .map_or("", |(_, v)| v.split(" #").next().unwrap_or("").trim());
    let whole = ["u8", "u16", "u32", "u64", "usize"];
    match message.strip_prefix("invalid ") {
        Some(t) if whole.contains(&t) => {
            format!("expected a whole number of 0 or more, got \"{got}\"")
        }
        Some("f64") | Some("f32") => format!("expected a number, got \"{got}\""),
        Some("bool") => format!("expected true or false, got \"{got}\""),
        _ => message.to_string(),
    }
}

/// Whether serde stopped at a value of the wrong kind (not at the YAML's
/// syntax, an unknown key or a missing one).
fn value_error(message: &str) -> bool {
    message.starts_with("invalid ")
        || message.starts_with("expected ")
        || message.contains("unknown variant")
}

/// A `key: value` line in block style, whose removal leaves the rest of
/// the file as it was (the key then takes its default).
fn scalar_line(line: &str) -> bool {
    let t = line.trim_start();
    if t.starts_with('-') || t.starts_with('#') {
        return false;
    }
    match t.split_once(':') {
        Some((k, v)) => {
            let v = v.trim();
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && !v.is_empty()
                && !v.starts_with(['{', '[', '|', '>', '&', '*'])
        }
        None => false,
    }
}

/// serde-saphyr renders a source snippet under its message; the error line
/// here already says where, so keep the first line only.
fn serde_message(e: &serde_saphyr::Error) -> String {
    let full = e.to_string();
    let mut first = full.lines().next().unwrap_or("invalid YAML").trim();
    first = first.strip_prefix("error: ").unwrap_or(first);
    // "line 5 column 5: unknown field ..." -> "unknown field ..."
    if let Some(rest) = first.strip_prefix("line ") {
        if let Some((position, message)) = rest.split_once(": ") {
            if position.split(" column ").all(|n| n.parse::<u64>().is_ok()) {
                first = message;
            }
        }
    }
    first.to_string()
}
