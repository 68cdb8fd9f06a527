//! The message's content, as our own checks read it: its size, banned
//! attachments, and the score of the rules that fired, which refuses,
//! defers or tags it.

use crate::config::{ContentSettings, UnreadableArchives};
use crate::content::Scan;
use crate::reply;
use crate::verdict::{Tag, Verdict};

/// Header and body bytes seen so far, against `content.max_message_size`.
pub fn size(seen: usize, c: &ContentSettings) -> Verdict {
    if seen > c.max_message_size {
        Verdict::Refuse(reply::message_too_big())
    } else {
        Verdict::Continue
    }
}

/// An attachment whose extension is banned refuses the message; so does
/// one the walk could not finish (past a cap): what it did not see is not
/// clean. An archive it could not read whole refuses it too, unless
/// `attachments.unreadable_archives: accept`.
pub fn attachments(scan: &Scan, c: &ContentSettings) -> Verdict {
    match (&scan.banned, scan.incomplete, &scan.unreadable) {
        (Some(ext), ..) => Verdict::Refuse(reply::banned_attachment(ext)),
        (None, Some(cap), _) => Verdict::Refuse(reply::unchecked_content(cap)),
        (None, None, Some(why)) if c.unreadable_archives == UnreadableArchives::Reject => {
            Verdict::Refuse(reply::unreadable_archive(why))
        }
        _ => Verdict::Continue,
    }
}

/// The score against the thresholds: refused at `reject_score`, deferred at
/// `tempfail_score`; the tags are those a message at `tag_score` or above
/// carries when it leaves (monitor mode lets a refused one leave, tagged).
pub fn score(scan: &Scan, c: &ContentSettings) -> (Verdict, Vec<Tag>) {
    let score = scan.score();
    let verdict = if score >= c.reject_score {
        Verdict::Refuse(reply::spam_rejected(reply::Rule::ContentScore, score))
    } else if score >= c.tempfail_score {
        Verdict::Refuse(reply::spam_deferred(reply::Rule::ContentScore, score))
    } else {
        Verdict::Continue
    };
    let tags = if score >= c.tag_score {
        vec![
            ("X-Egress-Score", format!("{score:.1}")),
            ("X-Egress-Rules", scan.rules_text()),
        ]
    } else {
        Vec::new()
    };
    (verdict, tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ContentSettings {
        let config = crate::config::Config::parse(
            std::path::Path::new("t.yaml"),
            "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\ncontent: { max_message_size: 1KB, reject_score: 10, tempfail_score: 6, tag_score: 3 }\n",
        )
        .unwrap();
        config.content
    }

    fn scan(weights: &[f64]) -> Scan {
        Scan {
            banned: None,
            incomplete: None,
            unreadable: None,
            rules: weights
                .iter()
                .enumerate()
                .map(|(i, w)| (format!("R{i}"), *w))
                .collect(),
        }
    }

    fn reply(v: &Verdict) -> String {
        match v {
            Verdict::Refuse(r) => r.reply.to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn thresholds_refuse_defer_and_tag() {
        let c = settings();
        let (v, tags) = score(&scan(&[1.0]), &c);
        assert_eq!((v, tags.len()), (Verdict::Continue, 0));
        let (v, tags) = score(&scan(&[2.0, 1.5]), &c);
        assert_eq!(v, Verdict::Continue);
        assert_eq!(tags[0], ("X-Egress-Score", "3.5".to_string()));
        assert_eq!(tags[1], ("X-Egress-Rules", "R0=2, R1=1.5".to_string()));
        let (v, tags) = score(&scan(&[6.0]), &c);
        assert!(reply(&v).starts_with("451 4.7.1"), "{}", reply(&v));
        assert_eq!(tags.len(), 2);
        let (v, _) = score(&scan(&[9.0, 1.0]), &c);
        assert!(reply(&v).starts_with("550 5.7.1"), "{}", reply(&v));
    }

    #[test]
    fn size_and_banned_attachments() {
        let c = settings();
        assert_eq!(size(c.max_message_size, &c), Verdict::Continue);
        assert!(reply(&size(c.max_message_size + 1, &c)).starts_with("552 5.3.4"));
        let mut s = scan(&[]);
        assert_eq!(attachments(&s, &c), Verdict::Continue);
        s.banned = Some("exe".into());
        assert!(
            reply(&attachments(&s, &c)).contains(".exe"),
            "{}",
            reply(&attachments(&s, &c))
        );
    }
}
