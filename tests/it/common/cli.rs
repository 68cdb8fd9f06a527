//! The one way the tests run the command line, as an administrator would:
//! the exit status, and what it printed on each stream.

use super::process::BIN;
use std::{path::Path, process::Command};

/// What a command did.
pub struct Cli {
    /// The exit status (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// Both streams, standard output first.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// `egress-milter ARGS`.
pub fn run(args: &[&str]) -> Cli {
    output(Command::new(BIN).args(args))
}

/// `egress-milter ARGS --config CONFIG`.
pub fn with_config(config: &Path, args: &[&str]) -> Cli {
    output(Command::new(BIN).args(args).arg("--config").arg(config))
}

/// Any command (`setpriv ... egress-milter`, `sh -c`), run to its end.
pub fn output(cmd: &mut Command) -> Cli {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Cli {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
