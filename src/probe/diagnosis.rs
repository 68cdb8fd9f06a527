//! What a probe's mismatches mean for the gateway as a whole: an open
//! relay, a milter that was never consulted, one that is down while the
//! MTA accepts without it, or MTA restrictions that answer first.

use super::{Outcome, Said};
use crate::config::Listen;
use std::time::Duration;

/// Whether the milter answers at its configured address, seen from here.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum MilterReach {
    Answers,
    Refused,
    /// Not on this host, or no answer in time: can't tell from here.
    Unknown,
}

/// Tries a connection to the milter's socket (and closes it at once).
pub async fn reach(listen: &Listen, timeout: Duration) -> MilterReach {
    let attempt = async {
        match listen {
            Listen::Inet(a) => tokio::net::TcpStream::connect(a.as_str()).await.map(drop),
            Listen::Unix(p) => tokio::net::UnixStream::connect(p).await.map(drop),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => MilterReach::Answers,
        Ok(Err(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            MilterReach::Refused
        }
        _ => MilterReach::Unknown,
    }
}

/// Postfix's and Sendmail's reply when a milter can't be reached and the
/// default action is tempfail.
pub(super) fn milter_unreachable_reply(r: &str) -> bool {
    r.contains("Service unavailable") || r.contains("try again later")
}

/// Counts over every step of every path.
#[derive(Default)]
struct Tally {
    /// Predicted refusals that the gateway refused with our exact reply.
    milter_refused: usize,
    /// Predicted refusals the gateway accepted.
    accepted_refusals: usize,
    /// Of those, relay recipients.
    relayed: Vec<String>,
    /// Refused by the MTA's own rule where the policy refuses too.
    mta_first: usize,
    /// Answered with the MTA's milter-unreachable tempfail.
    unreachable: usize,
    /// Refused where the policy accepts (not by the tempfail above).
    refused_accepts: usize,
}

fn tally(outcomes: &[Outcome]) -> Tally {
    let mut t = Tally::default();
    for o in outcomes {
        let Ok(got) = &o.got else { continue };
        let mut pairs: Vec<(Option<&Said>, Option<&Said>, Option<&str>)> =
            vec![(o.expected.mail.as_ref(), got.mail.as_ref(), None)];
        for ((r, w), (_, g)) in o.expected.rcpts.iter().zip(&got.rcpts) {
            pairs.push((Some(w), Some(g), Some(r)));
        }
        pairs.push((o.expected.data.as_ref(), got.data.as_ref(), None));
        for (want, got, rcpt) in pairs {
            let (Some(want), Some(got)) = (want, got) else {
                continue;
            };
            match (want, got) {
                (Said::Refuse(w), Said::Refuse(g)) if w == g => t.milter_refused += 1,
                (_, Said::Refuse(g)) if milter_unreachable_reply(g) => t.unreachable += 1,
                (Said::Refuse(_), Said::Refuse(_)) => t.mta_first += 1,
                (Said::Refuse(_), Said::Accept) => {
                    t.accepted_refusals += 1;
                    if let (Some(r), true) = (rcpt, o.path.relay) {
                        t.relayed.push(r.to_string());
                    }
                }
                (Said::Accept, Said::Refuse(_)) => t.refused_accepts += 1,
                _ => {}
            }
        }
    }
    t
}

/// The findings, most serious first; empty when nothing is wrong.
pub fn diagnose(outcomes: &[Outcome], listen: &Listen, reach: MilterReach) -> Vec<String> {
    let t = tally(outcomes);
    let mut out = Vec::new();
    if !t.relayed.is_empty() {
        out.push(format!(
            "OPEN RELAY: the gateway accepted {} relay recipient(s) for this client (e.g. <{}>). \
             The MTA lets this address relay by its own rules (permit_mynetworks with this \
             address in mynetworks, permit_sasl_authenticated, a relay_domains match) and the \
             milter did not refuse: it was not consulted or not reached",
            t.relayed.len(),
            t.relayed[0]
        ));
    }
    if t.accepted_refusals > 0 && t.milter_refused == 0 {
        out.push(match reach {
            MilterReach::Answers => format!(
                "THE MILTER WAS NOT CONSULTED: it answers at {listen}, yet not one of the \
                 {} refusals the policy predicts came back. This SMTP service has no \
                 smtpd_milters (check main.cf, and -o overrides in master.cf for this port), \
                 or the gateway runs another configuration (monitor mode?) than the one given",
                t.accepted_refusals
            ),
            MilterReach::Refused => format!(
                "THE MILTER IS DOWN AND THE MTA ACCEPTS WITHOUT IT: nothing answers at \
                 {listen}, and the gateway accepted what the policy refuses. Postfix's \
                 milter_default_action = accept (or Sendmail's F= without T) lets all mail \
                 through while the milter is down: set milter_default_action = tempfail"
            ),
            MilterReach::Unknown => format!(
                "THE MILTER REFUSED NOTHING: none of the {} refusals the policy predicts came \
                 back. Either this SMTP service has no smtpd_milters, or the milter at {listen} \
                 is down and milter_default_action = accept (its socket can't be tried from \
                 here)",
                t.accepted_refusals
            ),
        });
    } else if t.accepted_refusals > 0 {
        out.push(format!(
            "{} predicted refusal(s) were accepted while the milter refused others: a rate \
             limit or incident state on the live gateway, or it runs another configuration \
             than the one given",
            t.accepted_refusals
        ));
    }
    if t.unreachable > 0 {
        out.push(format!(
            "THE MILTER COULD NOT BE REACHED: {} step(s) answered with the MTA's own tempfail \
             (milter_default_action = tempfail): no mail is lost, but none is sent. Is \
             egress-milter running at {listen}?",
            t.unreachable
        ));
    }
    if t.refused_accepts > 0 {
        out.push(format!(
            "{} step(s) the policy accepts were refused: an MTA restriction refused first \
             (smtpd_sender_restrictions, reject_unauth_destination without our domains in \
             relay_domains...), a rate limit or incident on the live gateway, or it runs \
             another configuration than the one given",
            t.refused_accepts
        ));
    }
    if t.mta_first > 0 {
        out.push(format!(
            "{} refusal(s) came from the MTA's own restrictions before the milter was asked \
             (reject_unauth_destination, smtpd_sender_restrictions...): as predicted, but the \
             milter's rule behind them is not tested from this address",
            t.mta_first
        ));
    }
    out
}
