//! The crate's one error type, [`CgroupError`]. Every variant that comes from the OS names the
//! file or directory it concerns and, for writes, the value written, so that a log line alone says
//! what failed. It never says what an error means for a service: that is the caller's policy.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;

/// An error of the cgroup module.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file could not be opened (or watched) for reading.
    #[error("open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file or directory could not be read.
    #[error("read {}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A value could not be written to a cgroup file.
    #[error("write {value:?} to {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The value written.
        value: String,
        /// The OS error.
        source: io::Error,
    },
    /// A cgroup directory could not be created.
    #[error("create cgroup {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A cgroup directory could not be removed.
    #[error("remove cgroup {}: {source}", path.display())]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file held a line in an unexpected format.
    #[error("parse {}: unexpected line {line:?}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line (or a description of what is missing).
        line: String,
    },
    /// This process has no cgroup v2 hierarchy to use.
    #[error("no usable cgroup v2 hierarchy: {reason}")]
    NotV2 {
        /// Why, naming the file that says so.
        reason: String,
    },
    /// Something that must exist does not.
    #[error("{what} not found: {}", path.display())]
    NotFound {
        /// What was looked for (`cgroup`, `block device of`).
        what: &'static str,
        /// Where.
        path: PathBuf,
    },
    /// A relative cgroup path would leave the subtree cloudlet was given, or is malformed.
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A process of a cgroup could not be signalled.
    #[error("kill pid {pid} of {}: {source}", path.display())]
    Signal {
        /// The cgroup directory.
        path: PathBuf,
        /// The process.
        pid: u32,
        /// The OS error.
        source: Errno,
    },
    /// An inotify watch could not be set up or read.
    #[error("watch {}: {source}", path.display())]
    Watch {
        /// The watched file.
        path: PathBuf,
        /// The OS error.
        source: Errno,
    },
    /// A cgroup still had processes when the wait for it to empty ended.
    #[error("{} still populated after {waited:?}", path.display())]
    Timeout {
        /// The cgroup directory.
        path: PathBuf,
        /// How long was waited.
        waited: Duration,
    },
    /// Moving a cgroup's processes elsewhere did not empty it within its bound (they fork faster).
    #[error("{} still has {remaining} processes after moving them out", path.display())]
    MoveIncomplete {
        /// The cgroup directory being emptied.
        path: PathBuf,
        /// Processes left.
        remaining: usize,
    },
    /// Killing by signals did not empty the cgroup within its bound.
    #[error("{} still has {remaining} processes after {rounds} rounds of SIGKILL", path.display())]
    KillIncomplete {
        /// The cgroup directory.
        path: PathBuf,
        /// Processes left in the last round.
        remaining: usize,
        /// Rounds tried.
        rounds: u32,
    },
}
