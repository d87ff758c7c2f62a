//! The files services declare (`spec.files`, their configuration): written whole before the
//! supervisor hears of the service — a temporary file beside the target under a random name,
//! created exclusively (never through a planted file or symlink), its owner and mode set before
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
use std::os::unix::fs::PermissionsExt as _;

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
        hash.update(f.owner.as_deref().unwrap_or_default().as_bytes());
        hash.update([0]);
        hash.update(f.content.as_bytes());
        hash.update([0]);
    }
    Some(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The uid and gid `owner` (`user` or `user:group`, names or ids) names; `None` for no owner
/// (the writer's own). A user without a group gets the user's primary group.
fn owner_ids(owner: Option<&str>) -> Result<Option<(u32, u32)>, String> {
    use nix::unistd::{Group, User};
    let Some(owner) = owner else { return Ok(None) };
    let (user, group) = match owner.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (owner, None),
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (
            uid,
            User::from_uid(uid.into())
                .ok()
                .flatten()
                .map(|u| u.gid.as_raw()),
        ),
        Err(_) => match User::from_name(user) {
            Ok(Some(u)) => (u.uid.as_raw(), Some(u.gid.as_raw())),
            Ok(None) => return Err(format!("owner {owner:?}: no user {user:?} on this node")),
            Err(e) => return Err(format!("owner {owner:?}: looking up user {user:?}: {e}")),
        },
    };
    let gid = match group {
        None => primary.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match Group::from_name(g) {
                Ok(Some(group)) => group.gid.as_raw(),
                Ok(None) => return Err(format!("owner {owner:?}: no group {g:?} on this node")),
                Err(e) => return Err(format!("owner {owner:?}: looking up group {g:?}: {e}")),
            },
        },
    };
    Ok(Some((uid, gid)))
}

/// Writes `file` unless it already holds exactly this content, mode and owner.
pub fn write(file: &FileSpec) -> Result<bool, String> {
    use std::os::unix::fs::MetadataExt as _;
    let path = &file.path;
    let mode = file.mode_bits();
    let owner = owner_ids(file.owner.as_deref()).map_err(|e| format!("{}: {e}", path.display()))?;
    let same = fs::read(path).is_ok_and(|now| now == file.content.as_bytes())
        && fs::metadata(path).is_ok_and(|m| {
            m.permissions().mode() & 0o7777 == mode
                && owner.is_none_or(|(uid, gid)| m.uid() == uid && m.gid() == gid)
        });
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
    // A new name no one can predict, created with O_EXCL: a file or symlink planted beside the
    // target is never opened, let alone written through.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.cloudlet-"))
        .tempfile_in(dir)
        .map_err(|e| format!("{}: a temp file in {}: {e}", path.display(), dir.display()))?;
    let written = (|| {
        // The owner first (a chown may clear set-id bits), then the mode exactly (not filtered
        // by the umask), both before any byte is written.
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(tmp.as_file(), Some(uid), Some(gid))?;
        }
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))?;
        tmp.write_all(file.content.as_bytes())?;
        tmp.as_file().sync_all()
    })();
    if let Err(e) = written {
        return Err(format!("{}: {e}", path.display()));
    }
    tmp.persist(path)
        .map_err(|e| format!("{}: {}", path.display(), e.error))?;
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
            owner: None,
        }
    }

    /// The temp file's name was once predictable (`.NAME.cloudlet-PID`): a symlink planted there
    /// made the write truncate and fill whatever it pointed at.
    #[test]
    fn a_symlink_planted_beside_the_target_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "secret\n").unwrap();
        let path = dir.path().join("web.conf");
        let planted = dir
            .path()
            .join(format!(".web.conf.cloudlet-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert_eq!(write(&spec(&path, "port: 80\n", Some("0600"))), Ok(true));
        assert_eq!(read(&path), "port: 80\n");
        assert_eq!(read(&victim), "secret\n");
        assert!(fs::symlink_metadata(&planted).unwrap().is_symlink());
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

    #[test]
    fn an_owner_is_set_and_a_changed_owner_rewrites_the_file() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init.sql");
        let mut file = spec(&path, "SELECT 1;\n", Some("0600"));
        file.owner = Some("65534:65533".into());
        assert_eq!(write(&file), Ok(true));
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65533));
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert_eq!(write(&file), Ok(false), "same owner: not written again");
        let mine = spec(&path, "SELECT 1;\n", Some("0600"));
        assert_ne!(digest(std::slice::from_ref(&file)), digest(&[mine]));
        file.owner = Some("0".into());
        assert_eq!(write(&file), Ok(true), "another owner: written again");
        assert_eq!(fs::metadata(&path).unwrap().uid(), 0);
        file.owner = Some("no-such-user-here".into());
        let err = write(&file).unwrap_err();
        assert!(
            err.contains("no user \"no-such-user-here\" on this node"),
            "{err}"
        );
    }
}
