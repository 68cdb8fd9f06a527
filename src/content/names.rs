//! Every name under which a part could be saved or opened: each
//! `filename`/`name` parameter (a client may take the first, another the
//! last, another the RFC 2231 one), the names a ZIP lists in its central
//! directory and in its local headers (streaming extractors read those),
//! inside nested archives too, and uuencoded blocks in text (which mail
//! clients show as attachments). What is past a cap is reported, never
//! taken as clean.

use std::io::{Cursor, Read};

/// ZIP entries listed per archive at most.
pub const MAX_ZIP_ENTRIES: usize = 10_000;
/// Archives inside archives are opened this deep.
pub const MAX_ZIP_DEPTH: usize = 3;
/// An inner archive larger than this (uncompressed) is not opened, and the
/// message is refused as unchecked (`zip_inner_size`): what it holds was
/// not seen.
pub const MAX_INNER_ZIP: u64 = 16 << 20;
/// The end-of-central-directory record is this close to the end of a ZIP
/// at most: its 22 bytes and a comment of up to 65,535 (APPNOTE 4.3.16).
/// unzip looks for it there, so a self-extracting archive (a program stub
/// followed by a ZIP) is an archive too.
const EOCD_SEARCH: usize = 22 + 65_535;

/// Names found, the cap that stopped the listing, if any, and why an
/// archive could not be read whole (an encrypted entry, a compression
/// method the reader does not have), if one could not.
#[derive(Debug, Default)]
pub struct Names {
    pub names: Vec<String>,
    pub incomplete: Option<&'static str>,
    pub unreadable: Option<String>,
}

/// The extensions a mail client could act on, one per reading of the
/// name: after the last dot, lower case, with trailing dots, spaces and
/// invisible format characters (such as U+202E, which reverses the
/// displayed name) removed, as Windows does. A control character inside the
/// name is read every way a client might: the name cut there (`evil.exe\0.txt`
/// is saved as `evil.exe` by the APIs that end a name at a NUL), the
/// character stripped (`ev\x01il.exe` shown as `evil.exe`), or replaced
/// (`evil.ex_e`); each reading is judged.
pub fn extensions(name: &str) -> Vec<String> {
    let mut readings = vec![name
        .split(|c: char| c.is_control())
        .next()
        .unwrap_or("")
        .to_string()];
    if name.chars().any(char::is_control) {
        readings.push(name.chars().filter(|c| !c.is_control()).collect());
        readings.push(
            name.chars()
                .map(|c| if c.is_control() { '_' } else { c })
                .collect(),
        );
    }
    let mut out: Vec<String> = Vec::with_capacity(readings.len());
    for r in readings.iter().filter_map(|r| extension_of(r)) {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// The extension of a name without control characters (see
/// [`extensions`]).
fn extension_of(name: &str) -> Option<String> {
    let cleaned: String = name
        .chars()
        .filter(|c| !matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'))
        .collect();
    let cleaned = cleaned.trim_end_matches(['.', ' ', '\t']);
    let base = cleaned.rsplit(['/', '\\']).next().unwrap_or(cleaned);
    let (_, ext) = base.rsplit_once('.')?;
    (!ext.is_empty()).then(|| ext.to_lowercase())
}

/// Whether bytes are a ZIP archive as unzip finds one: a local header at
/// the start, or an end-of-central-directory record near the end (a
/// self-extracting archive starts with a program, not with `PK`).
pub fn is_zip(bytes: &[u8]) -> bool {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return true;
    }
    let tail = &bytes[bytes.len().saturating_sub(EOCD_SEARCH)..];
    find(tail, b"PK\x05\x06").is_some()
}

/// The `filename` and `name` parameters of a raw Content-Type or
/// Content-Disposition value, every one of them, with RFC 2231 values
/// (`filename*=UTF-8''x.exe`, continuations joined) percent-decoded.
pub fn parameters(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut continued: Vec<(String, usize, String)> = Vec::new();
    for param in split_params(raw).into_iter().skip(1) {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        let (base, rest) = key.split_once('*').unwrap_or((key.as_str(), ""));
        if base != "filename" && base != "name" {
            continue;
        }
        let extended = rest.ends_with('*') || rest.is_empty() && key.ends_with('*');
        let value = if extended {
            percent_decode(value.trim_matches('"').splitn(3, '\'').last().unwrap_or(""))
        } else {
            unquote(value)
        };
        // `name*0`, `name*1*`: continuations, joined below.
        let index = rest.trim_end_matches('*');
        match index.parse::<usize>() {
            Ok(i) => continued.push((base.to_string(), i, value)),
            Err(_) => out.push(value),
        }
    }
    continued.sort();
    let mut joined: Vec<(String, String)> = Vec::new();
    for (base, _, v) in continued {
        match joined.iter_mut().find(|(b, _)| *b == base) {
            Some((_, s)) => s.push_str(&v),
            None => joined.push((base, v)),
        }
    }
    out.extend(joined.into_iter().map(|(_, v)| v));
    out
}

/// Splits a header value on `;` outside quotes.
fn split_params(raw: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut escaped = false;
    for c in raw.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_string(),
    }
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Base64 as decoders read it (RFC 2045 §6.8): characters outside the
/// alphabet are ignored, not an error.
pub fn lenient_base64(body: &[u8]) -> Vec<u8> {
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        .collect();
    use base64::Engine as _;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    // A stray last character (never a whole byte) is dropped.
    let whole = if clean.len() % 4 == 1 {
        clean.len() - 1
    } else {
        clean.len()
    };
    engine.decode(&clean[..whole]).unwrap_or_default()
}

/// The names of files encoded in a text, which mail clients and news
/// readers show as attachments: `begin MODE NAME` (uuencode),
/// `begin-base64 MODE NAME` (uuencode -m), and `=ybegin ... name=NAME`
/// (yEnc, whose name runs to the end of the line).
pub fn uuencoded(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            if let Some(rest) = l.strip_prefix("=ybegin ") {
                let (_, name) = rest.split_once("name=")?;
                return Some(name.trim().to_string());
            }
            let rest = l
                .strip_prefix("begin ")
                .or_else(|| l.strip_prefix("begin-base64 "))?;
            let (mode, name) = rest.split_once(' ')?;
            (mode.len() >= 3 && mode.len() <= 4 && mode.bytes().all(|c| (b'0'..=b'7').contains(&c)))
                .then(|| name.trim().to_string())
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// The names a ZIP archive lists, if the bytes are one: its central
/// directory, its local headers, and the archives inside it.
pub fn zip(bytes: &[u8]) -> Names {
    let mut out = Names::default();
    zip_into(bytes, 0, &mut out);
    out
}

fn zip_into(bytes: &[u8], depth: usize, out: &mut Names) {
    if !is_zip(bytes) {
        return;
    }
    // Local file headers: signature, then the name's length at 26, the
    // extra field's at 28, the name at 30.
    let mut at = 0;
    let mut local = 0;
    while let Some(i) = find(&bytes[at..], b"PK\x03\x04") {
        let h = at + i;
        let Some(head) = bytes.get(h..h + 30) else {
            break;
        };
        let n = u16::from_le_bytes([head[26], head[27]]) as usize;
        if let Some(name) = bytes.get(h + 30..h + 30 + n) {
            out.names.push(String::from_utf8_lossy(name).into_owned());
        }
        local += 1;
        if local > MAX_ZIP_ENTRIES {
            out.incomplete = Some("zip_entries");
            break;
        }
        at = h + 4;
    }
    let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        return;
    };
    if archive.len() > MAX_ZIP_ENTRIES {
        out.incomplete = Some("zip_entries");
    }
    let count = archive.len().min(MAX_ZIP_ENTRIES);
    for i in 0..count {
        // The entry as stored (neither inflated nor decrypted): its name,
        // and whether its content can be read at all.
        let (name, size, why) = match archive.by_index_raw(i) {
            Ok(raw) => (raw.name().to_string(), raw.size(), unreadable(&raw)),
            Err(e) => {
                out.unreadable.get_or_insert(format!("entry {i}: {e}"));
                continue;
            }
        };
        if let Some(why) = why {
            out.unreadable.get_or_insert(format!("{why}: {name}"));
            out.names.push(name);
            continue;
        }
        let nested = name.to_ascii_lowercase().ends_with(".zip");
        out.names.push(name.clone());
        if !nested && size < 4 {
            continue;
        }
        if size > MAX_INNER_ZIP {
            // Too large to open here: whether it is an archive, and what
            // it holds, is unknown.
            if nested || starts_like_zip(&mut archive, i) {
                out.incomplete.get_or_insert("zip_inner_size");
            }
            continue;
        }
        let Ok(mut entry) = archive.by_index(i) else {
            out.unreadable
                .get_or_insert(format!("unreadable entry: {name}"));
            continue;
        };
        let mut inner = Vec::new();
        if entry
            .by_ref()
            .take(MAX_INNER_ZIP)
            .read_to_end(&mut inner)
            .is_err()
        {
            out.unreadable
                .get_or_insert(format!("corrupt entry: {name}"));
            continue;
        }
        if is_zip(&inner) {
            if depth + 1 >= MAX_ZIP_DEPTH {
                out.incomplete = Some("zip_depth");
            } else {
                zip_into(&inner, depth + 1, out);
            }
        }
    }
}

/// Why an entry's content cannot be read here: encrypted (ZipCrypto or
/// AES), or compressed by a method other than stored and deflate.
fn unreadable<R: Read>(entry: &zip::read::ZipFile<'_, R>) -> Option<String> {
    if entry.encrypted() {
        return Some("encrypted entry".into());
    }
    let method = entry.compression();
    if matches!(
        method,
        zip::CompressionMethod::Stored | zip::CompressionMethod::Deflated
    ) {
        return None;
    }
    Some(format!("{} compression", method_name(method)))
}

/// Whether an entry too large to open starts like a ZIP (its first bytes,
/// inflated as far as that).
fn starts_like_zip<R: Read + std::io::Seek>(archive: &mut zip::ZipArchive<R>, i: usize) -> bool {
    let Ok(entry) = archive.by_index(i) else {
        return true;
    };
    let mut head = Vec::new();
    entry.take(4).read_to_end(&mut head).is_err() || head.starts_with(b"PK")
}

/// A compression method's name (APPNOTE 4.4.5), for the reply.
fn method_name(m: zip::CompressionMethod) -> String {
    use zip::CompressionMethod as M;
    let known = [
        (M::SHRINK, "shrink"),
        (M::IMPLODE, "implode"),
        (M::DEFLATE64, "deflate64"),
        (M::PKWARE_IMPLODE, "pkware implode"),
        (M::BZIP2, "bzip2"),
        (M::LZMA, "lzma"),
        (M::ZSTD, "zstd"),
        (M::ZSTD_DEPRECATED, "zstd"),
        (M::XZ, "xz"),
        (M::PPMD, "ppmd"),
        (M::AES, "aes"),
    ];
    match known.iter().find(|(k, _)| *k == m) {
        Some((_, name)) => (*name).to_string(),
        None if [M::REDUCE_1, M::REDUCE_2, M::REDUCE_3, M::REDUCE_4].contains(&m) => {
            "reduce".into()
        }
        None => format!("{m}").to_lowercase(),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_as_clients_see_them() {
        let cases = [
            ("invoice.pdf.exe", Some("exe")),
            ("INVOICE.EXE", Some("exe")),
            ("virus.exe.", Some("exe")),
            ("virus.exe  ", Some("exe")),
            ("invoice\u{202e}fdp.exe", Some("exe")),
            ("report.exe\u{200b}", Some("exe")),
            ("dir/evil.scr", Some("scr")),
            ("noext", None),
            ("trailing.", None),
            ("archive.tar.gz", Some("gz")),
        ];
        for (name, want) in cases {
            assert_eq!(
                extensions(name).first().map(String::as_str),
                want,
                "{name:?}"
            );
        }
        // A control character inside a name: every reading a client could
        // make (cut there, stripped, replaced).
        assert_eq!(extensions("ev\u{1}il.exe"), ["exe"]);
        assert_eq!(extensions("evil.ex\u{1}e"), ["ex", "exe", "ex_e"]);
        assert_eq!(extensions("evil.exe\0.txt"), ["exe", "txt"]);
    }

    #[test]
    fn every_parameter() {
        assert_eq!(
            parameters("attachment; filename=\"report.pdf\"; filename*=UTF-8''report.exe"),
            ["report.pdf", "report.exe"]
        );
        assert_eq!(
            parameters("attachment; filename=a.pdf; filename=b.exe"),
            ["a.pdf", "b.exe"]
        );
        assert_eq!(
            parameters("application/octet-stream; name*0=\"ev\"; name*1=\"il.exe\""),
            ["evil.exe"]
        );
        assert_eq!(
            parameters("attachment; filename*=UTF-8''evil.exe%00"),
            ["evil.exe\0"]
        );
        assert_eq!(
            parameters("text/plain; charset=\"x;name=y.exe\""),
            Vec::<String>::new()
        );
    }

    #[test]
    fn base64_with_noise_and_uuencode() {
        assert_eq!(
            lenient_base64(b"UE\x01sD!!B\r\nAUA=="),
            b"PK\x03\x04\x05\x00"
        );
        assert_eq!(
            uuencoded("Hi\nbegin 644 invoice.exe\nM...\nend\n"),
            ["invoice.exe"]
        );
        assert!(uuencoded("begin the meeting at 10\n").is_empty());
        assert_eq!(
            uuencoded("begin-base64 644 a.exe\nTVo=\n====\n=ybegin line=128 size=2 name=b .exe\n"),
            ["a.exe", "b .exe"]
        );
    }
}
