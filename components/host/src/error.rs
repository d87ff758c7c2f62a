//! The one error type of this crate. It owns the wording of failures to read the host and names
//! the path each one happened on; it must never hide the underlying OS error.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// Everything that can go wrong while reading facts about the host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A file under procfs, sysfs or cgroupfs could not be read.
    #[error("read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file was read but its content is not what the kernel writes there.
    #[error("parse {}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The mount table or this process's cgroup could not be read or parsed (the cgroups crate
    /// reads both, and its error names the file).
    #[error(transparent)]
    Cgroup(#[from] cloudlet_cgroups::CgroupError),
    /// A disk path could not be resolved to an absolute path without symlinks.
    #[error("resolve {}: {source}", path.display())]
    Resolve {
        /// The path asked for.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `statvfs(2)` failed on a disk path.
    #[error("statvfs {}: {source}", path.display())]
    Statvfs {
        /// The path asked for.
        path: PathBuf,
        /// The OS error.
        source: Errno,
    },
}
