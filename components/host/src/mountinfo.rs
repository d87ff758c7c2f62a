//! Parsing of `/proc/self/mountinfo`, and finding the mount a path lives on. It owns only the
//! reading of the mount table; it must never mount or unmount anything.

use std::path::{Path, PathBuf};

use crate::{HostError, HostPaths};

/// One line of `/proc/self/mountinfo` (the fields cloudlet uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// The directory of the mounted filesystem that appears at `mount_point` (`/` unless a bind
    /// mount or a cgroup namespace shows a subtree).
    pub(crate) root: PathBuf,
    /// Where it is mounted, as this process sees it.
    pub(crate) mount_point: PathBuf,
    /// The filesystem type: `ext4`, `tmpfs`, `cgroup2`, ...
    pub(crate) fs_type: String,
}

pub(crate) fn read(paths: &HostPaths) -> Result<Vec<Mount>, HostError> {
    let path = paths.proc.join("self/mountinfo");
    parse(&crate::read(&path)?).map_err(|reason| HostError::Parse { path, reason })
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`: the
/// optional fields end at a lone `-`, after which come the type, the source and the options.
fn parse(text: &str) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for (number, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = || format!("line {}: not a mountinfo line: {line:?}", number + 1);
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-").ok_or_else(bad)?;
        let (Some(root), Some(mount_point), Some(fs_type)) =
            (fields.get(3), fields.get(4), fields.get(dash + 1))
        else {
            return Err(bad());
        };
        if dash < 6 {
            return Err(bad());
        }
        mounts.push(Mount {
            root: PathBuf::from(unescape(root)),
            mount_point: PathBuf::from(unescape(mount_point)),
            fs_type: (*fs_type).to_owned(),
        });
    }
    Ok(mounts)
}

/// The kernel writes space, tab, newline and backslash in paths as `\040`, `\011`, `\012`, `\134`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')))
            .and_then(|n| u8::try_from(n).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

    #[test]
    fn parses_root_mount_point_and_type_past_optional_fields() {
        let mounts = parse(HYBRID).unwrap();
        assert_eq!(mounts.len(), 8);
        assert_eq!(
            mounts[7],
            Mount {
                root: "/".into(),
                mount_point: "/sys/fs/cgroup/unified".into(),
                fs_type: "cgroup2".into(),
            }
        );
        assert_eq!(mounts[3].fs_type, "tmpfs");
    }

    #[test]
    fn unescapes_octal_and_keeps_other_backslashes() {
        let line = r"40 21 0:40 /a\134b /mnt/my\040disk\011x rw - ext4 /dev/sdb rw";
        let mount = &parse(line).unwrap()[0];
        assert_eq!(mount.root, Path::new(r"/a\b"));
        assert_eq!(mount.mount_point, Path::new("/mnt/my disk\tx"));
        assert_eq!(unescape(r"a\9b\04"), r"a\9b\04");
    }

    #[test]
    fn rejects_lines_that_are_not_mountinfo() {
        for text in ["21 1 0:20 / / rw ext4", "21 - ext4", "1 2 3 4 5 - x"] {
            assert!(parse(text).unwrap_err().contains("line 1"), "{text}");
        }
        assert!(parse("\n").unwrap().is_empty());
    }

    #[test]
    fn a_path_belongs_to_the_deepest_mount_and_the_top_of_a_stack() {
        let mut mounts = parse(HYBRID).unwrap();
        let of = |mounts: &[Mount], p: &str| mount_of(mounts, Path::new(p)).unwrap().clone();
        assert_eq!(of(&mounts, "/var/lib/cloudlet").mount_point, Path::new("/"));
        assert_eq!(of(&mounts, "/tmp/x").fs_type, "tmpfs");
        assert_eq!(of(&mounts, "/tmpfoo").fs_type, "ext4");
        assert_eq!(of(&mounts, "/sys/fs/cgroup/unified/a").fs_type, "cgroup2");
        mounts.extend(parse("50 25 0:50 / /tmp rw - xfs /dev/sdc rw").unwrap());
        assert_eq!(of(&mounts, "/tmp/x").fs_type, "xfs");
        assert!(mount_of(&mounts[1..2], Path::new("/var")).is_none());
    }
}
