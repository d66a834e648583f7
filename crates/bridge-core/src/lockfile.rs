//! `<database>.lock`: an exclusive `flock` that the processes of one database
//! hold while they set up or upgrade it (create the schema, switch to WAL,
//! write the key's fingerprint), so that many can open a new database at the
//! same moment.
//!
//! A file of its own because closing any other descriptor of the database
//! file would drop SQLite's own POSIX locks in this process. Locks belong to
//! the open file, so two stores of one process exclude each other as two
//! processes do.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config;
use crate::error::{Error, Result};

/// The open lock file of one database.
pub(crate) struct LockFile {
    file: Arc<File>,
    path: PathBuf,
}

/// Holds the lock until dropped.
pub(crate) struct Held {
    file: Arc<File>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

impl LockFile {
    /// Opens (creating, mode 0600) the lock file of `database`.
    pub(crate) fn open(database: &Path) -> Result<LockFile> {
        let path = config::lock_file(database);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|error| Error::io("create lock file", &path, error))?;
        Ok(LockFile {
            file: Arc::new(file),
            path,
        })
    }

    /// Takes the lock, waiting (on a blocking thread) if another holds it.
    ///
    /// If the returned future is dropped while waiting, the lock may still be
    /// taken afterwards and then stays held until this `LockFile` is dropped.
    pub(crate) async fn lock(&self) -> Result<Held> {
        let io_error = |error| Error::io("lock", &self.path, error);
        match self.file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let file = Arc::clone(&self.file);
                tokio::task::spawn_blocking(move || file.lock())
                    .await
                    .map_err(|error| io_error(io::Error::other(error)))?
                    .map_err(io_error)?;
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(io_error(error)),
        }
        Ok(Held {
            file: Arc::clone(&self.file),
        })
    }
}
