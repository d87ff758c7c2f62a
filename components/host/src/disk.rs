//! Space and inodes of the filesystems that hold the paths cloudlet watches (its data directory,
//! log directories), read with `statvfs(2)`. It must never create, write or delete on them.

use std::path::{Path, PathBuf};

use nix::sys::statvfs::{Statvfs, statvfs};

use crate::mountinfo::{self, Mount};
use crate::{HostError, HostPaths};

/// One reading of the filesystem that holds a path. Total and free come from the same
/// `statvfs(2)` call, so they are consistent with each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpace {
    /// The path asked for, as given.
    pub path: PathBuf,
    /// The mount point of the filesystem that holds it (`/` when the mount table has no better).
    pub mount_point: PathBuf,
    /// The filesystem type from the mount table (`ext4`, `xfs`, `tmpfs`, ...); empty if unknown.
    pub fs_type: String,
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// Space an unprivileged user may still use (`f_bavail`): the root reserve is not counted.
    pub free_bytes: u64,
    /// Inodes of the filesystem; 0 on filesystems without a fixed count (btrfs, some tmpfs).
    pub total_inodes: u64,
    /// Inodes still free for an unprivileged user (`f_favail`).
    pub free_inodes: u64,
}

/// Reads every path in `disk_paths`; the mount table is read once for all of them.
pub(crate) fn read_all(
    paths: &HostPaths,
    disk_paths: &[PathBuf],
) -> Result<Vec<DiskSpace>, HostError> {
    if disk_paths.is_empty() {
        return Ok(Vec::new());
    }
    let mounts = mountinfo::read(paths)?;
    disk_paths.iter().map(|p| read_one(&mounts, p)).collect()
}

/// `path` must exist.
pub(crate) fn read_one(mounts: &[Mount], path: &Path) -> Result<DiskSpace, HostError> {
    let resolved = path.canonicalize().map_err(|source| HostError::Resolve {
        path: path.to_owned(),
        source,
    })?;
    let stat = statvfs(&resolved).map_err(|source| HostError::Statvfs {
        path: path.to_owned(),
        source,
    })?;
    let mount = mountinfo::mount_of(mounts, &resolved);
    let (total_bytes, free_bytes, total_inodes, free_inodes) = counts(&stat);
    Ok(DiskSpace {
        path: path.to_owned(),
        mount_point: mount.map_or_else(|| PathBuf::from("/"), |m| m.mount_point.clone()),
        fs_type: mount.map(|m| m.fs_type.clone()).unwrap_or_default(),
        total_bytes,
        free_bytes,
        total_inodes,
        free_inodes,
    })
}

/// Total and free bytes, total and free inodes. `fsblkcnt_t`, `fsfilcnt_t` and `c_ulong` are u64
/// on 64-bit Linux but u32 on some 32-bit targets: the conversions are needed there and
/// identities here.
#[allow(clippy::useless_conversion)]
fn counts(stat: &Statvfs) -> (u64, u64, u64, u64) {
    let unit = u64::from(stat.fragment_size());
    (
        u64::from(stat.blocks()).saturating_mul(unit),
        u64::from(stat.blocks_available()).saturating_mul(unit),
        u64::from(stat.files()),
        u64::from(stat.files_available()),
    )
}

impl DiskSpace {
    /// Free space in percent of the total (100 when the filesystem reports no size).
    pub fn free_pct(&self) -> f64 {
        crate::units::percent(self.free_bytes, self.total_bytes)
    }

    /// Free inodes in percent of the total (100 when the filesystem has no fixed inode count).
    pub fn free_inodes_pct(&self) -> f64 {
        crate::units::percent(self.free_inodes, self.total_inodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = read_one(&[], &missing).unwrap_err().to_string();
        assert!(err.starts_with("resolve ") && err.contains("nope"), "{err}");
    }

    #[test]
    fn a_temp_dir_has_space_and_its_mount_from_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let resolved = dir.path().canonicalize().unwrap();
        let mounts = [Mount {
            root: "/".into(),
            mount_point: resolved.parent().unwrap().to_owned(),
            fs_type: "testfs".into(),
            super_options: "rw".into(),
        }];
        let disk = read_one(&mounts, dir.path()).unwrap();
        assert_eq!(disk.path, dir.path());
        assert_eq!(disk.mount_point, resolved.parent().unwrap());
        assert_eq!(disk.fs_type, "testfs");
        assert!(
            disk.total_bytes > 0 && disk.free_bytes <= disk.total_bytes,
            "{disk:?}"
        );
        assert!(disk.free_inodes <= disk.total_inodes, "{disk:?}");
        assert!((0.0..=100.0).contains(&disk.free_pct()));
    }
}
