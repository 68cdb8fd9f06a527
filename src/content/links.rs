//! The "link that lies" rule: an anchor whose visible text shows one host
//! while its href goes to another (`<a href="http://evil.example/">
//! https://www.paypal.com/</a>`), the mark of phishing.

use regex::Regex;
use std::sync::LazyLock;

static ANCHOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?is)<a\s[^>]*?href\s*=\s*["']?\s*(https?://[^"'\s>]+)[^>]*>(.*?)</a\s*>"#)
        .expect("anchor regex")
});
static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)<[^>]*>").expect("tag regex"));
static HOST_IN_TEXT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,})(?:[/:?#]\S*)?\s*$")
        .expect("host regex")
});

fn host_of_url(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit('@').next()?.split(':').next()?;
    Some(host.to_ascii_lowercase())
}

/// The last two labels: enough to tell paypal.com from paypal.com.evil.net.
fn site(host: &str) -> String {
    let labels: Vec<&str> = host.trim_end_matches('.').rsplit('.').take(2).collect();
    labels.into_iter().rev().collect::<Vec<_>>().join(".")
}

/// True when some anchor's text is a URL or host name on another site than
/// its href.
pub fn mismatch(html: &str) -> bool {
    for cap in ANCHOR.captures_iter(html).take(10_000) {
        let (Some(href), Some(text)) = (cap.get(1), cap.get(2)) else {
            continue;
        };
        let text = TAG.replace_all(text.as_str(), "");
        let text = text.replace("&amp;", "&");
        let Some(shown) = HOST_IN_TEXT.captures(&text).and_then(|c| c.get(1)) else {
            continue;
        };
        let Some(target) = host_of_url(href.as_str()) else {
            continue;
        };
        if site(&shown.as_str().to_ascii_lowercase()) != site(&target) {
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
        assert!(mismatch(
            r#"<a href="http://evil.example/login">https://www.paypal.com/signin</a>"#
        ));
        assert!(mismatch(
            r#"<A HREF='https://paypal.com.evil.net/'><b>paypal.com</b></A>"#
        ));
        assert!(!mismatch(
            r#"<a href="https://www.paypal.com/x">paypal.com</a>"#
        ));
        assert!(!mismatch(
            r#"<a href="https://shop.example.com/?utm=1">Click here</a>"#
        ));
        assert!(!mismatch(
            r#"<a href="https://mail.example.com/">www.example.com</a>"#
        ));
        assert!(!mismatch("no links at all"));
    }
}
