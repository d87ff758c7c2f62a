//! Finding the cgroup v2 hierarchy and this process's place in it, from `/proc/self/cgroup` and
//! `/proc/self/mountinfo` (both injected). Reads only; never touches cgroupfs.

use std::path::{Component, Path, PathBuf};

use crate::mountinfo::{self, Mount};
use crate::{CgroupError, Controller, file};

/// Where the cgroup v2 hierarchy is and where this process sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The cgroup2 mount point: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts.
    pub mount: PathBuf,
    /// This process's cgroup relative to `mount`, starting with `/` (`/` for the mount's root,
    /// `/system.slice/cloudlet.service` under systemd).
    pub own: PathBuf,
    /// Controllers among ours that a cgroup v1 hierarchy holds (a hybrid host): they can never be
    /// enabled in v2. Empty on a pure v2 host.
    pub v1_bound: Vec<Controller>,
}

impl Detected {
    /// The directory of this process's own cgroup.
    pub fn own_dir(&self) -> PathBuf {
        match self.own.strip_prefix("/") {
            Ok(rel) if rel.as_os_str().is_empty() => self.mount.clone(),
            Ok(rel) => self.mount.join(rel),
            Err(_) => self.mount.join(&self.own),
        }
    }
}

/// [`detect_with`] on `/proc/self/cgroup` and `/proc/self/mountinfo`.
pub fn detect() -> Result<Detected, CgroupError> {
    detect_with(
        Path::new("/proc/self/cgroup"),
        Path::new("/proc/self/mountinfo"),
    )
}

/// Finds the cgroup2 mount holding this process's cgroup ([`own_cgroup`]) in `mountinfo`, chosen
/// by [`cgroup2_mount`], and the controllers cgroup v1 hierarchies hold.
pub fn detect_with(proc_self_cgroup: &Path, mountinfo: &Path) -> Result<Detected, CgroupError> {
    let own = own_cgroup(proc_self_cgroup)?;
    let mounts = mountinfo::read(mountinfo)?;
    let Some(best) = cgroup2_mount(&mounts, Some(&own)).filter(|m| own.starts_with(&m.root)) else {
        return Err(CgroupError::NotV2 {
            reason: format!(
                "no cgroup2 mount holding {} in {}",
                own.display(),
                mountinfo.display()
            ),
        });
    };
    let rel = own.strip_prefix(&best.root).unwrap_or(&own);
    let mut v1_bound: Vec<Controller> = mounts
        .iter()
        .filter(|m| m.fs_type == "cgroup")
        .flat_map(|m| m.super_options.split(','))
        .filter_map(Controller::from_v1_name)
        .collect();
    v1_bound.sort();
    v1_bound.dedup();
    Ok(Detected {
        mount: best.mount_point.clone(),
        own: Path::new("/").join(rel),
        v1_bound,
    })
}

/// This process's cgroup in the v2 hierarchy: the `0::/path` line of `proc_self_cgroup`
/// (`/proc/self/cgroup`), without a ` (deleted)` suffix. [`CgroupError::NotV2`] when there is no
/// such line (cgroup v1 only) or the path lies outside this cgroup namespace.
pub fn own_cgroup(proc_self_cgroup: &Path) -> Result<PathBuf, CgroupError> {
    let text = file::read(proc_self_cgroup)?;
    let own = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| CgroupError::NotV2 {
            reason: format!(
                "{} has no \"0::\" line (cgroup v1 only)",
                proc_self_cgroup.display()
            ),
        })?;
    let own = Path::new(own.trim_end_matches(" (deleted)"));
    if !own.is_absolute() || own.components().any(|c| c == Component::ParentDir) {
        return Err(CgroupError::NotV2 {
            reason: format!(
                "own cgroup {} in {} is outside this cgroup namespace",
                own.display(),
                proc_self_cgroup.display()
            ),
        });
    }
    Ok(own.to_owned())
}

/// The cgroup2 mount to use for the cgroup `own`, `None` when no cgroup2 filesystem is mounted.
/// Mounts whose root holds `own` come first, the deepest root first; then the one at
/// `/sys/fs/cgroup`, then the one at `/sys/fs/cgroup/unified`, then the first listed. When none
/// holds `own` (or `own` is unknown) the mount returned does not hold it: callers that need
/// `own` inside it check.
pub fn cgroup2_mount<'a>(mounts: &'a [Mount], own: Option<&Path>) -> Option<&'a Mount> {
    let rank = |m: &Mount| {
        let depth = match own {
            Some(own) if own.starts_with(&m.root) => m.root.components().count(),
            _ => 0,
        };
        let usual = [Path::new(HYBRID), Path::new(UNIFIED)]
            .iter()
            .position(|p| m.mount_point == *p);
        (depth, usual)
    };
    // `max_by_key` keeps the last of equals: reversed, that is the first listed.
    mounts
        .iter()
        .rev()
        .filter(|m| m.fs_type == "cgroup2")
        .max_by_key(|m| rank(m))
}

/// Where systemd and the kernel documentation mount the unified hierarchy.
const UNIFIED: &str = "/sys/fs/cgroup";
/// Where systemd's "hybrid" layout mounts cgroup v2 beside the v1 hierarchies.
const HYBRID: &str = "/sys/fs/cgroup/unified";

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// This host's layout: v1 controllers plus a v2 hierarchy at `unified`.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    /// A pure v2 Debian 12 host (with an optional field `shared:9`).
    const PURE: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
26 22 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 26 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn detect_fixture(cgroup: &str, mountinfo: &str) -> Result<Detected, CgroupError> {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("cgroup");
        let m = dir.path().join("mountinfo");
        fs::write(&c, cgroup).unwrap();
        fs::write(&m, mountinfo).unwrap();
        detect_with(&c, &m)
    }

    #[test]
    fn pure_v2() {
        let d = detect_fixture("0::/system.slice/x\n", PURE).unwrap();
        assert_eq!(d.mount, Path::new("/sys/fs/cgroup"));
        assert_eq!(d.own, Path::new("/system.slice/x"));
        assert_eq!(d.own_dir(), Path::new("/sys/fs/cgroup/system.slice/x"));
        assert!(d.v1_bound.is_empty());
    }

    #[test]
    fn hybrid_finds_unified_and_the_v1_bound_controllers() {
        let cgroup = "9:name=systemd:/\n4:memory:/process_api/d9\n1:cpu:/\n0::/user.slice/s\n";
        let d = detect_fixture(cgroup, HYBRID).unwrap();
        assert_eq!(d.mount, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(d.own, Path::new("/user.slice/s"));
        use Controller::*;
        assert_eq!(d.v1_bound, vec![Cpu, Memory, Pids, Io]);
    }

    #[test]
    fn root_cgroup_and_a_mount_whose_root_is_a_subtree() {
        let d = detect_fixture("0::/\n", HYBRID).unwrap();
        assert_eq!(d.own, Path::new("/"));
        assert_eq!(d.own_dir().to_str(), Some("/sys/fs/cgroup/unified"));

        // A bind mount of /sys/fs/cgroup/a at /mnt/a space: own is made relative to its root.
        let mi = format!("{PURE}50 22 0:26 /a /mnt/a\\040space rw - cgroup2 cgroup2 rw\n");
        let d = detect_fixture("0::/a/b\n", &mi).unwrap();
        assert_eq!(d.mount, Path::new("/mnt/a space"));
        assert_eq!(d.own, Path::new("/b"));
    }

    #[test]
    fn the_mount_holding_own_then_sys_fs_cgroup_then_unified_then_the_first() {
        let mounts = mountinfo::parse(
            Path::new("mountinfo"),
            "50 21 0:50 / /run/other rw - cgroup2 cgroup2 rw\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
             30 26 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
             51 21 0:26 /machine.slice /run/cg rw - cgroup2 cgroup2 rw\n\
             52 21 0:27 / /run/v1 rw - cgroup cgroup rw,cpu\n",
        )
        .unwrap();
        let chosen = |mounts: &[Mount], own: Option<&str>| {
            cgroup2_mount(mounts, own.map(Path::new)).map(|m| m.mount_point.clone())
        };
        // The deepest root holding own wins; among equals /sys/fs/cgroup, then .../unified.
        let at = |p: &str| Some(PathBuf::from(p));
        assert_eq!(chosen(&mounts, Some("/machine.slice/vm1")), at("/run/cg"));
        assert_eq!(chosen(&mounts, Some("/user.slice")), at("/sys/fs/cgroup"));
        assert_eq!(
            chosen(&mounts[..2], Some("/")),
            at("/sys/fs/cgroup/unified")
        );
        // None holds own, or own is unknown: the same order among all of them.
        assert_eq!(chosen(&mounts[3..], Some("/user.slice")), at("/run/cg"));
        assert_eq!(chosen(&mounts, None), at("/sys/fs/cgroup"));
        assert_eq!(
            chosen(&[mounts[0].clone(), mounts[3].clone()], None),
            at("/run/other")
        );
        assert_eq!(chosen(&mounts[4..], None), None);
    }

    #[test]
    fn v1_only_and_missing_mount_are_not_v2() {
        let err = detect_fixture("1:cpu:/\n", HYBRID).unwrap_err();
        assert!(matches!(err, CgroupError::NotV2 { .. }), "{err}");
        assert!(err.to_string().contains("has no \"0::\" line"), "{err}");

        let no_v2 = HYBRID.replace("cgroup2 cgroup2", "tmpfs tmpfs");
        let err = detect_fixture("0::/\n", &no_v2).unwrap_err();
        assert!(
            err.to_string().contains("no cgroup2 mount holding /"),
            "{err}"
        );

        // A cgroup2 mount that shows only a subtree this process is not in.
        let subtree = "51 21 0:26 /machine.slice /run/cg rw - cgroup2 cgroup2 rw\n";
        let err = detect_fixture("0::/user.slice\n", subtree).unwrap_err();
        assert!(
            err.to_string()
                .contains("no cgroup2 mount holding /user.slice"),
            "{err}"
        );

        let err = detect_fixture("0::/../../x\n", PURE).unwrap_err();
        assert!(
            err.to_string().contains("outside this cgroup namespace"),
            "{err}"
        );
    }

    #[test]
    fn malformed_mountinfo_line_is_named() {
        let err = detect_fixture("0::/\n", "41 31 0:38 / /sys/fs/cgroup/unified\n").unwrap_err();
        assert!(matches!(err, CgroupError::Parse { ref line, .. } if line.ends_with("unified")));
    }
}
