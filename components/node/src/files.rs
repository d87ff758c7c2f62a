//! The files services declare (`spec.files`, their configuration): written whole before the
//! supervisor hears of the service — a temporary file beside the target, its mode set before
//! any byte, then renamed over it — and only when the content or mode differs. A digest of them
//! goes into the service's environment (`CLOUDLET_FILES_SHA256`), so a changed file restarts
//! the service like a changed command does.
//!
//! It never removes a file (a deleted service's configuration stays, as its logs do) and never
//! writes outside the paths a manifest names.

use cloudlet_spec::FileSpec;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

/// The environment variable that carries [`digest`].
pub const DIGEST_ENV: &str = "CLOUDLET_FILES_SHA256";

/// A digest of every file's path, mode and content; `None` for no files.
pub fn digest(files: &[FileSpec]) -> Option<String> {
    if files.is_empty() {
        return None;
    }
    let mut hash = Sha256::new();
    for f in files {
        hash.update(f.path.as_os_str().as_encoded_bytes());
        hash.update([0]);
        hash.update(f.mode_bits().to_be_bytes());
        hash.update(f.content.as_bytes());
        hash.update([0]);
    }
    Some(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `file` unless it already holds exactly this content and mode.
pub fn write(file: &FileSpec) -> Result<bool, String> {
    let path = &file.path;
    let mode = file.mode_bits();
    let same = fs::read(path).is_ok_and(|now| now == file.content.as_bytes())
        && fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode);
    if same {
        return Ok(false);
    }
    let dir = path
        .parent()
        .ok_or_else(|| format!("{}: no parent directory", path.display()))?;
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.cloudlet-{}", std::process::id()));
    let written = (|| {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given at creation is filtered by the umask: set it exactly.
        out.set_permissions(fs::Permissions::from_mode(mode))?;
        out.write_all(file.content.as_bytes())?;
        out.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(format!("{}: {e}", path.display()));
    }
    Ok(true)
}

/// What was last written for each service: the [`digest`] of its files.
pub type Written = std::collections::BTreeMap<String, String>;

/// Writes the files of every service in `services` (name → its declared files) whose files
/// changed since `written` says they were written — not on every change of the store, which
/// would read every file each time. The errors, one per failed file (retried next time).
pub fn sync<'a>(
    services: impl Iterator<Item = (&'a String, &'a [FileSpec])>,
    written: &mut Written,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (name, files) in services {
        seen.insert(name.clone());
        let Some(now) = digest(files) else {
            written.remove(name);
            continue;
        };
        if written.get(name) == Some(&now) {
            continue;
        }
        let failed: Vec<String> = files.iter().filter_map(|f| write(f).err()).collect();
        if failed.is_empty() {
            written.insert(name.clone(), now);
        }
        errors.extend(failed);
    }
    written.retain(|name, _| seen.contains(name));
    errors
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    fn spec(path: &Path, content: &str, mode: Option<&str>) -> FileSpec {
        FileSpec {
            path: path.to_owned(),
            content: content.to_owned(),
            mode: mode.map(str::to_owned),
        }
    }

    #[test]
    fn files_are_written_once_with_their_mode_and_rewritten_only_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/yunion/keystone.conf");
        let first = spec(&path, "a: 1\n", Some("0600"));
        assert_eq!(write(&first), Ok(true));
        assert_eq!(read(&path), "a: 1\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        assert_eq!(write(&first), Ok(false), "unchanged: not written again");
        let second = spec(&path, "a: 2\n", Some("0600"));
        assert_eq!(write(&second), Ok(true));
        assert_eq!(read(&path), "a: 2\n");
        assert_ne!(digest(&[first]), digest(std::slice::from_ref(&second)));
        assert_eq!(
            digest(std::slice::from_ref(&second)),
            digest(std::slice::from_ref(&second))
        );
        assert_eq!(digest(&[]), None);
        // sync writes a service's files once, and again only when they change.
        let mut written = Written::new();
        let name = "svc".to_owned();
        let third = spec(&path, "a: 3\n", None);
        let files = vec![third.clone()];
        assert!(sync([(&name, files.as_slice())].into_iter(), &mut written).is_empty());
        assert_eq!(read(&path), "a: 3\n");
        fs::write(&path, "by hand\n").unwrap();
        sync([(&name, files.as_slice())].into_iter(), &mut written);
        assert_eq!(
            read(&path),
            "by hand\n",
            "unchanged files are not rewritten"
        );
        let fourth = vec![spec(&path, "a: 4\n", None)];
        sync([(&name, fourth.as_slice())].into_iter(), &mut written);
        assert_eq!(read(&path), "a: 4\n");
        sync(std::iter::empty(), &mut written);
        assert!(written.is_empty(), "a deleted service is forgotten");
        // No temporary file is left beside it.
        let left: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }
}
