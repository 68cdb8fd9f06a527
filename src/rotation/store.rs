//! The rotated keys on disk: `key_dir/state.json` (every key's state and
//! record, and operators' requests) and one private key per file,
//! `key_dir/DOMAIN/SELECTOR.pem` (mode 0600). Whoever changes the state
//! holds `key_dir/.lock` (an exclusive file lock), so a command and the
//! daemon never write over each other.

use super::ring::{Key, Ring};
use crate::dkim::DkimKey;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const STATE: &str = "state.json";

pub struct Store {
    dir: PathBuf,
}

/// The lock on the state, released when dropped.
pub struct Locked(#[allow(dead_code)] File);

impl Store {
    /// The store in `dir`, made (mode 0700) when missing.
    pub fn open(dir: &Path) -> io::Result<Store> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The store in `dir` as it is, for reading only.
    pub fn at(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits for the lock on the state.
    pub fn lock(&self) -> io::Result<Locked> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join(".lock"))?;
        f.lock()?;
        Ok(Locked(f))
    }

    /// The state as saved (empty when there is none yet).
    pub fn load(&self) -> io::Result<Ring> {
        match fs::read(self.dir.join(STATE)) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.dir.join(STATE).display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ring::default()),
            Err(e) => Err(e),
        }
    }

    /// Saves the state whole (written aside, then renamed over the old).
    pub fn save(&self, ring: &Ring, _lock: &Locked) -> io::Result<()> {
        let tmp = self.dir.join(".state.json.tmp");
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(ring).map_err(io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, self.dir.join(STATE))
    }

    pub fn key_path(&self, key: &Key) -> PathBuf {
        self.dir
            .join(&key.domain)
            .join(format!("{}.pem", key.selector))
    }

    /// Writes a new private key (mode 0600, never over an existing file).
    pub fn write_key(&self, key: &Key, pem: &str) -> io::Result<()> {
        let path = self.key_path(key);
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()
    }

    /// Deletes a revoked key's private key (gone already is fine).
    pub fn delete_key(&self, key: &Key) -> io::Result<()> {
        match fs::remove_file(self.key_path(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes a revoked key's private key into `dir` for a web server to
    /// publish (mode 0644: it is meant to be public now).
    pub fn reveal(&self, key: &Key, dir: &Path) -> io::Result<()> {
        let pem = fs::read(self.key_path(key))?;
        fs::create_dir_all(dir)?;
        let path = dir.join(key.revealed_file());
        let tmp = dir.join(format!(".{}.tmp", key.revealed_file()));
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(&pem)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    }

    /// The keys that sign at `now`: each domain's and algorithm's signer,
    /// loaded; and what could not be (a published key without its
    /// private key is said, never signed with).
    pub fn signing_keys(&self, ring: &Ring, now: u64) -> (Vec<Arc<DkimKey>>, Vec<String>) {
        let mut keys = Vec::new();
        let mut errors = Vec::new();
        let mut seen = Vec::new();
        for k in &ring.keys {
            if seen.contains(&(&k.domain, k.algorithm)) {
                continue;
            }
            seen.push((&k.domain, k.algorithm));
            let Some(active) = ring.signer(&k.domain, k.algorithm, now) else {
                continue;
            };
            let loaded = crate::address::Domain::parse(&active.domain)
                .map_err(|e| e.to_string())
                .and_then(|d| {
                    DkimKey::load(d, active.selector.clone(), &self.key_path(active))
                        .map_err(|e| e.to_string())
                });
            match loaded {
                Ok(key) if key.dns_record() == active.record => keys.push(Arc::new(key)),
                Ok(_) => errors.push(format!(
                    "{}: the private key does not match the published record",
                    self.key_path(active).display()
                )),
                Err(e) => errors.push(format!("{}: {e}", active.name())),
            }
        }
        (keys, errors)
    }
}
