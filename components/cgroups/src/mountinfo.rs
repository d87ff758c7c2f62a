//! Parsing of `/proc/self/mountinfo` (the path is injected), for finding the cgroup2 mount here
//! and, in the host crate, the mount a path lives on. It owns only the reading of the mount table;
//! it must never mount or unmount anything.

use std::path::{Path, PathBuf};

use crate::{CgroupError, file};

/// One line of `/proc/self/mountinfo` (the fields cloudlet uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the mounted filesystem that appears at `mount_point` (`/` unless a bind
    /// mount or a cgroup namespace shows a subtree).
    pub root: PathBuf,
    /// Where it is mounted, as this process sees it.
    pub mount_point: PathBuf,
    /// The filesystem type: `ext4`, `tmpfs`, `cgroup`, `cgroup2`, ...
    pub fs_type: String,
    /// The per-superblock options (`rw,cpu` for a cgroup v1 hierarchy of the cpu controller).
    pub super_options: String,
}

/// Reads and parses a mountinfo file (`/proc/self/mountinfo`).
pub fn read(path: &Path) -> Result<Vec<Mount>, CgroupError> {
    parse(path, &file::read(path)?)
}

/// Parses the text of a mountinfo file read from `path` (named in errors). A line is
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`: six fixed
/// fields, optional fields ending at a lone `-`, then the type, the source and the options.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Mount>, CgroupError> {
    let mut mounts = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || CgroupError::Parse {
            path: path.to_owned(),
            line: line.to_owned(),
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields
            .iter()
            .skip(6)
            .position(|f| *f == "-")
            .ok_or_else(bad)?
            + 6;
        let (Some(root), Some(mount_point), Some(fs_type)) =
            (fields.get(3), fields.get(4), fields.get(dash + 1))
        else {
            return Err(bad());
        };
        mounts.push(Mount {
            root: PathBuf::from(unescape(root)),
            mount_point: PathBuf::from(unescape(mount_point)),
            fs_type: (*fs_type).to_owned(),
            super_options: fields.get(dash + 3).copied().unwrap_or("").to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/proc/self/mountinfo";

    fn parse(text: &str) -> Result<Vec<Mount>, CgroupError> {
        super::parse(Path::new(PATH), text)
    }

    /// An ext4 root, a tmpfs with two optional fields, a cgroup v1 hierarchy and cgroup v2 at
    /// /sys/fs/cgroup/unified.
    const TABLE: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
25 22 0:23 / /tmp rw,relatime shared:5 master:2 - tmpfs tmpfs rw,size=1024k
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_root_mount_point_type_and_options_past_optional_fields() {
        let mounts = parse(TABLE).unwrap();
        assert_eq!(mounts.len(), 4);
        assert_eq!(
            mounts[3],
            Mount {
                root: "/".into(),
                mount_point: "/sys/fs/cgroup/unified".into(),
                fs_type: "cgroup2".into(),
                super_options: "rw".into(),
            }
        );
        assert_eq!(mounts[1].fs_type, "tmpfs");
        assert_eq!(mounts[2].super_options, "rw,cpu");
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
    fn rejects_lines_that_are_not_mountinfo_naming_file_and_line() {
        for text in [
            "21 1 0:20 / / rw ext4",
            "21 - ext4",
            "1 2 3 4 5 - x",
            "41 31 0:38 / /sys/fs/cgroup/unified rw -",
        ] {
            let err =
                parse(&format!("22 21 0:21 / /proc rw - proc proc rw\n{text}\n")).unwrap_err();
            assert!(
                matches!(err, CgroupError::Parse { ref line, .. } if line == text),
                "{text}: {err}"
            );
            assert!(err.to_string().starts_with("parse /proc/self/mountinfo: "));
        }
        assert!(parse("\n").unwrap().is_empty());
    }
}
