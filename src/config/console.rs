//! `console`: the web console for held mail, open incidents and the
//! rest an administrator acts on, served by the daemon on loopback (or a
//! unix socket), HTTPS when `tls` is set.

use super::raw::{Spanned, Text};
use super::Validator;
use serde::Deserialize;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    /// Where the console listens: `HOST:PORT` (default `127.0.0.1:9360`) or `unix:/PATH` (for a
    /// reverse proxy). An address beyond loopback needs `tls`.
    #[serde(default)]
    pub listen: Option<Text>,
    /// HTTPS: the certificate chain and its private key, PEM files.
    #[serde(default)]
    pub tls: Option<Spanned<RawConsoleTls>>,
    /// The console's users, one a line: `NAME:ARGON2-HASH:ROLE`, role `admin` (may act) or
    /// `viewer` (may look); `egress-milter console-user add` writes it. Read at every login, so
    /// a user added or removed counts at once. Required.
    #[serde(default)]
    pub users_file: Option<Text>,
    /// A file holding the secret (32 bytes or more) that signs the one-click links of the
    /// incident notices; no links without it.
    #[serde(default)]
    pub link_secret_file: Option<Text>,
    /// The console's address as an administrator's browser reaches it, for the links in the
    /// notices (default: `http://` and `listen`, or `https://` with `tls`). Required with a unix
    /// socket and a link secret.
    #[serde(default)]
    pub public_url: Option<Text>,
    /// The MTA whose queue holds the mail: `postfix` (default; `postsuper`, `postqueue` and
    /// `postcat`) or `sendmail` (its quarantine).
    #[serde(default)]
    pub mta: Option<ConsoleMta>,
    /// Postfix's configuration directory, given to its commands as `-c` (default
    /// `/etc/postfix`).
    #[serde(default)]
    pub postfix_config: Option<Text>,
    /// The `sendmail` program that releases quarantined mail (default `/usr/sbin/sendmail`).
    #[serde(default)]
    pub sendmail: Option<Text>,
    /// Sendmail's queue directory, where quarantined messages (`hf` files) are read and deleted
    /// (default `/var/spool/mqueue`).
    #[serde(default)]
    pub sendmail_queue: Option<Text>,
    /// Run the MTA's commands through `sudo -n` (Postfix's `postsuper` and `postcat` need the
    /// super-user; the daemon's user does not have it).
    #[serde(default)]
    pub sudo: Option<bool>,
    /// The socket of the queue helper (`egress-milter queue-helper`, run as root by
    /// `egress-milter-queue.socket`), which reads, releases and deletes held mail for the
    /// console; without it the daemon runs the MTA's commands itself (see `sudo`).
    #[serde(default)]
    pub queue_socket: Option<Text>,
    /// How many recent decisions (summary lines) the console keeps to show (default 1000).
    #[serde(default)]
    pub decisions: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConsoleTls {
    /// The certificate chain, PEM.
    pub cert_file: Text,
    /// Its private key, PEM.
    pub key_file: Text,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleMta {
    /// Held mail is in Postfix's hold queue.
    #[default]
    Postfix,
    /// Held mail is in Sendmail's quarantine.
    Sendmail,
}

#[derive(Clone, Debug, Eq, PartialEq)]
pub enum ConsoleListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ConsoleListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ConsoleTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The console as configured.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ConsoleSettings {
    pub listen: ConsoleListen,
    pub tls: Option<ConsoleTls>,
    pub users_file: PathBuf,
    /// The links' secret, read at load.
    pub link_secret: Option<Vec<u8>>,
    /// Where links point, without a trailing slash.
    pub public_url: String,
    pub mta: ConsoleMta,
    pub postfix_config: PathBuf,
    pub sendmail: PathBuf,
    pub sendmail_queue: PathBuf,
    pub sudo: bool,
    pub queue_socket: Option<PathBuf>,
    pub decisions: usize,
}

/// Where the console listens when the configuration does not say.
pub const DEFAULT_CONSOLE_LISTEN: &str = "127.0.0.1:9360";
/// The least a link secret may hold.
const MIN_SECRET: usize = 32;

impl Validator {
    pub(super) fn console(&mut self, raw: Option<&Spanned<RawConsole>>) -> Option<ConsoleSettings> {
        let section = raw?;
        let raw = &section.value;
        let line = section.referenced.line();
        let listen = match &raw.listen {
            None => ConsoleListen::Tcp(DEFAULT_CONSOLE_LISTEN.parse().ok()?),
            Some(l) => match l.value.strip_prefix("unix:") {
                Some(path) if path.starts_with('/') => ConsoleListen::Unix(PathBuf::from(path)),
                Some(path) => {
                    self.error(
                        l.referenced.line(),
                        "console.listen",
                        format!("unix socket path must be absolute: \"{path}\""),
                    );
                    return None;
                }
                None => match l.value.trim_start_matches("inet:").parse::<SocketAddr>() {
                    Ok(a) => ConsoleListen::Tcp(a),
                    Err(_) => {
                        self.error(
                            l.referenced.line(),
                            "console.listen",
                            format!(
                                "expected HOST:PORT (an IP address) or unix:/PATH, got \"{}\"",
                                l.value
                            ),
                        );
                        return None;
                    }
                },
            },
        };
        let tls = raw.tls.as_ref().map(|t| ConsoleTls {
            cert_file: self.absolute("console.tls.cert_file", &t.value.cert_file),
            key_file: self.absolute("console.tls.key_file", &t.value.key_file),
        });
        if let (ConsoleListen::Tcp(a), None) = (&listen, &tls) {
            if !a.ip().is_loopback() {
                let l = raw.listen.as_ref().map_or(line, |l| l.referenced.line());
                self.error(
                    l,
                    "console.listen",
                    format!("{a} is beyond loopback: passwords would cross the network in clear; set console.tls, or listen on 127.0.0.1 behind a proxy"),
                );
            }
        }
        let users_file = match &raw.users_file {
            Some(f) => {
                let path = self.absolute("console.users_file", f);
                if let Err(e) = crate::users::Users::read(&path) {
                    self.error(f.referenced.line(), "console.users_file", e);
                }
                path
            }
            None => {
                self.error(
                    line,
                    "console.users_file",
                    "the console needs a users file (egress-milter console-user add NAME --role admin writes one)",
                );
                PathBuf::new()
            }
        };
        let link_secret = raw.link_secret_file.as_ref().and_then(|f| {
            let path = self.absolute("console.link_secret_file", f);
            match crate::files::read_bounded(&path, 4096) {
                Ok(bytes) if bytes.trim_ascii().len() >= MIN_SECRET => {
                    Some(bytes.trim_ascii().to_vec())
                }
                Ok(_) => {
                    self.error(
                        f.referenced.line(),
                        "console.link_secret_file",
                        format!("{} holds fewer than {MIN_SECRET} bytes (head -c 48 /dev/urandom | base64 > FILE makes one)", path.display()),
                    );
                    None
                }
                Err(e) => {
                    self.error(
                        f.referenced.line(),
                        "console.link_secret_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            }
        });
        let public_url = match (&raw.public_url, &listen) {
            (Some(u), _) => {
                let url = u.value.trim_end_matches('/').to_string();
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    self.error(
                        u.referenced.line(),
                        "console.public_url",
                        format!("expected an http:// or https:// URL, got \"{}\"", u.value),
                    );
                }
                url
            }
            (None, ConsoleListen::Tcp(a)) => {
                format!("{}://{a}", if tls.is_some() { "https" } else { "http" })
            }
            (None, ConsoleListen::Unix(_)) => {
                if link_secret.is_some() {
                    self.error(
                        line,
                        "console.public_url",
                        "the links of the notices need the console's address as browsers reach it (console.public_url) when it listens on a unix socket",
                    );
                }
                String::new()
            }
        };
        let decisions = match &raw.decisions {
            Some(n) if n.value == 0 || n.value > 100_000 => {
                self.error(
                    n.referenced.line(),
                    "console.decisions",
                    "must be between 1 and 100000",
                );
                1000
            }
            Some(n) => n.value,
            None => 1000,
        };
        let path = |v: &mut Self, key: &str, t: &Option<Text>, default: &str| match t {
            Some(t) => v.absolute(key, t),
            None => PathBuf::from(default),
        };
        Some(ConsoleSettings {
            listen,
            tls,
            users_file,
            link_secret,
            public_url,
            mta: raw.mta.unwrap_or_default(),
            postfix_config: path(
                self,
                "console.postfix_config",
                &raw.postfix_config,
                "/etc/postfix",
            ),
            sendmail: path(
                self,
                "console.sendmail",
                &raw.sendmail,
                "/usr/sbin/sendmail",
            ),
            sendmail_queue: path(
                self,
                "console.sendmail_queue",
                &raw.sendmail_queue,
                "/var/spool/mqueue",
            ),
            sudo: raw.sudo.unwrap_or(false),
            queue_socket: raw
                .queue_socket
                .as_ref()
                .map(|t| self.absolute("console.queue_socket", t)),
            decisions,
        })
    }

    /// A path that must be absolute.
    fn absolute(&mut self, key: &str, t: &Text) -> PathBuf {
        if !Path::new(&t.value).is_absolute() {
            self.error(
                t.referenced.line(),
                key,
                format!("must be an absolute path, got \"{}\"", t.value),
            );
        }
        PathBuf::from(&t.value)
    }
}

/// The part of the file `console-user` reads: other keys are read past,
/// not checked (the users file may not exist yet, which a full load
/// refuses).
#[derive(Deserialize)]
struct ConsoleOnly {
    #[serde(default)]
    console: Option<UsersFileOnly>,
}

#[derive(Deserialize)]
struct UsersFileOnly {
    #[serde(default)]
    users_file: Option<Text>,
}

/// `console.users_file` of a configuration file.
pub fn console_users_file(path: &Path) -> Result<PathBuf, String> {
    let text = super::reading::read_text(path).map_err(|e| e.to_string())?;
    let raw: ConsoleOnly = super::reading::read_yaml(path, &text).map_err(|e| e.to_string())?;
    match raw.console.and_then(|c| c.users_file) {
        Some(f) if Path::new(&f.value).is_absolute() => Ok(PathBuf::from(f.value)),
        Some(f) => Err(format!(
            "{}:{}: console.users_file: must be an absolute path, got \"{}\"",
            path.display(),
            f.referenced.line(),
            f.value
        )),
        None => Err(format!(
            "{}: no console.users_file; give the file with --file",
            path.display()
        )),
    }
}
