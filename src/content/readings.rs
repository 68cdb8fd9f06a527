//! A part whose MIME headers are given twice (two Content-Type, or two
//! Content-Transfer-Encoding headers) is read one way by the parser and
//! another by some clients: here it is rewritten once per choice, for the
//! walk to judge each reading.

use mail_parser::Message;

/// Readings of one part walked at most (a part with four Content-Type and
/// four Content-Transfer-Encoding headers has 16); past it the message is
/// refused as unchecked (`mime_readings`).
pub(super) const MAX_READINGS: usize = 16;

/// The MIME headers whose duplicates make a part ambiguous.
fn ambiguous(name: &mail_parser::HeaderName<'_>) -> Option<usize> {
    match name {
        mail_parser::HeaderName::ContentType => Some(0),
        mail_parser::HeaderName::ContentTransferEncoding => Some(1),
        _ => None,
    }
}

/// Whether a part has a Content-Type or Content-Transfer-Encoding header
/// more than once.
pub(super) fn duplicated(part: &mail_parser::MessagePart<'_>) -> bool {
    let mut seen = [0usize; 2];
    for h in &part.headers {
        if let Some(i) = ambiguous(&h.name) {
            seen[i] += 1;
        }
    }
    seen.iter().any(|n| *n > 1)
}

/// The part re-written once per choice of its duplicated MIME headers
/// (None when none is duplicated): its other headers, one of each
/// duplicated kind, its body.
pub(super) fn readings(
    msg: &Message<'_>,
    part: &mail_parser::MessagePart<'_>,
) -> Option<Vec<Vec<u8>>> {
    if !duplicated(part) {
        return None;
    }
    let raw = &msg.raw_message;
    let line = |h: &mail_parser::Header<'_>| -> Vec<u8> {
        let mut l = raw
            .get(h.offset_field as usize..h.offset_end as usize)
            .unwrap_or_default()
            .to_vec();
        if !l.ends_with(b"\n") {
            l.extend_from_slice(b"\r\n");
        }
        l
    };
    let mut choices: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for (i, h) in part.headers.iter().enumerate() {
        if let Some(k) = ambiguous(&h.name) {
            choices[k].push(i);
        }
    }
    let body = raw
        .get(part.raw_body_offset() as usize..part.raw_end_offset() as usize)
        .unwrap_or_default();
    let types: Vec<Option<usize>> = if choices[0].is_empty() {
        vec![None]
    } else {
        choices[0].iter().copied().map(Some).collect()
    };
    let encodings: Vec<Option<usize>> = if choices[1].is_empty() {
        vec![None]
    } else {
        choices[1].iter().copied().map(Some).collect()
    };
    let mut out = Vec::new();
    for t in &types {
        for e in &encodings {
            let mut r = Vec::with_capacity(body.len() + 512);
            for (i, h) in part.headers.iter().enumerate() {
                let keep = match ambiguous(&h.name) {
                    Some(0) => Some(i) == *t,
                    Some(_) => Some(i) == *e,
                    None => true,
                };
                if keep {
                    r.extend_from_slice(&line(h));
                }
            }
            r.extend_from_slice(b"\r\n");
            r.extend_from_slice(body);
            out.push(r);
        }
    }
    Some(out)
}
