//! One service's cgroup below the base: creating it, moving processes in, writing its limits,
//! reading it, killing everything in it, waiting for it to empty and removing it. It acts only on
//! its own directory and the ones below it, and only when asked: when to kill is the caller's
//! decision.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::hierarchy::{enable, make_dir};
use crate::limits::{cpu_max_value, io_max_devices, io_max_line, max_value};
use crate::stats::read_stats;
use crate::{CgroupError, Controller, Limits, NotApplied, NotAppliedReason, Stats, file};

/// Rounds of SIGKILL in [`ServiceCgroup::kill_by_signals`] before giving up.
const KILL_ROUNDS: u32 = 20;
/// How long each round waits for the cgroup to empty.
const KILL_ROUND_WAIT: Duration = Duration::from_millis(100);
/// The longest [`ServiceCgroup::wait_empty`] sleeps without re-reading `cgroup.events`, in case
/// an inotify event is lost.
const WAIT_RECHECK: Duration = Duration::from_millis(500);

/// Enables in `dir/cgroup.subtree_control` every controller of ours that `dir/cgroup.controllers`
/// lists; a refusal is an error naming the file and the value.
fn enable_offered(dir: &Path) -> Result<(), CgroupError> {
    let offered = Controller::listed_in(&file::read(&dir.join("cgroup.controllers"))?);
    let mut refused = Vec::new();
    enable(dir, offered, &mut refused)?;
    match refused.into_iter().next() {
        None => Ok(()),
        Some((_, reason)) => Err(CgroupError::CreateDir {
            path: dir.to_owned(),
            source: std::io::Error::other(reason),
        }),
    }
}

/// A cgroup `<base>/<rel>`, made by [`crate::Hierarchy::service`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCgroup {
    base: PathBuf,
    rel: PathBuf,
    path: PathBuf,
}

/// How [`ServiceCgroup::kill`] killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMethod {
    /// `1` was written to `cgroup.kill` (Linux 5.14 and later); the processes die
    /// asynchronously: use [`ServiceCgroup::wait_empty`].
    CgroupKill,
    /// `cgroup.kill` is missing: every process got SIGKILL, in this many rounds, until the
    /// cgroup was empty.
    Signals {
        /// Rounds of SIGKILL sent.
        rounds: u32,
    },
}

impl ServiceCgroup {
    /// The existing cgroup at the absolute `path` — for a process that was handed the path (the
    /// shim), not the hierarchy.
    pub fn at(path: &Path) -> ServiceCgroup {
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let rel = path.file_name().map(PathBuf::from).unwrap_or_default();
        ServiceCgroup::new(base, rel)
    }

    pub(crate) fn new(base: PathBuf, rel: PathBuf) -> ServiceCgroup {
        ServiceCgroup {
            path: base.join(&rel),
            base,
            rel,
        }
    }

    /// The path relative to the base (`services/web`).
    pub fn rel(&self) -> &Path {
        &self.rel
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<path>/cgroup.procs`: a child writes `0` here before exec to join the cgroup (so that
    /// everything it forks is inside from the start).
    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// Whether the cgroup's directory exists.
    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Creates the cgroup and any missing parent below the base (which must exist). On each
    /// parent it creates, it enables in `cgroup.subtree_control` every controller of ours that
    /// the parent's `cgroup.controllers` lists, so that the cgroup can be limited; a failure to
    /// do so is an error. An existing cgroup is fine.
    pub fn create(&self) -> Result<(), CgroupError> {
        let mut dir = self.base.clone();
        let parts: Vec<_> = self.rel.components().collect();
        for (i, part) in parts.iter().enumerate() {
            dir.push(part);
            let created = make_dir(&dir)?;
            let is_parent = i + 1 < parts.len();
            if created && is_parent {
                enable_offered(&dir)?;
            }
        }
        Ok(())
    }

    /// Moves process `pid` (with all its threads) into the cgroup.
    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        file::write(&self.procs_file(), &pid.to_string())
    }

    /// The processes in the cgroup itself (not in cgroups below it).
    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        file::read_pids(&self.procs_file())
    }

    /// Whether any process is in the cgroup or below it (`populated` of `cgroup.events`).
    pub fn is_populated(&self) -> Result<bool, CgroupError> {
        let path = self.path.join("cgroup.events");
        let text = file::read(&path)?;
        let pairs = file::parse_flat_keyed(&path, &text)?;
        file::key(&pairs, "populated")
            .map(|v| v != 0)
            .ok_or_else(|| CgroupError::Parse {
                path,
                line: "no \"populated\" line".to_owned(),
            })
    }

    /// Writes `limits` for every controller the cgroup's `cgroup.controllers` lists (an unset
    /// limit is written as `max`, resetting an earlier one; an `io.max` device no longer in
    /// `limits.io` is reset). Returns each requested limit that is NOT enforced and why: its
    /// controller is not enabled here, or the kernel refused the value. Only reading
    /// `cgroup.controllers` failing is an error.
    pub fn apply_limits(&self, limits: &Limits) -> Result<Vec<NotApplied>, CgroupError> {
        let offered_file = self.path.join("cgroup.controllers");
        let offered = Controller::listed_in(&file::read(&offered_file)?);
        let mut not_applied = Vec::new();
        let simple = [
            (
                Controller::Cpu,
                "cpu.max",
                limits.cpu_millis.is_some(),
                cpu_max_value(limits.cpu_millis),
            ),
            (
                Controller::Memory,
                "memory.max",
                limits.memory_bytes.is_some(),
                max_value(limits.memory_bytes),
            ),
            (
                Controller::Pids,
                "pids.max",
                limits.pids.is_some(),
                max_value(limits.pids),
            ),
        ];
        for (controller, name, requested, value) in simple {
            if !offered.contains(&controller) {
                if requested {
                    not_applied.push(NotApplied {
                        controller,
                        reason: NotAppliedReason::Unavailable {
                            path: offered_file.clone(),
                        },
                    });
                }
                continue;
            }
            if let Err(e) = file::write(&self.path.join(name), &value) {
                not_applied.push(NotApplied {
                    controller,
                    reason: NotAppliedReason::Failed(e),
                });
            }
        }

        if !offered.contains(&Controller::Io) {
            if !limits.io.is_empty() {
                not_applied.push(NotApplied {
                    controller: Controller::Io,
                    reason: NotAppliedReason::Unavailable {
                        path: offered_file.clone(),
                    },
                });
            }
            return Ok(not_applied);
        }
        let io_max = self.path.join("io.max");
        let mut lines: Vec<String> = limits.io.iter().map(io_max_line).collect();
        let wanted: Vec<(u32, u32)> = limits.io.iter().map(|l| l.device).collect();
        match file::read(&io_max).and_then(|text| io_max_devices(&io_max, &text)) {
            Ok(old) => lines.extend(old.into_iter().filter(|d| !wanted.contains(d)).map(
                |(major, minor)| format!("{major}:{minor} rbps=max wbps=max riops=max wiops=max"),
            )),
            Err(e) => not_applied.push(NotApplied {
                controller: Controller::Io,
                reason: NotAppliedReason::Failed(e),
            }),
        }
        // One write per device: the kernel parses one line per write.
        for line in lines {
            if let Err(e) = file::write(&io_max, &line) {
                not_applied.push(NotApplied {
                    controller: Controller::Io,
                    reason: NotAppliedReason::Failed(e),
                });
            }
        }
        Ok(not_applied)
    }

    /// Reads the cgroup's usage, limits, events and pressure.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        read_stats(&self.path)
    }

    /// Kills every process in the cgroup and below it: writes `1` to `cgroup.kill`, or, when the
    /// kernel has no `cgroup.kill` (before 5.14), falls back to [`Self::kill_by_signals`].
    /// [`CgroupError::NotFound`] when the cgroup does not exist.
    pub fn kill(&self) -> Result<KillMethod, CgroupError> {
        let kill_file = self.path.join("cgroup.kill");
        if kill_file.exists() {
            file::write(&kill_file, "1")?;
            return Ok(KillMethod::CgroupKill);
        }
        if !self.exists() {
            return Err(CgroupError::NotFound {
                what: "cgroup",
                path: self.path.clone(),
            });
        }
        self.kill_by_signals()
            .map(|rounds| KillMethod::Signals { rounds })
    }

    /// The fallback of [`Self::kill`] (public so that it can be tested on kernels that have
    /// `cgroup.kill`): freezes the cgroup when `cgroup.freeze` exists (Linux 5.2 and later, so
    /// that nothing forks between rounds; SIGKILL still kills frozen tasks), sends SIGKILL to every
    /// process in it and below it, and waits up to 100 ms for it to empty, for at most 20 rounds.
    /// Thaws the cgroup afterwards. Returns the rounds used.
    pub fn kill_by_signals(&self) -> Result<u32, CgroupError> {
        let freeze = self.path.join("cgroup.freeze");
        let frozen = freeze.exists();
        if frozen {
            file::write(&freeze, "1")?;
        }
        let result = self.signal_rounds();
        if frozen {
            // The cgroup may already be gone, which is fine; otherwise thaw it for reuse.
            match file::write(&freeze, "0") {
                Err(e) if !file::is_errno(&e, Errno::ENOENT) && result.is_ok() => return Err(e),
                _ => {}
            }
        }
        result
    }

    fn signal_rounds(&self) -> Result<u32, CgroupError> {
        let mut remaining = 0;
        for round in 1..=KILL_ROUNDS {
            let pids = self.procs_below()?;
            if pids.is_empty() {
                return Ok(round - 1);
            }
            remaining = pids.len();
            for pid in pids {
                let Ok(raw) = i32::try_from(pid) else {
                    continue;
                };
                match kill(Pid::from_raw(raw), Signal::SIGKILL) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(source) => {
                        return Err(CgroupError::Signal {
                            path: self.path.clone(),
                            pid,
                            source,
                        });
                    }
                }
            }
            match self.wait_empty(KILL_ROUND_WAIT) {
                Ok(()) => return Ok(round),
                Err(CgroupError::Timeout { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(CgroupError::KillIncomplete {
            path: self.path.clone(),
            remaining,
            rounds: KILL_ROUNDS,
        })
    }

    /// The processes in the cgroup and in every cgroup below it.
    fn procs_below(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = Vec::new();
        let mut dirs = vec![self.path.clone()];
        while let Some(dir) = dirs.pop() {
            pids.extend(file::read_pids(&dir.join("cgroup.procs"))?);
            let read_err = |source| CgroupError::Read {
                path: dir.clone(),
                source,
            };
            for entry in std::fs::read_dir(&dir).map_err(read_err)? {
                let entry = entry.map_err(read_err)?;
                if entry.file_type().map_err(read_err)?.is_dir() {
                    dirs.push(entry.path());
                }
            }
        }
        Ok(pids)
    }

    /// Waits until no process is left in the cgroup or below it (`populated 0` in
    /// `cgroup.events`), or the cgroup is gone. Woken by inotify (`IN_MODIFY`, which the kernel
    /// raises on `cgroup.events` when it changes), and re-reads the file at least every 500 ms in
    /// case an event is missed. [`CgroupError::Timeout`] when `timeout` passes first.
    pub fn wait_empty(&self, timeout: Duration) -> Result<(), CgroupError> {
        let events = self.path.join("cgroup.events");
        let watch_err = |source| CgroupError::Watch {
            path: events.clone(),
            source,
        };
        let deadline = Instant::now() + timeout;
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(watch_err)?;
        match inotify.add_watch(&events, AddWatchFlags::IN_MODIFY) {
            Ok(_) => {}
            Err(Errno::ENOENT) if !self.exists() => return Ok(()),
            Err(e) => return Err(watch_err(e)),
        }
        loop {
            match self.is_populated() {
                Ok(false) => return Ok(()),
                Ok(true) => {}
                Err(_) if !self.exists() => return Ok(()),
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CgroupError::Timeout {
                    path: self.path.clone(),
                    waited: timeout,
                });
            }
            let wait = (deadline - now).min(WAIT_RECHECK);
            // Round up so that a sub-millisecond rest does not spin.
            let millis = u16::try_from(wait.as_millis() + 1).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(millis)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(watch_err(e)),
            }
            // Drain the events; which ones does not matter, the file is re-read.
            match inotify.read_events() {
                Ok(_) | Err(Errno::EAGAIN) => {}
                Err(e) => return Err(watch_err(e)),
            }
        }
    }

    /// Removes the cgroup's directory (it must be empty: kill and [`Self::wait_empty`] first,
    /// and remove cgroups below it first). A cgroup that does not exist is fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        match std::fs::remove_dir(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CgroupError::Remove {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Ends everything in this cgroup and every cgroup below it, and removes them all, the
    /// deepest first; waits up to `timeout` for each to empty. A cgroup that does not exist is
    /// fine. For tearing down a whole subtree someone made (a test's, a bench's).
    pub fn remove_tree(&self, timeout: Duration) -> Result<(), CgroupError> {
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    ServiceCgroup::at(&entry.path()).remove_tree(timeout)?;
                }
            }
        } else {
            return Ok(());
        }
        // Nothing may be left running; a kill that finds nothing is not an error worth reporting.
        let _ = self.kill();
        self.wait_empty(timeout)?;
        self.remove()
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;
    use crate::testroot::FakeRoot;
    use crate::{Hierarchy, IoLimit};

    const ALL4: &[&str] = &["cpu", "io", "memory", "pids"];

    fn service(root: &FakeRoot, controllers: &[&str]) -> ServiceCgroup {
        root.cgroup("cl", ALL4);
        root.cgroup("cl/services", ALL4);
        root.cgroup("cl/services/web", controllers);
        let h = Hierarchy::new(root.mount(), "cl").unwrap();
        let s = h.service("services/web").unwrap();
        s.create().unwrap();
        s
    }

    fn applied(root: &FakeRoot) -> [String; 4] {
        ["cpu.max", "memory.max", "pids.max", "io.max"].map(|f| root.read("cl/services/web", f))
    }

    #[test]
    fn limits_write_the_exact_file_contents() {
        let mib = 1024 * 1024;
        let disk = |rbps| IoLimit {
            device: (8, 0),
            rbps,
            ..IoLimit::default()
        };
        let table = [
            (
                Limits {
                    cpu_millis: Some(100),
                    pids: Some(1024),
                    ..Limits::default()
                },
                ["10000 100000", "max", "1024", ""],
            ),
            (
                Limits {
                    cpu_millis: Some(500),
                    memory_bytes: Some(128 * mib),
                    pids: Some(1024),
                    io: vec![disk(Some(10 * mib))],
                },
                [
                    "50000 100000",
                    "134217728",
                    "1024",
                    "8:0 rbps=10485760 wbps=max riops=max wiops=max",
                ],
            ),
            (
                Limits {
                    cpu_millis: Some(2000),
                    memory_bytes: Some(64 * mib),
                    pids: Some(256),
                    ..Limits::default()
                },
                ["200000 100000", "67108864", "256", ""],
            ),
            (Limits::default(), ["max 100000", "max", "max", ""]),
        ];
        for (limits, want) in table {
            let root = FakeRoot::new();
            let s = service(&root, ALL4);
            let not_applied = s.apply_limits(&limits).unwrap();
            assert!(not_applied.is_empty(), "{limits:?}: {not_applied:?}");
            assert_eq!(applied(&root), want, "{limits:?}");
        }
    }

    #[test]
    fn an_io_device_no_longer_limited_is_reset() {
        let root = FakeRoot::new();
        let s = service(&root, ALL4);
        root.file(
            "cl/services/web",
            "io.max",
            "8:16 rbps=1 wbps=max riops=max wiops=max\n",
        );
        s.apply_limits(&Limits::default()).unwrap();
        assert_eq!(
            root.read("cl/services/web", "io.max"),
            "8:16 rbps=max wbps=max riops=max wiops=max"
        );
    }

    #[test]
    fn limits_without_their_controller_are_reported_and_not_written() {
        let root = FakeRoot::new();
        let s = service(&root, &["memory"]);
        let limits = Limits {
            cpu_millis: Some(500),
            memory_bytes: Some(1 << 20),
            pids: Some(1024),
            io: vec![IoLimit {
                device: (8, 0),
                ..IoLimit::default()
            }],
        };
        let not_applied = s.apply_limits(&limits).unwrap();
        let shown: Vec<String> = not_applied.iter().map(ToString::to_string).collect();
        let file = s.path().join("cgroup.controllers");
        assert_eq!(
            shown,
            ["cpu", "pids", "io"]
                .map(|c| format!("{c}: controller not enabled (not in {})", file.display()))
        );
        assert_eq!(root.read("cl/services/web", "memory.max"), "1048576");
        for absent in ["cpu.max", "pids.max", "io.max"] {
            assert!(!s.path().join(absent).exists(), "{absent}");
        }

        // Unset limits without their controller are not "not applied": nothing was asked.
        let root = FakeRoot::new();
        let s = service(&root, &[]);
        assert!(s.apply_limits(&Limits::default()).unwrap().is_empty());
    }

    #[test]
    fn a_refused_write_is_reported_with_file_and_value() {
        let root = FakeRoot::new();
        let s = service(&root, ALL4);
        std::fs::remove_file(s.path().join("pids.max")).unwrap();
        let limits = Limits {
            pids: Some(1024),
            ..Limits::default()
        };
        let not_applied = s.apply_limits(&limits).unwrap();
        assert_eq!(not_applied.len(), 1);
        let shown = not_applied[0].to_string();
        let want = format!(
            "pids: write \"1024\" to {}: No such file or directory (os error 2)",
            s.path().join("pids.max").display()
        );
        assert_eq!(shown, want);
    }

    #[test]
    fn create_enables_controllers_on_the_parents_it_makes() {
        let root = FakeRoot::new();
        root.cgroup("cl", ALL4);
        root.cgroup("cl/groups", ALL4);
        let h = Hierarchy::new(root.mount(), "cl").unwrap();
        // A fake root gets no interface files on mkdir, so the new parent `groups/db` has no
        // `cgroup.controllers`: the error shows that create() reads it to enable its controllers.
        let s = h.service("groups/db/primary").unwrap();
        let err = s.create().unwrap_err();
        assert!(
            matches!(err, CgroupError::Read { ref path, .. } if path.ends_with("groups/db/cgroup.controllers")),
            "{err}"
        );
        // What it does with them, on a parent seeded as the kernel would make it.
        root.cgroup("cl/groups/db", &["cpu", "memory", "hugetlb"]);
        enable_offered(&root.mount().join("cl/groups/db")).unwrap();
        assert_eq!(
            root.read("cl/groups/db", "cgroup.subtree_control"),
            "+cpu +memory"
        );
        // An existing parent is left alone; the leaf gets made.
        root.file("cl/groups/db", "cgroup.subtree_control", "");
        s.create().unwrap();
        assert!(s.exists());
        assert_eq!(root.read("cl/groups/db", "cgroup.subtree_control"), "");
        assert_eq!(root.read("cl/groups", "cgroup.subtree_control"), "");
        s.create().unwrap();
    }

    #[test]
    fn procs_populated_and_kill_write() {
        let root = FakeRoot::new();
        let s = service(&root, &[]);
        root.file("cl/services/web", "cgroup.procs", "12\n345\n");
        root.file(
            "cl/services/web",
            "cgroup.events",
            "populated 1\nfrozen 0\n",
        );
        assert_eq!(s.procs().unwrap(), vec![12, 345]);
        assert!(s.is_populated().unwrap());
        s.add_process(77).unwrap();
        assert_eq!(root.read("cl/services/web", "cgroup.procs"), "77");
        assert_eq!(s.kill().unwrap(), KillMethod::CgroupKill);
        assert_eq!(root.read("cl/services/web", "cgroup.kill"), "1");

        let gone = Hierarchy::new(root.mount(), "cl")
            .unwrap()
            .service("services/gone")
            .unwrap();
        assert!(matches!(gone.kill(), Err(CgroupError::NotFound { .. })));
        gone.remove().unwrap();
    }

    #[test]
    fn wait_empty_wakes_on_the_events_file_and_times_out() {
        let root = FakeRoot::new();
        let s = service(&root, &[]);
        root.file(
            "cl/services/web",
            "cgroup.events",
            "populated 1\nfrozen 0\n",
        );
        let err = s.wait_empty(Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, CgroupError::Timeout { .. }), "{err}");
        assert!(
            err.to_string().ends_with("still populated after 50ms"),
            "{err}"
        );

        let events = s.path().join("cgroup.events");
        let started = Instant::now();
        let writer = thread::spawn(move || {
            std::fs::write(events, "populated 0\nfrozen 0\n").unwrap();
        });
        // Far longer than the recheck interval: only the wakeup (or a recheck) ends it early.
        s.wait_empty(Duration::from_secs(30)).unwrap();
        writer.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
