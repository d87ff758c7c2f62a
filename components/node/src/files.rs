//! The files services declare (`spec.files`, their configuration): written whole before the
//! supervisor hears of the service — through a descriptor of the target's directory reached
//! without following any symlink, a temporary file beside the target under a random name,
//! created exclusively (never through a planted file or symlink), its owner and mode set before
//! any byte, then renamed over it — and only when the content or mode differs. A digest of them
//! goes into the service's environment (`CLOUDLET_FILES_SHA256`), so a changed file restarts
//! the service like a changed command does.
//!
//! It never removes a file (a deleted service's configuration stays, as its logs do), never
//! writes outside the paths a manifest names, and never inside the node's data dir but for its
//! `etc/` ([`Reserved`]).

use std::fs;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use cloudlet_spec::FileSpec;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::libc;
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;
use sha2::{Digest, Sha256};

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
///
/// Everything happens relative to a descriptor of the target's directory, reached from `/` one
/// component at a time without following a symlink (missing directories are made, 0755 under the
/// umask): a directory someone swaps for a symlink while we write cannot redirect the file. The
/// new content goes into a temp file of a random name created there with `O_EXCL|O_NOFOLLOW`,
/// its owner and mode set before any byte, synced, then renamed over the target (which replaces
/// a symlink planted at the target, never writes through it), and the directory synced.
pub fn write(file: &FileSpec) -> Result<bool, String> {
    let path = &file.path;
    let mode = file.mode_bits();
    let owner = owner_ids(file.owner.as_deref()).map_err(|e| format!("{}: {e}", path.display()))?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("{}: not a file path", path.display()));
    };
    let dir_fd = open_dir(dir)?;
    if holds(&dir_fd, name, file.content.as_bytes(), mode, owner) {
        return Ok(false);
    }
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let (tmp_name, tmp) = create_temp(&dir_fd, name).map_err(|e| at(&e))?;
    let filled = (|| {
        let mut tmp = fs::File::from(tmp);
        // The owner first (a chown may clear set-id bits), then the mode exactly (not filtered
        // by the umask), both before any byte is written.
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&tmp, Some(uid), Some(gid))?;
        }
        tmp.set_permissions(fs::Permissions::from_mode(mode))?;
        tmp.write_all(file.content.as_bytes())?;
        tmp.sync_all()?;
        nix::fcntl::renameat(&dir_fd, tmp_name.as_str(), &dir_fd, name)?;
        Ok::<_, std::io::Error>(())
    })();
    if let Err(e) = filled {
        let _ = nix::unistd::unlinkat(&dir_fd, tmp_name.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(at(&e));
    }
    // The rename is durable once the directory is.
    nix::unistd::fsync(&dir_fd).map_err(|e| at(&format!("sync {}: {e}", dir.display())))?;
    Ok(true)
}

/// A descriptor of the directory `dir` (absolute, normalised), made where missing, reached
/// without following a symlink in any component.
fn open_dir(dir: &Path) -> Result<OwnedFd, String> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut fd = nix::fcntl::open("/", flags, Mode::empty()).map_err(|e| format!("/: {e}"))?;
    let mut walked = PathBuf::from("/");
    for part in dir.components() {
        let name = match part {
            Component::RootDir => continue,
            Component::Normal(name) => name,
            _ => {
                return Err(format!("{}: not a normalised absolute path", dir.display()));
            }
        };
        walked.push(name);
        match nix::sys::stat::mkdirat(&fd, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(format!("create directory {}: {e}", walked.display())),
        }
        fd = match nix::fcntl::openat(&fd, name, flags | OFlag::O_NOFOLLOW, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let what = match nix::sys::stat::fstatat(&fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                        "is a symlink: spec.files never follows one; name the real path"
                    }
                    _ => "is not a directory",
                };
                return Err(format!("{} {what}", walked.display()));
            }
            Err(e) => return Err(format!("open directory {}: {e}", walked.display())),
        };
    }
    Ok(fd)
}

/// Whether `name` in `dir` is a regular file (not a symlink) with exactly `content`, `mode` and
/// `owner`.
fn holds(
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> bool {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let Ok(fd) = nix::fcntl::openat(dir, name, flags, Mode::empty()) else {
        return false;
    };
    let file = fs::File::from(fd);
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let same_meta = meta.is_file()
        && meta.len() == content.len() as u64
        && meta.permissions().mode() & 0o7777 == mode
        && owner.is_none_or(|(uid, gid)| meta.uid() == uid && meta.gid() == gid);
    if !same_meta {
        return false;
    }
    // One byte more than expected tells a file that grew since the stat.
    let mut now = Vec::with_capacity(content.len() + 1);
    file.take(content.len() as u64 + 1)
        .read_to_end(&mut now)
        .is_ok_and(|_| now == content)
}

/// A new file beside `name` in `dir`, of a name no one can predict, created with `O_EXCL` and
/// `O_NOFOLLOW` (never a planted file or symlink), mode 0600 until its own is set.
fn create_temp(dir: &OwnedFd, name: &std::ffi::OsStr) -> std::io::Result<(String, OwnedFd)> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut last = Errno::EEXIST;
    for _ in 0..8 {
        let tmp = format!(
            ".{}.cloudlet-{:016x}",
            name.to_string_lossy(),
            rand::random::<u64>()
        );
        match nix::fcntl::openat(dir, tmp.as_str(), flags, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => return Ok((tmp, fd)),
            Err(Errno::EEXIST) => last = Errno::EEXIST,
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.into())
}

/// What was last written for each service: the [`digest`] of its files.
pub type Written = std::collections::BTreeMap<String, String>;

/// A service whose declared files differ from what was last written for it.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The service.
    pub name: String,
    /// The [`digest`] of `files`.
    pub digest: String,
    /// Its files.
    pub files: Vec<FileSpec>,
}

/// What [`write_pending`] did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Services whose files are all in place now, with their digest.
    pub written: Vec<(String, String)>,
    /// Services some of whose files could not be written, with every error (retried next time).
    pub failed: std::collections::BTreeMap<String, Vec<String>>,
}

/// The services in `services` (name → its declared files) whose files changed since `written`
/// says they were written — not every service on every change of the store, which would read
/// every file each time. Forgets, in `written`, the services that are gone or declare no files.
/// Does no I/O.
pub fn pending<'a>(
    services: impl Iterator<Item = (&'a String, &'a [FileSpec])>,
    written: &mut Written,
) -> Vec<Pending> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (name, files) in services {
        let Some(now) = digest(files) else {
            continue;
        };
        seen.insert(name.clone());
        if written.get(name) != Some(&now) {
            out.push(Pending {
                name: name.clone(),
                digest: now,
                files: files.to_vec(),
            });
        }
    }
    written.retain(|name, _| seen.contains(name));
    out
}

/// Where declared files never go: the node's data dir (its store, keys, programs and sockets),
/// but for its `etc/`, the one directory in it meant for services' configuration.
#[derive(Debug, Clone, Default)]
pub struct Reserved {
    dir: Option<PathBuf>,
}

impl Reserved {
    /// The data dir `dir`, as the kernel names it (a declared path is absolute and walked
    /// without following symlinks, so it can only reach the data dir by its real name).
    pub fn data_dir(dir: &Path) -> Self {
        Self {
            dir: Some(fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned())),
        }
    }

    /// Refuses a path inside the data dir and outside its `etc/`.
    pub fn check(&self, path: &Path) -> Result<(), String> {
        match &self.dir {
            Some(dir) if path.starts_with(dir) && !path.starts_with(dir.join("etc")) => {
                Err(format!(
                    "{}: inside the data dir {} (its store, keys and programs); a service's files go \
                 outside it, or under {}/etc/",
                    path.display(),
                    dir.display(),
                    dir.display()
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Writes the files of every pending service, none where `reserved` says. Blocking (it
/// fsyncs): run it off the async workers.
pub fn write_pending(pending: Vec<Pending>, reserved: &Reserved) -> Outcome {
    let mut outcome = Outcome::default();
    for p in pending {
        let failed: Vec<String> = p
            .files
            .iter()
            .filter_map(|f| reserved.check(&f.path).and_then(|()| write(f)).err())
            .collect();
        if failed.is_empty() {
            outcome.written.push((p.name, p.digest));
        } else {
            outcome.failed.insert(p.name, failed);
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// [`pending`] then [`write_pending`], recording what was written: the errors, one per failed
    /// file.
    pub fn sync<'a>(
        services: impl Iterator<Item = (&'a String, &'a [FileSpec])>,
        written: &mut Written,
    ) -> Vec<String> {
        let outcome = write_pending(pending(services, written), &Reserved::default());
        written.extend(outcome.written);
        outcome.failed.into_values().flatten().collect()
    }

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

    #[test]
    fn the_data_dir_is_reserved_but_its_etc() {
        let dir = tempfile::tempdir().unwrap();
        let reserved = Reserved::data_dir(dir.path());
        let real = fs::canonicalize(dir.path()).unwrap();
        for inside in [
            "store.redb",
            "pki/ca.key",
            "bin/cloudlet-shim-00",
            "etcetera",
        ] {
            let err = reserved.check(&real.join(inside)).unwrap_err();
            assert!(err.contains("inside the data dir"), "{err}");
        }
        for allowed in ["etc/region.conf", "etc/yunion/pki/ca.crt"] {
            assert_eq!(reserved.check(&real.join(allowed)), Ok(()), "{allowed}");
        }
        // A sibling whose name starts like the data dir's is not inside it.
        let sibling = PathBuf::from(format!("{}-other/x", real.display()));
        assert_eq!(reserved.check(&sibling), Ok(()));
        assert_eq!(reserved.check(Path::new("/etc/app.conf")), Ok(()));
        assert_eq!(Reserved::default().check(&real.join("store.redb")), Ok(()));
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

    /// Parents were once made and walked with `create_dir_all`: a directory swapped for a
    /// symlink (by a service user who owns its parent) sent the write elsewhere.
    #[test]
    fn a_symlink_among_the_parents_is_refused_and_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let owned = dir.path().join("owned-by-a-service");
        fs::create_dir(&owned).unwrap();
        std::os::unix::fs::symlink(&elsewhere, owned.join("conf")).unwrap();
        let path = owned.join("conf/deep/web.conf");
        let err = write(&spec(&path, "port: 80\n", None)).unwrap_err();
        assert!(
            err.contains(&format!(
                "{} is a symlink: spec.files never follows one",
                owned.join("conf").display()
            )),
            "{err}"
        );
        assert_eq!(
            fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing made there"
        );

        // A symlink at the target itself is replaced, never written through.
        let victim = dir.path().join("victim");
        fs::write(&victim, "secret\n").unwrap();
        let target = dir.path().join("web.conf");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        assert_eq!(write(&spec(&target, "port: 80\n", None)), Ok(true));
        assert!(!fs::symlink_metadata(&target).unwrap().is_symlink());
        assert_eq!(read(&target), "port: 80\n");
        assert_eq!(read(&victim), "secret\n");

        // A file where a directory should be is named.
        let err = write(&spec(&target.join("x"), "", None)).unwrap_err();
        assert!(err.contains("web.conf is not a directory"), "{err}");
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
