//! The content rules on whole messages.

use super::*;

fn settings() -> ContentSettings {
    let c = crate::config::Config::parse(
        std::path::Path::new("t.yaml"),
        "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\n",
    )
    .unwrap();
    c.content
}

fn fired(raw: &str) -> Vec<String> {
    scan(raw.as_bytes(), &settings())
        .rules
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

#[test]
fn rules_fire_on_their_cases_only() {
    let head =
        "From: a@example.com\r\nDate: Mon, 23 Nov 2026 01:00:00 +0000\r\nMessage-ID: <1@x>\r\n";
    assert!(fired(&format!("{head}Subject: x\r\n\r\nhi\r\n")).is_empty());
    assert_eq!(
        fired("From: a@example.com\r\n\r\nhi\r\n"),
        ["missing_date", "missing_message_id"]
    );
    let broken = format!("{head}Content-Type: multipart/mixed; boundary=\"abc\"\r\n\r\n--xyz\r\n\r\nhi\r\n--xyz--\r\n");
    assert!(
        fired(&broken).contains(&"malformed_mime".to_string()),
        "{:?}",
        fired(&broken)
    );
    let no_boundary = format!("{head}Content-Type: multipart/mixed\r\n\r\nhi\r\n");
    assert!(fired(&no_boundary).contains(&"malformed_mime".to_string()));
    let many: Vec<String> = (0..51).map(|i| format!("u{i}@example.net")).collect();
    let m = format!("{head}To: {}\r\n\r\nhi\r\n", many.join(", "));
    assert_eq!(fired(&m), ["many_recipients"]);
    let m = format!("{head}To: {}\r\n\r\nhi\r\n", many[..50].join(", "));
    assert!(fired(&m).is_empty());
    let alt = format!("{head}Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--b--\r\n");
    assert!(fired(&alt).is_empty(), "{:?}", fired(&alt));
}

/// The headers-only scan of a plain message finds exactly what the full
/// walk finds, and steps aside for everything it cannot judge.
#[test]
fn plain_scan_agrees_with_the_walk() {
    let mut custom = settings();
    custom.custom.push(crate::config::CustomRule {
        name: "lottery".into(),
        subject: Some(regex::Regex::new("(?i)lottery").unwrap()),
        body: None,
        score: 5.0,
    });
    let many: Vec<String> = (0..60).map(|i| format!("u{i}@example.net")).collect();
    let head =
        "From: a@example.com\r\nDate: Mon, 23 Nov 2026 01:00:00 +0000\r\nMessage-ID: <1@x>\r\n";
    let plain = [
        format!("{head}Subject: x\r\n\r\nhi\r\n"),
        "From: a@example.com\r\n\r\nhi\r\n".to_string(),
        format!("{head}To: {}\r\n\r\nhi\r\n", many.join(", ")),
        format!("{head}Subject: You won the LOTTERY\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nhi\r\n"),
        format!("{head}Content-Type: TEXT/PLAIN\r\nContent-Transfer-Encoding: 7BIT\r\n\r\n<a href=\"http://evil.example\">http://bank.example</a>\r\n"),
        format!("{head}\r\n"),
    ];
    for m in &plain {
        for s in [settings(), custom.clone()] {
            let fast = scan_plain(m.as_bytes(), &s);
            assert_eq!(fast.as_ref(), Some(&scan_mime(m.as_bytes(), &s)), "{m:?}");
        }
    }
    // Not plain: the full walk decides.
    let other = [
        format!("{head}Content-Type: text/html\r\n\r\n<p>x</p>\r\n"),
        format!("{head}Content-Type: text/plain; name=\"a.exe\"\r\n\r\nx\r\n"),
        format!("{head}Content-Disposition: attachment; filename=a.exe\r\n\r\nx\r\n"),
        format!("{head}Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n"),
        format!("{head}Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n"),
        format!("{head}Content-Type: text\r\n\r\nx\r\n"),
        format!("{head}\r\nPK\x03\x04"),
    ];
    for m in &other {
        assert_eq!(scan_plain(m.as_bytes(), &settings()), None, "{m:?}");
    }
    // A rule on the body text needs the walk.
    let mut body_rule = settings();
    body_rule.custom.push(crate::config::CustomRule {
        name: "b".into(),
        subject: None,
        body: Some(regex::Regex::new("hi").unwrap()),
        score: 1.0,
    });
    assert_eq!(scan_plain(plain[0].as_bytes(), &body_rule), None);
    assert_eq!(
        scan(plain[0].as_bytes(), &body_rule).rules,
        [("b".to_string(), 1.0)]
    );
}

/// Broken MIME of every shape: the walk returns, whatever the input.
#[test]
fn never_panics_on_generated_mime() {
    let pieces = [
        "--b\r\n",
        "Content-Type: multipart/mixed; boundary=b\r\n",
        "Content-Type: message/rfc822\r\n",
        "\r\n",
        "Content-Disposition: attachment; filename*0*=x''%; filename*1=a.exe\r\n",
        "=?utf-8?B?====?=",
        "PK\x03\x04",
        "<a href=http://x.y>a.b</a>",
        "--b--\r\n",
        "Content-Transfer-Encoding: base64\r\n",
    ];
    let s = settings();
    let mut seed: u64 = 7;
    for _ in 0..3000 {
        let mut m = String::from("From: a@b.c\r\n");
        for _ in 0..12 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            m.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
        }
        let _ = scan(m.as_bytes(), &s);
    }
}

/// What sends a plain message to the full walk, anywhere in the body: a
/// control character or a lone CR (also past the first block the scan reads
/// at once), and what starts an encoded file.
#[test]
fn the_body_needs_the_walk_for_odd_bytes_and_encoded_files() {
    let pad = "plain words and more plain words\r\n".repeat(5);
    for (body, needs) in [
        ("Hello\r\n", false),
        ("Hello\tthere\r\n", false),
        ("a beginner begins\r\n", false),
        ("ends with begin", false),
        ("begin 644 x.exe\r\n", true),
        ("text\r\nbegin-base64 644 x.exe\r\n", true),
        ("=ybegin line=128 name=x.exe\r\n", true),
        ("nul\0here\r\n", true),
        ("del\x7fhere\r\n", true),
        ("escape\x1bhere\r\n", true),
        ("lone\rcr\r\n", true),
        ("ends with a lone cr\r", true),
        ("lone\nlf is fine\r\n", false),
    ] {
        for body in [body.to_string(), format!("{pad}{body}")] {
            assert_eq!(body_needs_walk(body.as_bytes()), needs, "{body:?}");
        }
    }
    assert!(body_needs_walk(b"PK\x03\x04 an archive"));
}
