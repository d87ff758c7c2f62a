//! The mount table of this host (parsed by `cloudlet_cgroups::mountinfo`) and finding the mount a
//! path lives on. It owns only the reading of the mount table; it must never mount or unmount
//! anything.

use std::path::Path;

pub(crate) use cloudlet_cgroups::mountinfo::Mount;

use crate::{HostError, HostPaths};

/// The mounts of `/proc/self/mountinfo` under [`HostPaths::proc`].
pub(crate) fn read(paths: &HostPaths) -> Result<Vec<Mount>, HostError> {
    Ok(cloudlet_cgroups::mountinfo::read(
        &paths.proc.join("self/mountinfo"),
    )?)
}

/// The mount that holds `path` (absolute, symlinks resolved): the one with the longest mount point
/// that contains it, and of mounts stacked on one point the last (the visible one).
pub(crate) fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .fold(None, |best: Option<&Mount>, m| match best {
            Some(b) if b.mount_point.components().count() > m.mount_point.components().count() => {
                Some(b)
            }
            _ => Some(m),
        })
}

/// A mountinfo like this host's: ext4 root, a tmpfs at /tmp, cgroup v1 hierarchies under a tmpfs
/// at /sys/fs/cgroup and cgroup v2 at /sys/fs/cgroup/unified (systemd's "hybrid" layout).
#[cfg(test)]
pub(crate) const HYBRID: &str = "\
21 1 0:20 / / rw,relatime - ext4 /dev/vda rw
22 21 0:21 / /proc rw,relatime - proc proc rw
23 21 0:22 / /sys rw,relatime - sysfs sysfs rw
25 21 0:23 / /tmp rw,relatime shared:5 - tmpfs tmpfs rw,size=1024k
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw
";

/// A pure cgroup v2 host.
#[cfg(test)]
pub(crate) const UNIFIED: &str = "\
21 1 0:20 / / rw,relatime - ext4 /dev/vda rw
22 21 0:21 / /proc rw,relatime - proc proc rw
23 21 0:22 / /sys rw,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

/// A cgroup v1 only host.
#[cfg(test)]
pub(crate) const LEGACY: &str = "\
21 1 0:20 / / rw,relatime - ext4 /dev/vda rw
31 21 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Mount> {
        cloudlet_cgroups::mountinfo::parse(Path::new("mountinfo"), text).unwrap()
    }

    #[test]
    fn a_path_belongs_to_the_deepest_mount_and_the_top_of_a_stack() {
        let mut mounts = parse(HYBRID);
        let of = |mounts: &[Mount], p: &str| mount_of(mounts, Path::new(p)).unwrap().clone();
        assert_eq!(of(&mounts, "/var/lib/cloudlet").mount_point, Path::new("/"));
        assert_eq!(of(&mounts, "/tmp/x").fs_type, "tmpfs");
        assert_eq!(of(&mounts, "/tmpfoo").fs_type, "ext4");
        assert_eq!(of(&mounts, "/sys/fs/cgroup/unified/a").fs_type, "cgroup2");
        mounts.extend(parse("50 25 0:50 / /tmp rw - xfs /dev/sdc rw"));
        assert_eq!(of(&mounts, "/tmp/x").fs_type, "xfs");
        assert!(mount_of(&mounts[1..2], Path::new("/var")).is_none());
    }

    #[test]
    fn read_names_the_file_it_could_not_read_or_parse() {
        let (_root, paths) = crate::fixture::host(&[]);
        let err = read(&paths).unwrap_err().to_string();
        assert!(err.starts_with("read "), "{err}");
        assert!(err.contains("proc/self/mountinfo"), "{err}");

        let (_root, paths) = crate::fixture::host(&[("proc/self/mountinfo", "21 - ext4\n")]);
        let err = read(&paths).unwrap_err().to_string();
        assert!(
            err.contains("proc/self/mountinfo: unexpected line \"21 - ext4\""),
            "{err}"
        );
    }
}
