//! The "link that lies" rule: an anchor whose visible text shows one site
//! while its href goes to another (`<a href="http://evil.example/">
//! https://www.paypal.com/</a>`), the mark of phishing. Both sides are read
//! as a browser shows them (character references decoded: `&#46;`,
//! `&#x3a;`, `&period;`), and sites are compared by registrable domain
//! under the Public Suffix List, so that `www.barclays.co.uk` shown over
//! `login.evil.co.uk` is two sites, and `mail.example.co.uk` over
//! `www.example.co.uk` one.

use regex::Regex;
use std::sync::LazyLock;

static ANCHOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?is)<a\s[^>]*?href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))[^>]*>(.*?)</a\s*>"#)
        .expect("anchor regex")
});
static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)<[^>]*>").expect("tag regex"));
static HOST_IN_TEXT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,})(?:[/:?#]\S*)?\s*$")
        .expect("host regex")
});

/// Text as a reader sees it: tags dropped, character references decoded.
pub fn visible(html: &str) -> String {
    let text = TAG.replace_all(html, " ");
    html_escape::decode_html_entities(&text).into_owned()
}

fn host_of_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let host = rest.split(['/', '?', '#', '\\']).next()?;
    let host = host.rsplit('@').next()?.split(':').next()?;
    Some(host.to_ascii_lowercase())
}

/// The registrable domain (`example.co.uk`), by the Public Suffix List; a
/// name with no known suffix is its own site.
fn site(host: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match psl::domain_str(&host) {
        Some(d) => d.to_string(),
        None => host,
    }
}

/// True when some anchor's text is a URL or host name on another site than
/// its href.
pub fn mismatch(html: &str) -> bool {
    for cap in ANCHOR.captures_iter(html).take(10_000) {
        let href = cap.get(1).or(cap.get(2)).or(cap.get(3));
        let (Some(href), Some(text)) = (href, cap.get(4)) else {
            continue;
        };
        let href = html_escape::decode_html_entities(href.as_str());
        let text = visible(text.as_str());
        let Some(shown) = HOST_IN_TEXT.captures(&text).and_then(|c| c.get(1)) else {
            continue;
        };
        let Some(target) = host_of_url(&href) else {
            continue;
        };
        if site(shown.as_str()) != site(&target) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lying_links() {
        let lying = [
            r#"<a href="http://evil.example/login">https://www.paypal.com/signin</a>"#,
            r#"<A HREF='https://paypal.com.evil.net/'><b>paypal.com</b></A>"#,
            // Character references in the text, or in the href.
            r#"<a href="http://evil.example/">www&#46;paypal&#46;com</a>"#,
            r#"<a href="http&#58;//evil.example/">https&#x3a;//www.paypal.com/</a>"#,
            r#"<a href=http://evil.example/>www&period;paypal&period;com</a>"#,
            // Same last two labels, other registrable domains.
            r#"<a href="https://login.evil.co.uk/">www.barclays.co.uk</a>"#,
        ];
        for html in lying {
            assert!(mismatch(html), "{html}");
        }
        let honest = [
            r#"<a href="https://www.paypal.com/x">paypal.com</a>"#,
            r#"<a href="https://shop.example.com/?utm=1">Click here</a>"#,
            r#"<a href="https://mail.example.com/">www.example.com</a>"#,
            r#"<a href="https://mail.example.co.uk/">www.example.co.uk</a>"#,
            r#"<a href="https://www.example&#46;com/">example.com</a>"#,
            "no links at all",
        ];
        for html in honest {
            assert!(!mismatch(html), "{html}");
        }
    }

    #[test]
    fn text_as_read() {
        assert_eq!(
            visible("wire <b>transfer</b> &amp; more")
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["wire", "transfer", "&", "more"]
        );
    }
}
