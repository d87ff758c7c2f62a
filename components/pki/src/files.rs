//! How PKI files reach the disk: written whole to a temporary file in the same directory, given
//! their mode before any byte is written, synced, then renamed over the target, so a reader never
//! sees half a key and a crash never leaves one behind.
//!
//! A private key is never written with a mode other than 0600, not even for an instant.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::PkiError;

/// The mode of every private key file.
pub const KEY_MODE: u32 = 0o600;
/// The mode of certificates and other public files.
pub const CERT_MODE: u32 = 0o644;

/// Writes a private key (PEM) to `path` with mode 0600, atomically.
pub fn write_private_key(path: &Path, pem: &str) -> Result<(), PkiError> {
    write_atomic(path, pem.as_bytes(), KEY_MODE)
}

/// Writes a certificate (or any public PEM) to `path` with mode 0644, atomically.
pub fn write_certificate(path: &Path, pem: &str) -> Result<(), PkiError> {
    write_atomic(path, pem.as_bytes(), CERT_MODE)
}

/// Reads a PEM file whole.
pub(crate) fn read_pem(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = temp_path(path);
    let tmp_err = |source: io::Error| PkiError::Write {
        path: tmp.clone(),
        source,
    };
    // A temporary file left by a crash may have any mode: remove it rather than reuse it.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(tmp_err(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(tmp_err)?;
    // The umask can only narrow the mode given at creation; set it exactly (0644 under umask 077).
    let written = file
        .set_permissions(Permissions::from_mode(mode))
        .and_then(|()| file.write_all(contents))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(tmp_err(e));
    }
    fs::rename(&tmp, path).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        PkiError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn key_is_0600_and_replaces_a_wider_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        write_private_key(&path, "KEY").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "KEY");
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn stale_temp_file_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        fs::write(temp_path(&path), "stale").unwrap();
        fs::set_permissions(temp_path(&path), Permissions::from_mode(0o666)).unwrap();
        write_private_key(&path, "KEY").unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn certificate_is_0644() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.crt");
        write_certificate(&path, "CERT").unwrap();
        assert_eq!(mode(&path), 0o644);
    }

    #[test]
    fn write_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("node.key");
        let err = write_private_key(&path, "KEY").unwrap_err().to_string();
        assert!(err.contains("missing/.node.key.tmp"), "{err}");
    }
}
