//! rspamd's action, as our verdict: `reject` refuses the message, `soft
//! reject` and `greylist` defer it, `add header` and `rewrite subject` tag
//! it with the score and the symbols that fired.

use crate::content::rspamd::{Client, Envelope, Report};
use crate::reply;
use crate::verdict::{Backend, Tag, Verdict};

/// What rspamd's answer means for the message.
pub struct Judged {
    pub verdict: Verdict,
    /// The header fields a message that passes carries.
    pub tags: Vec<Tag>,
    /// rspamd's answer, for the logs (none when it could not answer).
    pub report: Option<Report>,
}

/// Asks rspamd and judges its answer; a failure to answer is a
/// [`Verdict::TempError`].
pub async fn check(client: &Client, message: bytes::Bytes, env: &Envelope<'_>) -> Judged {
    match client.check(message, env).await {
        Ok(report) => {
            let (verdict, tags) = judge(&report);
            Judged {
                verdict,
                tags,
                report: Some(report),
            }
        }
        Err(e) => Judged {
            verdict: Verdict::failed(Backend::Rspamd, format!("rspamd check failed: {e}")),
            tags: Vec::new(),
            report: None,
        },
    }
}

/// The verdict and tags of rspamd's action.
pub fn judge(report: &Report) -> (Verdict, Vec<Tag>) {
    let verdict = match report.action.as_str() {
        "reject" => Verdict::Refuse(reply::spam_rejected(reply::Rule::Rspamd, report.score)),
        "soft reject" | "greylist" => {
            Verdict::Refuse(reply::spam_deferred(reply::Rule::Rspamd, report.score))
        }
        _ => Verdict::Continue,
    };
    let tags = if matches!(report.action.as_str(), "add header" | "rewrite subject") {
        vec![
            ("X-Spam-Score", format!("{:.1}", report.score)),
            ("X-Spam-Symbols", report.symbols_text(20)),
        ]
    } else {
        Vec::new()
    };
    (verdict, tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(action: &str) -> Report {
        Report {
            action: action.into(),
            score: 7.25,
            symbols: vec![("BAYES_SPAM".into(), 5.0), ("R_DKIM_NA".into(), 0.0)],
        }
    }

    fn shown(v: &Verdict) -> String {
        match v {
            Verdict::Refuse(r) => format!("{} {}", r.rule, r.reply),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn each_action() {
        let (v, t) = judge(&report("reject"));
        assert_eq!(
            shown(&v),
            "rspamd 550 5.7.1 Message rejected as spam (score 7.2)"
        );
        assert!(t.is_empty());
        for deferring in ["soft reject", "greylist"] {
            let (v, t) = judge(&report(deferring));
            assert!(shown(&v).starts_with("rspamd 451 4.7.1"), "{}", shown(&v));
            assert!(t.is_empty());
        }
        for tagging in ["add header", "rewrite subject"] {
            let (v, t) = judge(&report(tagging));
            assert_eq!(v, Verdict::Continue);
            assert_eq!(
                t,
                vec![
                    ("X-Spam-Score", "7.2".to_string()),
                    (
                        "X-Spam-Symbols",
                        "BAYES_SPAM=5.0, R_DKIM_NA=0.0".to_string()
                    )
                ]
            );
        }
        let (v, t) = judge(&report("no action"));
        assert_eq!((v, t.len()), (Verdict::Continue, 0));
    }
}
