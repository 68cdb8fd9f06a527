//! A held message made safe to look at: its headers and its first text
//! part as plain text, cut to a readable size, control characters
//! replaced; attachments by name and size, never opened. The pages escape
//! every field again when they render it.

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// The most of one header value shown.
const MAX_HEADER: usize = 2000;
/// The most headers shown.
const MAX_HEADERS: usize = 200;
/// The most of the text shown.
const MAX_TEXT: usize = 20_000;

#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Preview {
    pub subject: String,
    pub from: String,
    pub headers: Vec<(String, String)>,
    pub text: String,
    /// Whether the text was taken from an HTML part (its markup removed).
    pub from_html: bool,
    pub attachments: Vec<Attachment>,
    /// Whether something was cut.
    pub truncated: bool,
}

#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub size: usize,
}

/// Replaces control characters (but tabs) by `\u{fffd}` and cuts to
/// `max` characters; says whether it cut.
pub fn clean(text: &str, max: usize) -> (String, bool) {
    let mut out = String::with_capacity(text.len().min(max));
    let mut cut = false;
    for (i, c) in text.chars().enumerate() {
        if i >= max {
            cut = true;
            out.push('…');
            break;
        }
        out.push(if c.is_control() && c != '\t' && c != '\n' {
            '\u{fffd}'
        } else {
            c
        });
    }
    (out, cut)
}

/// One line: newlines too become spaces.
fn one_line(text: &str, max: usize) -> (String, bool) {
    let (s, cut) = clean(&text.replace(['\r', '\n'], " "), max);
    (s, cut)
}

pub fn preview(raw: &[u8]) -> Preview {
    let mut p = Preview::default();
    // The raw header lines as they are (unfolded), so that nothing a
    // parser drops is hidden.
    let head_end = memchr::memmem::find(raw, b"\r\n\r\n")
        .or_else(|| memchr::memmem::find(raw, b"\n\n"))
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut current: Option<(String, String)> = None;
    for line in head.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = current.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some(h) = current.take() {
            p.headers.push(h);
        }
        if let Some((name, value)) = line.split_once(':') {
            current = Some((name.to_string(), value.trim().to_string()));
        } else if !line.is_empty() {
            current = Some((String::new(), line.to_string()));
        }
    }
    if let Some(h) = current.take() {
        p.headers.push(h);
    }
    if p.headers.len() > MAX_HEADERS {
        p.headers.truncate(MAX_HEADERS);
        p.truncated = true;
    }
    for (name, value) in p.headers.iter_mut() {
        let (n, c1) = one_line(name, 200);
        let (v, c2) = one_line(value, MAX_HEADER);
        *name = n;
        *value = v;
        p.truncated |= c1 || c2;
    }
    let Some(msg) = MessageParser::default().parse(raw) else {
        return p;
    };
    let (subject, cut) = one_line(msg.subject().unwrap_or(""), MAX_HEADER);
    p.subject = subject;
    p.truncated |= cut;
    if let Some(from) = msg.from().and_then(|a| a.first()) {
        let shown = match (from.name(), from.address()) {
            (Some(n), Some(a)) => format!("{n} <{a}>"),
            (None, Some(a)) => a.to_string(),
            (Some(n), None) => n.to_string(),
            (None, None) => String::new(),
        };
        p.from = one_line(&shown, MAX_HEADER).0;
    }
    let text = match msg
        .text_body
        .first()
        .and_then(|&i| msg.parts.get(i as usize))
    {
        Some(part) => match &part.body {
            PartType::Text(t) => Some((t.to_string(), false)),
            PartType::Html(_) => msg.body_text(0).map(|t| (t.into_owned(), true)),
            _ => None,
        },
        None => None,
    };
    if let Some((text, html)) = text {
        let (t, cut) = clean(&text, MAX_TEXT);
        p.text = t;
        p.from_html = html;
        p.truncated |= cut;
    }
    for part in msg.attachments() {
        let name = part
            .attachment_name()
            .map(str::to_string)
            .unwrap_or_else(|| "(no name)".into());
        let content_type = part
            .content_type()
            .map(|c| match &c.c_subtype {
                Some(s) => format!("{}/{s}", c.c_type),
                None => c.c_type.to_string(),
            })
            .unwrap_or_default();
        p.attachments.push(Attachment {
            name: one_line(&name, 300).0,
            content_type: one_line(&content_type, 100).0,
            size: part.len(),
        });
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_fields_are_cut_and_cleaned_and_attachments_only_named() {
        let subject = "x".repeat(5000);
        let raw = format!(
            "From: Evil <e@x.test>\r\nSubject: {subject}\r\nX-Bad: a\x07b\r\n  folded\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/html\r\n\r\n<p>Hello <script>alert(1)</script><img src=http://x.test/t.png></p>\r\n--B\r\nContent-Type: application/octet-stream; name=\"run.exe\"\r\nContent-Disposition: attachment; filename=\"run.exe\"\r\n\r\nMZ\r\n--B--\r\n"
        );
        let p = preview(raw.as_bytes());
        assert_eq!(p.from, "Evil <e@x.test>");
        assert!(p.subject.chars().count() <= MAX_HEADER + 1 && p.truncated);
        let bad = p.headers.iter().find(|(n, _)| n == "X-Bad").unwrap();
        assert_eq!(bad.1, "a\u{fffd}b folded");
        assert!(p.from_html && p.text.contains("Hello"), "{p:?}");
        assert!(
            !p.text.contains("<script>") && !p.text.contains("<img"),
            "{}",
            p.text
        );
        assert_eq!(p.attachments.len(), 1);
        assert_eq!(p.attachments[0].name, "run.exe");
    }

    #[test]
    fn invalid_utf8_does_not_stop_the_preview() {
        let mut raw = b"Subject: caf\xe9\r\n\r\nbody \xff\xfe text\r\n".to_vec();
        raw.extend_from_slice(b"");
        let p = preview(&raw);
        assert!(p.subject.starts_with("caf"), "{p:?}");
        assert!(p.text.contains("text"), "{p:?}");
    }
}
