//! Reading and writing cgroupfs interface files with the path (and value) in every error. Writes
//! never create a file: a cgroup's interface files exist or the controller is off, and a missing
//! file must show as an error rather than as a new regular file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use nix::errno::Errno;

use crate::CgroupError;

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a whole file, or `None` when it does not exist (its controller is off) or the kernel
/// refuses to produce it (`EOPNOTSUPP`: a pressure file with PSI disabled).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if is_absent(&e) => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `value` to an existing file in one `write(2)`, as cgroupfs expects. `O_TRUNC` (as a
/// shell's `>` uses) does nothing on cgroupfs and makes a plain file hold exactly the value.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path: path.to_owned(),
            value: value.to_owned(),
            source,
        })
}

/// The error means "not there": the file is absent or the kernel does not provide it.
pub(crate) fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(Errno::EOPNOTSUPP as i32)
}

/// The error is `errno`.
pub(crate) fn is_errno(e: &CgroupError, errno: Errno) -> bool {
    let source = match e {
        CgroupError::Open { source, .. }
        | CgroupError::Read { source, .. }
        | CgroupError::Write { source, .. }
        | CgroupError::CreateDir { source, .. }
        | CgroupError::Remove { source, .. } => source,
        _ => return false,
    };
    source.raw_os_error() == Some(errno as i32)
}

/// Parses a file of `key value` lines (`cgroup.events`, `cpu.stat`, `memory.events`, ...) whose
/// values are unsigned integers. Keys are returned as written; callers ignore the ones they do
/// not know, so newer kernels' extra keys do no harm.
pub(crate) fn parse_flat_keyed<'a>(
    path: &Path,
    text: &'a str,
) -> Result<Vec<(&'a str, u64)>, CgroupError> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        let parsed = match (parts.next(), parts.next(), parts.next()) {
            (Some(key), Some(value), None) => value.parse::<u64>().ok().map(|v| (key, v)),
            _ => None,
        };
        out.push(parsed.ok_or_else(|| CgroupError::Parse {
            path: path.to_owned(),
            line: line.to_owned(),
        })?);
    }
    Ok(out)
}

/// The value of `key` in a parsed flat-keyed file.
pub(crate) fn key(pairs: &[(&str, u64)], key: &str) -> Option<u64> {
    pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Reads a file holding one unsigned integer (`memory.current`, `pids.current`); `None` when the
/// file is absent.
pub(crate) fn read_u64(path: &Path) -> Result<Option<u64>, CgroupError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| CgroupError::Parse {
            path: path.to_owned(),
            line: text.trim().to_owned(),
        })
}

/// Reads a file holding pids, one a line (`cgroup.procs`).
pub(crate) fn read_pids(path: &Path) -> Result<Vec<u32>, CgroupError> {
    read(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse().map_err(|_| CgroupError::Parse {
                path: path.to_owned(),
                line: l.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_parses_pairs_and_rejects_garbage() {
        let p = Path::new("x/cgroup.events");
        let pairs = parse_flat_keyed(p, "populated 1\nfrozen 0\n").unwrap();
        assert_eq!(pairs, vec![("populated", 1), ("frozen", 0)]);
        assert_eq!(key(&pairs, "populated"), Some(1));
        assert_eq!(key(&pairs, "absent"), None);

        for bad in ["populated", "populated yes", "a 1 2"] {
            let err = parse_flat_keyed(p, bad).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("parse x/cgroup.events: unexpected line {bad:?}")
            );
        }
    }

    #[test]
    fn write_never_creates_a_file_and_names_path_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpu.max");
        let err = write(&path, "max 100000").unwrap_err();
        assert!(is_errno(&err, Errno::ENOENT));
        let msg = err.to_string();
        assert!(msg.starts_with("write \"max 100000\" to "), "{msg}");
        assert!(msg.contains("cpu.max"), "{msg}");
        assert!(!path.exists());
    }
}
