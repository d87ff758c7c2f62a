//! The host fitness checks of `cloudlet check-config`: kernel, cgroup v2 (layout, controllers,
//! delegation, `cgroup.kill`), the child subreaper, the data directory, the clock and Open
//! vSwitch. Each check says what it found and, when it is not OK, how to fix it.
//!
//! The checks only look: permissions are tested with `access(2)`, never by writing; the subreaper
//! flag is read, never set; the clock is read with a read-only `adjtimex(2)`; Open vSwitch is
//! asked only for `--version`.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use jiff::Timestamp;
use nix::errno::Errno;
use nix::unistd::{AccessFlags, access};

use crate::cgroup::{self, CgroupLayout, CgroupV2};
use crate::conditions::Thresholds;
use crate::kernel::{self, KernelVersion};
use crate::{HostError, HostPaths, clock, disk, mountinfo, units};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckStatus {
    /// Fit.
    Ok,
    /// cloudlet runs, but something is missing or at risk (the detail says what).
    Warn,
    /// cloudlet cannot run properly here.
    Fail,
}

impl CheckStatus {
    /// `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One fitness check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// A stable name: `kernel`, `cgroup2`, `cgroup-controllers`, `cgroup-delegation`,
    /// `cgroup-kill`, `subreaper`, `data-dir`, `clock`, `openvswitch`.
    pub name: &'static str,
    /// The outcome.
    pub status: CheckStatus,
    /// What was found, with paths and numbers.
    pub detail: String,
    /// What to do about it; `Some` exactly when the status is not OK.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: String) -> Self {
        Self {
            name,
            status: CheckStatus::Ok,
            detail,
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: String, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: CheckStatus::Warn,
            detail,
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: String, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: CheckStatus::Fail,
            detail,
            fix: Some(fix.into()),
        }
    }
}

/// What the checks compare against and where they look for programs.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOptions {
    /// Free space or inodes of the data directory's filesystem, in percent, below which
    /// `data-dir` warns.
    pub disk_warn_free_pct: f64,
    /// ... and below which it fails.
    pub disk_critical_free_pct: f64,
    /// The search path for Open vSwitch's programs, in `PATH` syntax.
    pub path: OsString,
}

impl Default for CheckOptions {
    /// The disk thresholds of [`Thresholds::default`] and this process's `PATH`.
    fn default() -> Self {
        let thresholds = Thresholds::default();
        Self {
            disk_warn_free_pct: thresholds.disk_warn_free_pct,
            disk_critical_free_pct: thresholds.disk_critical_free_pct,
            path: std::env::var_os("PATH").unwrap_or_default(),
        }
    }
}

/// Runs every check, in the order of [`Check::name`]'s list. A check that cannot read what it
/// needs says so in its own result; no check stops the others.
pub fn check_config(paths: &HostPaths, data_dir: &Path, opts: &CheckOptions) -> Vec<Check> {
    let kernel = kernel::read(paths);
    let cgroup = cgroup::cgroup_v2(paths);
    vec![
        kernel_check(&kernel),
        cgroup2_check(&cgroup),
        with_own_cgroup("cgroup-controllers", &cgroup, controllers_check),
        with_own_cgroup("cgroup-delegation", &cgroup, delegation_check),
        with_own_cgroup("cgroup-kill", &cgroup, |cg, dir| {
            kill_check(cg, dir, &kernel)
        }),
        subreaper_check(nix::sys::prctl::get_child_subreaper()),
        data_dir_check(paths, data_dir, opts),
        clock_check(Timestamp::now(), clock::max_error_us()),
        openvswitch_check(&opts.path),
    ]
}

const UPGRADE_KERNEL: &str = "upgrade the kernel to 5.14 or newer (Debian 12 has 6.1)";

fn kernel_check(kernel: &Result<KernelVersion, HostError>) -> Check {
    const NAME: &str = "kernel";
    match kernel {
        Err(e) => Check::warn(
            NAME,
            format!("cannot tell the kernel version: {e}"),
            "mount /proc",
        ),
        Ok(k) if !k.at_least(4, 15) => Check::fail(
            NAME,
            format!(
                "kernel {}: cloudlet needs 4.15 or newer (cgroup v2 cpu controller)",
                k.release
            ),
            UPGRADE_KERNEL,
        ),
        Ok(k) if !k.at_least(5, 14) => Check::warn(
            NAME,
            format!(
                "kernel {}: no cgroup.kill (5.14): stopping a service signals its process group, \
                 so descendants that left it survive the stop",
                k.release
            ),
            UPGRADE_KERNEL,
        ),
        Ok(k) => Check::ok(NAME, format!("kernel {}", k.release)),
    }
}

/// The fix for a host whose controllers are held by cgroup v1.
const UNIFIED_BOOT: &str = "boot with systemd.unified_cgroup_hierarchy=1 (and cgroup_no_v1=all) \
     so that cgroup v2 gets the cpu, memory, pids and io controllers";

type Cgroup = Result<Option<CgroupV2>, HostError>;

fn cgroup2_check(cgroup: &Cgroup) -> Check {
    const NAME: &str = "cgroup2";
    let cg = match cgroup {
        Err(e) => return cannot_tell(NAME, e),
        Ok(None) => {
            return Check::warn(
                NAME,
                "not mounted: services run without cgroups, so limits are not enforced and a stop \
                 reaches only the process group"
                    .to_owned(),
                format!("{UNIFIED_BOOT}, or mount it: mount -t cgroup2 none /sys/fs/cgroup"),
            );
        }
        Ok(Some(cg)) => cg,
    };
    let at = cg.mount_point.display();
    match cg.layout {
        CgroupLayout::Unified => Check::ok(NAME, format!("unified: cgroup v2 alone at {at}")),
        CgroupLayout::Hybrid => Check::warn(
            NAME,
            format!(
                "hybrid: cgroup v2 at {at}, the controllers are with the cgroup v1 hierarchies"
            ),
            UNIFIED_BOOT,
        ),
        CgroupLayout::Elsewhere => Check::warn(
            NAME,
            format!("cgroup v2 mounted at {at}, not at /sys/fs/cgroup"),
            format!("{UNIFIED_BOOT}; cgroup v2 belongs at /sys/fs/cgroup"),
        ),
    }
}

fn cannot_tell(name: &'static str, e: &HostError) -> Check {
    Check::warn(
        name,
        format!("cannot tell: {e}"),
        "run check-config where /proc is mounted and readable",
    )
}

/// Runs `check` with cgroup v2 and this process's directory in it, or says why there are none.
fn with_own_cgroup(
    name: &'static str,
    cgroup: &Cgroup,
    check: impl FnOnce(&CgroupV2, &Path) -> Check,
) -> Check {
    match cgroup {
        Err(e) => cannot_tell(name, e),
        Ok(None) => Check::warn(
            name,
            "no cgroup v2 mounted".to_owned(),
            format!("{UNIFIED_BOOT}, or mount it: mount -t cgroup2 none /sys/fs/cgroup"),
        ),
        Ok(Some(cg)) => match &cg.own_dir {
            Some(dir) => check(cg, dir),
            None => Check::warn(
                name,
                match &cg.own {
                    Ok(own) => format!(
                        "this process's cgroup {} is not under the cgroup v2 mount at {}",
                        own.display(),
                        cg.mount_point.display()
                    ),
                    Err(why) => format!(
                        "this process has no cgroup under the cgroup v2 mount at {}: {why}",
                        cg.mount_point.display()
                    ),
                },
                "run cloudlet in the host's cgroup namespace, with the host's /sys/fs/cgroup",
            ),
        },
    }
}

/// The controllers cloudlet limits services with.
const NEEDED: [&str; 4] = ["cpu", "memory", "pids", "io"];

fn controllers_check(cg: &CgroupV2, dir: &Path) -> Check {
    const NAME: &str = "cgroup-controllers";
    let file = dir.join("cgroup.controllers");
    let have = match cgroup::controllers(dir) {
        Ok(have) => have,
        Err(e) => return cannot_tell(NAME, &e),
    };
    let missing: Vec<&str> = NEEDED
        .into_iter()
        .filter(|n| !have.iter().any(|h| h == n))
        .collect();
    if missing.is_empty() {
        return Check::ok(
            NAME,
            format!("{} available in {}", NEEDED.join(", "), file.display()),
        );
    }
    let detail = format!(
        "missing {} in {} (it has: {}): services run, but these limits are not enforced",
        missing.join(", "),
        file.display(),
        if have.is_empty() {
            "none".to_owned()
        } else {
            have.join(" ")
        },
    );
    let fix = match cg.layout {
        CgroupLayout::Hybrid | CgroupLayout::Elsewhere => UNIFIED_BOOT.to_owned(),
        CgroupLayout::Unified if cg.own_is_root() => {
            "a controller missing at the root is held by a cgroup v1 hierarchy or not built into \
             the kernel: boot with cgroup_no_v1=all, or use a kernel with it"
                .to_owned()
        }
        CgroupLayout::Unified => {
            "have the parent cgroup delegate them: Delegate=yes in cloudlet's systemd unit \
             (scripts/install.sh writes it)"
                .to_owned()
        }
    };
    Check::warn(NAME, detail, fix)
}

fn delegation_check(_cg: &CgroupV2, dir: &Path) -> Check {
    const NAME: &str = "cgroup-delegation";
    let file = dir.join("cgroup.subtree_control");
    match access(&file, AccessFlags::W_OK) {
        Ok(()) => Check::ok(
            NAME,
            format!(
                "{} is writable: cloudlet can give each service its own cgroup",
                file.display()
            ),
        ),
        Err(e) => Check::warn(
            NAME,
            format!(
                "cannot write {}: {e}: services cannot get cgroups of their own",
                file.display()
            ),
            "give cloudlet its cgroup subtree: Delegate=yes in its systemd unit \
             (scripts/install.sh writes it), or run it as root",
        ),
    }
}

fn kill_check(cg: &CgroupV2, dir: &Path, kernel: &Result<KernelVersion, HostError>) -> Check {
    const NAME: &str = "cgroup-kill";
    let file = dir.join("cgroup.kill");
    if file.exists() {
        return Check::ok(NAME, format!("{} exists", file.display()));
    }
    match kernel {
        // The root cgroup has no cgroup.kill on any kernel; the groups cloudlet makes will.
        Ok(k) if cg.own_is_root() && k.at_least(5, 14) => Check::ok(
            NAME,
            format!(
                "kernel {} has cgroup.kill in the groups cloudlet creates (the root cgroup, where \
                 this process is, has none)",
                k.release
            ),
        ),
        _ => Check::warn(
            NAME,
            format!(
                "no {}: stopping a service signals its process group, so descendants that left \
                 it survive the stop",
                file.display()
            ),
            UPGRADE_KERNEL,
        ),
    }
}

fn subreaper_check(current: Result<bool, Errno>) -> Check {
    const NAME: &str = "subreaper";
    match current {
        Ok(set) => Check::ok(
            NAME,
            format!(
                "prctl(PR_SET_CHILD_SUBREAPER) is available (this process: {})",
                if set { "set" } else { "not set" }
            ),
        ),
        Err(e) => Check::fail(
            NAME,
            format!(
                "prctl(PR_GET_CHILD_SUBREAPER): {e}: cloudlet cannot adopt and reap the orphans \
                 of services"
            ),
            "run on Linux 3.4 or newer, without a seccomp profile that blocks prctl",
        ),
    }
}

fn data_dir_check(paths: &HostPaths, data_dir: &Path, opts: &CheckOptions) -> Check {
    const NAME: &str = "data-dir";
    let choose = "or choose another --data-dir";
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let Some(existing) = dir.ancestors().find(|p| p.exists()).map(Path::to_path_buf) else {
        return Check::fail(
            NAME,
            format!("{}: no part of it exists", dir.display()),
            "mount the root filesystem",
        );
    };
    if existing == dir && !dir.is_dir() {
        return Check::fail(
            NAME,
            format!("{} exists and is not a directory", dir.display()),
            format!("remove it, {choose}"),
        );
    }
    if let Err(e) = access(&existing, AccessFlags::W_OK | AccessFlags::X_OK) {
        return Check::fail(
            NAME,
            format!("{} is not writable: {e}", existing.display()),
            format!(
                "run cloudlet as root or chown {}, {choose}",
                existing.display()
            ),
        );
    }
    // Without the mount table, space is still worth reporting; only the type is unknown.
    let mounts = mountinfo::read(paths).unwrap_or_default();
    let d = match disk::read_one(&mounts, &existing) {
        Ok(d) => d,
        Err(e) => return Check::fail(NAME, format!("{e}"), format!("check the disk, {choose}")),
    };
    let state = if existing == dir {
        "exists".to_owned()
    } else {
        format!("will be created in {}", existing.display())
    };
    let fs_type = if d.fs_type.is_empty() {
        "unknown"
    } else {
        &d.fs_type
    };
    let mut detail = format!(
        "{} ({state}) on {fs_type} at {}: {} free of {} ({:.1}%), {:.1}% inodes free",
        dir.display(),
        d.mount_point.display(),
        units::bytes(d.free_bytes),
        units::bytes(d.total_bytes),
        d.free_pct(),
        d.free_inodes_pct(),
    );
    let least = d.free_pct().min(d.free_inodes_pct());
    let mut status = CheckStatus::Ok;
    let mut fixes = Vec::new();
    for (limit, level) in [
        (opts.disk_critical_free_pct, CheckStatus::Fail),
        (opts.disk_warn_free_pct, CheckStatus::Warn),
    ] {
        if least < limit {
            detail += &format!("; under {}% free", units::threshold(limit));
            status = level;
            fixes.push(format!(
                "free space or inodes on {}, {choose} on a larger filesystem",
                d.mount_point.display()
            ));
            break;
        }
    }
    if matches!(fs_type, "tmpfs" | "ramfs") {
        detail += &format!("; on {fs_type} the store and the logs are lost at reboot");
        status = status.max(CheckStatus::Warn);
        fixes.push("choose a --data-dir on a persistent filesystem".to_owned());
    }
    Check {
        name: NAME,
        status,
        detail,
        fix: (!fixes.is_empty()).then(|| fixes.join("; ")),
    }
}

/// 2024-01-01T00:00:00Z: a clock before this is certainly wrong.
const CLOCK_FLOOR_SECONDS: i64 = 1_704_067_200;

fn clock_check(now: Timestamp, max_error_us: Result<i64, Errno>) -> Check {
    const NAME: &str = "clock";
    const ENABLE_NTP: &str = "enable time synchronization: timedatectl set-ntp true, or \
         apt-get install chrony";
    if now.as_second() < CLOCK_FLOOR_SECONDS {
        return Check::fail(
            NAME,
            format!(
                "the clock says {now:.0}, before 2024-01-01: certificates are not valid yet and \
                 log times are wrong"
            ),
            format!("set the clock (timedatectl set-time, or date -s) and {ENABLE_NTP}"),
        );
    }
    match max_error_us {
        Ok(us) if us < clock::UNSYNCHRONIZED_US => Check::ok(
            NAME,
            format!("{now:.0}, synchronized (maximum error {} ms)", us / 1000),
        ),
        Ok(_) => Check::warn(
            NAME,
            format!("{now:.0}, not synchronized (the kernel's maximum error reached 16 s)"),
            ENABLE_NTP,
        ),
        Err(e) => Check::warn(
            NAME,
            format!("{now:.0}; cannot tell whether the clock is synchronized: adjtimex: {e}"),
            "check the time daemon: timedatectl status, or chronyc tracking",
        ),
    }
}

fn openvswitch_check(search_path: &OsStr) -> Check {
    const NAME: &str = "openvswitch";
    const INSTALL: &str = "apt-get install openvswitch-switch";
    let find = |name: &str| {
        std::env::split_paths(search_path)
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    };
    match (find("ovs-vsctl"), find("ovsdb-server")) {
        (None, None) => Check::warn(
            NAME,
            "not installed (needed for host networking)".to_owned(),
            INSTALL,
        ),
        (Some(vsctl), Some(server)) => match version(&vsctl) {
            Ok(version) => Check::ok(
                NAME,
                format!("{version} ({}, {})", vsctl.display(), server.display()),
            ),
            Err(why) => Check::warn(
                NAME,
                format!("{} --version: {why}", vsctl.display()),
                format!("reinstall it: {INSTALL}"),
            ),
        },
        (Some(have), None) | (None, Some(have)) => {
            let lacks = if have.ends_with("ovs-vsctl") {
                "ovsdb-server"
            } else {
                "ovs-vsctl"
            };
            Check::warn(
                NAME,
                format!(
                    "{} is there but {lacks} is not on the search path (needed for host networking)",
                    have.display()
                ),
                INSTALL,
            )
        }
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first line of `<program> --version`: `ovs-vsctl (Open vSwitch) 3.1.0`.
fn version(program: &Path) -> Result<String, String> {
    let out = Command::new(program)
        .arg("--version")
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().next() {
        Some(line) if out.status.success() && !line.trim().is_empty() => Ok(line.trim().to_owned()),
        _ => Err(format!(
            "{}: {:?}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fixture, mountinfo};

    #[test]
    fn every_check_has_a_fix_exactly_when_not_ok() {
        let (_root, paths) = fixture::host(&[]);
        let dir = tempfile::tempdir().unwrap();
        let checks = check_config(&paths, dir.path(), &CheckOptions::default());
        let names: Vec<_> = checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "kernel",
                "cgroup2",
                "cgroup-controllers",
                "cgroup-delegation",
                "cgroup-kill",
                "subreaper",
                "data-dir",
                "clock",
                "openvswitch"
            ]
        );
        for c in &checks {
            assert_eq!(c.fix.is_some(), c.status != CheckStatus::Ok, "{c:?}");
        }
        // An empty host root: nothing under /proc, so the kernel and cgroups cannot be told.
        for c in &checks[..5] {
            assert_eq!(c.status, CheckStatus::Warn, "{c:?}");
            assert!(c.detail.contains("No such file"), "{c:?}");
        }
    }

    #[test]
    fn kernel_versions() {
        for (release, status, says) in [
            ("6.1.0-18-amd64", CheckStatus::Ok, "kernel 6.1.0-18-amd64"),
            ("5.14.0", CheckStatus::Ok, "kernel 5.14.0"),
            (
                "5.10.0-28-amd64",
                CheckStatus::Warn,
                "no cgroup.kill (5.14)",
            ),
            ("4.15.0", CheckStatus::Warn, "no cgroup.kill"),
            ("4.14.300", CheckStatus::Fail, "needs 4.15 or newer"),
            ("banana", CheckStatus::Warn, "not a kernel release"),
        ] {
            let (_root, paths) = fixture::host(&[("proc/sys/kernel/osrelease", release)]);
            let c = kernel_check(&kernel::read(&paths));
            assert_eq!(c.status, status, "{release}: {c:?}");
            assert!(c.detail.contains(says), "{release}: {c:?}");
            if status != CheckStatus::Ok {
                assert!(c.fix.is_some());
            }
        }
    }

    /// A fake host with `mountinfo`, this process in `own` and `controllers` in it.
    fn cgroup_host(
        mountinfo: &str,
        own: &str,
        cgroup_dir: &str,
        controllers: &str,
    ) -> (tempfile::TempDir, HostPaths) {
        let self_cgroup = format!("0::{own}\n");
        let controllers_file = format!("{cgroup_dir}/cgroup.controllers");
        let subtree_file = format!("{cgroup_dir}/cgroup.subtree_control");
        fixture::host(&[
            ("proc/self/mountinfo", mountinfo),
            ("proc/self/cgroup", &self_cgroup),
            (&controllers_file, controllers),
            (&subtree_file, ""),
            ("proc/sys/kernel/osrelease", "6.1.0\n"),
        ])
    }

    fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks.iter().find(|c| c.name == name).unwrap()
    }

    fn run(paths: &HostPaths) -> Vec<Check> {
        let dir = tempfile::tempdir().unwrap();
        check_config(paths, dir.path(), &CheckOptions::default())
    }

    #[test]
    fn hybrid_like_this_host_warns_with_the_boot_fix_and_lists_missing_controllers() {
        let (_root, paths) =
            cgroup_host(mountinfo::HYBRID, "/", "sys/fs/cgroup/unified", "hugetlb\n");
        let checks = run(&paths);
        let c = find(&checks, "cgroup2");
        assert_eq!(c.status, CheckStatus::Warn);
        assert!(
            c.detail
                .starts_with("hybrid: cgroup v2 at /sys/fs/cgroup/unified"),
            "{c:?}"
        );
        assert_eq!(c.fix.as_deref(), Some(UNIFIED_BOOT));
        let c = find(&checks, "cgroup-controllers");
        assert_eq!(c.status, CheckStatus::Warn);
        assert!(
            c.detail.starts_with("missing cpu, memory, pids, io in "),
            "{c:?}"
        );
        assert!(c.detail.contains("(it has: hugetlb)"), "{c:?}");
        assert!(c.detail.contains("limits are not enforced"), "{c:?}");
        assert_eq!(c.fix.as_deref(), Some(UNIFIED_BOOT));
        // The root cgroup has no cgroup.kill; a 6.1 kernel has it for child groups.
        let c = find(&checks, "cgroup-kill");
        assert_eq!(c.status, CheckStatus::Ok, "{c:?}");
        assert!(c.detail.contains("the root cgroup"), "{c:?}");
    }

    #[test]
    fn unified_with_every_controller_is_ok() {
        let own = "/system.slice/cloudlet.service";
        let dir = format!("sys/fs/cgroup{own}");
        let (root, paths) = cgroup_host(
            mountinfo::UNIFIED,
            own,
            &dir,
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        );
        fixture::write(root.path(), &format!("{dir}/cgroup.kill"), "");
        let checks = run(&paths);
        for name in [
            "cgroup2",
            "cgroup-controllers",
            "cgroup-delegation",
            "cgroup-kill",
        ] {
            let c = find(&checks, name);
            assert_eq!(c.status, CheckStatus::Ok, "{c:?}");
            assert_eq!(c.fix, None);
        }
        assert_eq!(
            find(&checks, "cgroup2").detail,
            "unified: cgroup v2 alone at /sys/fs/cgroup"
        );
        assert!(
            find(&checks, "cgroup-controllers")
                .detail
                .starts_with("cpu, memory, pids, io available")
        );
    }

    #[test]
    fn unified_without_delegation_names_the_missing_and_delegate_yes() {
        let own = "/system.slice/cloudlet.service";
        let (_root, paths) = cgroup_host(
            mountinfo::UNIFIED,
            own,
            &format!("sys/fs/cgroup{own}"),
            "memory pids\n",
        );
        let checks = run(&paths);
        let c = find(&checks, "cgroup-controllers");
        assert_eq!(c.status, CheckStatus::Warn);
        assert!(c.detail.starts_with("missing cpu, io in "), "{c:?}");
        assert!(c.fix.as_deref().unwrap().contains("Delegate=yes"), "{c:?}");
        // Not the root cgroup and no cgroup.kill file: the fallback is named.
        let c = find(&checks, "cgroup-kill");
        assert_eq!(c.status, CheckStatus::Warn);
        assert!(c.detail.contains("signals its process group"), "{c:?}");
    }

    #[test]
    fn no_cgroup2_warns_everywhere_with_how_to_mount_it() {
        let (_root, paths) = fixture::host(&[
            ("proc/self/mountinfo", mountinfo::LEGACY),
            ("proc/self/cgroup", "1:cpu:/\n"),
        ]);
        let checks = run(&paths);
        for name in [
            "cgroup2",
            "cgroup-controllers",
            "cgroup-delegation",
            "cgroup-kill",
        ] {
            let c = find(&checks, name);
            assert_eq!(c.status, CheckStatus::Warn, "{c:?}");
            assert!(
                c.fix.as_deref().unwrap().contains("mount -t cgroup2"),
                "{c:?}"
            );
        }
        assert!(
            find(&checks, "cgroup2")
                .detail
                .contains("limits are not enforced")
        );
    }

    #[test]
    fn a_cgroup_outside_the_mount_or_none_at_all_is_named() {
        let mountinfo = "31 23 0:28 /machine.slice /run/cg rw - cgroup2 cgroup2 rw\n";
        for (self_cgroup, says) in [
            (
                "0::/user.slice\n",
                "this process's cgroup /user.slice is not under the cgroup v2 mount at /run/cg",
            ),
            (
                "1:cpu:/\n",
                "this process has no cgroup under the cgroup v2 mount at /run/cg: ",
            ),
        ] {
            let (_root, paths) = fixture::host(&[
                ("proc/self/mountinfo", mountinfo),
                ("proc/self/cgroup", self_cgroup),
            ]);
            let checks = run(&paths);
            for name in ["cgroup-controllers", "cgroup-delegation", "cgroup-kill"] {
                let c = find(&checks, name);
                assert_eq!(c.status, CheckStatus::Warn, "{c:?}");
                assert!(c.detail.starts_with(says), "{c:?}");
            }
        }
    }

    #[test]
    fn an_unwritable_subtree_control_is_a_delegation_warning() {
        let own = "/user.slice";
        let dir = format!("sys/fs/cgroup{own}");
        let (root, paths) = cgroup_host(mountinfo::UNIFIED, own, &dir, "cpu io memory pids\n");
        // access(W_OK) ignores the mode for root, so the file is removed instead (ENOENT), which
        // fails for root too.
        std::fs::remove_file(root.path().join(&dir).join("cgroup.subtree_control")).unwrap();
        let checks = run(&paths);
        let c = find(&checks, "cgroup-delegation");
        assert_eq!(c.status, CheckStatus::Warn, "{c:?}");
        assert!(c.detail.starts_with("cannot write "), "{c:?}");
        assert!(c.fix.as_deref().unwrap().contains("Delegate=yes"), "{c:?}");
    }

    #[test]
    fn subreaper_reports_and_fails_when_prctl_does() {
        let c = subreaper_check(Ok(false));
        assert_eq!(
            (c.status, c.detail.ends_with("(this process: not set)")),
            (CheckStatus::Ok, true)
        );
        let c = subreaper_check(Err(Errno::EPERM));
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(c.detail.contains("EPERM"), "{c:?}");
    }

    #[test]
    fn clock_before_2024_fails_and_an_unsynchronized_one_warns() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        for (now, max_error, status, says) in [
            (
                "2023-12-31T23:59:59Z",
                Ok(0),
                CheckStatus::Fail,
                "the clock says 2023-12-31T23:59:59Z, before 2024-01-01",
            ),
            (
                "2026-11-27T03:18:33.5Z",
                Ok(1500),
                CheckStatus::Ok,
                "2026-11-27T03:18:33Z, synchronized (maximum error 1 ms)",
            ),
            (
                "2026-11-27T03:18:33Z",
                Ok(16_000_000),
                CheckStatus::Warn,
                "not synchronized",
            ),
            (
                "2026-11-27T03:18:33Z",
                Err(Errno::ENOSYS),
                CheckStatus::Warn,
                "cannot tell whether the clock is synchronized",
            ),
        ] {
            let c = clock_check(t(now), max_error);
            assert_eq!(c.status, status, "{now}: {c:?}");
            assert!(c.detail.contains(says), "{now}: {c:?}");
        }
    }

    #[test]
    fn data_dir_that_does_not_exist_yet_is_fine_if_its_parent_is_writable() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        let c = data_dir_check(&HostPaths::default(), &data, &CheckOptions::default());
        assert_ne!(c.status, CheckStatus::Fail, "{c:?}");
        assert!(
            c.detail
                .contains(&format!("(will be created in {})", dir.path().display())),
            "{c:?}"
        );
        assert!(c.detail.contains("inodes free"), "{c:?}");
    }

    #[test]
    fn data_dir_that_is_a_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let c = data_dir_check(&HostPaths::default(), &file, &CheckOptions::default());
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(c.detail.ends_with("exists and is not a directory"), "{c:?}");
    }

    #[test]
    fn data_dir_thresholds_come_from_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let all = |warn, critical| CheckOptions {
            disk_warn_free_pct: warn,
            disk_critical_free_pct: critical,
            ..CheckOptions::default()
        };
        // Free space is between 0% and 100%, so above 101% is always short and 0% never is.
        let c = data_dir_check(&HostPaths::default(), dir.path(), &all(101.0, 101.0));
        assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
        assert!(c.detail.contains("under 101% free"), "{c:?}");
        assert!(
            c.fix
                .as_deref()
                .unwrap()
                .contains("free space or inodes on"),
            "{c:?}"
        );
        let c = data_dir_check(&HostPaths::default(), dir.path(), &all(101.0, 0.0));
        assert_eq!(c.status, CheckStatus::Warn, "{c:?}");
        let c = data_dir_check(&HostPaths::default(), dir.path(), &all(0.0, 0.0));
        assert!(!c.detail.contains("under"), "{c:?}");
    }

    #[test]
    fn openvswitch_found_on_the_search_path_or_not() {
        let empty = tempfile::tempdir().unwrap();
        let c = openvswitch_check(empty.path().as_os_str());
        assert_eq!(c.status, CheckStatus::Warn);
        assert_eq!(c.detail, "not installed (needed for host networking)");
        assert_eq!(c.fix.as_deref(), Some("apt-get install openvswitch-switch"));

        // Programs that answer --version the way Open vSwitch's do.
        let bin = tempfile::tempdir().unwrap();
        let script = |name: &str, body: &str| {
            let path = bin.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        script(
            "ovs-vsctl",
            "echo 'ovs-vsctl (Open vSwitch) 3.1.0'; echo 'DB Schema 8.3.1'",
        );
        let path = std::env::join_paths([empty.path(), bin.path()]).unwrap();
        let c = openvswitch_check(&path);
        assert_eq!(c.status, CheckStatus::Warn, "{c:?}");
        assert!(
            c.detail
                .contains("but ovsdb-server is not on the search path"),
            "{c:?}"
        );

        script("ovsdb-server", "exit 0");
        let c = openvswitch_check(&path);
        assert_eq!(c.status, CheckStatus::Ok, "{c:?}");
        assert!(
            c.detail.starts_with("ovs-vsctl (Open vSwitch) 3.1.0 ("),
            "{c:?}"
        );

        script("ovs-vsctl", "echo broken >&2; exit 3");
        let c = openvswitch_check(&path);
        assert_eq!(c.status, CheckStatus::Warn, "{c:?}");
        assert!(
            c.detail.contains("exit status: 3") && c.detail.contains("broken"),
            "{c:?}"
        );
    }

    #[test]
    fn statuses_have_stable_names_and_order() {
        assert_eq!(
            [CheckStatus::Ok, CheckStatus::Warn, CheckStatus::Fail].map(CheckStatus::as_str),
            ["ok", "warn", "fail"]
        );
        assert!(CheckStatus::Ok < CheckStatus::Warn && CheckStatus::Warn < CheckStatus::Fail);
    }
}
