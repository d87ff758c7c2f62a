//! The crate against this real host: capacity and usage agree with the standard tools (getconf,
//! nproc, free, df), the checks agree with what the kernel says through other means (statfs of the
//! cgroup mounts, uname), and a real tiny tmpfs, filled by the test, raises DiskPressure. Every
//! assertion must hold on any Linux host the tests run on as root; the only thing these tests
//! change is a tmpfs they mount inside their own temp dir and unmount again.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests; the workspace lints aim at library code"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cloudlet_host::{
    CheckOptions, CheckStatus, Condition, ConditionKind, HostPaths, Severity, Thresholds, capacity,
    check_config, conditions, usage,
};

/// stdout of a command, trimmed; the test fails if it does.
fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One `df` column for `path` (the line after the header).
fn df(path: &Path, column: &str) -> String {
    let out = sh(
        "df",
        &["-B1", &format!("--output={column}"), path.to_str().unwrap()],
    );
    out.lines().nth(1).unwrap().trim().to_owned()
}

#[test]
fn capacity_agrees_with_getconf_nproc_free_and_df() {
    let cap = capacity(&HostPaths::default(), &[PathBuf::from("/")]).unwrap();

    let online: u64 = sh("getconf", &["_NPROCESSORS_ONLN"]).parse().unwrap();
    let usable: u64 = sh("nproc", &[]).parse().unwrap();
    assert_eq!(cap.cpu_millis, online * 1000);
    // nproc counts this process's affinity mask, which can only be narrower than what is online.
    assert!(cap.cpu_millis >= usable * 1000 && usable > 0);

    let free = sh("free", &["-b"]);
    let mem_total: u64 = free
        .lines()
        .find_map(|l| l.strip_prefix("Mem:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cap.memory_bytes, mem_total);

    let read = |p: &str| {
        fs::read_to_string(p)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let limit = read("/proc/sys/kernel/pid_max").min(read("/proc/sys/kernel/threads-max"));
    assert_eq!(cap.pids, limit);
    assert!(cap.pids > 0);

    let [disk] = &cap.disks[..] else {
        panic!("one disk asked, {:?} read", cap.disks)
    };
    assert_eq!(disk.path, Path::new("/"));
    assert_eq!(disk.mount_point, Path::new("/"));
    assert_eq!(disk.fs_type, df(Path::new("/"), "fstype"));
    assert_eq!(disk.total_bytes.to_string(), df(Path::new("/"), "size"));
    assert_eq!(disk.total_inodes.to_string(), df(Path::new("/"), "itotal"));
    // Others write to / meanwhile: free agrees with df's "avail" to within 1% of the disk.
    let avail: u64 = df(Path::new("/"), "avail").parse().unwrap();
    assert!(
        disk.free_bytes.abs_diff(avail) < disk.total_bytes / 100,
        "{disk:?} vs {avail}"
    );
    assert!(disk.total_bytes > 0 && disk.free_bytes <= disk.total_bytes);
}

/// All threads visible in /proc: each holds a PID.
fn threads_in_proc() -> u64 {
    let mut n = 0;
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_ok() {
            // A process may exit between listing and reading: it then has no threads.
            n += fs::read_dir(entry.path().join("task")).map_or(0, |t| t.count() as u64);
        }
    }
    n
}

#[test]
fn usage_agrees_with_proc_and_the_pressure_files() {
    let paths = HostPaths::default();
    let cap = capacity(&paths, &[]).unwrap();
    let now = usage(&paths, &[PathBuf::from("/")]).unwrap();
    let seen = threads_in_proc();

    assert!(now.memory_available_bytes > 0 && now.memory_available_bytes <= cap.memory_bytes);
    // The kernel's count holds every thread /proc shows (and those of other PID namespaces);
    // a few may have exited in between.
    assert!(now.pids_in_use + 64 >= seen, "{} < {seen}", now.pids_in_use);
    assert!(now.pids_in_use <= cap.pids);
    assert_eq!(now.disks.len(), 1);

    for (name, reading) in [
        ("cpu", now.pressure.cpu),
        ("memory", now.pressure.memory),
        ("io", now.pressure.io),
    ] {
        let readable = fs::read_to_string(format!("/proc/pressure/{name}")).is_ok();
        assert_eq!(reading.is_some(), readable, "{name}");
        if let Some(r) = reading {
            assert!((0.0..=100.0).contains(&r.some_avg10), "{name}: {r:?}");
        }
    }
}

/// The filesystem type name `stat -f` gives for `path` (`cgroup2fs`, `tmpfs`, ...), if it exists.
fn statfs_type(path: &str) -> Option<String> {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T", path])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

#[test]
fn check_config_agrees_with_the_kernel() {
    let data = tempfile::tempdir().unwrap();
    let checks = check_config(&HostPaths::default(), data.path(), &CheckOptions::default());
    for c in &checks {
        println!("{:<18} {:<4} {}", c.name, c.status.as_str(), c.detail);
        if let Some(fix) = &c.fix {
            println!("{:<23} fix: {fix}", "");
        }
        assert_eq!(c.fix.is_some(), c.status != CheckStatus::Ok, "{c:?}");
    }
    let find = |name: &str| checks.iter().find(|c| c.name == name).unwrap();

    let c = find("kernel");
    assert!(c.detail.contains(&sh("uname", &["-r"])), "{c:?}");
    assert_ne!(c.status, CheckStatus::Fail);

    // The cgroup v2 layout, told by statfs(2) rather than the mount table the crate reads.
    let v2 = |p: &str| statfs_type(p).as_deref() == Some("cgroup2fs");
    let (mount, layout) = if v2("/sys/fs/cgroup") {
        ("/sys/fs/cgroup", CheckStatus::Ok)
    } else if v2("/sys/fs/cgroup/unified") {
        ("/sys/fs/cgroup/unified", CheckStatus::Warn)
    } else {
        panic!("these tests need cgroup v2 mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified")
    };
    let c = find("cgroup2");
    assert_eq!(c.status, layout, "{c:?}");
    if layout == CheckStatus::Warn {
        assert!(
            c.detail
                .starts_with("hybrid: cgroup v2 at /sys/fs/cgroup/unified"),
            "{c:?}"
        );
        let fix = c.fix.as_deref().unwrap();
        assert!(fix.contains("systemd.unified_cgroup_hierarchy=1"), "{fix}");
        assert!(fix.contains("cgroup_no_v1=all"), "{fix}");
    }

    // The controllers of this process's cgroup, as the file lists them.
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let file = Path::new(mount)
        .join(own.trim_start_matches('/'))
        .join("cgroup.controllers");
    let have = fs::read_to_string(&file).unwrap();
    let missing: Vec<&str> = ["cpu", "memory", "pids", "io"]
        .into_iter()
        .filter(|n| !have.split_whitespace().any(|h| h == *n))
        .collect();
    let c = find("cgroup-controllers");
    if missing.is_empty() {
        assert_eq!(c.status, CheckStatus::Ok, "{c:?}");
    } else {
        assert_eq!(c.status, CheckStatus::Warn, "{c:?}");
        let want = format!("missing {} in {}", missing.join(", "), file.display());
        assert!(
            c.detail.starts_with(&want),
            "{c:?} should start with {want:?}"
        );
        assert!(c.detail.contains("limits are not enforced"), "{c:?}");
        assert!(c.fix.is_some());
    }

    // As root this process may write its cgroup's subtree_control; the subreaper flag is readable.
    assert_eq!(find("cgroup-delegation").status, CheckStatus::Ok);
    assert_eq!(find("subreaper").status, CheckStatus::Ok);

    let c = find("data-dir");
    assert!(
        c.detail.starts_with(&format!(
            "{} (exists) on {} at ",
            data.path().display(),
            df(data.path(), "fstype")
        )),
        "{c:?}"
    );

    let c = find("clock");
    assert_ne!(c.status, CheckStatus::Fail, "{c:?}");

    let ovs = Command::new("sh")
        .args(["-c", "command -v ovs-vsctl && command -v ovsdb-server"])
        .output()
        .unwrap()
        .status
        .success();
    let c = find("openvswitch");
    assert_eq!(c.status == CheckStatus::Ok, ovs, "{c:?}");
}

/// A tmpfs the test mounted in its own temp dir; unmounted (then the dir removed) on drop, also
/// when the test fails.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(options: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().to_str().unwrap();
        sh(
            "mount",
            &["-t", "tmpfs", "-o", options, "cloudlet-host-test", target],
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = self.dir.path();
        let ok = Command::new("umount")
            .arg(target)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a failed test may still hold a file open): detach it now, free it when idle.
            let _ = Command::new("umount").arg("-l").arg(target).status();
        }
    }
}

fn disk_condition(disk: &Path) -> Condition {
    let paths = HostPaths::default();
    let disks = [disk.to_owned()];
    let all = conditions(
        &capacity(&paths, &disks).unwrap(),
        &usage(&paths, &disks).unwrap(),
        &Thresholds::default(),
    );
    all.into_iter()
        .find(|c| c.kind == ConditionKind::DiskPressure)
        .unwrap()
}

#[test]
fn a_filling_tmpfs_raises_disk_pressure_from_warning_to_critical() {
    let tmpfs = Tmpfs::mount("size=1m");
    let cap = capacity(&HostPaths::default(), &[tmpfs.path().to_owned()]).unwrap();
    assert_eq!(cap.disks[0].total_bytes, 1 << 20);
    assert_eq!(cap.disks[0].fs_type, "tmpfs");
    assert_eq!(
        cap.disks[0].mount_point,
        tmpfs.path().canonicalize().unwrap()
    );

    let c = disk_condition(tmpfs.path());
    assert_eq!((c.status, c.severity), (false, None), "{c:?}");

    // 880 KiB used: 144 KiB (14.1%) free.
    fs::write(tmpfs.path().join("a"), vec![0u8; 880 << 10]).unwrap();
    let c = disk_condition(tmpfs.path());
    assert_eq!(c.severity, Some(Severity::Warning), "{c:?}");
    let want = format!(
        "{}: 14.1% free (< 15% warning), 144.0 KiB of 1.0 MiB",
        tmpfs.path().display()
    );
    assert_eq!(c.reason, want);

    // 1000 KiB used: 24 KiB (2.3%) free.
    fs::write(tmpfs.path().join("b"), vec![0u8; 120 << 10]).unwrap();
    let c = disk_condition(tmpfs.path());
    assert_eq!(c.severity, Some(Severity::Critical), "{c:?}");
    assert!(
        c.reason.starts_with(&format!(
            "{}: 2.3% free (< 5% critical)",
            tmpfs.path().display()
        )),
        "{c:?}"
    );
    assert!(c.status);

    // And back: pressure is a reading, not a latch.
    fs::remove_file(tmpfs.path().join("a")).unwrap();
    fs::remove_file(tmpfs.path().join("b")).unwrap();
    // An unlinked file's pages are freed when its last descriptor closes; a process that another
    // test thread forked while `fs::write` had the file open holds a copy until it execs (the
    // descriptor is close-on-exec). No event tells us when; give it a bounded moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while disk_condition(tmpfs.path()).status && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!disk_condition(tmpfs.path()).status);
}

#[test]
fn a_tmpfs_out_of_inodes_is_disk_pressure_with_space_to_spare() {
    let tmpfs = Tmpfs::mount("size=1m,nr_inodes=40");
    let total = capacity(&HostPaths::default(), &[tmpfs.path().to_owned()])
        .unwrap()
        .disks[0]
        .total_inodes;
    assert_eq!(total, 40);
    // The root directory holds one inode; 38 empty files leave 1 of 40 (2.5%).
    for i in 0..38 {
        fs::write(tmpfs.path().join(i.to_string()), "").unwrap();
    }
    let c = disk_condition(tmpfs.path());
    assert_eq!(c.severity, Some(Severity::Critical), "{c:?}");
    let want = format!(
        "{}: 2.5% inodes free (< 5% critical), 1 of 40 inodes",
        tmpfs.path().display()
    );
    assert_eq!(c.reason, want);
}
