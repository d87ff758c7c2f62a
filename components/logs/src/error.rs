//! The one error type of this crate. It owns the wording of failures and carries the path each
//! IO error happened on; it must never hide the underlying OS error.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while writing, reading, following or pruning logs.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The log directory could not be created.
    #[error("create log directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A log file could not be opened (or its size read).
    #[error("open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A log file or directory entry could not be read.
    #[error("read {}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A record could not be appended to a log file.
    #[error("write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A log file could not be renamed or deleted while rotating.
    #[error("rotate {}: {source}", path.display())]
    Rotate {
        /// The file being renamed or deleted.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A directory of logs could not be removed by [`prune`](crate::prune).
    #[error("remove {}: {source}", path.display())]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// [`RunSelect::Previous`](crate::RunSelect::Previous) was asked for, but the logs hold no run
    /// before the current one.
    #[error("no previous run in the logs in {}: {}", dir.display(), no_previous_reason(*current))]
    NoPreviousRun {
        /// The log directory.
        dir: PathBuf,
        /// The only run found, if any.
        current: Option<u64>,
    },
    /// The files kept being rotated while the reader tried to open a consistent set of them.
    #[error("log files in {} kept rotating while being opened", dir.display())]
    Unstable {
        /// The log directory.
        dir: PathBuf,
    },
    /// A background reading task of a [`Follower`](crate::Follower) failed (panicked or was
    /// cancelled by a runtime shutdown).
    #[error("log reader task failed: {0}")]
    Task(String),
}

fn no_previous_reason(current: Option<u64>) -> String {
    match current {
        Some(run) => format!("only run {run} is logged"),
        None => "nothing is logged yet".to_owned(),
    }
}
