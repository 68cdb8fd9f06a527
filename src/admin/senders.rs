//! `senders --class CLASS`: what learning mode saw a class use.

use super::Answer;
use crate::learning::Format;
use crate::state::Shared;
use serde::{Deserialize, Serialize};

/// A `senders` request.
#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
pub struct Senders {
    pub class: String,
    pub format: Format,
}

pub(super) fn answer(shared: &Shared, request: Senders) -> Answer {
    let class = request.class.as_str();
    let config = shared.config();
    if class.is_empty() || !config.classes.iter().any(|c| c.name == class) {
        return Answer::error(format!("no class named \"{class}\" in the configuration"));
    }
    Answer::Ok(shared.learned.report(class, request.format))
}
