//! `listen`: where the milter listens, as Postfix (`inet:HOST:PORT`) or
//! Sendmail (`inet:PORT@HOST`) writes it, or a unix socket.

use super::raw::Text;
use super::Validator;
use std::{fmt, path::PathBuf};

#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Listen {
    Inet(String),
    Unix(PathBuf),
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inet(a) => write!(f, "inet:{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Validator {
    pub(super) fn listen(&mut self, raw: &Text) -> Listen {
        let line = raw.referenced.line();
        if let Some(path) = raw.value.strip_prefix("unix:") {
            if !path.starts_with('/') {
                self.error(
                    line,
                    "listen",
                    format!("unix socket path must be absolute: \"{path}\""),
                );
            }
            return Listen::Unix(PathBuf::from(path));
        }
        if let Some(addr) = raw.value.strip_prefix("inet:") {
            // Postfix writes inet:HOST:PORT, Sendmail inet:PORT@HOST: take both.
            let addr = match addr.split_once('@') {
                Some((port, host)) if host.contains(':') => format!("[{host}]:{port}"),
                Some((port, host)) => format!("{host}:{port}"),
                None => addr.to_string(),
            };
            let ok = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                self.error(
                    line,
                    "listen",
                    format!("expected inet:HOST:PORT, got \"{}\"", raw.value),
                );
            } else {
                // The milter protocol has no authentication: whoever
                // connects is taken for the MTA.
                self.warn(
                    line,
                    "listen",
                    format!(
                        "{} can be reached by every local user, who could pose as the MTA (open incidents against any key, spend any budget); prefer unix:/PATH, reachable by the MTA's user alone",
                        raw.value
                    ),
                );
            }
            return Listen::Inet(addr);
        }
        self.error(
            line,
            "listen",
            format!(
                "expected inet:HOST:PORT or unix:/PATH, got \"{}\"",
                raw.value
            ),
        );
        Listen::Inet(String::new())
    }
}
