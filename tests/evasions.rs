//! The ways an attacker gets a banned attachment past the content checks,
//! one row each: every one must be refused, with the extension it hid or
//! the cap it ran into; and the honest look-alikes must pass.

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
        ("ZIPs nested past the depth cap", zip_attachment(&deep), "cap zip_depth"),
        ("more ZIP entries than the cap, the exe last", zip_attachment(&zip_of(&many, false)), "cap zip_entries"),
        ("attached messages nested past the walk's depth", attached, "cap mime_depth"),
    ];
    for (what, raw, want) in cases {
        let found = scan(raw.as_bytes(), &s);
        let got = match (&found.banned, found.incomplete) {
            (Some(e), _) => e.clone(),
            (None, Some(cap)) => format!("cap {cap}"),
            (None, None) => "clean".into(),
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
            "text that mentions begin",
            "From: a@example.com\r\nSubject: x\r\n\r\nbegin 10 minutes late\r\n".to_string(),
        ),
    ];
    for (what, raw) in cases {
        let found = scan(raw.as_bytes(), &s);
        assert_eq!((found.banned, found.incomplete), (None, None), "{what}");
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
