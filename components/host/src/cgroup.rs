//! Finding cgroup v2 on this host: where it is mounted (unified, hybrid or elsewhere), which cgroup
//! this process is in, and which controllers that cgroup has. It only reads the mount table,
//! `/proc/self/cgroup` and `cgroup.controllers`; creating and limiting cgroups belongs to the
//! cgroups crate, and this module must never write to cgroupfs.

use std::path::{Path, PathBuf};

use cloudlet_cgroups::CgroupError;

use crate::mountinfo;
use crate::{HostError, HostPaths};

/// The mount point systemd and the kernel documentation use for the unified hierarchy.
const UNIFIED: &str = "/sys/fs/cgroup";
/// Where systemd's "hybrid" layout mounts cgroup v2 next to the v1 hierarchies.
const HYBRID: &str = "/sys/fs/cgroup/unified";

/// How cgroup v2 is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CgroupLayout {
    /// At `/sys/fs/cgroup`, the only hierarchy: every controller can be in v2.
    Unified,
    /// At `/sys/fs/cgroup/unified`, beside v1 hierarchies that hold the controllers.
    Hybrid,
    /// Somewhere else.
    Elsewhere,
}

/// Where cgroup v2 is and where this process sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupV2 {
    /// How it is mounted.
    pub(crate) layout: CgroupLayout,
    /// The mount point as the mount table shows it (`/sys/fs/cgroup`).
    pub(crate) mount_point: PathBuf,
    /// The directory this crate reads for it: `mount_point`, with a leading `/sys/fs/cgroup`
    /// replaced by [`HostPaths::sys_fs_cgroup`].
    pub(crate) dir: PathBuf,
    /// This process's cgroup as `/proc/self/cgroup`'s `0::` line names it
    /// (`/system.slice/cloudlet.service`), or why it has none there.
    pub(crate) own: Result<PathBuf, String>,
    /// The directory of that cgroup under `dir`, when it lies under what the mount shows.
    pub(crate) own_dir: Option<PathBuf>,
}

impl CgroupV2 {
    /// Whether this process sits in the root cgroup (which has no `cgroup.kill`, no
    /// `cgroup.events` and no `*.max` files).
    pub(crate) fn own_is_root(&self) -> bool {
        self.own.as_deref() == Ok(Path::new("/"))
    }
}

/// Finds cgroup v2: `None` when no cgroup2 filesystem is mounted. The mount is the one
/// [`cloudlet_cgroups::cgroup2_mount`] chooses for this process's cgroup (so check-config looks
/// where cloudlet will), even when that cgroup is not under it.
pub(crate) fn cgroup_v2(paths: &HostPaths) -> Result<Option<CgroupV2>, HostError> {
    let mounts = mountinfo::read(paths)?;
    // Without cgroup v2 there is nothing to look for in /proc/self/cgroup.
    if !mounts.iter().any(|m| m.fs_type == "cgroup2") {
        return Ok(None);
    }
    let own = match cloudlet_cgroups::own_cgroup(&paths.proc.join("self/cgroup")) {
        Ok(own) => Ok(own),
        Err(CgroupError::NotV2 { reason }) => Err(reason),
        Err(e) => return Err(e.into()),
    };
    let Some(mount) = cloudlet_cgroups::cgroup2_mount(&mounts, own.as_deref().ok()) else {
        return Ok(None);
    };
    let layout = if mount.mount_point == Path::new(UNIFIED) {
        CgroupLayout::Unified
    } else if mount.mount_point == Path::new(HYBRID) {
        CgroupLayout::Hybrid
    } else {
        CgroupLayout::Elsewhere
    };
    let dir = match mount.mount_point.strip_prefix(UNIFIED) {
        Ok(rest) => paths.sys_fs_cgroup.join(rest),
        Err(_) => mount.mount_point.clone(),
    };
    let own_dir = own
        .as_deref()
        .ok()
        .and_then(|own| own.strip_prefix(&mount.root).ok())
        .map(|rel| dir.join(rel));
    Ok(Some(CgroupV2 {
        layout,
        mount_point: mount.mount_point.clone(),
        dir,
        own,
        own_dir,
    }))
}

/// The controllers listed in `<cgroup>/cgroup.controllers`.
pub(crate) fn controllers(cgroup_dir: &Path) -> Result<Vec<String>, HostError> {
    let text = crate::read(&cgroup_dir.join("cgroup.controllers"))?;
    Ok(text.split_whitespace().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    /// This host's `/proc/self/cgroup`: v1 lines, then the v2 line.
    const SELF_CGROUP: &str = "4:memory:/process_api/x\n1:cpu:/\n0::/\n";

    #[test]
    fn finds_the_layout_and_the_own_cgroup() {
        for (mountinfo, self_cgroup, layout, dir, own_dir) in [
            (
                mountinfo::UNIFIED,
                "0::/system.slice/cloudlet.service\n",
                CgroupLayout::Unified,
                "sys/fs/cgroup",
                "sys/fs/cgroup/system.slice/cloudlet.service",
            ),
            (
                mountinfo::HYBRID,
                SELF_CGROUP,
                CgroupLayout::Hybrid,
                "sys/fs/cgroup/unified",
                "sys/fs/cgroup/unified/",
            ),
        ] {
            let (root, paths) = fixture::host(&[
                ("proc/self/mountinfo", mountinfo),
                ("proc/self/cgroup", self_cgroup),
            ]);
            let found = cgroup_v2(&paths).unwrap().unwrap();
            assert_eq!(found.layout, layout);
            assert_eq!(found.dir, root.path().join(dir));
            assert_eq!(found.own_dir, Some(root.path().join(own_dir)));
            assert_eq!(found.own_is_root(), self_cgroup == SELF_CGROUP);
        }
    }

    #[test]
    fn no_cgroup2_mount_is_none() {
        let (_root, paths) = fixture::host(&[("proc/self/mountinfo", mountinfo::LEGACY)]);
        assert_eq!(cgroup_v2(&paths).unwrap(), None);
    }

    #[test]
    fn elsewhere_a_bind_mounted_subtree_and_no_v2_line() {
        // cgroup2 at /run/cg showing the subtree /machine.slice; this process is in it.
        let mountinfo = "31 23 0:28 /machine.slice /run/cg rw - cgroup2 cgroup2 rw\n";
        let (_root, paths) = fixture::host(&[
            ("proc/self/mountinfo", mountinfo),
            ("proc/self/cgroup", "0::/machine.slice/vm1\n"),
        ]);
        let found = cgroup_v2(&paths).unwrap().unwrap();
        assert_eq!(found.layout, CgroupLayout::Elsewhere);
        assert_eq!(found.dir, Path::new("/run/cg"));
        assert_eq!(found.own_dir, Some(PathBuf::from("/run/cg/vm1")));

        // Outside what the mount shows: no directory; no v2 line or one outside this cgroup
        // namespace: no own cgroup at all.
        for (self_cgroup, own) in [
            ("0::/user.slice\n", Some("/user.slice")),
            ("1:cpu:/\n", None),
            ("0::/../x\n", None),
        ] {
            let (_root, paths) = fixture::host(&[
                ("proc/self/mountinfo", mountinfo),
                ("proc/self/cgroup", self_cgroup),
            ]);
            let found = cgroup_v2(&paths).unwrap().unwrap();
            assert_eq!(found.own.as_deref().ok(), own.map(Path::new));
            assert_eq!(found.own_dir, None);
        }
    }

    #[test]
    fn prefers_sys_fs_cgroup_over_other_cgroup2_mounts() {
        let mountinfo = format!(
            "{}{}",
            "50 21 0:50 / /run/other rw - cgroup2 cgroup2 rw\n",
            mountinfo::HYBRID
        );
        let (_root, paths) = fixture::host(&[
            ("proc/self/mountinfo", &mountinfo),
            ("proc/self/cgroup", SELF_CGROUP),
        ]);
        assert_eq!(
            cgroup_v2(&paths).unwrap().unwrap().layout,
            CgroupLayout::Hybrid
        );
    }

    #[test]
    fn reads_controllers() {
        let (root, _paths) =
            fixture::host(&[("cg/cgroup.controllers", "cpuset cpu io memory pids\n")]);
        assert_eq!(
            controllers(&root.path().join("cg")).unwrap(),
            ["cpuset", "cpu", "io", "memory", "pids"]
        );
        let err = controllers(&root.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope/cgroup.controllers"), "{err}");
    }
}
