//! A paused class's message while listed: held for review, or refused for
//! now with `451 4.7.1 Sending paused: <target> is listed on <list>`.

use crate::config::OnListed;
use crate::reply;
use crate::verdict::{Hold, Verdict};

pub fn verdict(action: OnListed, target: &str, list: &str) -> Verdict {
    match action {
        OnListed::Notify => Verdict::Continue,
        OnListed::Tempfail => Verdict::Refuse(reply::sending_paused(target, list)),
        OnListed::Hold => Verdict::Hold(Hold {
            rule: reply::Rule::Reputation,
            incident: "-".into(),
            reason: reply::paused_hold_reason(target, list),
            monitor: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_class_is_held_or_refused_for_now() {
        let Verdict::Refuse(r) = verdict(OnListed::Tempfail, "192.0.2.10", "zen.spamhaus.org")
        else {
            panic!("refused")
        };
        assert_eq!(
            r.reply.to_string(),
            "451 4.7.1 Sending paused: 192.0.2.10 is listed on zen.spamhaus.org"
        );
        assert!(matches!(
            verdict(OnListed::Hold, "a", "b"),
            Verdict::Hold(_)
        ));
        assert_eq!(verdict(OnListed::Notify, "a", "b"), Verdict::Continue);
    }
}
