//! The daemon binary run as an administrator runs it, its stderr lines
//! delivered on a channel.

use super::child::Guard;
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    time::Duration,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_egress-milter");

/// A running daemon whose stderr lines arrive on a channel.
pub struct Running {
    process: Guard,
    pub lines: mpsc::Receiver<String>,
}

impl Running {
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// Starts the daemon with these environment variables set. A
    /// configuration without an `admin` section gets `admin: { listen: off }`
    /// written into it: the default admin socket belongs to the packaged
    /// daemon (when /run/egress-milter exists), which a daemon refuses to
    /// take over, and several test daemons must not contend for it.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        if let Ok(text) = std::fs::read_to_string(config) {
            if !text.lines().any(|l| l.starts_with("admin:")) {
                let sep = if text.ends_with('\n') { "" } else { "\n" };
                let _ = std::fs::write(config, format!("{text}{sep}admin: {{ listen: off }}\n"));
            }
        }
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            process: Guard::child("egress-milter", child),
            lines,
        }
    }

    /// Waits (at most 20 s) for a log line containing `needle`.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needle:?}: {e}"),
            }
        }
    }

    /// Every line still to come, up to the process's exit (at most 20 s).
    pub fn rest_of_log(&self) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut lines = Vec::new();
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            lines.push(l);
        }
        lines
    }

    pub fn signal(&self, sig: &str) {
        assert!(self.process.signal(sig), "kill {sig} the daemon");
    }

    pub fn pid(&self) -> u32 {
        self.process.pid().expect("the daemon runs")
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.process.wait()
    }
}
