//! A message from a key with an open incident: held for review (the
//! default), deferred, refused, or only logged, as `incidents.action` said
//! when the incident opened. An incident opened in monitor mode is judged
//! in monitor mode whatever the class's mode (the session's part).

use crate::config::IncidentAction;
use crate::incidents::Incident;
use crate::reply;
use crate::verdict::{Hold, Verdict};

pub fn verdict(incident: &Incident) -> Verdict {
    let name = incident.name();
    match incident.action {
        IncidentAction::Tempfail => Verdict::Refuse(reply::suspended(&incident.key, false)),
        IncidentAction::Reject => Verdict::Refuse(reply::suspended(&incident.key, true)),
        action => Verdict::Hold(Hold {
            rule: crate::reply::Rule::Incident,
            reason: reply::hold_reason(&name, &incident.signal),
            incident: name,
            monitor: action == IncidentAction::Monitor,
        }),
    }
}
