//! The inter-process lock on a log directory: `flock(2)` on `<dir>/LOCK`, which
//! holds the holder's pid for error messages. The kernel releases it when the holder
//! exits, however it exits.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use weir_core::Error;

use crate::Result;

/// The name of the lock file in a log directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Holds the lock until dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _flock: Flock<File>,
}

/// Takes the exclusive lock on `dir`, or fails with an error naming the directory and
/// the holder's pid.
pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    // Within this process an open log is shared through the registry, so a lock held
    // by our own pid is a handle that is just being dropped: wait for it briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let pid = std::process::id().to_string();
                let written = lock
                    .set_len(0)
                    .and_then(|()| lock.rewind())
                    .and_then(|()| lock.write_all(pid.as_bytes()))
                    .and_then(|()| lock.sync_data());
                written.map_err(|e| Error::io(&path, e))?;
                return Ok(DirLock { _flock: lock });
            }
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim().to_owned();
                if holder == std::process::id().to_string() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let who = if holder.is_empty() {
                    "another process".to_owned()
                } else {
                    format!("process {holder}")
                };
                return Err(Error::io(
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::ResourceBusy,
                        format!(
                            "log directory {} is locked by {who}; only one process may open a log at a time",
                            dir.display()
                        ),
                    ),
                ));
            }
            Err((_, errno)) => return Err(Error::io(&path, std::io::Error::from(errno))),
        }
    }
}
