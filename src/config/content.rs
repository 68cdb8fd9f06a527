//! The `content` section: size cap, banned attachments, rule weights,
//! custom rules, score thresholds.

use super::raw::Spanned;
use super::raw::Text;
use super::Validator;
use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawContent {
    /// Larger messages get `552 5.3.4` (default `25MB`).
    #[serde(default)]
    pub max_message_size: Option<Text>,
    /// Attachment extensions refused with `550 5.7.1`, looked for in file names, RFC 2231 and
    /// encoded-word names, ZIP archives and attached messages (default `exe`, `scr`, `bat`,
    /// `cmd`, `com`, `pif`, `js`, `vbs`, `jar`).
    #[serde(default)]
    pub banned_extensions: Option<Vec<Text>>,
    /// A message whose rule scores sum to this is refused, `550 5.7.1` (default 10).
    #[serde(default)]
    pub reject_score: Option<Spanned<f64>>,
    /// ... to this, deferred, `451 4.7.1` (default 7).
    #[serde(default)]
    pub tempfail_score: Option<Spanned<f64>>,
    /// ... to this, accepted with `X-Egress-Score` and `X-Egress-Rules` headers (default 4).
    #[serde(default)]
    pub tag_score: Option<Spanned<f64>>,
    /// To: and Cc: addresses beyond which the rule `many_recipients` scores (default 50).
    #[serde(default)]
    pub max_header_recipients: Option<Spanned<usize>>,
    /// Weights of the built-in rules; 0 turns one off.
    #[serde(default)]
    pub rules: RawRuleWeights,
    /// Rules of one's own.
    #[serde(default)]
    pub custom: Vec<RawCustomRule>,
    /// An rspamd normal worker to ask about each message: its `reject` refuses (`550 5.7.1`),
    /// `soft reject` and `greylist` defer (`451 4.7.1`), `add header` and `rewrite subject` add
    /// `X-Spam-Score` and `X-Spam-Symbols`. No answer within the timeout follows `on_error`.
    #[serde(default)]
    pub rspamd: Option<RawRspamd>,
}

/// The `attachments` section.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAttachments {
    /// An archive the checks cannot read whole (an encrypted entry, or one compressed by a
    /// method other than stored and deflate): `reject` (default: `550 5.7.1`, rule
    /// `unchecked_content`) or `accept`.
    #[serde(default)]
    pub unreadable_archives: Option<super::UnreadableArchives>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRspamd {
    /// (required) The worker's URL, e.g. `http://127.0.0.1:11333`.
    pub url: Text,
    /// The longest wait for a verdict (default `5s`); then `on_error` decides.
    #[serde(default)]
    pub timeout: Option<Text>,
}

/// Built-in rule weights; 0 turns a rule off.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRuleWeights {
    /// No Date: header (default 1).
    #[serde(default)]
    pub missing_date: Option<f64>,
    /// No Message-ID: header (default 1).
    #[serde(default)]
    pub missing_message_id: Option<f64>,
    /// MIME structure that does not parse (default 2.5).
    #[serde(default)]
    pub malformed_mime: Option<f64>,
    /// HTML without a text part (default 1.5).
    #[serde(default)]
    pub html_only: Option<f64>,
    /// A link whose text names another host than its target (default 4).
    #[serde(default)]
    pub link_mismatch: Option<f64>,
    /// More To: and Cc: addresses than `max_header_recipients` (default 2).
    #[serde(default)]
    pub many_recipients: Option<f64>,
}

/// A scored rule of one's own: it matches when each pattern given matches.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCustomRule {
    /// (required) One word; it appears in `X-Egress-Rules` and the logs.
    pub name: Text,
    /// A regular expression matched against the Subject:.
    #[serde(default)]
    pub subject: Option<Text>,
    /// A regular expression matched against the text of the body.
    #[serde(default)]
    pub body: Option<Text>,
    /// (required) Added when it matches.
    pub score: f64,
}

/// Default `content.max_message_size`: 25 MB, the shipped configuration's
/// value, a little above common MTA limits once base64 is counted.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 25 * 1000 * 1000;

/// `25MB`, `512KB`, `1GB` (powers of 1000), `25MiB` (of 1024), or bytes.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: usize = n.parse().ok()?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "mb" | "m" => 1000 * 1000,
        "gb" | "g" => 1000 * 1000 * 1000,
        "kib" => 1024,
        "mib" => 1024 * 1024,
        "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A rule of the administrator's: a regex on the decoded Subject and/or
/// body text.
#[derive(Clone, Debug)]
pub struct CustomRule {
    pub name: String,
    pub subject: Option<Regex>,
    pub body: Option<Regex>,
    pub score: f64,
}

/// Built-in rule weights (0 = off).
#[derive(Clone, Debug, PartialEq)]
pub struct RuleWeights {
    pub missing_date: f64,
    pub missing_message_id: f64,
    pub malformed_mime: f64,
    pub html_only: f64,
    pub link_mismatch: f64,
    pub many_recipients: f64,
}

impl Default for RuleWeights {
    fn default() -> Self {
        // Weights in the spirit of SpamAssassin's: one sign of careless
        // software is a point or two; a link that lies about its target is
        // a phishing trait.
        Self {
            missing_date: 1.0,
            missing_message_id: 1.0,
            malformed_mime: 2.5,
            html_only: 1.5,
            link_mismatch: 4.0,
            many_recipients: 2.0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ContentSettings {
    pub max_message_size: usize,
    /// Lower case, without the dot.
    pub banned_extensions: Vec<String>,
    pub reject_score: f64,
    pub tempfail_score: f64,
    pub tag_score: f64,
    pub max_header_recipients: usize,
    pub weights: RuleWeights,
    pub custom: Vec<CustomRule>,
    pub rspamd: Option<RspamdSettings>,
    /// `attachments.unreadable_archives`.
    pub unreadable_archives: UnreadableArchives,
}

/// What an archive the checks cannot read whole means for the message: an
/// encrypted entry, or one compressed by a method the reader does not have
/// (LZMA, bzip2, AES, ...), hides its names (of nested archives too) from
/// the banned-attachment check and its content from clamd.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, Eq, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnreadableArchives {
    /// `550 5.7.1 Message has an archive that cannot be checked (<why>)`,
    /// rule `unchecked_content`.
    #[default]
    Reject,
    /// Let it through: what it holds is not checked.
    Accept,
}

#[derive(Clone, Debug, Eq, PartialEq)]
pub struct RspamdSettings {
    /// Base URL of the normal worker, e.g. `http://127.0.0.1:11333`.
    pub url: String,
    pub timeout: std::time::Duration,
}

pub const DEFAULT_BANNED: &[&str] = &["exe", "scr", "bat", "cmd", "com", "pif", "js", "vbs", "jar"];

impl ContentSettings {
    /// Whether any content check is on (and so the message must be kept).
    pub fn active(&self) -> bool {
        !self.banned_extensions.is_empty()
            || !self.custom.is_empty()
            || self.rspamd.is_some()
            || self.weights
                != RuleWeights {
                    missing_date: 0.0,
                    missing_message_id: 0.0,
                    malformed_mime: 0.0,
                    html_only: 0.0,
                    link_mismatch: 0.0,
                    many_recipients: 0.0,
                }
    }
}

impl Validator {
    pub(super) fn content(
        &mut self,
        raw: &RawContent,
        attachments: &RawAttachments,
    ) -> ContentSettings {
        let max_message_size = match &raw.max_message_size {
            Some(t) => match parse_size(&t.value) {
                Some(n) if n >= 1000 => n,
                _ => {
                    self.error(
                        t.referenced.line(),
                        "content.max_message_size",
                        format!("invalid size \"{}\" (expected e.g. 25MB)", t.value),
                    );
                    DEFAULT_MAX_MESSAGE_SIZE
                }
            },
            None => DEFAULT_MAX_MESSAGE_SIZE,
        };
        let mut banned = Vec::new();
        match &raw.banned_extensions {
            None => banned.extend(DEFAULT_BANNED.iter().map(|s| s.to_string())),
            Some(list) => {
                for (i, e) in list.iter().enumerate() {
                    let ext = e.value.trim().trim_start_matches('.').to_ascii_lowercase();
                    if ext.is_empty() || ext.contains(['/', '\\', ' ']) {
                        self.error(
                            e.referenced.line(),
                            format!("content.banned_extensions[{i}]"),
                            format!("invalid extension \"{}\"", e.value),
                        );
                    } else {
                        banned.push(ext);
                    }
                }
            }
        }
        let score =
            |v: &mut Self, s: &Option<super::raw::Spanned<f64>>, key: &str, default: f64| match s {
                Some(x) if x.value.is_finite() && x.value > 0.0 => x.value,
                Some(x) => {
                    v.error(x.referenced.line(), key, "must be a positive number");
                    default
                }
                None => default,
            };
        let reject_score = score(self, &raw.reject_score, "content.reject_score", 10.0);
        let tempfail_score = score(self, &raw.tempfail_score, "content.tempfail_score", 7.0);
        let tag_score = score(self, &raw.tag_score, "content.tag_score", 4.0);
        if tempfail_score > reject_score || tag_score > tempfail_score {
            let line = raw.tag_score.as_ref().map_or(1, |s| s.referenced.line());
            self.error(
                line,
                "content",
                "scores must satisfy tag_score <= tempfail_score <= reject_score",
            );
        }
        let max_header_recipients = match &raw.max_header_recipients {
            Some(n) if n.value == 0 => {
                self.error(
                    n.referenced.line(),
                    "content.max_header_recipients",
                    "must be at least 1",
                );
                50
            }
            Some(n) => n.value,
            None => 50,
        };
        let d = RuleWeights::default();
        let w = &raw.rules;
        let weights = RuleWeights {
            missing_date: w.missing_date.unwrap_or(d.missing_date),
            missing_message_id: w.missing_message_id.unwrap_or(d.missing_message_id),
            malformed_mime: w.malformed_mime.unwrap_or(d.malformed_mime),
            html_only: w.html_only.unwrap_or(d.html_only),
            link_mismatch: w.link_mismatch.unwrap_or(d.link_mismatch),
            many_recipients: w.many_recipients.unwrap_or(d.many_recipients),
        };
        let mut custom = Vec::new();
        for (i, r) in raw.custom.iter().enumerate() {
            let key = format!("content.custom[{i}]");
            let compile = |v: &mut Self, t: &Option<super::raw::Text>, field: &str| {
                t.as_ref().and_then(|t| match Regex::new(&t.value) {
                    Ok(re) => Some(re),
                    Err(e) => {
                        v.error(
                            t.referenced.line(),
                            format!("{key}.{field}"),
                            format!(
                                "invalid regex: {}",
                                e.to_string().lines().last().unwrap_or("")
                            ),
                        );
                        None
                    }
                })
            };
            let subject = compile(self, &r.subject, "subject");
            let body = compile(self, &r.body, "body");
            if r.subject.is_none() && r.body.is_none() {
                self.error(
                    r.name.referenced.line(),
                    &key,
                    "a rule needs subject or body",
                );
            }
            custom.push(CustomRule {
                name: r.name.value.clone(),
                subject,
                body,
                score: r.score,
            });
        }
        let rspamd = raw.rspamd.as_ref().and_then(|r| {
            let ok = r.url.value.starts_with("http://") || r.url.value.starts_with("https://");
            if !ok {
                self.error(
                    r.url.referenced.line(),
                    "content.rspamd.url",
                    format!("expected http://HOST:PORT, got \"{}\"", r.url.value),
                );
                return None;
            }
            let timeout = match &r.timeout {
                Some(t) => self.duration("content.rspamd.timeout", t, super::NONZERO)?,
                // rspamd scans in milliseconds; seconds mean it is stuck.
                None => std::time::Duration::from_secs(5),
            };
            Some(RspamdSettings {
                url: r.url.value.clone(),
                timeout,
            })
        });
        ContentSettings {
            rspamd,
            max_message_size,
            banned_extensions: banned,
            reject_score,
            tempfail_score,
            tag_score,
            max_header_recipients,
            weights,
            custom,
            unreadable_archives: attachments.unreadable_archives.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("25MB"), Some(25_000_000));
        assert_eq!(parse_size("512 KiB"), Some(524_288));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5XB"), None);
    }
}
