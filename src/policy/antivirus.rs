//! clamd's finding, as our verdict: a virus refuses the message (or defers
//! it, or holds it for review, or is only logged), unless its signature is
//! in `antivirus.allow`.

use crate::config::{AntivirusSettings, VirusAction};
use crate::content::clamd::Scan;
use crate::policy::{Hold, Verdict};
use crate::reply;

/// The verdict on a scan, and the result as the logs and metrics name it
/// (`clean`, `virus`, `allowed`, `error`). A scan that gave no verdict is
/// a [`Verdict::TempError`]: `antivirus.on_error` decides.
pub fn verdict(scan: &Scan, settings: &AntivirusSettings) -> (Verdict, &'static str) {
    match scan {
        Scan::Clean => (Verdict::Continue, "clean"),
        Scan::Virus(sig) if settings.allowed(sig) => (Verdict::Continue, "allowed"),
        Scan::Virus(sig) => {
            let v = match settings.action {
                VirusAction::Reject | VirusAction::Monitor => {
                    Verdict::Refuse(reply::virus(sig, true))
                }
                VirusAction::Tempfail => Verdict::Refuse(reply::virus(sig, false)),
                VirusAction::Hold => Verdict::Hold(Hold {
                    rule: "antivirus",
                    incident: "-".into(),
                    reason: reply::virus_hold_reason(sig),
                    monitor: false,
                }),
            };
            (v, "virus")
        }
        Scan::Error(e) => (Verdict::TempError(format!("clamd: {e}")), "error"),
    }
}
