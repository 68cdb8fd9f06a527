//! The watch as `egress-milter reputation` prints it, and as Prometheus
//! scrapes it.

use super::Watch;
use crate::incidents::rfc3339;
use std::fmt::Write as _;

impl Watch {
    /// Every target on every list, since when; every record that is not
    /// fine; the last changes.
    pub fn report(&self, configured: bool) -> String {
        let state = self.state();
        let mut out = String::new();
        if !configured {
            out.push_str("reputation is not configured (the watch is off)\n");
        }
        let last = match state.last_round {
            0 => "no round yet".to_string(),
            t => format!("last round ended {}", rfc3339(t)),
        };
        let _ = writeln!(out, "{last}");
        if let Some(l) = self.listed() {
            let _ = writeln!(
                out,
                "LISTED: {} on {} (mail of the paused classes follows on_listed)",
                l.0, l.1
            );
        }
        let _ = writeln!(
            out,
            "\n{:<40} {:<28} {:<12} since",
            "target", "list", "state"
        );
        for l in state.listings.values() {
            let what = match l.listed {
                Some(true) => format!("LISTED {}", l.codes.join(" ")),
                Some(false) => "clean".into(),
                None => "unknown".into(),
            };
            let _ = writeln!(
                out,
                "{:<40} {:<28} {:<12} {}",
                l.target,
                l.list,
                what,
                rfc3339(l.since)
            );
            if let Some(e) = &l.error {
                let _ = writeln!(out, "{:<40} last error: {e}", "");
            }
        }
        let _ = writeln!(out, "\nrecords:");
        if state.records.is_empty() {
            let _ = writeln!(out, "  none answered yet");
        }
        for r in state.records.values() {
            let _ = writeln!(
                out,
                "  {:<5} {:<12} {:<40} {} (since {})",
                if r.ok { "ok" } else { "WRONG" },
                r.check,
                r.subject,
                r.detail,
                rfc3339(r.since)
            );
        }
        let _ = writeln!(out, "\nlast changes:");
        if state.changes.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for c in state.changes.iter().rev().take(20) {
            let _ = writeln!(
                out,
                "  {} {} {} on {}: {} -> {}",
                rfc3339(c.at),
                c.change,
                c.target,
                c.list,
                c.was,
                c.now
            );
        }
        out
    }

    /// `egress_reputation_listed{target,list}`,
    /// `egress_reputation_check_errors_total{list}`,
    /// `egress_reputation_record_ok{check,subject}` and the time of the
    /// last round; the families are declared even when empty.
    pub fn render_metrics(&self, out: &mut String) {
        let state = self.state();
        let q = crate::metrics::label;
        let _ = writeln!(out, "# HELP egress_reputation_listed Whether a watched address or domain is listed on a list (1) or not (0), as last answered (reputation).\n# TYPE egress_reputation_listed gauge");
        for l in state.listings.values() {
            if let Some(listed) = l.listed {
                let _ = writeln!(
                    out,
                    "egress_reputation_listed{{target=\"{}\",list=\"{}\"}} {}",
                    q(&l.target),
                    q(&l.list),
                    u8::from(listed)
                );
            }
        }
        let _ = writeln!(out, "# HELP egress_reputation_check_errors_total Blocklist queries that gave no answer to go by (timeout, refused, rate limited), by list.\n# TYPE egress_reputation_check_errors_total counter");
        for (list, n) in self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "egress_reputation_check_errors_total{{list=\"{}\"}} {n}",
                q(list)
            );
        }
        let _ = writeln!(out, "# HELP egress_reputation_record_ok Whether a watched record (SPF, DKIM, DMARC, MX, reverse DNS) is as it should be (1) or not (0).\n# TYPE egress_reputation_record_ok gauge");
        for r in state.records.values() {
            let _ = writeln!(
                out,
                "egress_reputation_record_ok{{check=\"{}\",subject=\"{}\"}} {}",
                q(&r.check),
                q(&r.subject),
                u8::from(r.ok)
            );
        }
        let _ = writeln!(out, "# HELP egress_reputation_last_round_timestamp_seconds When the last round of the watch ended (0: none yet).\n# TYPE egress_reputation_last_round_timestamp_seconds gauge");
        let _ = writeln!(
            out,
            "egress_reputation_last_round_timestamp_seconds {}",
            state.last_round
        );
    }
}
