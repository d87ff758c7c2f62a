//! Finding the cgroup v2 hierarchy and this process's place in it, from `/proc/self/cgroup` and
//! `/proc/self/mountinfo` (both injected). Reads only; never touches cgroupfs.

use std::path::{Component, Path, PathBuf};

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

/// Finds the cgroup2 mount holding this process's cgroup (the `0::/path` line of
/// `proc_self_cgroup`) in `mountinfo`. When several cgroup2 mounts could hold it, the one whose
/// root is the deepest ancestor wins, then the first listed.
pub fn detect_with(proc_self_cgroup: &Path, mountinfo: &Path) -> Result<Detected, CgroupError> {
    let cgroup_text = file::read(proc_self_cgroup)?;
    let own = cgroup_text
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

    let mounts = parse_mountinfo(mountinfo, &file::read(mountinfo)?)?;
    let mut best: Option<&Mount> = None;
    for m in mounts.iter().filter(|m| m.fstype == "cgroup2") {
        let deeper = best.is_none_or(|b| m.root.components().count() > b.root.components().count());
        if own.starts_with(&m.root) && deeper {
            best = Some(m);
        }
    }
    let Some(best) = best else {
        return Err(CgroupError::NotV2 {
            reason: format!(
                "no cgroup2 mount holding {} in {}",
                own.display(),
                mountinfo.display()
            ),
        });
    };
    let rel = own.strip_prefix(&best.root).unwrap_or(own);
    let mut v1_bound: Vec<Controller> = mounts
        .iter()
        .filter(|m| m.fstype == "cgroup")
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

/// The parts of a mountinfo line we use.
#[derive(Debug)]
struct Mount {
    root: PathBuf,
    mount_point: PathBuf,
    fstype: String,
    super_options: String,
}

/// Parses `/proc/self/mountinfo`: `id parent maj:min root mount-point options [optional...] -
/// fstype source super-options`.
fn parse_mountinfo(path: &Path, text: &str) -> Result<Vec<Mount>, CgroupError> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().skip(6).position(|f| *f == "-").map(|i| i + 6);
        let (Some(sep), Some(root), Some(mount_point)) = (sep, fields.get(3), fields.get(4)) else {
            return Err(CgroupError::Parse {
                path: path.to_owned(),
                line: line.to_owned(),
            });
        };
        let Some(fstype) = fields.get(sep + 1) else {
            return Err(CgroupError::Parse {
                path: path.to_owned(),
                line: line.to_owned(),
            });
        };
        out.push(Mount {
            root: PathBuf::from(unescape(root)),
            mount_point: PathBuf::from(unescape(mount_point)),
            fstype: (*fstype).to_owned(),
            super_options: fields.get(sep + 3).copied().unwrap_or("").to_owned(),
        });
    }
    Ok(out)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match octal {
            Some(b) => {
                out.push(b);
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
