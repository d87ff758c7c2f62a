//! Resource limits as cgroup v2 file values (`cpu.max`, `memory.max`, `pids.max`, `io.max`), the
//! report of limits that could not be applied, and finding the block device (major:minor) a path
//! lives on for `io.max`. Which limits a service gets is the caller's decision, never this
//! module's.

use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{CgroupError, Controller, file};

/// The `cpu.max` period in microseconds: a quota of `millis * 100` µs per period is `millis`
/// thousandths of one CPU.
pub const CPU_PERIOD_USEC: u64 = 100_000;

/// The smallest quota the kernel accepts (1 ms per period); smaller requests are raised to it.
const CPU_MIN_QUOTA_USEC: u64 = 1_000;

/// The limits of one cgroup. `None` (or no `io` entry) means unlimited: writing the limits
/// resets whatever was set before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// CPU in thousandths of a CPU (`500` is half a CPU, `2000` two CPUs).
    pub cpu_millis: Option<u64>,
    /// Memory in bytes (`memory.max`; the kernel rounds down to a page).
    pub memory_bytes: Option<u64>,
    /// Most processes and threads (`pids.max`). The caller passes its default (1024).
    pub pids: Option<u64>,
    /// Per-device I/O limits (`io.max`).
    pub io: Vec<IoLimit>,
}

/// The I/O limits for one block device. Unset fields are unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoLimit {
    /// The whole-disk device as (major, minor); see [`block_device_of`].
    pub device: (u32, u32),
    /// Read bytes per second.
    pub rbps: Option<u64>,
    /// Written bytes per second.
    pub wbps: Option<u64>,
    /// Read operations per second.
    pub riops: Option<u64>,
    /// Write operations per second.
    pub wiops: Option<u64>,
}

/// A limit that is not enforced, and why.
#[derive(Debug)]
pub struct NotApplied {
    /// The controller whose limit it is.
    pub controller: Controller,
    /// Why it is not enforced.
    pub reason: NotAppliedReason,
}

/// Why a limit is not enforced.
#[derive(Debug)]
pub enum NotAppliedReason {
    /// The cgroup's `cgroup.controllers` (the file named) does not list the controller.
    Unavailable {
        /// The `cgroup.controllers` file.
        path: PathBuf,
    },
    /// Writing the limit failed.
    Failed(CgroupError),
}

impl fmt::Display for NotApplied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            NotAppliedReason::Unavailable { path } => write!(
                f,
                "{}: controller not enabled (not in {})",
                self.controller,
                path.display()
            ),
            NotAppliedReason::Failed(e) => write!(f, "{}: {e}", self.controller),
        }
    }
}

/// The `cpu.max` value: `"<quota> <period>"`, or `"max <period>"` when unlimited.
pub(crate) fn cpu_max_value(millis: Option<u64>) -> String {
    let quota = millis.and_then(|m| m.checked_mul(CPU_PERIOD_USEC / 1000));
    match quota {
        Some(q) => format!("{} {CPU_PERIOD_USEC}", q.max(CPU_MIN_QUOTA_USEC)),
        None => format!("max {CPU_PERIOD_USEC}"),
    }
}

/// A `memory.max` or `pids.max` value: the number, or `max`.
pub(crate) fn max_value(v: Option<u64>) -> String {
    v.map_or_else(|| "max".to_owned(), |v| v.to_string())
}

/// One `io.max` line: `MAJ:MIN rbps=N wbps=N riops=N wiops=N`, `max` for unset fields.
pub(crate) fn io_max_line(l: &IoLimit) -> String {
    let (major, minor) = l.device;
    format!(
        "{major}:{minor} rbps={} wbps={} riops={} wiops={}",
        max_value(l.rbps),
        max_value(l.wbps),
        max_value(l.riops),
        max_value(l.wiops)
    )
}

/// The devices named in an `io.max` file (`8:0 rbps=... ...`, one a line).
pub(crate) fn io_max_devices(path: &Path, text: &str) -> Result<Vec<(u32, u32)>, CgroupError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .next()
                .and_then(parse_dev)
                .ok_or_else(|| CgroupError::Parse {
                    path: path.to_owned(),
                    line: l.to_owned(),
                })
        })
        .collect()
}

fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// [`block_device_of_with`] using `/sys/dev/block`.
pub fn block_device_of(path: &Path) -> Result<(u32, u32), CgroupError> {
    block_device_of_with(path, Path::new("/sys/dev/block"))
}

/// The whole-disk block device (major, minor) that `path`'s file system lives on: its `st_dev`,
/// and for a partition the disk holding it (found through `sys_dev_block`, normally
/// `/sys/dev/block`), since `io.max` takes whole disks. [`CgroupError::NotFound`] when the
/// file system has no block device (tmpfs, overlay, NFS, btrfs subvolumes).
pub fn block_device_of_with(path: &Path, sys_dev_block: &Path) -> Result<(u32, u32), CgroupError> {
    let meta = fs::metadata(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })?;
    // A block device node names itself (its rdev); any other path, the device it lives on.
    let dev = if std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
        meta.rdev()
    } else {
        meta.dev()
    };
    let not_found = || CgroupError::NotFound {
        what: "block device of",
        path: path.to_owned(),
    };
    let major = u32::try_from(nix::sys::stat::major(dev)).map_err(|_| not_found())?;
    let minor = u32::try_from(nix::sys::stat::minor(dev)).map_err(|_| not_found())?;
    if major == 0 {
        return Err(not_found());
    }
    whole_disk((major, minor), sys_dev_block)?.ok_or_else(not_found)
}

/// The whole disk of `dev` per sysfs: `dev` itself, or for a partition (its sysfs directory has a
/// `partition` file) the parent directory's `dev`. `None` when sysfs does not know `dev`.
fn whole_disk(dev: (u32, u32), sys_dev_block: &Path) -> Result<Option<(u32, u32)>, CgroupError> {
    let node = sys_dev_block.join(format!("{}:{}", dev.0, dev.1));
    if !node.exists() {
        return Ok(None);
    }
    if !node.join("partition").exists() {
        return Ok(Some(dev));
    }
    // `node` is a symlink into /sys/devices/.../<disk>/<partition>: `..` resolves to the disk.
    let disk_dev = node.join("../dev");
    let text = file::read(&disk_dev)?;
    parse_dev(&text)
        .map(Some)
        .ok_or_else(|| CgroupError::Parse {
            path: disk_dev,
            line: text.trim().to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn cpu_max_values() {
        let table = [
            (Some(100), "10000 100000"),
            (Some(500), "50000 100000"),
            (Some(2000), "200000 100000"),
            (Some(1), "1000 100000"),
            (Some(0), "1000 100000"),
            (None, "max 100000"),
            (Some(u64::MAX), "max 100000"),
        ];
        for (millis, want) in table {
            assert_eq!(cpu_max_value(millis), want, "{millis:?}");
        }
    }

    #[test]
    fn memory_pids_and_io_values() {
        assert_eq!(max_value(Some(128 * 1024 * 1024)), "134217728");
        assert_eq!(max_value(Some(1024)), "1024");
        assert_eq!(max_value(None), "max");
        let table = [
            (
                IoLimit {
                    device: (8, 0),
                    rbps: Some(1_048_576),
                    wiops: Some(120),
                    ..IoLimit::default()
                },
                "8:0 rbps=1048576 wbps=max riops=max wiops=120",
            ),
            (
                IoLimit {
                    device: (254, 16),
                    ..IoLimit::default()
                },
                "254:16 rbps=max wbps=max riops=max wiops=max",
            ),
        ];
        for (limit, want) in table {
            assert_eq!(io_max_line(&limit), want);
        }
        let p = Path::new("io.max");
        let text =
            "8:0 rbps=1 wbps=max riops=max wiops=max\n254:0 rbps=max wbps=2 riops=max wiops=max\n";
        assert_eq!(io_max_devices(p, text).unwrap(), vec![(8, 0), (254, 0)]);
        assert!(io_max_devices(p, "sda rbps=1\n").is_err());
    }

    #[test]
    fn a_partition_resolves_to_its_disk_through_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        let disk = sys.path().join("devices/pci0/block/sda");
        std::fs::create_dir_all(disk.join("sda1")).unwrap();
        std::fs::write(disk.join("dev"), "8:0\n").unwrap();
        std::fs::write(disk.join("sda1/dev"), "8:1\n").unwrap();
        std::fs::write(disk.join("sda1/partition"), "1\n").unwrap();
        let block = sys.path().join("dev/block");
        std::fs::create_dir_all(&block).unwrap();
        symlink("../../devices/pci0/block/sda", block.join("8:0")).unwrap();
        symlink("../../devices/pci0/block/sda/sda1", block.join("8:1")).unwrap();

        assert_eq!(whole_disk((8, 1), &block).unwrap(), Some((8, 0)));
        assert_eq!(whole_disk((8, 0), &block).unwrap(), Some((8, 0)));
        assert_eq!(whole_disk((9, 9), &block).unwrap(), None);
    }

    #[test]
    fn a_file_system_without_sysfs_entry_has_no_block_device() {
        let dir = tempfile::tempdir().unwrap();
        let empty_sys = tempfile::tempdir().unwrap();
        let err = block_device_of_with(dir.path(), empty_sys.path()).unwrap_err();
        assert!(
            err.to_string().starts_with("block device of not found: "),
            "{err}"
        );
    }

    #[test]
    fn not_applied_says_which_and_why() {
        let n = NotApplied {
            controller: Controller::Memory,
            reason: NotAppliedReason::Unavailable {
                path: PathBuf::from("/cg/services/web/cgroup.controllers"),
            },
        };
        assert_eq!(
            n.to_string(),
            "memory: controller not enabled (not in /cg/services/web/cgroup.controllers)"
        );
    }
}
