//! One agent per node. The agent holds an exclusive `flock` on its state directory and on its
//! bpffs directory for as long as it runs: the kernel drops a lock with its holder, so a crashed
//! agent never leaves a stale one behind (as a pid file would), and a second agent on either
//! directory is refused before it touches the maps, the links or the socket of the first.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LockError {
    #[error("opening {path} to lock it: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("locking {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error(
        "another sfc-daemon is running on {path} ({holder}); one agent per node: stop it first, or give this one another --state-dir and --bpffs"
    )]
    Held { path: PathBuf, holder: String },
}

/// The locks, released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct NodeLock {
    _held: Vec<File>,
}

/// Locks every directory in `dirs`, or none.
pub fn acquire(dirs: &[&Path]) -> Result<NodeLock, LockError> {
    let mut held = Vec::with_capacity(dirs.len());
    for dir in dirs {
        held.push(lock(dir)?);
    }
    Ok(NodeLock { _held: held })
}

fn lock(dir: &Path) -> Result<File, LockError> {
    // Opened read-only: a directory can be locked like a file (bpffs holds no regular files).
    let file = File::open(dir).map_err(|source| LockError::Open {
        path: dir.to_path_buf(),
        source,
    })?;
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(file);
    }
    let source = io::Error::last_os_error();
    if source.kind() != io::ErrorKind::WouldBlock {
        return Err(LockError::Lock {
            path: dir.to_path_buf(),
            source,
        });
    }
    Err(LockError::Held {
        path: dir.to_path_buf(),
        holder: holder(&file).unwrap_or_else(|| "its process id is not visible here".into()),
    })
}

/// Who holds the lock on `file`: /proc/locks lists every flock with its holder's pid and the
/// locked inode as `MAJOR:MINOR:INODE` (device numbers in hex).
fn holder(file: &File) -> Option<String> {
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    let inode = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid: u32 = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF"; blocked waiters have "->".
        let at = fields.iter().position(|f| *f == "FLOCK")?;
        (fields.get(at + 4) == Some(&inode.as_str()))
            .then(|| fields.get(at + 3)?.parse().ok())
            .flatten()
    })?;
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Some(if command.is_empty() {
        format!("pid {pid}")
    } else {
        format!("pid {pid}: {command}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_and_names_the_holder() {
        let dir = std::env::temp_dir().join(format!("sfc-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = acquire(&[&dir]).unwrap();
        // flock locks belong to the open file description: a second open conflicts even in
        // the same process, as a second daemon's would.
        let err = acquire(&[&dir]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        let again = acquire(&[&dir]).unwrap();
        drop(again);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
