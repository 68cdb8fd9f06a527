//! The header scrubbing keys: `internal_hostnames` and `headers.remove`.

use super::raw::Text;
use super::Validator;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    /// Remove Received: lines naming an internal address or host (from-clause, by-clause, or
    /// none), keeping the topmost one with its internal parts redacted, and the other tracing
    /// headers that name one (default true). X-Egress-Score and X-Egress-Rules written by a
    /// client are always removed.
    #[serde(default)]
    pub strip_internal_received: Option<bool>,
    /// Headers removed from every message (none may be one DKIM signs).
    #[serde(default)]
    pub remove: Vec<Text>,
}

/// Internal host names when the configuration names none: suffixes no
/// public name uses.
pub const DEFAULT_INTERNAL_HOSTNAMES: [&str; 8] = [
    "*.local",
    "*.localdomain",
    "*.internal",
    "*.lan",
    "*.corp",
    "*.home.arpa",
    "*.intranet",
    "localhost",
];

impl Validator {
    /// `*.suffix` patterns and exact names, lower case; the defaults when
    /// the key is absent.
    pub(super) fn internal_hostnames(&mut self, raw: Option<&[Text]>) -> Vec<String> {
        match raw {
            None => DEFAULT_INTERNAL_HOSTNAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            Some(list) => {
                let mut out = Vec::new();
                for (i, h) in list.iter().enumerate() {
                    let v = h.value.trim().to_ascii_lowercase();
                    let name = v.strip_prefix("*.").unwrap_or(&v);
                    let ok = !name.is_empty()
                        && name.split('.').all(|l| {
                            !l.is_empty()
                                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        });
                    if ok {
                        out.push(v);
                    } else {
                        self.error(
                            h.referenced.line(),
                            format!("internal_hostnames[{i}]"),
                            format!("expected a host name or *.suffix, got \"{}\"", h.value),
                        );
                    }
                }
                out
            }
        }
    }

    /// Header names to remove; none DKIM signs (`signed`).
    pub(super) fn remove_headers(&mut self, raw: &[Text], signed: &[String]) -> Vec<String> {
        let mut remove_headers = Vec::new();
        for (i, h) in raw.iter().enumerate() {
            let ok =
                !h.value.is_empty() && h.value.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            if ok && signed.iter().any(|d| d.eq_ignore_ascii_case(&h.value)) {
                self.error(h.referenced.line(), format!("headers.remove[{i}]"), format!("\"{}\" is signed by DKIM (dkim.headers): removing it would break the signature", h.value));
            } else if ok {
                remove_headers.push(h.value.clone());
            } else {
                self.error(
                    h.referenced.line(),
                    format!("headers.remove[{i}]"),
                    format!("invalid header name \"{}\"", h.value),
                );
            }
        }
        remove_headers
    }
}
