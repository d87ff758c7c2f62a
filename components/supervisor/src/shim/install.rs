//! Where the shim program comes from: the `cloudlet` binary embeds the small `cloudlet-shim`
//! program, and the server writes it out once per version to its data dir (as k3s unpacks its
//! bundled tools), then runs it for each service. The single binary stays the only thing a user
//! installs.
//!
//! The file is named after its content (`cloudlet-shim-<first 16 hex of its SHA-256>`), written to
//! a temp file in the same directory, synced and renamed into place, so a crash never leaves a
//! half-written program under the final name, and an upgrade never rewrites the file a running
//! shim maps: it adds a new name. Other versions are removed once the new one is in place (a
//! running shim keeps its program: the kernel holds the file until the shim exits).
//!
//! Once in place, the file is dropped from the page cache (what no process maps): written or read
//! in one piece it sits there in large folios, and the kernel maps a whole cached folio around a
//! fault, so every shim would map all of the program. Read back on demand, a shim maps the part
//! of it that it runs (`make bench`, shim against runsv).
//!
//! It never runs the program and never writes outside the directory it is given.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::SupervisorError;

/// The prefix of every installed shim program's file name.
pub const PREFIX: &str = "cloudlet-shim-";

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The program to run shims with.
    pub exe: PathBuf,
    /// Whether it was written now (false: the same version was already there).
    pub written: bool,
    /// Older versions removed.
    pub removed: Vec<PathBuf>,
}

/// Puts `program` into `dir` under its content name, unless it is already there, and removes
/// other versions.
pub fn install(dir: &Path, program: &[u8]) -> Result<Installed, SupervisorError> {
    let digest = Sha256::digest(program);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let exe = dir.join(format!("{PREFIX}{hex}"));
    std::fs::create_dir_all(dir).map_err(|e| SupervisorError::io("create", dir, e))?;
    let written = match std::fs::read(&exe) {
        Ok(existing) if existing == program => false,
        Ok(_) => {
            write(dir, &exe, program)?;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write(dir, &exe, program)?;
            true
        }
        Err(e) => return Err(SupervisorError::io("read", &exe, e)),
    };
    let removed = remove_others(dir, &exe)?;
    drop_from_cache(&exe);
    Ok(Installed {
        exe,
        written,
        removed,
    })
}

/// Whether programs in `dir` may be executed (false on a `noexec` mount).
pub fn executable_here(dir: &Path) -> Result<bool, SupervisorError> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| SupervisorError::Io {
        what: "statvfs",
        path: dir.to_owned(),
        source: e.into(),
    })?;
    Ok(!stat.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
}

fn write(dir: &Path, exe: &Path, program: &[u8]) -> Result<(), SupervisorError> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".cloudlet-shim.")
        .tempfile_in(dir)
        .map_err(|e| SupervisorError::io("create a temp file in", dir, e))?;
    tmp.write_all(program)
        .map_err(|e| SupervisorError::io("write", tmp.path(), e))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(|e| SupervisorError::io("chmod", tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| SupervisorError::io("sync", tmp.path(), e))?;
    tmp.persist(exe)
        .map_err(|e| SupervisorError::io("rename into", exe, e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SupervisorError::io("sync", dir, e))
}

/// Advice only: the file is synced (or was already there), so its cached pages are clean and
/// dropping them loses nothing; if the kernel refuses, the shims only map more.
fn drop_from_cache(exe: &Path) {
    if let Ok(file) = std::fs::File::open(exe) {
        let _ = nix::fcntl::posix_fadvise(
            &file,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }
}

fn remove_others(dir: &Path, keep: &Path) -> Result<Vec<PathBuf>, SupervisorError> {
    let mut removed = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| SupervisorError::io("list", dir, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX));
        if ours && path != keep {
            std::fs::remove_file(&path).map_err(|e| SupervisorError::io("remove", &path, e))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_names_by_content_and_replaces_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let first = install(&bin, b"#!/bin/sh\necho v1\n").unwrap();
        assert!(first.written);
        assert!(first.removed.is_empty());
        let name = first.exe.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.starts_with(PREFIX) && name.len() == PREFIX.len() + 16,
            "{name}"
        );
        let mode = std::fs::metadata(&first.exe).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);

        let again = install(&bin, b"#!/bin/sh\necho v1\n").unwrap();
        assert_eq!(again.exe, first.exe);
        assert!(!again.written, "the same version is not rewritten");

        let upgraded = install(&bin, b"#!/bin/sh\necho v2\n").unwrap();
        assert_ne!(upgraded.exe, first.exe);
        assert_eq!(upgraded.removed, std::slice::from_ref(&first.exe));
        assert!(!first.exe.exists());
        let left: Vec<_> = std::fs::read_dir(&bin).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "no temp file or old version is left");
    }

    #[test]
    fn a_damaged_copy_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let first = install(dir.path(), b"program").unwrap();
        std::fs::write(&first.exe, b"prog").unwrap();
        let again = install(dir.path(), b"program").unwrap();
        assert!(again.written);
        assert_eq!(std::fs::read(&again.exe).unwrap(), b"program");
    }

    #[test]
    fn a_temp_dir_is_executable() {
        let dir = tempfile::tempdir().unwrap();
        assert!(executable_here(dir.path()).unwrap());
    }
}
