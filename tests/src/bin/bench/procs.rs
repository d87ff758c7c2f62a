//! The bench's dealings with processes: starting children with a clean signal mask, what it reads
//! from `/proc` (PSS, command line, parent, working directory), the signals it sends, the sweep
//! that kills and reaps every process a run left behind, and the cgroup v2 subtree a cloudlet run
//! gets (named after the run's temp dir) and its removal.
//!
//! It must never signal a process that it cannot tie to one of the bench's own temp dirs (by the
//! command line, the working directory or the cgroup named after it), never the bench itself, and
//! never touch a cgroup other than the one named after a temp dir of its own.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use cloudlet_cgroups::ServiceCgroup;
use nix::errno::Errno;
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The signals the bench takes on a thread of its own (blocked everywhere else) to clean up.
pub const CLEANUP_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The set of [`CLEANUP_SIGNALS`].
pub fn cleanup_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in CLEANUP_SIGNALS {
        set.add(signal);
    }
    set
}

/// Spawns `command` with [`CLEANUP_SIGNALS`] unblocked. A child inherits the spawning thread's
/// signal mask (std no longer clears it), and a supervisor or service that starts with SIGTERM
/// blocked cannot be stopped. They are unblocked in this thread only for the spawn (a signal in
/// that window ends the bench uncleaned: the price of not needing `unsafe` `pre_exec`).
pub fn spawn(command: &mut Command) -> io::Result<Child> {
    let set = cleanup_set();
    let old = set.thread_swap_mask(SigmaskHow::SIG_UNBLOCK)?;
    let child = command.spawn();
    old.thread_set_mask()?;
    child
}

/// Makes the bench the reaper of orphans in its subtree, so that what a sweep kills is reaped
/// here ([`reap_orphans`]) rather than left as zombies to an init that may reap late.
pub fn become_subreaper() -> Result<(), String> {
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))
}

/// Reaps every child that has exited (orphans re-parented to the bench), without blocking.
pub fn reap_orphans() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Every pid in `/proc` (processes, not threads).
pub fn all_pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// The command line of `pid`, its arguments joined by spaces (`None` once it is gone).
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<_> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect();
    Some(args.join(" "))
}

/// The parent of `pid`, from `/proc/PID/stat` (the field after the state, past the `)` that
/// ends the command name).
pub fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    fields.nth(1)?.parse().ok()
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            != Some("Z")
    })
}

/// The text of `/proc/PID/smaps_rollup` (the memory totals of `pid`, `Pss:` among them).
pub fn smaps_rollup(pid: i32) -> Result<String, String> {
    let path = format!("/proc/{pid}/smaps_rollup");
    std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))
}

/// One `Name:   N kB` field of an smaps file, in KiB.
pub fn smaps_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().trim_end_matches("kB").trim().parse().ok())?
    })
}

/// Sends `sig` to `pid`; a process that is already gone is not an error.
pub fn send(pid: i32, sig: Signal) -> Result<(), String> {
    match signal::kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(format!("sending {sig} to {pid}: {e}")),
    }
}

/// Processes whose command line mentions a path inside `dir`, or whose working directory is
/// inside it (runit's `runsv` runs in its service directory and names only the service).
pub fn started_under(dir: &Path) -> Vec<i32> {
    let needle = format!("{}/", dir.display());
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me && alive(pid))
        .filter(|&pid| {
            cmdline(pid).is_some_and(|c| c.contains(&needle))
                || std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .is_ok_and(|cwd| cwd.starts_with(dir))
        })
        .collect()
}

/// SIGKILLs every process [`started_under`] `dir` until none is left (a supervisor still alive
/// may start a replacement between two passes) and those killed are dead, then reaps the orphans.
/// Returns how many it killed; fails if some survive 5 s of this.
pub fn sweep(dir: &Path) -> Result<usize, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut killed = HashSet::new();
    loop {
        let victims = started_under(dir);
        // A dying process loses its command line and working directory before it becomes a
        // zombie: wait for those killed to be zombies (or gone), or it escapes the reaping.
        let dying = killed.iter().any(|&pid| alive(pid));
        let late = Instant::now() > deadline;
        if victims.is_empty() && (!dying || late) {
            reap_orphans();
            return Ok(killed.len());
        }
        if late {
            return Err(format!(
                "processes under {} survive SIGKILL: {victims:?}",
                dir.display()
            ));
        }
        for pid in victims {
            send(pid, Signal::SIGKILL)?;
            killed.insert(pid);
        }
        // Nothing to wait on for processes that are not our children: poll /proc.
        thread::sleep(Duration::from_millis(20));
    }
}

/// Everything [`sweep`] does, then [`remove_cgroups_for`]: what a run under `dir` leaves is gone.
/// Returns how many processes the sweep killed.
pub fn clean_up(dir: &Path) -> Result<usize, String> {
    let killed = sweep(dir);
    let removed = remove_cgroups_for(dir);
    let killed = killed?;
    removed.map(|()| killed)
}

/// The cgroup a cloudlet run gets as `--cgroup-root` (relative to the cgroup2 mount): named after
/// the run's temp dir, below the bench's own cgroup, so that no other cloudlet shares it. `None`
/// without cgroup v2 (cloudlet then runs without cgroups).
pub fn cgroup_root_for(dir: &Path) -> Option<PathBuf> {
    let detected = cloudlet_cgroups::detect().ok()?;
    Some(detected.own.join(dir.file_name()?))
}

/// Kills what runs in the cgroup subtree [`cgroup_root_for`] `dir` and removes it, leaves first.
/// Nothing to do when it does not exist.
pub fn remove_cgroups_for(dir: &Path) -> Result<(), String> {
    let Ok(detected) = cloudlet_cgroups::detect() else {
        return Ok(());
    };
    let Some(name) = dir.file_name() else {
        return Ok(());
    };
    remove_cgroup_tree(&detected.own_dir().join(name))?;
    match hog_cgroup_for(dir) {
        Some(hog) => remove_cgroup_tree(&hog),
        None => Ok(()),
    }
}

/// Writes `file` back and drops it from the page cache (what no process maps), so that a run
/// starts it cold, as after a boot. A binary `make bench` has just linked sits in the cache as the
/// linker wrote it (small folios, dirty), and the kernel maps it around a fault differently from
/// one read back from disk (Linux 6.18 maps whole large folios): the server's PSS measured 6.1
/// MiB from a fresh link against 9.3 MiB from a cold start, same binary.
pub fn evict_from_cache(file: &Path) -> Result<(), String> {
    let f = std::fs::File::open(file).map_err(|e| format!("opening {}: {e}", file.display()))?;
    f.sync_all()
        .map_err(|e| format!("syncing {}: {e}", file.display()))?;
    nix::fcntl::posix_fadvise(
        &f,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .map_err(|e| format!("dropping {} from the page cache: {e}", file.display()))
}

/// A CPU hog: `workload spin` on every CPU, working in `dir` (so that [`sweep`] finds it) and, with
/// cgroup v2, in a cgroup of its own beside the supervisor's ([`hog_cgroup_for`]). Killed and
/// reaped on drop; its cgroup goes with [`clean_up`].
#[derive(Debug)]
pub struct Hog {
    child: Child,
}

impl Hog {
    /// Starts it; it spins until dropped.
    pub fn start(workload: &Path, dir: &Path) -> Result<Hog, String> {
        let threads = thread::available_parallelism().map_or(1, |n| n.get());
        let child = spawn(
            Command::new(workload)
                .args(["spin", "--threads", &threads.to_string()])
                .current_dir(dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null()),
        )
        .map_err(|e| format!("starting the CPU hog {}: {e}", workload.display()))?;
        let hog = Hog { child };
        if let Some(path) = hog_cgroup_for(dir) {
            let cgroup = ServiceCgroup::at(&path);
            cgroup
                .create()
                .and_then(|()| cgroup.add_process(hog.child.id()))
                .map_err(|e| format!("moving the CPU hog to {}: {e}", path.display()))?;
        }
        Ok(hog)
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cgroup of a run's CPU hog (absolute): beside [`cgroup_root_for`], never inside it.
fn hog_cgroup_for(dir: &Path) -> Option<PathBuf> {
    let detected = cloudlet_cgroups::detect().ok()?;
    let mut name = dir.file_name()?.to_owned();
    name.push("-hog");
    Some(detected.own_dir().join(name))
}

fn remove_cgroup_tree(path: &Path) -> Result<(), String> {
    ServiceCgroup::at(path)
        .remove_tree(Duration::from_secs(5))
        .map_err(|e| format!("removing cgroup {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_field_reads_kib() {
        let text = "55d0-7ffd ---p 00000000 00:00 0   [rollup]\nRss:    4096 kB\nPss:    1234 kB\nPss_Dirty:  99 kB\n";
        assert_eq!(smaps_field(text, "Pss"), Some(1234));
        assert_eq!(smaps_field(text, "Pss_Dirty"), Some(99));
        assert_eq!(smaps_field(text, "Swap"), None);
    }

    #[test]
    fn sweep_kills_and_reaps_what_runs_under_the_dir_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("sub");
        std::fs::create_dir(&inside).unwrap();
        let log = inside.join("log");
        std::fs::write(&log, "").unwrap();
        let mut children = [
            spawn(Command::new("sleep").arg("100").current_dir(&inside)).unwrap(),
            spawn(Command::new("tail").arg("-f").arg(&log)).unwrap(),
        ];
        let outside = tempfile::tempdir().unwrap();
        let mut other =
            spawn(Command::new("sleep").arg("100").current_dir(outside.path())).unwrap();
        let pids = children.each_ref().map(|c| i32::try_from(c.id()).unwrap());

        let mut under = started_under(dir.path());
        under.sort();
        assert_eq!(under, pids);
        assert_eq!(sweep(dir.path()).unwrap(), 2);
        for child in &mut children {
            // Killed and reaped by the sweep already: waiting finds no such child.
            let error = child.try_wait().unwrap_err();
            assert_eq!(error.raw_os_error(), Some(Errno::ECHILD as i32), "{error}");
        }
        assert!(alive(i32::try_from(other.id()).unwrap()));
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn the_cgroup_named_after_a_run_is_emptied_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let Some(root) = cgroup_root_for(dir.path()) else {
            // No cgroup v2 on this host: cloudlet gets no --cgroup-root, nothing to remove.
            remove_cgroups_for(dir.path()).unwrap();
            return;
        };
        let mount = cloudlet_cgroups::detect().unwrap().mount;
        let base = mount.join(root.strip_prefix("/").unwrap());
        let leaf = base.join("services").join("s0");
        std::fs::create_dir_all(&leaf).unwrap();
        let mut child = spawn(Command::new("sleep").arg("100")).unwrap();
        std::fs::write(leaf.join("cgroup.procs"), child.id().to_string()).unwrap();

        remove_cgroups_for(dir.path()).unwrap();
        assert!(!base.exists(), "{} remains", base.display());
        // Killed by the cgroup's removal (reaped here, or by the sweep test running alongside).
        assert!(!alive(i32::try_from(child.id()).unwrap()));
        let _ = child.wait();
    }

    #[test]
    fn own_process_is_seen() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(alive(me));
        assert!(smaps_field(&smaps_rollup(me).unwrap(), "Pss").unwrap() > 0);
        assert_eq!(ppid(me), Some(nix::unistd::getppid().as_raw()));
    }
}
