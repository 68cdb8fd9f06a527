//! The milter stages, as the decision and summary lines, the metrics and
//! `explain` name them.

use std::fmt;

#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Stage {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    Header,
    Eoh,
    Body,
    Eom,
    Abort,
    Close,
    /// A milter command that is no stage of ours (macros, negotiation, an
    /// unknown SMTP command), named when it came out of order.
    Other(&'static str),
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Header => "header",
            Stage::Eoh => "eoh",
            Stage::Body => "body",
            Stage::Eom => "eom",
            Stage::Abort => "abort",
            Stage::Close => "close",
            Stage::Other(name) => name,
        }
    }

    /// The stage of a milter command, by the name the milter library gives
    /// it.
    pub fn of_command(name: &'static str) -> Stage {
        [
            Stage::Connect,
            Stage::Helo,
            Stage::Mail,
            Stage::Rcpt,
            Stage::Data,
            Stage::Header,
            Stage::Eoh,
            Stage::Body,
            Stage::Eom,
            Stage::Abort,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
        .unwrap_or(Stage::Other(name))
    }

    /// Whether a refusal at this stage ends the message: every one but
    /// RCPT TO, where it refuses one recipient (and connect, which has no
    /// message yet).
    pub fn ends_message(self) -> bool {
        self != Stage::Rcpt
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_name_their_stage() {
        assert_eq!(Stage::of_command("rcpt"), Stage::Rcpt);
        assert_eq!(Stage::of_command("eoh"), Stage::Eoh);
        assert_eq!(Stage::of_command("macro"), Stage::Other("macro"));
        assert_eq!(format!("{:<6}|", Stage::Mail), "mail  |");
        assert!(!Stage::Rcpt.ends_message() && Stage::Eom.ends_message());
    }
}
