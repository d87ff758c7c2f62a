//! Auto-deploy: the manifest files in `DIR/manifests` (k3s and k0s have the same directory) are
//! applied when the server starts and again whenever they change, and what a file created goes
//! away with it.
//!
//! Semantics:
//! - **Which files.** Every regular file (or symlink to one) directly in the directory whose name
//!   ends in `.yaml` or `.yml` and does not start with a dot. Subdirectories, other names and
//!   dotfiles are ignored, so `web.yaml.off` or `.web.yaml.swp` are never applied. Files are
//!   looked at in name order.
//! - **Applied one by one.** Each file is applied on its own (as `ctl apply -f` of that one file
//!   would, under the file's absolute path as its name), so one broken file never blocks the
//!   others. A file is applied again only when its contents changed. A file that does not parse
//!   is reported once (event `AutoDeployFailed` naming the file and the field) and tried again
//!   when it changes; a file refused for a reason that may pass (a `dependsOn` on a service that
//!   another file or an operator has not applied yet, a service that cannot be placed now, a
//!   conflict) is reported once per distinct reason and retried at every look.
//! - **Ownership (k0s).** A service belongs to the file its stored record was last written from
//!   (`/services/<name>` keeps the file name: here the absolute path `DIR/manifests/<file>`).
//!   When a file is removed, every service that belongs to it is deleted (event
//!   `AutoDeployRemoved`); when a file changes and no longer declares a service that belongs to
//!   it, that service is deleted too (pruning). A file emptied of manifests prunes all of its
//!   services. A file that fails to apply prunes nothing. A service deleted or changed by hand
//!   is applied again from its file only when the file changes, or when the server starts.
//! - **One service in two files** belongs to the file applied last (name order at start);
//!   when that file lets it go, it is deleted and the other file applies it again.
//! - **Operators' services are never deleted.** A service applied with `ctl apply` from any other
//!   file belongs to that file. Ownership follows the last write, as with `kubectl apply`: a
//!   service an operator re-applies from elsewhere with changes becomes the operator's, and a
//!   manifest file that declares a service already stored with other contents takes it over (an
//!   identical one is left as it is, and stays its owner's).
//! - **Deletion order.** A service others depend on is deleted only after its dependants;
//!   a service still needed by one that is not being deleted stays, is reported
//!   (`AutoDeployFailed` on the service) and is deleted as soon as nothing depends on it.
//! - **Restarts.** Nothing is kept outside the store: at start every file is applied again
//!   (unchanged ones change nothing) and services of files removed while the server was down are
//!   deleted.
//! - **Rolled-back services are held.** When a rollout rolled a service back from its file's
//!   manifest, applying the file again (at a start, or after another service in it changed)
//!   leaves that service on the manifest it was rolled back to (event `Held`); a file that
//!   changes the service's manifest rolls the new one out.
//! - **Writing files.** A file that changed less than a second ago is left for the next look, so
//!   that a file caught half-written is not applied; writing a temporary name (`x.tmp`) and
//!   renaming it is still the safe way to replace a file.
//! - **The directory.** Created (0700) at start when missing. If it is removed, so are all the
//!   files: their services are deleted. If it cannot be read (permissions, I/O), nothing is
//!   applied or deleted until it can.
//!
//! Changes are found by looking every [`POLL_INTERVAL`] (k3s's deploy controller looks every
//! 15 s), not with inotify: a look is one `readdir` and a `stat` per file, and a file is read
//! and hashed (SHA-256) only when its (inode, size, mtime, ctime) changed or it changed in the
//! last few seconds (two writes within one tick of the file system's clock can leave the same
//! stamp). Polling needs no new dependency or `unsafe` in this crate, has one code path (no
//! fallback for when a watch cannot be held: the directory missing, removed or replaced, no
//! inotify instance left), also sees what inotify misses (a directory swapped under a symlink,
//! files changed from another host on a network file system), and a change taking up to three
//! seconds to apply is fine for this directory.
//!
//! It never deletes a service whose record names another file, never deletes based on a
//! directory listing that failed part-way, and never blocks the runtime (file system work runs
//! on tokio's blocking pool).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cloudlet_api::Backend as _;
use cloudlet_api::dto::{ApplyFile, ApplyRequest};
use cloudlet_node::records::{SERVICES, ServiceRecord, service_key};
use cloudlet_store::{Compare, CompareOp, Op, Store, Txn};
use sha2::{Digest as _, Sha256};

use crate::{ControlPlane, placer};

/// How often the directory is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// A file that changed less than this long ago may still be being written: a later look applies
/// it.
const SETTLE: Duration = Duration::from_secs(1);
/// A file that changed less than this long ago is read at every look even when its stamp did not
/// change.
const RECENT: Duration = Duration::from_secs(5);

/// Applies the manifest files in `dir` (normally `<data dir>/manifests`) and keeps applying
/// their changes, for the life of the server (see the module documentation). Creates `dir`
/// (mode 0700) if it is missing. Never returns; spawn it.
pub async fn run<S: Store>(control_plane: ControlPlane<S>, dir: PathBuf) {
    // Records name files by absolute path, whatever the cwd of a later server.
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    if let Err(e) = builder.create(&dir).await {
        tracing::warn!(
            "auto-deploy: create {}: {e}; its manifests are applied once it exists",
            dir.display()
        );
    }
    let mut deployer = Deployer::new(control_plane, dir);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        deployer.look().await;
    }
}

type Hash = [u8; 32];

/// What a look at the directory found about one file.
#[derive(Debug)]
struct Seen {
    name: String,
    stamp: Stamp,
    /// It changed so recently that it may still be being written.
    settling: bool,
    /// Its contents, unless its stamp showed them unchanged; an error says why they could not
    /// be read.
    content: Option<Result<String, String>>,
}

/// What changes whenever a file's contents do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt as _;
        Stamp {
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// How long ago the file last changed, from its ctime (which no program can set back);
    /// `None` when that is in the future (the clock went back) or cannot be told.
    fn age(&self, now: SystemTime) -> Option<Duration> {
        let secs = u64::try_from(self.ctime.0).ok()?;
        let nanos = u32::try_from(self.ctime.1).ok()?;
        now.duration_since(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
            .ok()
    }
}

/// What is known about one file in the directory.
#[derive(Debug)]
struct Tracked {
    stamp: Stamp,
    /// Of the contents last read; zero when they could not be read.
    hash: Hash,
    /// The contents last applied (their hash) and the services they declare.
    applied: Option<(Hash, BTreeSet<String>)>,
    /// The last failure, reported once.
    failure: Option<Failure>,
}

impl Tracked {
    /// Nothing to do until the file changes: its contents were applied, or cannot be.
    fn settled(&self) -> bool {
        self.current_services().is_some()
            || self
                .failure
                .as_ref()
                .is_some_and(|f| f.hash == self.hash && !f.retry)
    }

    /// The services the file declares now, if its current contents were applied.
    fn current_services(&self) -> Option<&BTreeSet<String>> {
        self.applied
            .as_ref()
            .filter(|(hash, _)| *hash == self.hash)
            .map(|(_, services)| services)
    }
}

/// Why a file's contents were not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    /// The contents it is about.
    hash: Hash,
    message: String,
    /// Tried again at every look (the cause may be elsewhere), or only once the file changes.
    retry: bool,
}

/// The auto-deployer's memory between looks.
struct Deployer<S> {
    cp: ControlPlane<S>,
    dir: PathBuf,
    /// `dir` and a slash: the start of the file name of every record a manifest file wrote.
    prefix: String,
    files: BTreeMap<String, Tracked>,
    /// Services that should go but are still depended on, with the message reported.
    blocked: BTreeMap<String, String>,
    /// Services may have to be deleted: look at the stored records.
    dirty: bool,
    /// The last error reading the directory, reported once.
    dir_error: Option<String>,
}

impl<S: Store> Deployer<S> {
    fn new(cp: ControlPlane<S>, dir: PathBuf) -> Deployer<S> {
        Deployer {
            cp,
            prefix: format!("{}/", dir.display()),
            dir,
            files: BTreeMap::new(),
            blocked: BTreeMap::new(),
            dirty: true,
            dir_error: None,
        }
    }

    /// The name records and events give the file `name` of the directory.
    fn path_of(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// One look: apply what changed, then delete what lost its file.
    async fn look(&mut self) {
        let trusted: BTreeMap<String, Stamp> = self
            .files
            .iter()
            .filter(|(_, t)| t.settled())
            .map(|(name, t)| (name.clone(), t.stamp))
            .collect();
        let dir = self.dir.clone();
        let seen = match tokio::task::spawn_blocking(move || scan(&dir, &trusted)).await {
            Ok(Ok(seen)) => {
                self.dir_error = None;
                seen
            }
            Ok(Err(e)) => {
                let message = e.to_string();
                if self.dir_error.as_ref() != Some(&message) {
                    tracing::warn!(
                        "auto-deploy: read {}: {message}; nothing is applied or deleted until it \
                         can be read",
                        self.dir.display()
                    );
                    self.dir_error = Some(message);
                }
                return;
            }
            Err(e) => {
                tracing::warn!("auto-deploy: the directory scan failed: {e}");
                return;
            }
        };
        let present: BTreeSet<&str> = seen.iter().map(|s| s.name.as_str()).collect();
        let before = self.files.len();
        self.files.retain(|name, _| present.contains(name.as_str()));
        if self.files.len() != before {
            self.dirty = true;
        }

        let mut todo: Vec<(String, Hash, String)> = Vec::new();
        let mut unreadable = Vec::new();
        for s in seen {
            let tracked = self.files.entry(s.name.clone()).or_insert(Tracked {
                stamp: s.stamp,
                hash: [0; 32],
                applied: None,
                failure: None,
            });
            tracked.stamp = s.stamp;
            match s.content {
                // Unchanged, and nothing to do about it.
                None => {}
                Some(Err(e)) => {
                    tracked.hash = [0; 32];
                    unreadable.push((s.name, e));
                }
                Some(Ok(text)) => {
                    tracked.hash = Sha256::digest(text.as_bytes()).into();
                    if !tracked.settled() && !s.settling {
                        todo.push((s.name, tracked.hash, text));
                    }
                }
            }
        }

        for (name, e) in unreadable {
            let failure = Failure {
                hash: [0; 32],
                message: format!("cannot be read: {e}"),
                retry: true,
            };
            self.report(&name, failure);
        }

        // Passes until nothing more applies: a file may depend on services of a later one.
        let mut failures = BTreeMap::new();
        loop {
            let mut progress = false;
            let mut again = Vec::new();
            for (name, hash, text) in todo {
                match self.apply_file(&name, hash, &text).await {
                    Ok(services) => {
                        progress = true;
                        self.dirty = true;
                        failures.remove(&name);
                        if let Some(t) = self.files.get_mut(&name) {
                            t.applied = Some((hash, services));
                            t.failure = None;
                        }
                    }
                    Err(failure) => {
                        if failure.retry {
                            again.push((name.clone(), hash, text));
                        }
                        failures.insert(name, failure);
                    }
                }
            }
            todo = again;
            if !progress || todo.is_empty() {
                break;
            }
        }
        for (name, failure) in failures {
            self.report(&name, failure);
        }

        if self.dirty {
            self.dirty = !self.delete_orphans().await;
        }
    }

    /// Records a failure of file `name`; an event unless it was reported already.
    fn report(&mut self, name: &str, failure: Failure) {
        let path = self.path_of(name);
        let Some(tracked) = self.files.get_mut(name) else {
            return;
        };
        if tracked.failure.as_ref() == Some(&failure) {
            return;
        }
        let when = if failure.retry {
            format!("retried every {}s", POLL_INTERVAL.as_secs())
        } else {
            "applied again when the file changes".to_owned()
        };
        let body = if failure.message.starts_with(&path) {
            failure.message.clone()
        } else {
            format!("{path}: {}", failure.message)
        };
        tracing::warn!("auto-deploy: {body}");
        let inner = &self.cp.inner;
        inner.event(
            None,
            &inner.options.server_name,
            "AutoDeployFailed",
            format!("not applied ({when}): {body}"),
        );
        tracked.failure = Some(failure);
    }

    /// Applies one file; the names of the services it declares.
    async fn apply_file(
        &self,
        name: &str,
        hash: Hash,
        text: &str,
    ) -> Result<BTreeSet<String>, Failure> {
        let path = self.path_of(name);
        let manifests = cloudlet_spec::parse_file(&path, text).map_err(|e| Failure {
            hash,
            message: e.to_string(),
            retry: false,
        })?;
        let declared: BTreeSet<String> = manifests
            .iter()
            .filter_map(|m| m.as_service())
            .map(|s| s.metadata.name.clone())
            .collect();
        if declared.is_empty() {
            // Apply refuses a file without manifests; here it means the file owns nothing.
            return Ok(declared);
        }
        let request = ApplyRequest {
            files: vec![ApplyFile {
                name: path.clone(),
                content: text.to_owned(),
            }],
            retry: false,
        };
        match self.cp.apply(request).await {
            Ok(response) => {
                tracing::info!(
                    "auto-deploy: applied {path}: {}",
                    response
                        .items
                        .iter()
                        .map(|i| format!("{} {:?}", i.name, i.action).to_lowercase())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                Ok(response.items.into_iter().map(|i| i.name).collect())
            }
            Err(e) => Err(Failure {
                hash,
                message: e.to_string(),
                retry: true,
            }),
        }
    }

    /// Deletes the services whose file is gone or no longer declares them, dependants first.
    /// True when nothing is left to delete.
    async fn delete_orphans(&mut self) -> bool {
        let inner = &self.cp.inner;
        let server = &inner.options.server_name;
        let kvs = match inner.store.list(SERVICES).await {
            Ok((kvs, _)) => kvs,
            Err(e) => {
                tracing::warn!("auto-deploy: read the services: {e}; retrying");
                return false;
            }
        };
        let mut records: BTreeMap<String, (ServiceRecord, u64)> = BTreeMap::new();
        for kv in kvs {
            match ServiceRecord::decode(&kv.key, &kv.value) {
                Ok(r) => {
                    records.insert(r.manifest.metadata.name.clone(), (r, kv.mod_revision));
                }
                Err(e) => {
                    tracing::warn!("auto-deploy: {e}; nothing is deleted until it is readable");
                    return false;
                }
            }
        }
        let mut doomed: BTreeMap<String, String> = BTreeMap::new();
        for (name, (record, _)) in &records {
            if record.transient.is_some() {
                continue;
            }
            let Some(file) = owner(&self.prefix, &record.file) else {
                continue;
            };
            let why = match self.files.get(file) {
                None => format!("{} was removed", record.file),
                Some(t) => match t.current_services() {
                    Some(declared) if !declared.contains(name) => {
                        format!("{} no longer declares it", record.file)
                    }
                    _ => continue,
                },
            };
            doomed.insert(name.clone(), why);
        }
        let depends_on: BTreeMap<String, Vec<String>> = records
            .iter()
            .map(|(name, (r, _))| (name.clone(), r.manifest.spec.depends_on.clone()))
            .collect();
        let (order, blocked) = deletion_order(&depends_on, &doomed.keys().cloned().collect());

        let mut done = blocked.is_empty();
        let mut deleted = false;
        for name in order {
            let (Some((_, revision)), Some(why)) = (records.get(&name), doomed.get(&name)) else {
                continue;
            };
            let key = service_key(&name);
            // Only the record seen here, written from the manifest file: never one an
            // operator applied meanwhile.
            let txn = Txn::guarded(
                vec![Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    *revision,
                )],
                vec![Op::delete(key)],
            );
            match inner.store.txn(txn).await {
                Ok(r) if r.succeeded => {
                    deleted = true;
                    tracing::info!("auto-deploy: deleted service {name}: {why}");
                    inner.event(
                        Some(&name),
                        server,
                        "AutoDeployRemoved",
                        format!("deleted: {why}; its logs are kept"),
                    );
                    // Another file that declares it too applies it again, as its own.
                    for t in self.files.values_mut() {
                        if t.current_services().is_some_and(|s| s.contains(&name)) {
                            t.applied = None;
                        }
                    }
                }
                // It changed meanwhile; what depends on it may have too: look again next time.
                Ok(_) => {
                    done = false;
                    break;
                }
                Err(e) => {
                    tracing::warn!("auto-deploy: delete service {name}: {e}; retrying");
                    done = false;
                    break;
                }
            }
        }
        let now_blocked: BTreeMap<String, String> = blocked
            .into_iter()
            .filter_map(|(name, by)| {
                let why = doomed.get(&name)?;
                Some((
                    name,
                    format!(
                        "not deleted yet ({why}): {} depend{} on it; deleted once nothing does",
                        by.join(", "),
                        if by.len() == 1 { "s" } else { "" }
                    ),
                ))
            })
            .collect();
        for (name, message) in &now_blocked {
            if self.blocked.get(name) != Some(message) {
                tracing::warn!("auto-deploy: service {name}: {message}");
                inner.event(Some(name), server, "AutoDeployFailed", message.clone());
            }
        }
        self.blocked = now_blocked;
        if deleted {
            placer::place_now(inner).await;
        }
        done
    }
}

/// The manifest file (its name in the directory whose path and slash are `prefix`) that a
/// record's `file` says the record was written from, if any.
fn owner<'a>(prefix: &str, file: &'a str) -> Option<&'a str> {
    file.strip_prefix(prefix)
        .filter(|name| is_manifest_name(name))
}

/// Whether a file of the directory is a manifest file.
fn is_manifest_name(name: &str) -> bool {
    !name.starts_with('.')
        && !name.contains('/')
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// The manifest files in `dir`, by name. A file whose stamp is the one in `trusted` and that did
/// not change recently is not read. A missing directory has no files; any other error reading
/// it fails the whole scan (a partial listing would look like removed files).
fn scan(dir: &Path, trusted: &BTreeMap<String, Stamp>) -> std::io::Result<Vec<Seen>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    let mut seen = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !is_manifest_name(&name) {
            continue;
        }
        let path = entry.path();
        // Symlinks are followed; a dangling one is no file.
        let meta = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                seen.push(Seen {
                    name,
                    stamp: Stamp::default(),
                    settling: false,
                    content: Some(Err(e.to_string())),
                });
                continue;
            }
        };
        let stamp = Stamp::of(&meta);
        let age = stamp.age(now);
        let recent = age.is_none_or(|a| a < RECENT);
        let content = if !recent && trusted.get(&name) == Some(&stamp) {
            None
        } else {
            Some(std::fs::read_to_string(&path).map_err(|e| e.to_string()))
        };
        seen.push(Seen {
            name,
            stamp,
            settling: age.is_some_and(|a| a < SETTLE),
            content,
        });
    }
    seen.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(seen)
}

/// The order to delete `doomed` in, given every stored service's `dependsOn`: a service only
/// after every service that depends on it. The second value holds the doomed services that
/// cannot go (yet), with the services that still depend on them.
fn deletion_order(
    depends_on: &BTreeMap<String, Vec<String>>,
    doomed: &BTreeSet<String>,
) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let mut left: BTreeSet<&str> = depends_on.keys().map(String::as_str).collect();
    let mut waiting: BTreeSet<&str> = doomed.iter().map(String::as_str).collect();
    let dependants = |left: &BTreeSet<&str>, name: &str| -> Vec<String> {
        left.iter()
            .filter(|other| {
                **other != name
                    && depends_on
                        .get(**other)
                        .is_some_and(|deps| deps.iter().any(|d| d == name))
            })
            .map(|other| (*other).to_owned())
            .collect()
    };
    let mut order = Vec::new();
    loop {
        let free: Vec<&str> = waiting
            .iter()
            .copied()
            .filter(|name| dependants(&left, name).is_empty())
            .collect();
        if free.is_empty() {
            break;
        }
        for name in free {
            waiting.remove(name);
            left.remove(name);
            order.push(name.to_owned());
        }
    }
    let blocked = waiting
        .into_iter()
        .map(|name| (name.to_owned(), dependants(&left, name)))
        .collect();
    (order, blocked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(n, d)| ((*n).to_owned(), d.iter().map(|s| (*s).to_owned()).collect()))
            .collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn manifest_names() {
        for yes in ["web.yaml", "db.yml", "a.b.yaml"] {
            assert!(is_manifest_name(yes), "{yes}");
        }
        for no in [
            ".web.yaml",
            ".#web.yaml",
            "web.yaml.swp",
            "web.yaml~",
            "web.json",
            "web",
            "sub/web.yaml",
        ] {
            assert!(!is_manifest_name(no), "{no}");
        }
    }

    #[test]
    fn dependants_are_deleted_before_their_dependencies() {
        let d = deps(&[
            ("db", &[]),
            ("cache", &["db"]),
            ("web", &["cache", "db"]),
            ("other", &[]),
        ]);
        let (order, blocked) = deletion_order(&d, &set(&["db", "web", "cache"]));
        assert_eq!(order, ["web", "cache", "db"]);
        assert!(blocked.is_empty());
    }

    #[test]
    fn a_dependency_of_a_service_that_stays_is_blocked_with_its_dependants_named() {
        let d = deps(&[
            ("db", &[]),
            ("cache", &["db"]),
            ("web", &["db"]),
            ("api", &["cache"]),
        ]);
        // `api` (an operator's) stays: `cache` cannot go, so neither can `db`; `web` can.
        let (order, blocked) = deletion_order(&d, &set(&["db", "cache", "web"]));
        assert_eq!(order, ["web"]);
        assert_eq!(blocked["cache"], ["api"]);
        assert_eq!(blocked["db"], ["cache"]);
    }

    #[test]
    fn ownership_is_the_directory_and_a_manifest_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("manifests");
        let prefix = format!("{}/", dir.display());
        let owned = |file: &str| owner(&prefix, file).map(str::to_owned);
        assert_eq!(
            owned(&format!("{prefix}web.yaml")).as_deref(),
            Some("web.yaml")
        );
        assert_eq!(owned(&format!("{prefix}sub/web.yaml")), None);
        assert_eq!(owned(&format!("{prefix}.web.yaml")), None);
        assert_eq!(owned("web.yaml"), None);
        assert_eq!(owned(&format!("{}x/web.yaml", tmp.path().display())), None);
    }

    #[test]
    fn scan_lists_manifest_files_in_order_and_skips_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(
            scan(&dir.join("missing"), &BTreeMap::new())
                .unwrap()
                .is_empty(),
            "a missing directory has no files"
        );
        std::fs::write(dir.join("b.yml"), "b").unwrap();
        std::fs::write(dir.join("a.yaml"), "a").unwrap();
        std::fs::write(dir.join(".hidden.yaml"), "h").unwrap();
        std::fs::write(dir.join("notes.txt"), "n").unwrap();
        std::fs::create_dir(dir.join("sub.yaml")).unwrap();
        std::fs::write(dir.join("target"), "t").unwrap();
        std::os::unix::fs::symlink(dir.join("target"), dir.join("link.yaml")).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling.yaml")).unwrap();

        let seen = scan(dir, &BTreeMap::new()).unwrap();
        let names: Vec<&str> = seen.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a.yaml", "b.yml", "link.yaml"]);
        let contents: Vec<&str> = seen
            .iter()
            .map(|s| s.content.as_ref().unwrap().as_deref().unwrap())
            .collect();
        assert_eq!(contents, ["a", "b", "t"]);
        // Just written: still settling, and read even when its stamp is trusted.
        assert!(seen.iter().all(|s| s.settling));
        let trusted = seen.iter().map(|s| (s.name.clone(), s.stamp)).collect();
        let again = scan(dir, &trusted).unwrap();
        assert!(again.iter().all(|s| s.content.is_some()));
    }

    #[test]
    fn a_stamp_changes_with_the_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.yaml");
        std::fs::write(&path, "one").unwrap();
        let first = Stamp::of(&std::fs::metadata(&path).unwrap());
        std::fs::write(&path, "three").unwrap();
        let second = Stamp::of(&std::fs::metadata(&path).unwrap());
        assert_ne!(first, second);
        let age = second.age(SystemTime::now()).unwrap();
        assert!(age < SETTLE, "{age:?}");
        assert_eq!(
            second.age(SystemTime::UNIX_EPOCH),
            None,
            "a ctime in the future"
        );
    }

    #[test]
    fn a_file_is_settled_once_applied_or_broken_and_unsettled_when_it_changes() {
        let mut t = Tracked {
            stamp: Stamp::default(),
            hash: [1; 32],
            applied: None,
            failure: None,
        };
        assert!(!t.settled());
        t.applied = Some(([1; 32], set(&["web"])));
        assert!(t.settled());
        assert_eq!(t.current_services(), Some(&set(&["web"])));
        t.hash = [2; 32];
        assert!(!t.settled());
        assert_eq!(t.current_services(), None, "changed: nothing to prune by");
        t.failure = Some(Failure {
            hash: [2; 32],
            message: "x".into(),
            retry: true,
        });
        assert!(!t.settled(), "retried");
        t.failure = Some(Failure {
            hash: [2; 32],
            message: "x".into(),
            retry: false,
        });
        assert!(t.settled(), "broken: waits for a change");
    }
}
