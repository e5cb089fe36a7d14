//! State shared by every partition of one open log: options and the poison flag.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use weir_core::Error;

use crate::{LogOptions, Result};

/// Options and the poison flag of one open log.
#[derive(Debug)]
pub(crate) struct Shared {
    pub options: LogOptions,
    /// The file whose flush failed, once one has.
    poisoned: Mutex<Option<PathBuf>>,
    /// Fast check for `poisoned.is_some()`.
    is_poisoned: std::sync::atomic::AtomicBool,
    #[cfg(test)]
    fail_next_sync: std::sync::atomic::AtomicBool,
    #[cfg(test)]
    fail_next_write: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn new(options: LogOptions) -> Self {
        Self {
            options,
            poisoned: Mutex::new(None),
            is_poisoned: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            fail_next_sync: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            fail_next_write: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Refuses further writes: called when a write or fsync failed, after which the
    /// state of the file on disk is unknown.
    pub(crate) fn poison(&self, path: &Path) {
        let mut p = self.poisoned.lock();
        if p.is_none() {
            *p = Some(path.to_path_buf());
        }
        self.is_poisoned
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// `Err(Error::Poisoned)` once the log is poisoned.
    pub(crate) fn check_poisoned(&self) -> Result<()> {
        if !self.is_poisoned() {
            return Ok(());
        }
        match &*self.poisoned.lock() {
            Some(path) => Err(Error::Poisoned { path: path.clone() }),
            None => Ok(()),
        }
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.is_poisoned.load(std::sync::atomic::Ordering::Acquire)
    }

    #[cfg(test)]
    pub(crate) fn inject_sync_failure(&self) {
        self.fail_next_sync
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    #[cfg(test)]
    pub(crate) fn take_injected_sync_failure(&self) -> bool {
        self.fail_next_sync
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// The next segment write stores half its bytes and fails.
    #[cfg(test)]
    pub(crate) fn inject_write_failure(&self) {
        self.fail_next_write
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    #[cfg(test)]
    pub(crate) fn take_injected_write_failure(&self) -> bool {
        self.fail_next_write
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}
