//! The names of the files in a service's log directory (`current.log`, `1.log`, `2.log`, ...)
//! and how a file is recognised across renames. It must never know about the record format.

use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt as _;

/// The file the writer appends to.
pub(crate) const CURRENT: &str = "current.log";

/// The name of the `n`th rotated file (1 is the newest).
pub(crate) fn rotated_name(n: u64) -> String {
    format!("{n}.log")
}

/// `Some(n)` for `n.log` with `n >= 1` written without leading zeros; `None` for any other name.
pub(crate) fn rotated_index(name: &OsStr) -> Option<u64> {
    let digits = name.to_str()?.strip_suffix(".log")?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A file's identity, which survives renames: device and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(crate) fn of(meta: &Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names() {
        for (name, want) in [
            ("1.log", Some(1)),
            ("12.log", Some(12)),
            ("0.log", None),
            ("01.log", None),
            (".log", None),
            ("current.log", None),
            ("1.log.tmp", None),
            ("+1.log", None),
            ("99999999999999999999999.log", None),
        ] {
            assert_eq!(rotated_index(OsStr::new(name)), want, "{name}");
        }
        assert_eq!(rotated_index(OsStr::new(&rotated_name(7))), Some(7));
    }
}
