//! Program files each process maps only what it runs of.
//!
//! - **The shim program.** The `cloudlet` binary embeds the small `cloudlet-shim` program, and
//!   the server writes it out once per version to `DIR/bin` (as k3s unpacks its bundled tools),
//!   then runs it for each service. The single binary stays the only thing a user installs.
//! - **The server's own copy.** The server and agent run from a private copy of their executable,
//!   `DIR/bin/cloudlet-server-<digest>` ([`private_copy`]; the command re-executes itself there
//!   before it takes the data dir's lock, keeping its pid). `ctl`, run from the installed binary,
//!   reads its own code into the installed file's page cache; a server mapping that same file
//!   then maps the cached pages around each of its faults, ctl's code among them (`make bench`:
//!   8.1 MiB PSS for a 30-service server against 5.8 MiB from a file no `ctl` touched). The copy
//!   also lets an operator replace the installed binary under a running server.
//!
//! Each file is named after its content (`<prefix><first 16 hex of its SHA-256>`), written to a
//! temp file in the same directory, synced and renamed into place, so a crash never leaves a
//! half-written program under the final name, and an upgrade never rewrites the file a running
//! process maps: it adds a new name. [`remove_others`] removes the other versions once the caller
//! owns the directory (a running process keeps its program: the kernel holds the file until it
//! exits).
//!
//! Once in place, the file is dropped from the page cache (what no process maps): written or read
//! in one piece it sits there in large folios, and the kernel maps a whole cached folio around a
//! fault, so every process would map all of the program. Read back on demand, a process maps the
//! part of it that it runs (`make bench`, shim against runsv).
//!
//! It never runs a program and never writes outside the directory it is given.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::FootprintError;

/// The prefix of every installed shim program's file name.
pub const SHIM_PREFIX: &str = "cloudlet-shim-";

/// The prefix of the server's private copies of its executable.
pub const SERVER_PREFIX: &str = "cloudlet-server-";

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The program's path.
    pub exe: PathBuf,
    /// Whether it was written now (false: the same version was already there).
    pub written: bool,
}

/// Puts `program` into `dir` under its content name (`prefix` + digest), unless it is already
/// there, and drops it from the page cache.
pub fn install(dir: &Path, prefix: &str, program: &[u8]) -> Result<Installed, FootprintError> {
    let exe = dir.join(content_name(prefix, program));
    std::fs::create_dir_all(dir).map_err(|e| FootprintError::io("create", dir, e))?;
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
        Err(e) => return Err(FootprintError::io("read", &exe, e)),
    };
    drop_from_cache(&exe);
    Ok(Installed { exe, written })
}

/// Where this process should run from to map only its own code: `None` when it already runs
/// from its copy in `dir`, else the copy of its executable [`install`]ed there now (or before).
/// The caller re-executes itself at that path; [`is_private_copy`] tells the new image.
pub fn private_copy(dir: &Path) -> Result<Option<PathBuf>, FootprintError> {
    let exe = crate::read_link("/proc/self/exe")?;
    if is_private_copy(dir, &exe) {
        return Ok(None);
    }
    if !executable_here(dir)? {
        return Err(FootprintError::Noexec { dir: dir.into() });
    }
    // The running image's own file, even if the installed one was replaced or removed since.
    let program = std::fs::read("/proc/self/exe")
        .map_err(|e| FootprintError::io("read", Path::new("/proc/self/exe"), e))?;
    Ok(Some(install(dir, SERVER_PREFIX, &program)?.exe))
}

/// Whether `exe` is a private copy of the server's executable in `dir`.
pub fn is_private_copy(dir: &Path, exe: &Path) -> bool {
    exe.parent() == Some(dir)
        && exe
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(SERVER_PREFIX))
}

/// Whether programs in `dir` may be executed (false on a `noexec` mount). `dir` is created if
/// it is missing.
pub fn executable_here(dir: &Path) -> Result<bool, FootprintError> {
    std::fs::create_dir_all(dir).map_err(|e| FootprintError::io("create", dir, e))?;
    let stat = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| FootprintError::io("statvfs", dir, e.into()))?;
    Ok(!stat.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
}

/// Removes the files of `dir` whose name starts with `prefix`, except `keep`. Call it only while
/// owning `dir` (the data dir's lock): another process may be about to run one.
pub fn remove_others(
    dir: &Path,
    prefix: &str,
    keep: &Path,
) -> Result<Vec<PathBuf>, FootprintError> {
    let mut removed = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| FootprintError::io("list", dir, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(prefix));
        if ours && path != keep {
            std::fs::remove_file(&path).map_err(|e| FootprintError::io("remove", &path, e))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

fn content_name(prefix: &str, program: &[u8]) -> String {
    let digest = Sha256::digest(program);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

fn write(dir: &Path, exe: &Path, program: &[u8]) -> Result<(), FootprintError> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".cloudlet-program.")
        .tempfile_in(dir)
        .map_err(|e| FootprintError::io("create a temp file in", dir, e))?;
    tmp.write_all(program)
        .map_err(|e| FootprintError::io("write", tmp.path(), e))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(|e| FootprintError::io("chmod", tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| FootprintError::io("sync", tmp.path(), e))?;
    tmp.persist(exe)
        .map_err(|e| FootprintError::io("rename into", exe, e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FootprintError::io("sync", dir, e))
}

/// Advice only: the file is synced (or was already there), so its cached pages are clean and
/// dropping them loses nothing; if the kernel refuses, the processes only map more.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_names_by_content_and_removes_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let first = install(&bin, SHIM_PREFIX, b"#!/bin/sh\necho v1\n").unwrap();
        assert!(first.written);
        let name = first.exe.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.starts_with(SHIM_PREFIX) && name.len() == SHIM_PREFIX.len() + 16,
            "{name}"
        );
        let mode = std::fs::metadata(&first.exe).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);

        let again = install(&bin, SHIM_PREFIX, b"#!/bin/sh\necho v1\n").unwrap();
        assert_eq!(again.exe, first.exe);
        assert!(!again.written, "the same version is not rewritten");
        assert!(
            remove_others(&bin, SHIM_PREFIX, &again.exe)
                .unwrap()
                .is_empty()
        );

        let upgraded = install(&bin, SHIM_PREFIX, b"#!/bin/sh\necho v2\n").unwrap();
        assert_ne!(upgraded.exe, first.exe);
        assert!(first.exe.exists(), "install alone removes nothing");
        let other = install(&bin, SERVER_PREFIX, b"server").unwrap();
        let removed = remove_others(&bin, SHIM_PREFIX, &upgraded.exe).unwrap();
        assert_eq!(removed, std::slice::from_ref(&first.exe));
        assert!(!first.exe.exists());
        assert!(other.exe.exists(), "another prefix's programs stay");
        let left: Vec<_> = std::fs::read_dir(&bin).unwrap().flatten().collect();
        assert_eq!(left.len(), 2, "no temp file or old version is left");
    }

    #[test]
    fn a_damaged_copy_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let first = install(dir.path(), SHIM_PREFIX, b"program").unwrap();
        std::fs::write(&first.exe, b"prog").unwrap();
        let again = install(dir.path(), SHIM_PREFIX, b"program").unwrap();
        assert!(again.written);
        assert_eq!(std::fs::read(&again.exe).unwrap(), b"program");
    }

    #[test]
    fn a_temp_dir_is_executable() {
        let dir = tempfile::tempdir().unwrap();
        assert!(executable_here(dir.path()).unwrap());
    }

    #[test]
    fn the_private_copy_holds_this_executable_and_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let copy = private_copy(&bin).unwrap().unwrap();
        assert!(is_private_copy(&bin, &copy), "{}", copy.display());
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            std::fs::read("/proc/self/exe").unwrap()
        );
        assert_eq!(
            private_copy(&bin).unwrap(),
            Some(copy.clone()),
            "the same file again"
        );
        assert!(
            !is_private_copy(dir.path(), &copy),
            "only in the directory given"
        );
        assert!(!is_private_copy(&bin, &bin.join("cloudlet-shim-0011")));
    }
}
