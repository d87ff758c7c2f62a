//! cloudlet's subtree of the cgroup v2 hierarchy: preparing it (moving the server into a leaf,
//! enabling controllers on the inner groups), naming service cgroups below it, and listing the
//! ones that exist. It must never touch a cgroup outside the base it was given: every relative
//! path passes [`check_rel`].

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;

use crate::{CgroupError, Controller, ServiceCgroup, file};

/// The inner group holding one cgroup per service: `<base>/services/<name>`.
pub const SERVICES: &str = "services";
/// The inner group holding groups of services: `<base>/groups/<group>/<name>`.
pub const GROUPS: &str = "groups";

/// How many times [`Hierarchy::setup`] re-reads the base's processes while moving them (a
/// process may fork while it is being moved).
const MOVE_ROUNDS: usize = 10;

/// cloudlet's subtree: a base cgroup below a cgroup2 mount.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    mount: PathBuf,
    base_rel: PathBuf,
    base: PathBuf,
    v1_bound: Vec<Controller>,
}

/// What [`Hierarchy::setup`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupReport {
    /// Controllers enabled for the base, `services` and `groups`: services can be limited by them.
    pub enabled: Vec<Controller>,
    /// Controllers that could not be enabled, each with why (naming the file).
    pub missing: Vec<(Controller, String)>,
    /// Whether `cgroup.kill` exists (Linux 5.14 and later); without it
    /// [`ServiceCgroup::kill`] falls back to signals.
    pub kill_supported: bool,
    /// How many processes were moved from the base into the leaf.
    pub moved: usize,
}

impl Hierarchy {
    /// cloudlet's subtree at `mount/base_rel`. `base_rel` is relative to the mount (a leading
    /// `/`, as in [`crate::Detected::own`], is allowed); empty or `/` means the mount's root.
    pub fn new(
        mount: impl Into<PathBuf>,
        base_rel: impl AsRef<Path>,
    ) -> Result<Hierarchy, CgroupError> {
        let given = base_rel.as_ref();
        let mut rel = PathBuf::new();
        for c in given.components() {
            match c {
                Component::RootDir => {}
                Component::Normal(part) => rel.push(part),
                _ => {
                    return Err(CgroupError::InvalidPath {
                        path: given.display().to_string(),
                        reason: "a base must not contain `.` or `..`",
                    });
                }
            }
        }
        let mount = mount.into();
        Ok(Hierarchy {
            base: mount.join(&rel),
            mount,
            base_rel: rel,
            v1_bound: Vec::new(),
        })
    }

    /// Tells the hierarchy which controllers a cgroup v1 hierarchy holds
    /// ([`crate::Detected::v1_bound`]), so that [`Hierarchy::setup`] can say why they are missing.
    pub fn with_v1_bound(mut self, v1_bound: Vec<Controller>) -> Hierarchy {
        self.v1_bound = v1_bound;
        self
    }

    /// The cgroup2 mount point.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The base cgroup's directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Our controllers that the base's `cgroup.controllers` lists.
    pub fn available_controllers(&self) -> Result<Vec<Controller>, CgroupError> {
        Ok(Controller::listed_in(&file::read(
            &self.base.join("cgroup.controllers"),
        )?))
    }

    /// Prepares the subtree: creates the base if needed (its parent must exist), moves every process of the base into
    /// `<base>/<leaf_for_self>` (cgroup v2 forbids processes in a cgroup that delegates
    /// controllers), then enables every controller among cpu, memory, pids and io that the base
    /// offers in `<base>/cgroup.subtree_control`, and the same in `<base>/services` and
    /// `<base>/groups` (created if needed).
    ///
    /// A controller that is not offered or whose enabling fails is reported in
    /// [`SetupReport::missing`] with the reason; that is not an error. When the base is the
    /// mount's root no process is moved: the root may hold processes, and they would be every
    /// process on the host.
    pub fn setup(&self, leaf_for_self: &str) -> Result<SetupReport, CgroupError> {
        check_rel(leaf_for_self)?;
        if leaf_for_self.contains('/') {
            return Err(CgroupError::InvalidPath {
                path: leaf_for_self.to_owned(),
                reason: "the leaf must be one name",
            });
        }
        make_dir(&self.base)?;
        let leaf = self.base.join(leaf_for_self);
        make_dir(&leaf)?;
        let moved = if self.base_rel.as_os_str().is_empty() {
            0
        } else {
            move_all(&self.base, &leaf)?
        };

        let offered_file = self.base.join("cgroup.controllers");
        let offered = Controller::listed_in(&file::read(&offered_file)?);
        let mut missing = Vec::new();
        let mut enabled = Vec::new();
        for c in Controller::ALL {
            if offered.contains(&c) {
                enabled.push(c);
            } else {
                missing.push((c, self.unavailable_reason(c, &offered_file)));
            }
        }
        enabled = enable(&self.base, enabled, &mut missing)?;
        for inner in [SERVICES, GROUPS] {
            let dir = self.base.join(inner);
            make_dir(&dir)?;
            enabled = enable(&dir, enabled, &mut missing)?;
        }
        missing.sort_by_key(|(c, _)| *c);
        Ok(SetupReport {
            enabled,
            missing,
            kill_supported: leaf.join("cgroup.kill").exists(),
            moved,
        })
    }

    /// Offers the base the controllers its parent has, by enabling them in the parent's
    /// `cgroup.subtree_control`. For a base that cloudlet creates itself under the cgroup it was
    /// started in (e.g. `/cloudlet` when started at the root, as in a VM or by hand); a base that
    /// systemd delegated (`Delegate=yes`) has its controllers already. Returns what the parent
    /// could not offer, with why. The parent must be the root or hold no processes (cgroup v2's
    /// rule), which the caller knows.
    pub fn delegate_from_parent(&self) -> Result<Vec<(Controller, String)>, CgroupError> {
        let Some(parent) = self.base.parent() else {
            return Ok(Vec::new());
        };
        let offered_file = parent.join("cgroup.controllers");
        let offered = Controller::listed_in(&file::read(&offered_file)?);
        let mut missing = Vec::new();
        let wanted: Vec<Controller> = Controller::ALL
            .into_iter()
            .filter(|c| {
                let has = offered.contains(c);
                if !has {
                    missing.push((*c, self.unavailable_reason(*c, &offered_file)));
                }
                has
            })
            .collect();
        enable(parent, wanted, &mut missing)?;
        Ok(missing)
    }

    /// The cgroup `<base>/<rel>`, e.g. `services/web` or `groups/db/primary`. `rel` must be
    /// relative with no empty, `.` or `..` part; nothing is created until
    /// [`ServiceCgroup::create`].
    pub fn service(&self, rel: &str) -> Result<ServiceCgroup, CgroupError> {
        check_rel(rel)?;
        Ok(ServiceCgroup::new(self.base.clone(), PathBuf::from(rel)))
    }

    /// The cgroups directly below `<base>/<prefix>` as relative paths (`services/web`), sorted;
    /// empty when `<base>/<prefix>` does not exist. For adopting service cgroups after a restart.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, CgroupError> {
        check_rel(prefix)?;
        let dir = self.base.join(prefix);
        let read_err = |source| CgroupError::Read {
            path: dir.clone(),
            source,
        };
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(read_err(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(read_err)?;
            if entry.file_type().map_err(read_err)?.is_dir() {
                out.push(format!("{prefix}/{}", entry.file_name().to_string_lossy()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn unavailable_reason(&self, c: Controller, offered_file: &Path) -> String {
        let why = if self.v1_bound.contains(&c) {
            "hybrid cgroup mode: bound to cgroup v1"
        } else {
            "not delegated to this cgroup"
        };
        format!(
            "controller not available in {} ({why})",
            offered_file.display()
        )
    }
}

/// Checks a relative cgroup path: `name` or `a/b`, without empty, `.` or `..` parts, so that it
/// cannot leave the base.
pub(crate) fn check_rel(rel: &str) -> Result<(), CgroupError> {
    let bad = |reason| {
        Err(CgroupError::InvalidPath {
            path: rel.to_owned(),
            reason,
        })
    };
    if rel.is_empty() {
        return bad("empty");
    }
    if rel.contains('\0') {
        return bad("contains NUL");
    }
    for part in rel.split('/') {
        if part.is_empty() {
            return bad("empty part (absolute, or a double or trailing `/`)");
        }
        if part == "." || part == ".." {
            return bad("`.` or `..` part");
        }
        if part.starts_with("cgroup.") {
            return bad("a part starting with `cgroup.` names an interface file");
        }
    }
    Ok(())
}

/// Creates one cgroup directory; an existing directory is fine.
pub(crate) fn make_dir(dir: &Path) -> Result<bool, CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(source) => Err(CgroupError::CreateDir {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Enables `wanted` in `dir/cgroup.subtree_control` (those not yet enabled), in one write; when
/// that fails, one controller at a time so that each failure gets its own reason in `missing`.
/// Returns the controllers enabled.
pub(crate) fn enable(
    dir: &Path,
    wanted: Vec<Controller>,
    missing: &mut Vec<(Controller, String)>,
) -> Result<Vec<Controller>, CgroupError> {
    enable_with(dir, wanted, missing, file::write)
}

/// [`enable`] with the write injected, so that tests can make the kernel refuse a controller.
fn enable_with(
    dir: &Path,
    wanted: Vec<Controller>,
    missing: &mut Vec<(Controller, String)>,
    mut write: impl FnMut(&Path, &str) -> Result<(), CgroupError>,
) -> Result<Vec<Controller>, CgroupError> {
    let control = dir.join("cgroup.subtree_control");
    let already = Controller::listed_in(&file::read(&control)?);
    let to_enable: Vec<String> = wanted
        .iter()
        .filter(|c| !already.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if to_enable.is_empty() || write(&control, &to_enable.join(" ")).is_ok() {
        return Ok(wanted);
    }
    let mut enabled = Vec::new();
    for c in wanted {
        if already.contains(&c) {
            enabled.push(c);
            continue;
        }
        match write(&control, &format!("+{c}")) {
            Ok(()) => enabled.push(c),
            Err(e) => missing.push((c, e.to_string())),
        }
    }
    Ok(enabled)
}

/// Moves every process of `from` into `to`, re-reading `from` until it is empty (a process may
/// fork meanwhile). A process that exits before it is moved is skipped.
fn move_all(from: &Path, to: &Path) -> Result<usize, CgroupError> {
    let from_procs = from.join("cgroup.procs");
    let to_procs = to.join("cgroup.procs");
    let mut moved = 0;
    for _ in 0..MOVE_ROUNDS {
        let pids = file::read_pids(&from_procs)?;
        if pids.is_empty() {
            return Ok(moved);
        }
        for pid in pids {
            match file::write(&to_procs, &pid.to_string()) {
                Ok(()) => moved += 1,
                Err(e) if file::is_errno(&e, Errno::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let left = file::read_pids(&from_procs)?;
    if left.is_empty() {
        Ok(moved)
    } else {
        Err(CgroupError::MoveIncomplete {
            path: from.to_owned(),
            remaining: left.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testroot::FakeRoot;

    const ALL4: &[&str] = &["cpuset", "cpu", "io", "memory", "hugetlb", "pids"];

    fn fake_base(controllers: &[&str]) -> FakeRoot {
        let root = FakeRoot::new();
        root.cgroup("cl", controllers);
        // What the kernel would create on mkdir, with the controllers the base delegates.
        root.cgroup("cl/server", &[]);
        root.cgroup("cl/services", controllers);
        root.cgroup("cl/groups", controllers);
        root
    }

    #[test]
    fn setup_enables_all_four_controllers_in_one_write_per_inner_group() {
        let root = fake_base(ALL4);
        let h = Hierarchy::new(root.mount(), "/cl").unwrap();
        let report = h.setup("server").unwrap();
        assert_eq!(report.enabled, Controller::ALL.to_vec());
        assert_eq!(report.missing, vec![]);
        assert!(report.kill_supported);
        assert_eq!(report.moved, 0);
        for dir in ["cl", "cl/services", "cl/groups"] {
            let written = root.read(dir, "cgroup.subtree_control");
            assert_eq!(written, "+cpu +memory +pids +io", "{dir}");
        }
    }

    #[test]
    fn setup_enables_only_what_is_not_yet_enabled() {
        let root = fake_base(ALL4);
        root.file("cl", "cgroup.subtree_control", "cpu memory\n");
        let h = Hierarchy::new(root.mount(), "cl").unwrap();
        h.setup("server").unwrap();
        assert_eq!(root.read("cl", "cgroup.subtree_control"), "+pids +io");
    }

    #[test]
    fn setup_without_controllers_succeeds_and_says_why_for_each() {
        let root = fake_base(&["hugetlb"]);
        let h = Hierarchy::new(root.mount(), "cl")
            .unwrap()
            .with_v1_bound(vec![Controller::Cpu, Controller::Memory, Controller::Io]);
        let report = h.setup("server").unwrap();
        assert_eq!(report.enabled, vec![]);
        let file = root.mount().join("cl/cgroup.controllers");
        let v1 = format!(
            "controller not available in {} (hybrid cgroup mode: bound to cgroup v1)",
            file.display()
        );
        let not_delegated = format!(
            "controller not available in {} (not delegated to this cgroup)",
            file.display()
        );
        assert_eq!(
            report.missing,
            vec![
                (Controller::Cpu, v1.clone()),
                (Controller::Memory, v1.clone()),
                (Controller::Pids, not_delegated),
                (Controller::Io, v1),
            ]
        );
        assert_eq!(root.read("cl", "cgroup.subtree_control"), "");
    }

    #[test]
    fn a_refused_controller_is_reported_with_file_and_value_and_the_rest_enabled() {
        let root = fake_base(ALL4);
        let dir = root.mount().join("cl");
        let mut writes = Vec::new();
        let mut missing = Vec::new();
        let enabled = enable_with(
            &dir,
            Controller::ALL.to_vec(),
            &mut missing,
            |path, value| {
                writes.push(value.to_owned());
                if value.contains("+memory") {
                    // What the kernel says when, say, the cgroup has processes of its own.
                    return Err(CgroupError::Write {
                        path: path.to_owned(),
                        value: value.to_owned(),
                        source: io::Error::from_raw_os_error(Errno::EBUSY as i32),
                    });
                }
                file::write(path, value)
            },
        )
        .unwrap();
        use Controller::*;
        assert_eq!(enabled, vec![Cpu, Pids, Io]);
        assert_eq!(
            writes,
            vec!["+cpu +memory +pids +io", "+cpu", "+memory", "+pids", "+io"]
        );
        let control = dir.join("cgroup.subtree_control");
        assert_eq!(
            missing,
            vec![(
                Memory,
                format!(
                    "write \"+memory\" to {}: Device or resource busy (os error 16)",
                    control.display()
                )
            )]
        );
    }

    #[test]
    fn an_unreadable_subtree_control_is_an_error_not_a_report() {
        let root = fake_base(ALL4);
        std::fs::remove_file(root.mount().join("cl/groups/cgroup.subtree_control")).unwrap();
        let h = Hierarchy::new(root.mount(), "cl").unwrap();
        let err = h.setup("server").unwrap_err();
        assert!(
            matches!(err, CgroupError::Read { ref path, .. } if path.ends_with("groups/cgroup.subtree_control")),
            "{err}"
        );
    }

    #[test]
    fn service_paths_stay_below_the_base() {
        let root = FakeRoot::new();
        let h = Hierarchy::new(root.mount(), "/a/b").unwrap();
        assert_eq!(h.base(), root.mount().join("a/b"));
        let s = h.service("groups/db/primary").unwrap();
        assert_eq!(s.path(), root.mount().join("a/b/groups/db/primary"));
        assert_eq!(s.procs_file(), s.path().join("cgroup.procs"));
        for bad in [
            "",
            "/etc",
            "services/../../x",
            "services/./x",
            "services//x",
            "services/x/",
            "services/cgroup.procs",
        ] {
            let err = h.service(bad).unwrap_err();
            assert!(
                matches!(err, CgroupError::InvalidPath { .. }),
                "{bad}: {err}"
            );
        }
        assert!(Hierarchy::new(root.mount(), "a/../..").is_err());
        assert!(h.setup("a/b").is_err());
        let root_h = Hierarchy::new(root.mount(), "/").unwrap();
        assert_eq!(root_h.base(), root.mount());
    }

    #[test]
    fn list_finds_existing_cgroups_and_nothing_when_absent() {
        let root = fake_base(ALL4);
        let h = Hierarchy::new(root.mount(), "cl").unwrap();
        assert_eq!(h.list("groups/none").unwrap(), Vec::<String>::new());
        root.cgroup("cl/services/web", &[]);
        root.cgroup("cl/services/db", &[]);
        root.cgroup("cl/groups/g/one", &[]);
        assert_eq!(
            h.list("services").unwrap(),
            vec!["services/db", "services/web"]
        );
        assert_eq!(h.list("groups").unwrap(), vec!["groups/g"]);
        assert_eq!(h.list("groups/g").unwrap(), vec!["groups/g/one"]);
    }
}
