//! The ways an attacker gets a banned attachment past the content checks,
//! one row each: every one must be refused, with the extension it hid or
//! the cap it ran into; and the honest look-alikes must pass.

use crate::common;

use egress_milter::config::Config;
use egress_milter::content::scan;
use std::io::Write as _;
use std::path::Path;

fn settings() -> egress_milter::config::ContentSettings {
    Config::parse(
        Path::new("t.yaml"),
        "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\n",
    )
    .unwrap()
    .content
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    let t = base64::engine::general_purpose::STANDARD.encode(data);
    t.as_bytes()
        .chunks(76)
        .map(|l| String::from_utf8_lossy(l).into_owned() + "\r\n")
        .collect()
}

/// A ZIP of these (name, content) entries, deflated or stored.
fn zip_of(entries: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut out);
        let method = if deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, data) in entries {
            z.start_file(*name, opts).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }
    out.into_inner()
}

/// A ZIP whose local header names `local` while its central directory
/// names `central` (same length): streaming extractors use the first.
fn zip_lying(local: &str, central: &str) -> Vec<u8> {
    assert_eq!(local.len(), central.len());
    let mut z = zip_of(&[(central, b"MZ payload")], false);
    let at = z.windows(4).position(|w| w == b"PK\x03\x04").unwrap() + 30;
    z[at..at + local.len()].copy_from_slice(local.as_bytes());
    z
}

fn message(part_headers: &str, body: &str) -> String {
    format!(
        "From: a@example.com\r\nSubject: docs\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\n{part_headers}\r\n\r\n{body}\r\n--b--\r\n"
    )
}

fn attachment(disposition: &str, data: &[u8]) -> String {
    message(
        &format!("Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: {disposition}"),
        &b64(data),
    )
}

fn zip_attachment(data: &[u8]) -> String {
    attachment("attachment; filename=\"docs.zip\"", data)
}

#[test]
fn every_evasion_is_caught() {
    let s = settings();
    let nested = zip_of(
        &[("inner.zip", &zip_of(&[("evil.exe", b"MZ")], true))],
        true,
    );
    // Deflated, so that no inner name shows through the outer bytes.
    let deep = {
        let mut z = zip_of(&[("evil.exe", b"MZ")], true);
        for i in 0..4 {
            z = zip_of(&[(&format!("level{i}.zip"), &z)], true);
        }
        z
    };
    let many: Vec<(String, Vec<u8>)> = (0..10_001)
        .map(|i| (format!("f{i}.txt"), Vec::new()))
        .chain(std::iter::once(("evil.exe".to_string(), b"MZ".to_vec())))
        .collect();
    let many: Vec<(&str, &[u8])> = many
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let noisy = {
        // Base64 with characters outside its alphabet: decoders skip them.
        let clean = b64(&zip_of(&[("evil.exe", b"MZ")], false));
        let mut noisy = String::new();
        for (i, c) in clean.chars().enumerate() {
            noisy.push(c);
            if i % 17 == 3 {
                noisy.push('!');
            }
        }
        noisy
    };
    // A self-extracting archive: a program stub, then the ZIP (unzip finds
    // its end-of-central-directory record and lists it).
    let sfx = {
        let mut b = b"MZ\x90\x00 self-extracting stub ".repeat(40);
        b.extend(zip_of(&[("evil.exe", b"MZ")], true));
        b
    };
    // An inner archive past the inner-archive cap (deflated: small outside).
    let large_inner = {
        let filler = vec![0u8; (egress_milter::content::names::MAX_INNER_ZIP + 1) as usize];
        let inner = zip_of(&[("evil.exe", b"MZ"), ("pad.bin", &filler)], false);
        zip_of(&[("inner.zip", &inner)], true)
    };
    let docs = zip_of(&[("secret.pdf", b"%PDF-1.7 payload")], false);
    let encrypted = common::zip_patched(docs.clone(), 1, 0);
    let lzma = common::zip_patched(docs.clone(), 0, 14);
    let zipped_exe = b64(&zip_of(&[("evil.exe", b"MZ")], false));
    let inner_exe = "--in\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"evil.exe\"\r\n\r\nMZ\r\n--in--";
    let mut attached = String::from("From: a@example.com\r\nSubject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhi\r\n");
    for _ in 0..10 {
        attached = message("Content-Type: message/rfc822", &attached);
    }
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "filename and filename* disagree (exe in the RFC 2231 one)",
            attachment("attachment; filename=\"report.pdf\"; filename*=UTF-8''report.exe", b"MZ"),
            "exe",
        ),
        (
            "filename* and filename disagree (exe in the plain one)",
            attachment("attachment; filename*=UTF-8''report.pdf; filename=\"report.exe\"", b"MZ"),
            "exe",
        ),
        (
            "two filename= parameters, the last an exe",
            attachment("attachment; filename=\"a.pdf\"; filename=\"b.exe\"", b"MZ"),
            "exe",
        ),
        (
            "a NUL after the extension",
            attachment("attachment; filename*=UTF-8''evil.exe%00", b"MZ"),
            "exe",
        ),
        (
            "a NUL before a harmless extension",
            attachment("attachment; filename*=UTF-8''evil.exe%00.txt", b"MZ"),
            "exe",
        ),
        (
            "a ZIP whose local header lies about the name",
            zip_attachment(&zip_lying("evil.exe", "note.txt")),
            "exe",
        ),
        ("a ZIP inside a ZIP (deflated)", zip_attachment(&nested), "exe"),
        ("base64 with noise around a ZIP", message("Content-Type: application/zip; name=\"d.zip\"\r\nContent-Transfer-Encoding: base64", &noisy), "exe"),
        (
            "a uuencoded exe in plain text",
            "From: a@example.com\r\nSubject: x\r\nContent-Type: text/plain\r\n\r\nHere:\r\nbegin 644 invoice.exe\r\nM35H`\r\n`\r\nend\r\n".to_string(),
            "exe",
        ),
        (
            "a base64 uuencoded exe in plain text (uuencode -m)",
            "From: a@example.com\r\nSubject: x\r\n\r\nHere:\r\nbegin-base64 644 invoice.exe\r\nTVo=\r\n====\r\n".to_string(),
            "exe",
        ),
        (
            "a yEnc-encoded exe in plain text",
            "From: a@example.com\r\nSubject: x\r\n\r\n=ybegin line=128 size=2 name=invoice.exe\r\nwx\r\n=yend size=2\r\n".to_string(),
            "exe",
        ),
        (
            "a control character inside the name (stripped by the client)",
            attachment("attachment; filename=\"ev\u{1}il.exe\"", b"MZ"),
            "exe",
        ),
        (
            "a control character inside the extension (stripped by the client)",
            attachment("attachment; filename*=UTF-8''evil.ex%01e", b"MZ"),
            "exe",
        ),
        ("a self-extracting archive", zip_attachment(&sfx), "exe"),
        (
            "two Content-Transfer-Encoding headers, base64 first",
            message("Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Transfer-Encoding: 7bit", &zipped_exe),
            "exe",
        ),
        (
            "two Content-Transfer-Encoding headers, base64 last",
            message("Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: base64", &zipped_exe),
            "exe",
        ),
        (
            "two Content-Type headers, multipart first",
            message("Content-Type: multipart/mixed; boundary=\"in\"\r\nContent-Type: text/plain", inner_exe),
            "exe",
        ),
        (
            "two Content-Type headers, multipart last",
            message("Content-Type: text/plain\r\nContent-Type: multipart/mixed; boundary=\"in\"", inner_exe),
            "exe",
        ),
        (
            "an inner archive larger than the inner-archive cap",
            zip_attachment(&large_inner),
            "cap zip_inner_size",
        ),
        (
            "an encrypted entry",
            zip_attachment(&encrypted),
            "unreadable encrypted entry: secret.pdf",
        ),
        (
            "an entry compressed with LZMA",
            zip_attachment(&lzma),
            "unreadable lzma compression: secret.pdf",
        ),
        ("ZIPs nested past the depth cap", zip_attachment(&deep), "cap zip_depth"),
        ("more ZIP entries than the cap, the exe last", zip_attachment(&zip_of(&many, false)), "cap zip_entries"),
        ("attached messages nested past the walk's depth", attached, "cap mime_depth"),
    ];
    for (what, raw, want) in cases {
        let found = scan(raw.as_bytes(), &s);
        let got = match (&found.banned, found.incomplete, &found.unreadable) {
            (Some(e), ..) => e.clone(),
            (None, Some(cap), _) => format!("cap {cap}"),
            (None, None, Some(why)) => format!("unreadable {why}"),
            (None, None, None) => "clean".into(),
        };
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn honest_look_alikes_pass() {
    let s = settings();
    let cases = vec![
        (
            "a PDF",
            attachment("attachment; filename=\"report.pdf\"", b"%PDF-1.7"),
        ),
        (
            "the same name twice",
            attachment(
                "attachment; filename=\"r.pdf\"; filename*=UTF-8''r.pdf",
                b"%PDF",
            ),
        ),
        (
            "a ZIP of documents",
            zip_attachment(&zip_of(&[("a.pdf", b"%PDF"), ("b.docx", b"PK")], true)),
        ),
        (
            "a ZIP that holds a large document",
            zip_attachment(&zip_of(
                &[("scan.pdf", &vec![b'%'; (egress_milter::content::names::MAX_INNER_ZIP + 1) as usize])],
                true,
            )),
        ),
        (
            "the same Content-Type twice",
            message("Content-Type: application/pdf\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"r.pdf\"", "%PDF"),
        ),
        (
            "text that mentions begin",
            "From: a@example.com\r\nSubject: x\r\n\r\nbegin 10 minutes late\r\n".to_string(),
        ),
    ];
    for (what, raw) in cases {
        let found = scan(raw.as_bytes(), &s);
        assert_eq!(
            (found.banned, found.incomplete, found.unreadable),
            (None, None, None),
            "{what}"
        );
    }
}

#[test]
fn rules_see_what_the_reader_sees() {
    let mut s = Config::parse(
        Path::new("t.yaml"),
        "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\ncontent: { custom: [{ name: wire, body: \"(?i)wire transfer\", score: 5 }] }\n",
    )
    .unwrap()
    .content;
    s.banned_extensions.clear();
    let html = |body: &str| {
        format!("From: a@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n<html><body>{body}</body></html>\r\n")
    };
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "markup inside the phrase",
            "Please send a wire <b>transfer</b> today",
            &["wire"],
        ),
        ("an entity for the space", "wire&nbsp;transfer", &["wire"]),
        (
            "a line break in the markup",
            "wire\r\n  <span>transfer</span>",
            &["wire"],
        ),
        (
            "a link whose text is written with references",
            r#"<a href="http://evil.example/">www&#46;paypal&#46;com</a>"#,
            &["link_mismatch"],
        ),
        (
            "a look-alike under a public suffix",
            r#"<a href="https://login.evil.co.uk/">www.barclays.co.uk</a>"#,
            &["link_mismatch"],
        ),
        (
            "an href written with references",
            r#"<a href="http&#58;//evil.example/">https://www.paypal.com/</a>"#,
            &["link_mismatch"],
        ),
    ];
    for (what, body, want) in cases {
        let found = scan(html(body).as_bytes(), &s);
        for rule in *want {
            assert!(
                found.rules.iter().any(|(n, _)| n == rule),
                "{what}: {rule} did not fire ({:?})",
                found.rules
            );
        }
    }
    // An honest page fires neither.
    let found = scan(
        html(r#"Your <a href="https://mail.example.co.uk/">www.example.co.uk</a> statement; a transfer by wire is not offered"#).as_bytes(),
        &s,
    );
    assert!(
        !found
            .rules
            .iter()
            .any(|(n, _)| n == "wire" || n == "link_mismatch"),
        "{:?}",
        found.rules
    );
}
