//! Facts about this host: its capacity (CPUs, memory, PIDs, disks), its usage and pressure now
//! (available memory, PIDs in use, free disk, PSI), the node conditions derived from them against
//! thresholds, and the fitness checks of `cloudlet check-config` (kernel, cgroup v2 and its
//! controllers and delegation, `cgroup.kill`, the child subreaper, the data directory, the clock,
//! Open vSwitch).
//!
//! This crate only reads and reports. It never decides what to do about pressure (there is no
//! eviction in cloudlet: the node turns conditions into warnings), and it never writes to the host:
//! no cgroup file, no sysctl, no process attribute is changed, not even to probe.
//!
//! Every host path comes from [`HostPaths`], so tests point it at fixture directories.
#![warn(missing_docs)]

mod capacity;
mod cgroup;
mod check;
mod clock;
mod conditions;
mod disk;
mod error;
mod kernel;
mod meminfo;
mod mountinfo;
mod units;
mod usage;

#[cfg(test)]
mod fixture;

use std::path::{Path, PathBuf};

pub use capacity::{Capacity, Resources, capacity};
pub use check::{Check, CheckOptions, CheckStatus, check_config};
pub use conditions::{Condition, ConditionKind, Severity, Thresholds, conditions};
pub use disk::DiskSpace;
pub use error::HostError;
pub use usage::{Psi, PsiReading, Usage, usage};

/// Where this crate reads the host from. [`Default`] gives the real locations; tests give
/// fixture directories laid out the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// procfs, normally `/proc`.
    pub proc: PathBuf,
    /// sysfs, normally `/sys` (for `devices/system/cpu/online`).
    pub sys: PathBuf,
    /// The cgroup mount area, normally `/sys/fs/cgroup`. Mount points that `/proc/self/mountinfo`
    /// reports under `/sys/fs/cgroup` are read under this directory instead.
    pub sys_fs_cgroup: PathBuf,
}

impl HostPaths {
    /// The layout of a real host under `root`: `root/proc`, `root/sys`, `root/sys/fs/cgroup`.
    pub fn under(root: &Path) -> Self {
        Self {
            proc: root.join("proc"),
            sys: root.join("sys"),
            sys_fs_cgroup: root.join("sys/fs/cgroup"),
        }
    }
}

impl Default for HostPaths {
    fn default() -> Self {
        Self::under(Path::new("/"))
    }
}

/// Reads a whole text file, naming the path in the error.
fn read(path: &Path) -> Result<String, HostError> {
    std::fs::read_to_string(path).map_err(|source| HostError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a whole text file and parses it with `parse`, naming the path in either error.
fn read_parsed<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, HostError> {
    parse(&read(path)?).map_err(|reason| HostError::Parse {
        path: path.to_owned(),
        reason,
    })
}
