//! clamd's finding, as our verdict: a virus refuses the message (or defers
//! it, or holds it for review, or is only logged), unless its signature is
//! in `antivirus.allow`.

use crate::config::{AntivirusSettings, VirusAction};
use crate::content::clamd::Scan;
use crate::reply;
use crate::verdict::{Backend, Hold, Verdict};

/// What a scan found, as the logs and metrics name it.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Finding {
    Clean,
    Virus,
    /// A virus whose signature `antivirus.allow` lets through.
    Allowed,
    /// No verdict: clamd failed.
    Error,
}

impl Finding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Virus => "virus",
            Self::Allowed => "allowed",
            Self::Error => "error",
        }
    }
}

/// The verdict on a scan, and what it found. A scan that gave no verdict
/// is a [`Verdict::TempError`]: `antivirus.on_error` decides.
pub fn verdict(scan: &Scan, settings: &AntivirusSettings) -> (Verdict, Finding) {
    match scan {
        Scan::Clean => (Verdict::Continue, Finding::Clean),
        Scan::Virus(sig) if settings.allowed(sig) => (Verdict::Continue, Finding::Allowed),
        Scan::Virus(sig) => {
            let v = match settings.action {
                VirusAction::Reject | VirusAction::Monitor => {
                    Verdict::Refuse(reply::virus(sig, true))
                }
                VirusAction::Tempfail => Verdict::Refuse(reply::virus(sig, false)),
                VirusAction::Hold => Verdict::Hold(Hold {
                    rule: reply::Rule::Antivirus,
                    incident: "-".into(),
                    reason: reply::virus_hold_reason(sig),
                    monitor: false,
                }),
            };
            (v, Finding::Virus)
        }
        Scan::Error(e) => (
            Verdict::failed(Backend::Clamd, format!("clamd: {e}")),
            Finding::Error,
        ),
    }
}
