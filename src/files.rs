//! Reading files named in the configuration: the configuration itself,
//! keys, lists; and the unix sockets the daemon binds.

use std::{io, path::Path};

/// Appends `value` to `path` as one line of JSON, the file made if
/// absent (the console's audit log and held notes).
pub fn append_json_line(path: &Path, value: &impl serde::Serialize) -> io::Result<()> {
    use std::io::Write;
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(&line)
}

/// The lines of a JSON-lines file that read as `T`, in order (others
/// skipped); none when the file cannot be read.
pub fn read_json_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The last `most` lines of a JSON-lines file that read as `T`, oldest
/// first (see [`read_json_lines`]).
pub fn read_json_tail<T: serde::de::DeserializeOwned>(
    path: &Path,
    most: usize,
) -> std::collections::VecDeque<T> {
    let mut all = read_json_lines(path);
    let cut = all.len().saturating_sub(most);
    all.drain(..cut);
    all.into()
}

/// Reads a regular file of at most `max` bytes. A device, a FIFO or a huge
/// file named by mistake (`/dev/zero`, `/dev/stdin`) is an error, never an
/// endless read.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(buf)
}

/// Clears the way for binding a unix socket at `path`: a stale socket left
/// by a crashed run is removed; a live one, or a file that is not a
/// socket, is an error.
pub(crate) async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    use tokio::net::UnixStream;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by another process", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tail_of_a_json_lines_file_keeps_the_newest_and_skips_bad_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.jsonl");
        for n in 1..=5u32 {
            super::append_json_line(&path, &n).expect("append");
        }
        std::fs::write(
            &path,
            std::fs::read_to_string(&path).expect("read") + "not json\n",
        )
        .expect("write");
        let tail: Vec<u32> = super::read_json_tail(&path, 3).into();
        assert_eq!(tail, vec![3, 4, 5]);
        let all: Vec<u32> = super::read_json_tail(&path, 10).into();
        assert_eq!(all, vec![1, 2, 3, 4, 5]);
        let none: Vec<u32> = super::read_json_tail(&dir.path().join("absent"), 3).into();
        assert!(none.is_empty());
    }
}
