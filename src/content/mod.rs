//! Content checks at end of message: a MIME walk (mail-parser) over every
//! part, attached messages included, for banned attachments (by every name
//! a mail client could use, and by the names inside ZIP archives) and for
//! the scored rules.

pub mod clamd;
pub mod links;
pub mod names;
pub use names::extensions;
mod readings;
pub mod rspamd;

use crate::config::ContentSettings;
use mail_parser::{Address, Message, MessageParser, MimeHeaders, PartType};

/// What the scan found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scan {
    /// The first banned extension found (without the dot).
    pub banned: Option<String>,
    /// The cap that stopped the walk (`zip_entries`, `zip_depth`,
    /// `mime_depth`): what lies past it was not checked, so the message
    /// is not clean.
    pub incomplete: Option<&'static str>,
    /// Why an archive could not be read whole (an encrypted entry, a
    /// compression method the reader does not have), if one could not:
    /// what it holds is hidden from the name checks and from clamd.
    pub unreadable: Option<String>,
    /// The rules that fired, with their weights.
    pub rules: Vec<(String, f64)>,
}

impl Scan {
    pub fn score(&self) -> f64 {
        // + 0.0: an empty float sum is -0.0, which would print as "-0.0".
        self.rules.iter().map(|(_, w)| w).sum::<f64>() + 0.0
    }

    /// `rule=weight` pairs, for logs and the X-Egress-Rules header.
    pub fn rules_text(&self) -> String {
        self.rules
            .iter()
            .map(|(n, w)| format!("{n}={w}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Body text custom rules read, at most: parts past it are not added (a
/// spammer's payload comes first; a 1 MB text is a book).
pub const MAX_BODY_TEXT: usize = 1_000_000;

/// Runs of white space as one space, as a browser lays text out.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Attached messages nested deeper than this are not walked: real mail
/// nests two or three levels; the bound keeps a crafted message cheap.
const MAX_DEPTH: usize = 8;

fn banned_in<'a>(names: impl IntoIterator<Item = &'a str>, banned: &[String]) -> Option<String> {
    names
        .into_iter()
        .flat_map(extensions)
        .find(|e| banned.iter().any(|b| b == e))
}

fn count(a: Option<&Address<'_>>) -> usize {
    match a {
        Some(Address::List(l)) => l.len(),
        Some(Address::Group(g)) => g.iter().map(|g| g.addresses.len()).sum(),
        None => 0,
    }
}

struct Walk<'s> {
    settings: &'s ContentSettings,
    banned: Option<String>,
    incomplete: Option<&'static str>,
    unreadable: Option<String>,
    html_parts: usize,
    text_parts: usize,
    malformed: bool,
    link_mismatch: bool,
    /// Whether a custom rule reads the body text (else it is not gathered).
    collect_text: bool,
    body_text: String,
}

impl<'s> Walk<'s> {
    /// A walk that has found nothing yet; `collect_text` when a custom
    /// rule reads the body.
    fn new(settings: &'s ContentSettings, collect_text: bool) -> Self {
        Walk {
            settings,
            banned: None,
            incomplete: None,
            unreadable: None,
            html_parts: 0,
            text_parts: 0,
            malformed: false,
            link_mismatch: false,
            collect_text,
            body_text: String::new(),
        }
    }

    fn message(&mut self, msg: &Message<'_>, depth: usize) {
        for part in &msg.parts {
            if self.banned.is_none() && !self.settings.banned_extensions.is_empty() {
                let found = part_names(msg, part);
                if self.incomplete.is_none() {
                    self.incomplete = found.incomplete;
                }
                if self.unreadable.is_none() {
                    self.unreadable = found.unreadable;
                }
                self.banned = banned_in(
                    found.names.iter().map(String::as_str),
                    &self.settings.banned_extensions,
                );
            }
            if let Some(ct) = part.content_type() {
                if ct.ctype().eq_ignore_ascii_case("multipart") {
                    match ct.attribute("boundary") {
                        None => self.malformed = true,
                        // A boundary that never appears: the parts are lost
                        // in one blob, and receivers will say so.
                        Some(b) => {
                            let marker = format!("--{b}");
                            if !memchr_find(&msg.raw_message, marker.as_bytes()) {
                                self.malformed = true;
                            }
                        }
                    }
                }
            }
            let attachment = part
                .content_disposition()
                .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
            match &part.body {
                PartType::Html(html) if !attachment => {
                    self.html_parts += 1;
                    if links::mismatch(html) {
                        self.link_mismatch = true;
                    }
                    if self.collect_text && self.body_text.len() < MAX_BODY_TEXT {
                        // The text a reader sees: `wire <b>transfer</b>`
                        // is "wire transfer".
                        self.body_text.push_str(&collapse(&links::visible(html)));
                        self.body_text.push('\n');
                    }
                }
                PartType::Text(text) if !attachment => {
                    self.text_parts += 1;
                    if self.collect_text && self.body_text.len() < MAX_BODY_TEXT {
                        self.body_text.push_str(text);
                        self.body_text.push('\n');
                    }
                }
                PartType::Message(inner) if depth < MAX_DEPTH => self.message(inner, depth + 1),
                PartType::Message(_) if self.incomplete.is_none() => {
                    self.incomplete = Some("mime_depth");
                }
                _ => {}
            }
            self.other_readings(msg, part, depth);
        }
    }

    /// A part with a MIME header given twice (two Content-Type, or two
    /// Content-Transfer-Encoding headers) is read one way by the parser
    /// and another way by some clients: each reading (one of each
    /// duplicated header, the others dropped) is walked too, and judged.
    fn other_readings(
        &mut self,
        msg: &Message<'_>,
        part: &mail_parser::MessagePart<'_>,
        depth: usize,
    ) {
        let Some(readings) = readings::readings(msg, part) else {
            return;
        };
        if depth >= MAX_DEPTH {
            self.incomplete.get_or_insert("mime_depth");
            return;
        }
        if readings.len() > readings::MAX_READINGS {
            self.incomplete.get_or_insert("mime_readings");
            return;
        }
        for raw in readings {
            if let Some(variant) = MessageParser::default().parse(&raw[..]) {
                // Only the attachment checks: the rules read the message
                // as the parser does, once.
                let mut walk = Walk::new(self.settings, false);
                walk.message(&variant, depth + 1);
                self.banned = self.banned.take().or(walk.banned);
                self.incomplete = self.incomplete.or(walk.incomplete);
                self.unreadable = self.unreadable.take().or(walk.unreadable);
            }
        }
    }
}

/// Every name a client might show or save a part under: each filename and
/// name parameter (as mail-parser decoded them, and read again from the
/// raw headers, so that a second or a disagreeing one is seen), the names
/// inside a ZIP (also when its base64 carries noise a strict decoder
/// stops at), and uuencoded files in its text.
fn part_names(msg: &Message<'_>, part: &mail_parser::MessagePart<'_>) -> names::Names {
    let mut out = names::Names::default();
    for attrs in [
        part.content_disposition().and_then(|d| d.attributes()),
        part.content_type().and_then(|c| c.attributes()),
    ]
    .into_iter()
    .flatten()
    {
        for a in attrs {
            let n = a.name.to_ascii_lowercase();
            if n.starts_with("filename") || n.starts_with("name") {
                out.names.push(a.value.to_string());
            }
        }
    }
    for h in &part.headers {
        if matches!(
            h.name,
            mail_parser::HeaderName::ContentType | mail_parser::HeaderName::ContentDisposition
        ) {
            if let Some(raw) = msg
                .raw_message
                .get(h.offset_start as usize..h.offset_end as usize)
            {
                out.names
                    .extend(names::parameters(&String::from_utf8_lossy(raw)));
            }
        }
    }
    let mut zipped = names::zip(part.contents());
    let base64 = part
        .content_transfer_encoding()
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("base64"));
    if base64 && zipped.names.is_empty() {
        let raw = msg
            .raw_message
            .get(part.raw_body_offset() as usize..part.raw_end_offset() as usize)
            .unwrap_or_default();
        zipped = names::zip(&names::lenient_base64(raw));
    }
    out.names.append(&mut zipped.names);
    out.incomplete = zipped.incomplete;
    out.unreadable = zipped.unreadable;
    if let PartType::Text(text) = &part.body {
        out.names.extend(names::uuencoded(text));
    }
    out
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Scans a whole message (headers and body, CRLF).
pub fn scan(raw: &[u8], settings: &ContentSettings) -> Scan {
    if let Some(scan) = scan_plain(raw, settings) {
        return scan;
    }
    scan_mime(raw, settings)
}

/// The common message, one text/plain part, scanned from its headers
/// alone: when the part has no name, no transfer encoding to undo, a body
/// that is not a ZIP archive, and no custom rule reads the body, nothing in
/// the body can fire a rule or name an attachment, so the MIME walk (which
/// decodes the whole body) would find exactly what this finds. None when
/// the message is anything else.
fn scan_plain(raw: &[u8], settings: &ContentSettings) -> Option<Scan> {
    // Anything unusual in the raw text goes to the walk: the shortcut must
    // never see less than the walk would.
    if odd(raw) {
        return None;
    }
    let msg = MessageParser::default().parse_headers(raw)?;
    if !plain(&msg, settings) || body_needs_walk(body_of(raw)) {
        return None;
    }
    let walk = Walk {
        text_parts: 1,
        ..Walk::new(settings, false)
    };
    Some(rules(&msg, walk))
}

/// The scan of a plain message from its headers alone (headers ending with
/// an empty line), made at end of headers: the whole scan at end of message
/// is then needed only if the body starts with "PK" (a ZIP archive). None
/// when the message is not plain.
pub fn scan_headers(head: &[u8], settings: &ContentSettings) -> Option<Scan> {
    scan_plain(head, settings)
}

/// Whether a body would send a plain message to the full MIME walk: what
/// [`odd`] finds in it (a control character, a lone CR, a `begin ` that may
/// start a uuencoded file), or an archive. The plain scan made from the
/// headers stands only for a body without any of these, whatever else is
/// configured.
pub fn body_needs_walk(body: &[u8]) -> bool {
    odd(body) || names::is_zip(body)
}

/// One text/plain part (or no Content-Type) without a name, without a
/// transfer encoding to undo, and no custom rule on the body.
fn plain(msg: &Message<'_>, settings: &ContentSettings) -> bool {
    if settings.custom.iter().any(|r| r.body.is_some()) {
        return false;
    }
    let Some(part) = msg.parts.first() else {
        return false;
    };
    if let Some(ct) = part.content_type() {
        let plain = ct.ctype().eq_ignore_ascii_case("text")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("plain"));
        if !plain {
            return false;
        }
    }
    if part.content_disposition().is_some() || readings::duplicated(part) {
        return false;
    }
    // A name in any parameter, parsed or raw, is the walk's to judge.
    if !part_names(msg, part).names.is_empty() || names_anything(&msg.raw_message) {
        return false;
    }
    part.content_transfer_encoding().is_none_or(|e| {
        ["7bit", "8bit", "binary"]
            .iter()
            .any(|k| e.trim().eq_ignore_ascii_case(k))
    })
}

/// Control characters other than tab and CRLF (a NUL, a lone CR) anywhere,
/// or what may start an encoded file (`begin `, `begin-base64 `,
/// `=ybegin `): parsers differ on such messages, and only the full walk
/// reads the names, so only it judges them.
fn odd(raw: &[u8]) -> bool {
    // Whole blocks without a branch per byte, which the compiler vectorises.
    let control = raw.chunks(64).any(|block| {
        block.iter().fold(false, |found, &b| {
            found | (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) | (b == 0x7f)
        })
    });
    let lone_cr = || memchr::memchr_iter(b'\r', raw).any(|i| raw.get(i + 1) != Some(&b'\n'));
    // `begin `, `begin-` or `ybegin`: each holds `begin`.
    let begins = || {
        memchr::memmem::find_iter(raw, b"begin")
            .any(|i| matches!(raw.get(i + 5), Some(b' ' | b'-')) || (i > 0 && raw[i - 1] == b'y'))
    };
    control || lone_cr() || begins()
}

/// Whether a Content-Type or Content-Disposition header of the head, as
/// written, mentions a name at all: the shortcut leaves such a message to
/// the walk, whatever a parser makes of the parameter.
fn names_anything(raw: &[u8]) -> bool {
    let mut in_type = false;
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let lower = line.to_ascii_lowercase();
            in_type =
                lower.starts_with(b"content-type") || lower.starts_with(b"content-disposition");
        }
        if in_type && line.to_ascii_lowercase().windows(4).any(|w| w == b"name") {
            return true;
        }
    }
    false
}

/// The body: what follows the first empty line (none: no body).
fn body_of(raw: &[u8]) -> &[u8] {
    if let Some(rest) = raw
        .strip_prefix(b"\r\n")
        .or_else(|| raw.strip_prefix(b"\n"))
    {
        return rest;
    }
    for (i, _) in raw.iter().enumerate().filter(|(_, b)| **b == b'\n') {
        let rest = &raw[i + 1..];
        if let Some(body) = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))
        {
            return body;
        }
    }
    &[]
}

/// The full MIME walk, whatever the message (`scan` takes a shortcut for
/// plain messages; the two must agree, which the fuzz target checks).
pub fn scan_walk(raw: &[u8], settings: &ContentSettings) -> Scan {
    scan_mime(raw, settings)
}

/// The MIME walk over every part.
fn scan_mime(raw: &[u8], settings: &ContentSettings) -> Scan {
    let Some(msg) = MessageParser::default().parse(raw) else {
        let w = settings.weights.malformed_mime;
        return Scan {
            banned: None,
            incomplete: None,
            unreadable: None,
            rules: if w > 0.0 {
                vec![("malformed_mime".into(), w)]
            } else {
                Vec::new()
            },
        };
    };
    let mut walk = Walk::new(settings, settings.custom.iter().any(|r| r.body.is_some()));
    walk.message(&msg, 0);
    rules(&msg, walk)
}

/// The rules over what the walk found and the top-level headers.
fn rules(msg: &Message<'_>, walk: Walk<'_>) -> Scan {
    let settings = walk.settings;
    let w = &settings.weights;
    let mut rules: Vec<(String, f64)> = Vec::new();
    let mut fire = |name: &str, weight: f64, cond: bool| {
        if cond && weight > 0.0 {
            rules.push((name.to_string(), weight));
        }
    };
    fire(
        "missing_date",
        w.missing_date,
        msg.header_raw("Date").is_none(),
    );
    fire(
        "missing_message_id",
        w.missing_message_id,
        msg.header_raw("Message-ID").is_none(),
    );
    fire("malformed_mime", w.malformed_mime, walk.malformed);
    fire(
        "html_only",
        w.html_only,
        walk.html_parts > 0 && walk.text_parts == 0,
    );
    fire("link_mismatch", w.link_mismatch, walk.link_mismatch);
    let recipients = count(msg.to()) + count(msg.cc());
    fire(
        "many_recipients",
        w.many_recipients,
        recipients > settings.max_header_recipients,
    );
    let subject = msg.subject().unwrap_or("");
    for r in &settings.custom {
        let hit = r.subject.as_ref().is_some_and(|re| re.is_match(subject))
            || r.body
                .as_ref()
                .is_some_and(|re| re.is_match(&walk.body_text));
        if hit {
            rules.push((r.name.clone(), r.score));
        }
    }
    Scan {
        banned: walk.banned,
        incomplete: walk.incomplete,
        unreadable: walk.unreadable,
        rules,
    }
}

#[cfg(test)]
mod tests;
