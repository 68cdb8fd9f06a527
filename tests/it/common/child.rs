//! The one guard of every process a test starts (the daemon, clamd,
//! slapd, redis, its sentinels, rspamd, Postfix, Sendmail): stopped when
//! the guard goes, whether the test passed or panicked, and waited for, so
//! that no test leaves a process or a bound port behind. And the one
//! bounded wait for a process to be ready.

use std::{
    path::PathBuf,
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

/// How long a process is given to stop on SIGTERM before SIGKILL.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// A process a test started, and how to stop it.
pub struct Guard {
    what: &'static str,
    process: Process,
    /// SIGTERM first at the end (a daemon that must tidy up), rather than
    /// SIGKILL.
    gentle: bool,
}

enum Process {
    /// Our child.
    Child(Option<Child>),
    /// A daemon that forked away and wrote its pid here (rspamd).
    PidFile(PathBuf),
    /// A daemon stopped by a command of its own (`postfix stop`).
    StopCommand(Option<Command>),
}

impl Guard {
    /// Spawns `cmd`; `what` names it in failures.
    pub fn spawn(what: &'static str, cmd: &mut Command) -> Guard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Guard::child(what, child)
    }

    /// Guards a child already spawned (whose pipes the caller took).
    pub fn child(what: &'static str, child: Child) -> Guard {
        Guard {
            what,
            process: Process::Child(Some(child)),
            gentle: false,
        }
    }

    /// A daemon known by its pid file.
    pub fn pid_file(what: &'static str, path: PathBuf) -> Guard {
        Guard {
            what,
            process: Process::PidFile(path),
            gentle: true,
        }
    }

    /// A daemon that `stop` stops.
    pub fn stopped_by(what: &'static str, stop: Command) -> Guard {
        Guard {
            what,
            process: Process::StopCommand(Some(stop)),
            gentle: true,
        }
    }

    /// Stopped with SIGTERM at the end, not SIGKILL.
    pub fn gentle(mut self) -> Guard {
        self.gentle = true;
        self
    }

    /// The pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        match &self.process {
            Process::Child(Some(c)) => Some(c.id()),
            Process::PidFile(path) => std::fs::read_to_string(path).ok()?.trim().parse().ok(),
            _ => None,
        }
    }

    /// Whether it still runs (a child that exited is reaped).
    pub fn running(&mut self) -> bool {
        match &mut self.process {
            Process::Child(Some(c)) => matches!(c.try_wait(), Ok(None)),
            Process::Child(None) => false,
            _ => self
                .pid()
                .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()),
        }
    }

    /// Sends a signal (`-STOP`, `-HUP`, ...); whether it was delivered.
    pub fn signal(&self, sig: &str) -> bool {
        self.pid().is_some_and(|pid| {
            Command::new("kill")
                .arg(sig)
                .arg(pid.to_string())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// Kills it at once (SIGKILL: as a crash, not a shutdown) and reaps it.
    pub fn kill(&mut self) {
        self.signal("-CONT");
        if let Process::Child(slot) = &mut self.process {
            if let Some(mut c) = slot.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        } else {
            self.signal("-KILL");
            self.gone();
        }
    }

    /// SIGTERM, then SIGKILL if it has not gone within ten seconds.
    pub fn stop(&mut self) {
        match &mut self.process {
            Process::StopCommand(stop) => {
                if let Some(mut stop) = stop.take() {
                    let _ = stop.output();
                }
            }
            Process::Child(None) => {}
            _ => {
                self.signal("-CONT");
                self.signal("-TERM");
                if !self.gone() {
                    self.kill();
                }
            }
        }
    }

    /// Waits for it to exit by itself.
    pub fn wait(&mut self) -> ExitStatus {
        match &mut self.process {
            Process::Child(Some(c)) => c
                .wait()
                .unwrap_or_else(|e| panic!("wait for {}: {e}", self.what)),
            _ => panic!("{} is not a child of the test", self.what),
        }
    }

    /// Whether it exits within `STOP_WITHIN`.
    fn gone(&mut self) -> bool {
        let deadline = Instant::now() + STOP_WITHIN;
        while Instant::now() < deadline {
            let gone = match &mut self.process {
                Process::Child(Some(c)) => matches!(c.try_wait(), Ok(Some(_))),
                Process::Child(None) | Process::StopCommand(_) => true,
                Process::PidFile(_) => match self.pid() {
                    Some(pid) => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                    None => true,
                },
            };
            if gone {
                if let Process::Child(slot) = &mut self.process {
                    slot.take();
                }
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.gentle {
            self.stop();
        } else {
            self.kill();
        }
    }
}

/// Polls `check` every 20 ms until it gives `Ok`, for at most `within`;
/// then fails with `what` and the last `Err`'s detail. For start-up (a
/// port that answers, a file that appears), outside the async runtime.
pub fn ready<T>(within: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(detail) => assert!(Instant::now() < deadline, "{what}{detail}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
