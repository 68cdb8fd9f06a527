//! The `admin` section: where the operators' endpoint (`egress-milter
//! limits` and `incidents`) listens, and who may use it. A unix socket
//! (the default) is guarded by its owner, group and mode; TCP, on loopback
//! only, by a token read from a file.

use super::raw::Text;
use super::{Validator, DEFAULT_SOCKET_MODE};
use serde::Deserialize;
use std::{net::SocketAddr, path::PathBuf};

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `unix:/PATH` (default `unix:/run/egress-milter/admin.sock`), `inet:127.0.0.1:PORT`
    /// (loopback only; needs `token_file`) or `off`.
    #[serde(default)]
    pub listen: Option<Text>,
    /// Octal mode of the unix socket (default `"0660"`): the daemon's group, or `socket_group`,
    /// may use it.
    #[serde(default)]
    pub socket_mode: Option<Text>,
    /// The group that owns the unix socket, when not the daemon's (the package sets
    /// `egress-admin`, the administrators', which the MTA's user is not in). The daemon's user
    /// must be a member.
    #[serde(default)]
    pub socket_group: Option<Text>,
    /// A file holding the token (16 characters or more) every TCP request must carry; the
    /// commands read it from the same file.
    #[serde(default)]
    pub token_file: Option<Text>,
}

/// Where the admin endpoint listens when the configuration does not say.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/egress-milter/admin.sock";
/// The most a token file may hold.
const MAX_TOKEN_FILE: u64 = 4096;

#[derive(Clone, Debug, Eq, PartialEq)]
pub enum AdminListen {
    Unix {
        path: PathBuf,
        mode: u32,
        /// The socket's group (`admin.socket_group`), when not the daemon's
        /// own: the administrators', apart from the MTA's.
        group: Option<u32>,
    },
    Inet(SocketAddr),
    /// `listen: off`.
    Off,
}

#[derive(Clone, Debug, Eq, PartialEq)]
pub struct AdminSettings {
    pub listen: AdminListen,
    /// The file the TCP endpoint's token is read from.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: AdminListen::Unix {
                path: PathBuf::from(DEFAULT_ADMIN_SOCKET),
                mode: DEFAULT_SOCKET_MODE,
                group: None,
            },
            token_file: None,
        }
    }
}

impl AdminSettings {
    /// The token, read from `token_file` (its first line, trimmed).
    pub fn token(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let bytes = crate::files::read_bounded(path, MAX_TOKEN_FILE)
            .map_err(|e| format!("cannot read the admin token {}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        let token = text.lines().next().unwrap_or_default().trim().to_string();
        if token.len() < 16 {
            return Err(format!(
                "the admin token in {} is shorter than 16 characters",
                path.display()
            ));
        }
        Ok(Some(token))
    }
}

/// The parts of the file the admin commands read: not the rest, which may
/// name files (DKIM keys) an administrator cannot read. Other keys are
/// read past, not checked.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct AdminOnly {
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    rate_limits: AliasOnly,
}

#[derive(Default, serde::Deserialize, schemars::JsonSchema)]
struct AliasOnly {
    #[serde(default)]
    admin_listen: Option<Text>,
}

impl AdminSettings {
    /// Reads the admin section of a configuration file (for the commands
    /// that talk to the daemon), with the same checks as a full load.
    pub fn load(path: &std::path::Path) -> Result<Self, super::ConfigErrors> {
        let text = super::reading::read_text(path)?;
        let raw: AdminOnly =
            super::reading::read_yaml(path, &text).map_err(|e| super::ConfigErrors(vec![e]))?;
        let mut v = Validator::new(path);
        let settings = v.admin(&raw.admin, raw.rate_limits.admin_listen.as_ref());
        if v.errors.is_empty() {
            Ok(settings)
        } else {
            Err(super::ConfigErrors(v.errors))
        }
    }
}

impl Validator {
    /// `admin`, with `rate_limits.admin_listen` as an older spelling of
    /// `admin.listen: inet:...`.
    pub(super) fn admin(&mut self, raw: &RawAdmin, alias: Option<&Text>) -> AdminSettings {
        let mut out = AdminSettings::default();
        let mode = match &raw.socket_mode {
            Some(m) => self
                .file_mode("admin.socket_mode", m)
                .unwrap_or(DEFAULT_SOCKET_MODE),
            None => DEFAULT_SOCKET_MODE,
        };
        let group =
            raw.socket_group
                .as_ref()
                .and_then(|g| match nix::unistd::Group::from_name(&g.value) {
                    Ok(Some(found)) => Some(found.gid.as_raw()),
                    Ok(None) => {
                        self.error(
                            g.referenced.line(),
                            "admin.socket_group",
                            format!("no group named \"{}\"", g.value),
                        );
                        None
                    }
                    Err(e) => {
                        self.error(
                            g.referenced.line(),
                            "admin.socket_group",
                            format!("cannot look up group \"{}\": {e}", g.value),
                        );
                        None
                    }
                });
        if let AdminListen::Unix {
            mode: m, group: gr, ..
        } = &mut out.listen
        {
            *m = mode;
            *gr = group;
        }
        let (listen, key) = match (&raw.listen, alias) {
            (Some(l), _) => (Some(l.clone()), "admin.listen"),
            (None, Some(a)) => (
                Some(Text {
                    value: format!("inet:{}", a.value),
                    referenced: a.referenced,
                    defined: a.defined,
                }),
                "rate_limits.admin_listen",
            ),
            (None, None) => (None, "admin.listen"),
        };
        if let Some(token) = &raw.token_file {
            if token.value.starts_with('/') {
                out.token_file = Some(PathBuf::from(&token.value));
            } else {
                self.error(
                    token.referenced.line(),
                    "admin.token_file",
                    format!("must be an absolute path, got \"{}\"", token.value),
                );
            }
        }
        let Some(listen) = listen else {
            return out;
        };
        let line = listen.referenced.line();
        let value = listen.value.trim();
        if value == "off" {
            out.listen = AdminListen::Off;
        } else if let Some(path) = value.strip_prefix("unix:") {
            if !path.starts_with('/') {
                self.error(
                    line,
                    key,
                    format!("unix socket path must be absolute: \"{path}\""),
                );
            }
            out.listen = AdminListen::Unix {
                path: PathBuf::from(path),
                mode,
                group,
            };
        } else {
            let addr = value.strip_prefix("inet:").unwrap_or(value);
            match addr.parse::<SocketAddr>() {
                Ok(a) if !a.ip().is_loopback() => self.error(
                    line,
                    key,
                    format!("\"{addr}\" is not a loopback address: the admin endpoint listens on loopback only"),
                ),
                Ok(a) if out.token_file.is_none() => self.error(
                    line,
                    key,
                    format!("listening on TCP ({a}) needs admin.token_file: any local process could connect"),
                ),
                Ok(a) => {
                    out.listen = AdminListen::Inet(a);
                    // The daemon reads the token by the same function at
                    // each request: what it would refuse is an error here.
                    if let (Err(e), Some(t)) = (out.token(), &raw.token_file) {
                        self.error(t.referenced.line(), "admin.token_file", e);
                    }
                }
                Err(_) => self.error(
                    line,
                    key,
                    format!("expected unix:/PATH, inet:127.0.0.1:PORT or off, got \"{value}\""),
                ),
            }
        }
        out
    }
}
