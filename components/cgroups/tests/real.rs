//! The cgroup module against the real cgroup v2 hierarchy of the machine running the tests (needs
//! root and a cgroup2 mount, pure or hybrid). Every test works only in a uniquely named cgroup it
//! creates directly under this test process's own cgroup, and a drop guard kills and removes it
//! even when the test fails. Limits are asserted as "applied where the controller is offered,
//! reported otherwise", so the tests hold on a hybrid host without controllers (where every limit
//! is reported) and in a VM with every controller alike.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests; the workspace lints aim at library code"
)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloudlet_cgroups::{
    Controller, Detected, Hierarchy, KillMethod, Limits, NotAppliedReason, ServiceCgroup,
    block_device_of, detect, read_pressure,
};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

/// A cgroup of the test's own directly under this process's cgroup; killed and removed on drop.
struct Scratch {
    detected: Detected,
    name: String,
    dir: PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let detected = detect().expect("these tests need a cgroup v2 hierarchy");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("cloudlet-test-{}-{tag}-{nanos}", std::process::id());
        let dir = detected.own_dir().join(&name);
        fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("create {} (these tests need root): {e}", dir.display()));
        Scratch {
            detected,
            name,
            dir,
        }
    }

    /// A hierarchy whose base is the scratch cgroup.
    fn hierarchy(&self) -> Hierarchy {
        Hierarchy::new(&self.detected.mount, self.detected.own.join(&self.name))
            .unwrap()
            .with_v1_bound(self.detected.v1_bound.clone())
    }

    /// The scratch cgroup itself, as a cgroup of the hierarchy of this process's own cgroup.
    fn as_cgroup(&self) -> ServiceCgroup {
        Hierarchy::new(&self.detected.mount, &self.detected.own)
            .unwrap()
            .service(&self.name)
            .unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let cg = self.as_cgroup();
        if !cg.exists() {
            return;
        }
        let _ = cg.kill();
        let _ = cg.wait_empty(Duration::from_secs(10));
        // Remove the deepest cgroups first.
        let mut dirs = vec![self.dir.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(entries) = fs::read_dir(&dirs[i]) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        dirs.push(e.path());
                    }
                }
            }
            i += 1;
        }
        for dir in dirs.iter().rev() {
            if let Err(e) = fs::remove_dir(dir) {
                eprintln!("cleanup: remove {}: {e}", dir.display());
            }
        }
    }
}

/// A child process killed and reaped on drop, in case a test fails before it is moved.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits for the process and asserts it died of SIGKILL.
    fn assert_killed(&mut self) {
        let status = self.0.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }
}

fn sleep() -> Proc {
    Proc(Command::new("sleep").arg("1000").spawn().unwrap())
}

/// `sh` joins the cgroup by writing `0` into `procs_file` (as the supervisor's shim does before
/// exec), forks a background `sleep` (which is born inside), says `ready` and becomes `sleep`.
fn shell_tree(procs_file: &Path) -> Proc {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"echo 0 > "$0" && { sleep 1000 & echo ready; exec sleep 1000; }"#)
        .arg(procs_file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let proc = Proc(child);
    assert_eq!(
        line,
        "ready\n",
        "the shell could not join {}",
        procs_file.display()
    );
    proc
}

fn ppid(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("PPid:")).unwrap();
    line["PPid:".len()..].trim().parse().unwrap()
}

/// Makes orphans of the killed trees come back to this process, so that the test can see how
/// they died.
fn become_subreaper() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
}

/// Reaps the orphan `pid` (re-parented to this subreaper) and asserts it died of SIGKILL, and that
/// no process of that pid is left.
fn assert_orphan_killed(pid: u32) {
    let pid = Pid::from_raw(i32::try_from(pid).unwrap());
    assert_eq!(
        waitpid(pid, None).unwrap(),
        WaitStatus::Signaled(pid, Signal::SIGKILL, false)
    );
    assert_eq!(kill(pid, None), Err(Errno::ESRCH));
}

/// Starts `sleep` (moved in with add_process) and a shell tree (joining by itself) in `cg`, and
/// returns them with the pid of the shell's background child.
fn populate(cg: &ServiceCgroup) -> (Proc, Proc, u32) {
    let a = sleep();
    cg.add_process(a.pid()).unwrap();
    let b = shell_tree(&cg.procs_file());
    let mut procs = cg.procs().unwrap();
    procs.sort_unstable();
    assert_eq!(procs.len(), 3, "{procs:?}");
    assert!(
        procs.contains(&a.pid()) && procs.contains(&b.pid()),
        "{procs:?}"
    );
    let orphan = procs
        .into_iter()
        .find(|p| *p != a.pid() && *p != b.pid())
        .unwrap();
    assert_eq!(ppid(orphan), b.pid());
    assert!(cg.is_populated().unwrap());
    (a, b, orphan)
}

#[test]
fn detect_finds_this_process_in_the_real_hierarchy() {
    let d = detect().unwrap();
    let procs = fs::read_to_string(d.own_dir().join("cgroup.procs")).unwrap();
    let me = std::process::id().to_string();
    assert!(
        procs.lines().any(|l| l == me),
        "{} lacks {me}",
        d.own_dir().display()
    );
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = format!(" {} ", d.mount.display());
    assert!(
        mountinfo
            .lines()
            .any(|l| l.contains(&mount) && l.contains(" - cgroup2 ")),
        "{} is not a cgroup2 mount",
        d.mount.display()
    );
    eprintln!("detected: {d:?}");
}

#[test]
fn cgroup_kill_kills_a_process_tree_and_the_group_is_removed() {
    become_subreaper();
    let scratch = Scratch::new("kill");
    let cg = scratch.hierarchy().service("services/sleepers").unwrap();
    cg.create().unwrap();
    assert!(cg.exists());
    let (mut a, mut b, orphan) = populate(&cg);

    let method = cg.kill().unwrap();
    if cg.path().join("cgroup.kill").exists() {
        assert_eq!(method, KillMethod::CgroupKill);
    } else {
        assert!(matches!(method, KillMethod::Signals { .. }), "{method:?}");
    }
    cg.wait_empty(Duration::from_secs(10)).unwrap();
    assert!(!cg.is_populated().unwrap());
    assert_eq!(cg.procs().unwrap(), Vec::<u32>::new());
    a.assert_killed();
    b.assert_killed();
    assert_orphan_killed(orphan);

    cg.remove().unwrap();
    assert!(!cg.path().exists());
    cg.remove().unwrap();
}

#[test]
fn the_signal_fallback_kills_a_tree_in_nested_cgroups_and_thaws() {
    become_subreaper();
    let scratch = Scratch::new("signals");
    let h = scratch.hierarchy();
    let outer = h.service("groups/g").unwrap();
    let inner = h.service("groups/g/inner").unwrap();
    inner.create().unwrap();
    let (mut a, mut b, orphan) = populate(&inner);
    let mut c = sleep();
    outer.add_process(c.pid()).unwrap();

    let rounds = outer.kill_by_signals().unwrap();
    assert!(rounds >= 1, "{rounds}");
    assert!(!outer.is_populated().unwrap());
    a.assert_killed();
    b.assert_killed();
    c.assert_killed();
    assert_orphan_killed(orphan);
    let events = fs::read_to_string(outer.path().join("cgroup.events")).unwrap();
    assert!(!events.contains("frozen 1"), "{events}");

    // A populated cgroup cannot be removed: the error names it.
    let d = sleep();
    inner.add_process(d.pid()).unwrap();
    let err = inner.remove().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("remove cgroup {}: ", inner.path().display())),
        "{err}"
    );
    drop(d);
    inner.wait_empty(Duration::from_secs(10)).unwrap();
    inner.remove().unwrap();
    outer.remove().unwrap();
    assert!(!outer.path().exists());
}

#[test]
fn setup_moves_the_base_processes_into_the_leaf_and_reports_what_it_cannot_do() {
    let scratch = Scratch::new("setup");
    let a = sleep();
    scratch.as_cgroup().add_process(a.pid()).unwrap();
    let h = scratch.hierarchy();

    let report = h.setup("server").unwrap();
    eprintln!("setup: {report:#?}");
    assert_eq!(report.moved, 1);
    assert_eq!(scratch.as_cgroup().procs().unwrap(), Vec::<u32>::new());
    let leaf = h.service("server").unwrap();
    assert_eq!(leaf.procs().unwrap(), vec![a.pid()]);
    assert_eq!(
        report.kill_supported,
        leaf.path().join("cgroup.kill").exists()
    );
    assert_eq!(h.list("services").unwrap(), Vec::<String>::new());

    let offered = fs::read_to_string(h.base().join("cgroup.controllers")).unwrap();
    for c in Controller::ALL {
        let is_offered = offered.split_whitespace().any(|o| o == c.name());
        assert_eq!(report.enabled.contains(&c), is_offered, "{c}: {report:?}");
        if let Some((_, why)) = report.missing.iter().find(|(m, _)| *m == c) {
            let file = h.base().join("cgroup.controllers");
            assert!(why.starts_with(&format!("controller not available in {}", file.display())));
            let hybrid = why.ends_with("(hybrid cgroup mode: bound to cgroup v1)");
            assert_eq!(hybrid, scratch.detected.v1_bound.contains(&c), "{why}");
        }
    }
    assert_eq!(report.enabled.len() + report.missing.len(), 4);

    let web = h.service("services/web").unwrap();
    web.create().unwrap();
    assert_eq!(h.list("services").unwrap(), vec!["services/web"]);
    let limits = Limits {
        cpu_millis: Some(500),
        memory_bytes: Some(128 << 20),
        pids: Some(1024),
        io: Vec::new(),
    };
    let not_applied = web.apply_limits(&limits).unwrap();
    eprintln!(
        "not applied: {:?}",
        not_applied
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    for c in [Controller::Cpu, Controller::Memory, Controller::Pids] {
        let reported = not_applied
            .iter()
            .any(|n| n.controller == c && matches!(n.reason, NotAppliedReason::Unavailable { .. }));
        assert_eq!(reported, !report.enabled.contains(&c), "{c}");
    }
    let stats = web.stats().unwrap();
    eprintln!("stats: {stats:?}");
    assert!(stats.cpu.is_some());
    assert_eq!(
        stats.pids_current.is_some(),
        report.enabled.contains(&Controller::Pids)
    );
    assert_eq!(
        stats.memory_current.is_some(),
        report.enabled.contains(&Controller::Memory)
    );
    if report.enabled.contains(&Controller::Pids) {
        assert_eq!(stats.pids_max, Some(cloudlet_cgroups::Max::Value(1024)));
    }
}

#[test]
fn node_pressure_and_block_devices_of_this_host() {
    let cpu = Path::new("/proc/pressure/cpu");
    let psi = read_pressure(cpu).unwrap();
    assert_eq!(psi.is_some(), fs::read_to_string(cpu).is_ok());
    eprintln!("node cpu pressure: {psi:?}");

    let dir = tempfile::tempdir().unwrap();
    match block_device_of(dir.path()) {
        Ok((major, minor)) => {
            let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
            assert!(sys.exists(), "{}", sys.display());
            assert!(
                !sys.join("partition").exists(),
                "{} is a partition",
                sys.display()
            );
        }
        Err(e) => {
            // tmpfs, overlay and the like have no block device.
            assert!(
                e.to_string().starts_with("block device of not found"),
                "{e}"
            );
        }
    }
}

#[test]
fn remove_tree_ends_every_process_below_and_removes_every_cgroup() {
    let scratch = Scratch::new("tree");
    let mid = scratch.dir.join("mid");
    let leaf = mid.join("leaf");
    fs::create_dir_all(&leaf).unwrap();
    let mut in_mid = sleep();
    let mut in_leaf = sleep();
    ServiceCgroup::at(&mid).add_process(in_mid.pid()).unwrap();
    ServiceCgroup::at(&leaf).add_process(in_leaf.pid()).unwrap();

    ServiceCgroup::at(&mid)
        .remove_tree(Duration::from_secs(5))
        .unwrap();

    assert!(!mid.exists(), "{} is still there", mid.display());
    in_mid.assert_killed();
    in_leaf.assert_killed();
    // Gone already: nothing to do, no error.
    ServiceCgroup::at(&mid)
        .remove_tree(Duration::from_secs(5))
        .unwrap();
}
