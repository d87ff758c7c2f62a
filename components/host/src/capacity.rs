//! What this host has: online CPUs, memory, the PID limit and its watched disks, and the
//! arithmetic of allocatable = capacity - reserve. It reads only; it must never reserve, limit or
//! write anything.

use std::path::PathBuf;

use crate::disk::{self, DiskSpace};
use crate::{HostError, HostPaths, meminfo};

/// The size of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// Online CPUs × 1000 (from `/sys/devices/system/cpu/online`, so a CPU set offline does not
    /// count; a process's own affinity mask does not narrow it).
    pub cpu_millis: u64,
    /// `MemTotal` from `/proc/meminfo`.
    pub memory_bytes: u64,
    /// How many PIDs (threads included) the host can have at once: the smaller of
    /// `/proc/sys/kernel/pid_max` and `/proc/sys/kernel/threads-max`.
    pub pids: u64,
    /// The filesystems of the paths asked for, in the order asked.
    pub disks: Vec<DiskSpace>,
}

impl Capacity {
    /// The CPU, memory and PID part, for `allocatable = capacity - reserve`.
    pub fn resources(&self) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_bytes,
            pids: self.pids,
        }
    }
}

/// An amount of CPU, memory and PIDs: a capacity, a system reserve or an allocatable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// Thousandths of a CPU.
    pub cpu_millis: u64,
    /// Bytes of memory.
    pub memory_bytes: u64,
    /// Process and thread IDs.
    pub pids: u64,
}

impl Resources {
    /// `self - other`, or `None` if `other` is larger in any of the three: a reserve larger than
    /// the host is a configuration error the caller should report.
    pub fn checked_sub(self, other: Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_sub(other.cpu_millis)?,
            memory_bytes: self.memory_bytes.checked_sub(other.memory_bytes)?,
            pids: self.pids.checked_sub(other.pids)?,
        })
    }

    /// `self - other`, each of the three floored at zero.
    pub fn saturating_sub(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            pids: self.pids.saturating_sub(other.pids),
        }
    }
}

/// Reads the capacity of this host, with the filesystems that hold `disk_paths` (each must exist).
pub fn capacity(paths: &HostPaths, disk_paths: &[PathBuf]) -> Result<Capacity, HostError> {
    let cpus = crate::read_parsed(&paths.sys.join("devices/system/cpu/online"), count_cpus)?;
    let pid_max = read_number(paths.proc.join("sys/kernel/pid_max"))?;
    let threads_max = read_number(paths.proc.join("sys/kernel/threads-max"))?;
    Ok(Capacity {
        cpu_millis: cpus.saturating_mul(1000),
        memory_bytes: meminfo::read(paths)?.total,
        pids: pid_max.min(threads_max),
        disks: disk::read_all(paths, disk_paths)?,
    })
}

/// Counts a kernel CPU list such as `0-3,6,8-9` (the format of `cpu/online`).
fn count_cpus(list: &str) -> Result<u64, String> {
    let list = list.trim();
    if list.is_empty() {
        return Err("no CPU is online".to_owned());
    }
    let mut count = 0u64;
    for range in list.split(',') {
        let bad = || format!("not a CPU list: {list:?}");
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        let first: u64 = first.parse().map_err(|_| bad())?;
        let last: u64 = last.parse().map_err(|_| bad())?;
        count += last.checked_sub(first).ok_or_else(bad)? + 1;
    }
    Ok(count)
}

fn read_number(path: PathBuf) -> Result<u64, HostError> {
    crate::read_parsed(&path, |text| {
        let text = text.trim();
        text.parse().map_err(|_| format!("not a number: {text:?}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn counts_cpu_lists() {
        for (list, want) in [("0\n", 1), ("0-1\n", 2), ("0-3,6,8-9", 7), ("5", 1)] {
            assert_eq!(count_cpus(list), Ok(want), "{list}");
        }
        for list in ["", "\n", "a", "3-1", "0-", "0,,1"] {
            assert!(count_cpus(list).is_err(), "{list:?}");
        }
    }

    #[test]
    fn reads_cpus_memory_and_the_smaller_pid_limit_from_fixtures() {
        let (_root, paths) = fixture::host(&[
            ("sys/devices/system/cpu/online", "0-2,4\n"),
            ("proc/meminfo", meminfo::FIXTURE),
            ("proc/sys/kernel/pid_max", "4194304\n"),
            ("proc/sys/kernel/threads-max", "95000\n"),
        ]);
        let cap = capacity(&paths, &[]).unwrap();
        assert_eq!(
            cap,
            Capacity {
                cpu_millis: 4000,
                memory_bytes: 2_048_000 * 1024,
                pids: 95000,
                disks: vec![],
            }
        );
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let (_root, paths) = fixture::host(&[("sys/devices/system/cpu/online", "0\n")]);
        let err = capacity(&paths, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("read ") && err.ends_with("No such file or directory (os error 2)")
        );
        assert!(err.contains("pid_max"), "{err}");
    }

    #[test]
    fn allocatable_is_capacity_minus_reserve() {
        let cap = Resources {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            pids: 32768,
        };
        let reserve = Resources {
            cpu_millis: 500,
            memory_bytes: 512 << 20,
            pids: 1000,
        };
        let want = Resources {
            cpu_millis: 1500,
            memory_bytes: 512 << 20,
            pids: 31768,
        };
        assert_eq!(cap.checked_sub(reserve), Some(want));
        assert_eq!(cap.saturating_sub(reserve), want);
        let too_much = Resources {
            pids: 40000,
            ..reserve
        };
        assert_eq!(cap.checked_sub(too_much), None);
        assert_eq!(cap.saturating_sub(too_much), Resources { pids: 0, ..want });
    }
}
