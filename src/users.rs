//! The web console's users file (`console.users_file`): `NAME:ARGON2-HASH:ROLE` a line, `#` starts
//! a comment. Passwords are kept as Argon2id hashes in the PHC string
//! form (`$argon2id$v=19$m=...`), which holds no `:`.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use std::path::Path;

/// What a user may do.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Role {
    /// Looks and acts.
    Admin,
    /// Looks.
    Viewer,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "viewer" => Some(Self::Viewer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Viewer => "viewer",
        }
    }
}

#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    hash: String,
    pub role: Role,
}

/// The users of the file, as read.
#[derive(Clone, Debug, Default)]
pub struct Users(Vec<User>);

/// The most a users file may hold.
const MAX_FILE: u64 = 1 << 20;
/// The shortest password taken.
pub const MIN_PASSWORD: usize = 10;

/// A user name: letters, digits, `.`, `_`, `-`, `@`, at most 64.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

impl Users {
    /// Reads the file; an error names the file and the line.
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = crate::files::read_bounded(path, MAX_FILE)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text =
            String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
        Self::parse(&text).map_err(|(line, e)| format!("{}:{line}: {e}", path.display()))
    }

    fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut users: Vec<User> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split(':');
            let (Some(name), Some(hash), Some(role), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err((i + 1, "expected NAME:ARGON2-HASH:ROLE".into()));
            };
            if !valid_name(name) {
                return Err((i + 1, format!("invalid user name \"{name}\"")));
            }
            match PasswordHash::new(hash) {
                Ok(h) if h.algorithm.as_str().starts_with("argon2") => {}
                _ => {
                    return Err((
                        i + 1,
                        format!("the hash of \"{name}\" is not an Argon2 PHC string"),
                    ))
                }
            }
            let Some(role) = Role::parse(role) else {
                return Err((
                    i + 1,
                    format!("the role of \"{name}\" must be admin or viewer, not \"{role}\""),
                ));
            };
            if users.iter().any(|u| u.name == name) {
                return Err((i + 1, format!("\"{name}\" is listed twice")));
            }
            users.push(User {
                name: name.to_string(),
                hash: hash.to_string(),
                role,
            });
        }
        Ok(Self(users))
    }

    pub fn find(&self, name: &str) -> Option<&User> {
        self.0.iter().find(|u| u.name == name)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl User {
    /// Whether `password` is this user's (slow on purpose: call it off
    /// the runtime's threads).
    pub fn verify(&self, password: &str) -> bool {
        PasswordHash::new(&self.hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    }
}

/// A hash with the default parameters that no password matches.
const NOBODY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$BSGRhlSAp5Yx6R6Mhw5hG9Ik7r9Jn2Z8C1+8fFsgpbo";

/// Verifies `password` against a hash nobody has, false: a login under
/// an unknown name takes as long as one under a known name.
pub fn verify_nobody(password: &str) -> bool {
    PasswordHash::new(NOBODY).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// An Argon2id hash of `password`, with a new salt.
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Adds `name` with `role` and `password` to the file (made when absent),
/// or gives an existing user a new password and role. The file is written
/// whole and renamed into place, its mode kept (0640 for a new one).
/// Returns whether the user was new.
pub fn add(path: &Path, name: &str, role: Role, password: &str) -> Result<bool, String> {
    use std::os::unix::fs::PermissionsExt;
    if !valid_name(name) {
        return Err(format!(
            "invalid user name \"{name}\" (letters, digits, . _ - @; at most 64)"
        ));
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(format!(
            "the password must have at least {MIN_PASSWORD} characters"
        ));
    }
    let old = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if let Some(t) = &old {
        Users::parse(t).map_err(|(line, e)| format!("{}:{line}: {e}", path.display()))?;
    }
    let entry = format!("{name}:{}:{}", hash(password)?, role.as_str());
    let mut out = String::new();
    let mut new = true;
    for line in old.as_deref().unwrap_or_default().lines() {
        if line.trim().split(':').next() == Some(name) {
            new = false;
            out.push_str(&entry);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if new {
        out.push_str(&entry);
        out.push('\n');
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mode = std::fs::metadata(path).map_or(0o640, |m| m.permissions().mode() & 0o777);
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, out.as_bytes())
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))
        })
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if let Ok(m) = std::fs::metadata(path) {
        use std::os::unix::fs::MetadataExt;
        // The same owner and group as before (the daemon's group reads it).
        let _ = nix::unistd::fchown(
            tmp.as_file(),
            Some(nix::unistd::Uid::from_raw(m.uid())),
            Some(nix::unistd::Gid::from_raw(m.gid())),
        );
    }
    tmp.persist(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_users_verify_and_a_second_add_changes_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        assert!(add(&path, "alice", Role::Admin, "correct horse").unwrap());
        assert!(add(&path, "bob", Role::Viewer, "battery staple").unwrap());
        let users = Users::read(&path).unwrap();
        assert_eq!(users.len(), 2);
        let alice = users.find("alice").unwrap();
        assert_eq!(alice.role, Role::Admin);
        assert!(alice.verify("correct horse"));
        assert!(!alice.verify("correct horsE"));
        assert!(!add(&path, "alice", Role::Viewer, "another secret").unwrap());
        let users = Users::read(&path).unwrap();
        let alice = users.find("alice").unwrap();
        assert_eq!(alice.role, Role::Viewer);
        assert!(alice.verify("another secret") && !alice.verify("correct horse"));
        assert_eq!(users.len(), 2);
        assert!(add(&path, "bad:name", Role::Admin, "long enough").is_err());
        assert!(add(&path, "carol", Role::Admin, "short").is_err());
    }

    #[test]
    fn an_unknown_name_costs_a_real_verification() {
        let h = PasswordHash::new(NOBODY).expect("a PHC string");
        let real = hash("x").unwrap();
        let real = PasswordHash::new(&real).unwrap();
        // The same algorithm and parameters as a real user's hash.
        assert_eq!(h.algorithm, real.algorithm);
        assert_eq!(h.params, real.params);
        assert!(!verify_nobody("anything"));
    }

    #[test]
    fn a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "# users\nalice:plain:admin\n").unwrap();
        let e = Users::read(&path).unwrap_err();
        assert!(
            e.ends_with("users:2: the hash of \"alice\" is not an Argon2 PHC string"),
            "{e}"
        );
        std::fs::write(&path, format!("alice:{}:root\n", hash("x").unwrap())).unwrap();
        let e = Users::read(&path).unwrap_err();
        assert!(
            e.contains(":1: the role of \"alice\" must be admin or viewer"),
            "{e}"
        );
    }
}
