//! Starting one run of a service for the shim: its process, stdout/stderr pipes, stdin on
//! `/dev/null`, its own session, signals at their defaults, umask 022, working directory, user and
//! cgroup.
//!
//! With a cgroup the child is created inside it by `clone3(CLONE_INTO_CGROUP)` (Linux 5.7+):
//! nothing it forks can escape, and no process is migrated (a write to `cgroup.procs` after an
//! idle period waits for an RCU grace period in the kernel, 6-15 ms, on every restart). Hand-written
//! because std cannot spawn into a cgroup. Where clone3 is refused (an older kernel, a seccomp
//! filter) and without a cgroup, `std::process::Command` starts the child, which joins its cgroup
//! before exec by writing `0` to a `cgroup.procs` file opened through `cloudlet_cgroups`' paths.
//!
//! The fallback also runs when the kernel kills the cloned child at its birth. Kernels whose fork
//! checks a `kill_seq` (the fix of `cgroup.kill` racing with fork; 6.18.44 here) read it from the
//! *parent's* cgroup for `CLONE_INTO_CGROUP` and compare it with the target's, so once
//! `cgroup.kill` was written in a cgroup every child cloned into it gets SIGKILL before it runs.
//! The child's first act is one byte on its report pipe, so the parent tells a child that never
//! ran from one that exec'd; the shim writes `cgroup.kill` only where something is left to kill.
//!
//! Between the clone and `execve` the child may only make async-signal-safe system calls on memory
//! prepared before the clone: it must never allocate, take a lock, panic or return to the caller.
//! This module never writes to cgroupfs itself (opening a cgroup's directory is not a write).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::ffi::{CStr, CString, c_char, c_int, c_long};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::ptr;

use cloudlet_cgroups::ServiceCgroup;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::signal::{SigHandler, SigSet, Signal, kill, signal};
use nix::sys::stat::{Mode, umask};
use nix::sys::wait::waitpid;
use nix::unistd::{Gid, Pid, Uid, pipe2, setgid, setgroups, setsid, setuid};

use crate::ShimError;

/// `CLONE_INTO_CGROUP` of `<linux/sched.h>`: the child starts in the cgroup `CloneArgs::cgroup`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// The shell that runs an executable file without a `#!` line (`ENOEXEC`), as `execvp` does.
const SHELL: &CStr = c"/bin/sh";
/// The search path when the service's environment has no PATH, as glibc's `execvp`.
const DEFAULT_PATH: &str = "/bin:/usr/bin";
/// The first byte a cloned child writes on its report pipe: it survived its birth.
const ALIVE: u8 = b'+';
/// The exit code of a child whose set-up or exec failed; its parent reaps it and reports the errno.
const EXEC_FAILED: c_int = 127;

/// The system calls `setgroups`, `setgid` and `setuid` with 32-bit ids (named `*32` where the
/// plain ones take 16-bit ids).
#[cfg(not(any(target_arch = "x86", target_arch = "arm", target_arch = "sparc")))]
const SET_IDS: (c_long, c_long, c_long) = (libc::SYS_setgroups, libc::SYS_setgid, libc::SYS_setuid);
#[cfg(any(target_arch = "x86", target_arch = "arm", target_arch = "sparc"))]
const SET_IDS: (c_long, c_long, c_long) = (
    libc::SYS_setgroups32,
    libc::SYS_setgid32,
    libc::SYS_setuid32,
);

/// Who a service runs as: uid, primary gid and supplementary groups.
pub(super) type User = (Uid, Gid, Vec<Gid>);

/// How to start one run.
#[derive(Debug, Clone, Copy)]
pub(super) struct Launch<'a> {
    /// Program and arguments; a program without `/` is searched in the service's PATH.
    pub argv: &'a [String],
    /// The complete environment (nothing is inherited from the shim).
    pub env: &'a BTreeMap<String, String>,
    /// Working directory.
    pub cwd: &'a Path,
    /// Who to run as; the shim's own user when absent.
    pub user: Option<&'a User>,
    /// The cgroup the process starts in.
    pub cgroup: Option<&'a ServiceCgroup>,
}

/// A started run: its main process and the read ends (close-on-exec) of its stdout and stderr.
#[derive(Debug)]
pub(super) struct Spawned {
    /// The main process, a child of the caller, which must reap it.
    pub pid: u32,
    /// Read end of the child's stdout.
    pub stdout: OwnedFd,
    /// Read end of the child's stderr.
    pub stderr: OwnedFd,
}

/// Starts a run: in its cgroup by clone3 when there is one and the kernel allows it, else through
/// `std::process::Command`. An exec that fails is an error saying why, as std's
/// ("No such file or directory (os error 2)"), and its child is reaped already.
pub(super) fn spawn(launch: &Launch<'_>) -> Result<Spawned, ShimError> {
    if launch.argv.is_empty() {
        return Err(ShimError::Spawn("empty command".into()));
    }
    let (stdout, stdout_child) = pipe()?;
    let (stderr, stderr_child) = pipe()?;
    let cloned = match launch.cgroup {
        Some(cgroup) => clone_into(launch, cgroup, &stdout_child, &stderr_child)?,
        None => None,
    };
    // Our copies of the child's ends are closed here (or by Command), so that the read ends see
    // EOF once nothing in the service holds them.
    let pid = match cloned {
        Some(pid) => {
            drop((stdout_child, stderr_child));
            pid
        }
        None => with_command(launch, stdout_child, stderr_child)?,
    };
    Ok(Spawned {
        pid,
        stdout,
        stderr,
    })
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> Result<(OwnedFd, OwnedFd), ShimError> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| ShimError::Os {
        what: "pipe2",
        source: e,
    })
}

/// `struct clone_args` of `<linux/sched.h>` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// The descriptors the child puts on 0, 1 and 2, and where it reports a failure.
#[derive(Debug, Clone, Copy)]
struct ChildFds {
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    report: RawFd,
}

/// Starts the child inside `cgroup` with `clone3(CLONE_INTO_CGROUP)` and waits for its exec.
/// `None` when this kernel or a seccomp filter does not offer that, or the kernel killed the
/// child at its birth: the caller falls back.
fn clone_into(
    launch: &Launch<'_>,
    cgroup: &ServiceCgroup,
    stdout: &OwnedFd,
    stderr: &OwnedFd,
) -> Result<Option<u32>, ShimError> {
    let mut exec = Exec::prepare(launch)?;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(cgroup.path())
        .map_err(|e| ShimError::io("open", cgroup.path(), e))?;
    let null = std::fs::File::open("/dev/null")
        .map_err(|e| ShimError::io("open", Path::new("/dev/null"), e))?;
    let (report, report_child) = pipe()?;
    let fds = ChildFds {
        stdin: null.as_raw_fd(),
        stdout: stdout.as_raw_fd(),
        stderr: stderr.as_raw_fd(),
        report: report_child.as_raw_fd(),
    };
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: u64::from(libc::SIGCHLD.unsigned_abs()),
        cgroup: u64::from(dir.as_raw_fd().unsigned_abs()),
        ..CloneArgs::default()
    };
    // SAFETY: without CLONE_VM and with stack 0, clone3 is fork: the child gets a copy of this
    // address space and returns here on its copy of the stack. `args` is a valid clone_args of
    // the size passed and outlives the call. The child only runs `exec_child`, which never
    // returns, allocates nothing and takes no lock (so what another thread held at the clone
    // does not matter; the shim has no other thread anyway), and reads only memory prepared
    // above.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw const args,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret == 0 {
        exec_child(&mut exec, fds);
    }
    if ret < 0 {
        return match Errno::last() {
            // No clone3 (before 5.3, or filtered), no CLONE_INTO_CGROUP (before 5.7: unknown flag
            // or a larger struct than the kernel knows).
            Errno::ENOSYS | Errno::EPERM | Errno::EINVAL | Errno::E2BIG => Ok(None),
            e => Err(ShimError::Spawn(format!(
                "clone3 into {}: {}",
                cgroup.path().display(),
                io::Error::from(e)
            ))),
        };
    }
    let raw = i32::try_from(ret).map_err(|_| ShimError::Spawn(format!("clone3: pid {ret}")))?;
    let pid = Pid::from_raw(raw);
    // Only the child holds the write end now.
    drop(report_child);
    match read_report(&report) {
        Ok(Report::Execd) => Ok(Some(raw.unsigned_abs())),
        Ok(Report::KilledAtBirth) => {
            // A kernel that kills every child cloned into a cgroup once killed (see the module
            // doc): the child is dead already; start the run the other way.
            reap(pid);
            Ok(None)
        }
        Ok(Report::Failed(errno)) => {
            reap(pid);
            Err(ShimError::Spawn(
                io::Error::from_raw_os_error(errno).to_string(),
            ))
        }
        Err(e) => {
            let _ = kill(pid, Signal::SIGKILL);
            reap(pid);
            Err(ShimError::Spawn(format!(
                "read the exec report of pid {raw}: {e}"
            )))
        }
    }
}

/// What the child wrote on the report pipe until its close-on-exec write end closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// [`ALIVE`], then EOF: it exec'd.
    Execd,
    /// [`ALIVE`] and the errno of its failure.
    Failed(i32),
    /// Nothing: it died before it ran a single instruction, of a SIGKILL sent by the kernel at
    /// its birth (or it could not write, and exited).
    KilledAtBirth,
}

/// Reads the child's report (blocks until it exec'd or failed).
fn read_report(report: &OwnedFd) -> Result<Report, Errno> {
    let mut buf = [0u8; 5];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(report, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    match (got, buf) {
        (0, _) => Ok(Report::KilledAtBirth),
        (1, [ALIVE, ..]) => Ok(Report::Execd),
        (5, [ALIVE, a, b, c, d]) => Ok(Report::Failed(i32::from_ne_bytes([a, b, c, d]))),
        _ => Err(Errno::EIO),
    }
}

/// Reaps the child of a failed start now, so that the shim's reaper never sees it as a run's exit.
fn reap(pid: Pid) {
    while let Err(Errno::EINTR) = waitpid(pid, None) {}
}

/// Everything the child needs, made before the clone so that it allocates nothing.
#[derive(Debug)]
struct Exec {
    /// The owners of the strings `argv` and `envp` point into.
    _strings: Vec<CString>,
    /// NULL-terminated.
    argv: Vec<*const c_char>,
    /// NULL-terminated `KEY=value`s.
    envp: Vec<*const c_char>,
    /// The paths to exec, tried in order (the PATH search, done here).
    candidates: Vec<CString>,
    /// `/bin/sh <candidate> argv[1..]` for an executable without `#!`; the child fills slot 1.
    script_argv: Vec<*const c_char>,
    cwd: CString,
    user: Option<Ids>,
    empty_mask: SigSet,
}

/// A [`User`] as the system calls take it.
#[derive(Debug)]
struct Ids {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    ngroups: c_int,
}

impl Exec {
    fn prepare(launch: &Launch<'_>) -> Result<Exec, ShimError> {
        let program = launch.argv.first().map_or("", String::as_str);
        let args = launch
            .argv
            .iter()
            .map(|a| c_string(a.as_bytes(), "argument"))
            .collect::<Result<Vec<_>, _>>()?;
        let env = launch
            .env
            .iter()
            .map(|(k, v)| c_string(format!("{k}={v}").as_bytes(), "environment variable"))
            .collect::<Result<Vec<_>, _>>()?;
        let candidates = search_path(program, launch.env.get("PATH").map(String::as_str))
            .iter()
            .map(|p| c_string(p.as_bytes(), "program"))
            .collect::<Result<Vec<_>, _>>()?;
        let terminated = |strings: &[CString]| -> Vec<*const c_char> {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain([ptr::null()])
                .collect()
        };
        let argv = terminated(&args);
        let envp = terminated(&env);
        // argv[1..] ends with argv's NULL (argv has at least the program).
        let script_argv = [SHELL.as_ptr(), ptr::null()]
            .into_iter()
            .chain(argv.iter().skip(1).copied())
            .collect();
        let cwd = c_string(launch.cwd.as_os_str().as_bytes(), "working directory")?;
        let user = match launch.user {
            Some((uid, gid, groups)) => Some(Ids {
                uid: uid.as_raw(),
                gid: gid.as_raw(),
                groups: groups.iter().map(|g| g.as_raw()).collect(),
                ngroups: c_int::try_from(groups.len())
                    .map_err(|_| ShimError::Spawn("too many groups".into()))?,
            }),
            None => None,
        };
        Ok(Exec {
            _strings: args.into_iter().chain(env).collect(),
            argv,
            envp,
            candidates,
            script_argv,
            cwd,
            user,
            empty_mask: SigSet::empty(),
        })
    }
}

fn c_string(bytes: &[u8], what: &str) -> Result<CString, ShimError> {
    CString::new(bytes).map_err(|_| {
        ShimError::Spawn(format!(
            "nul byte found in {what} {:?}",
            String::from_utf8_lossy(bytes)
        ))
    })
}

/// The paths `execvp` would try for `program`, in order: itself when it has a `/`, else each
/// entry of `path` (glibc's default when unset; an empty entry is the working directory).
fn search_path(program: &str, path: Option<&str>) -> Vec<String> {
    if program.is_empty() {
        return Vec::new();
    }
    if program.contains('/') {
        return vec![program.to_owned()];
    }
    path.unwrap_or(DEFAULT_PATH)
        .split(':')
        .map(|dir| match dir {
            "" => program.to_owned(),
            dir => format!("{dir}/{program}"),
        })
        .collect()
}

/// The child, from the clone to the exec: it writes [`ALIVE`] on the report pipe, then on any
/// failure the errno, and exits with 127. Never returns.
fn exec_child(exec: &mut Exec, fds: ChildFds) -> ! {
    let alive = [ALIVE];
    // SAFETY: write and _exit are async-signal-safe; `alive` lives on this stack. If the parent
    // cannot learn that we run, we must not run: it then takes us for dead and reaps us.
    unsafe {
        if libc::write(fds.report, alive.as_ptr().cast(), alive.len()) != 1 {
            libc::_exit(EXEC_FAILED)
        }
    }
    let errno = match set_up_and_exec(exec, fds) {
        Err(errno) => errno,
        Ok(never) => match never {},
    };
    let bytes = errno.to_ne_bytes();
    // SAFETY: write and _exit are async-signal-safe; `bytes` lives on this stack. A short or
    // failed write leaves the parent with a broken report, which it handles.
    unsafe {
        libc::write(fds.report, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(EXEC_FAILED)
    }
}

/// What the fallback's std and `pre_exec` do in the child, then the exec (glibc's `execvp` over
/// the prepared candidates); returns only on a failure, with its errno.
fn set_up_and_exec(exec: &mut Exec, fds: ChildFds) -> Result<Infallible, c_int> {
    // SAFETY: we are the child, between the clone and the exec. Each call is one system call (a
    // thin libc wrapper or `syscall`), async-signal-safe, on descriptors and memory prepared
    // before the clone: no allocation, no lock (the ids are set by raw system calls because
    // libc's wrappers would signal the parent's other threads, if it had any). Every pointer
    // passed is to a NUL-terminated string or a NULL-terminated array owned by `exec`, which
    // outlives the calls. The shim's standard descriptors are always open (std's runtime opens
    // /dev/null on any closed one), so the fds differ from 0, 1 and 2 and dup2 clears their
    // close-on-exec.
    unsafe {
        check(libc::dup2(fds.stdin, libc::STDIN_FILENO))?;
        check(libc::dup2(fds.stdout, libc::STDOUT_FILENO))?;
        check(libc::dup2(fds.stderr, libc::STDERR_FILENO))?;
        check(libc::setsid())?;
        check(libc::sigprocmask(
            libc::SIG_SETMASK,
            exec.empty_mask.as_ref(),
            ptr::null_mut(),
        ))?;
        // The only signal the shim ignores; ignored signals survive exec, handled ones do not.
        if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR {
            return Err(Errno::last_raw());
        }
        libc::umask(0o022);
        check(libc::chdir(exec.cwd.as_ptr()))?;
        if let Some(user) = &exec.user {
            let (setgroups, setgid, setuid) = SET_IDS;
            check_long(libc::syscall(setgroups, user.ngroups, user.groups.as_ptr()))?;
            check_long(libc::syscall(setgid, user.gid))?;
            check_long(libc::syscall(setuid, user.uid))?;
        }
        // As execvp: an executable without `#!` runs with /bin/sh, a missing or unreachable one
        // tries the next, a denied one too but EACCES is the error if none runs.
        let mut errno = libc::ENOENT;
        let mut denied = false;
        for path in &exec.candidates {
            libc::execve(path.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr());
            errno = Errno::last_raw();
            if errno == libc::ENOEXEC
                && let Some(slot) = exec.script_argv.get_mut(1)
            {
                *slot = path.as_ptr();
                libc::execve(
                    SHELL.as_ptr(),
                    exec.script_argv.as_ptr(),
                    exec.envp.as_ptr(),
                );
                errno = Errno::last_raw();
            }
            match errno {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => return Err(errno),
            }
        }
        Err(if denied { libc::EACCES } else { errno })
    }
}

/// A system call's result: -1 is its errno.
fn check(ret: c_int) -> Result<(), c_int> {
    check_long(ret.into())
}

/// [`check`] for `syscall(2)`'s result.
fn check_long(ret: c_long) -> Result<(), c_int> {
    if ret == -1 {
        Err(Errno::last_raw())
    } else {
        Ok(())
    }
}

/// The fallback: `std::process::Command`, with the child joining its cgroup (if any) before exec
/// through `cgroup.procs`, opened here.
fn with_command(launch: &Launch<'_>, stdout: OwnedFd, stderr: OwnedFd) -> Result<u32, ShimError> {
    let Some((program, args)) = launch.argv.split_first() else {
        return Err(ShimError::Spawn("empty command".into()));
    };
    let procs = match launch.cgroup {
        Some(cg) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .open(cg.procs_file())
                .map_err(|e| ShimError::io("open", &cg.procs_file(), e))?,
        ),
        None => None,
    };
    let user = launch.user.cloned();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(launch.env)
        .current_dir(launch.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (write to the cgroup.procs file opened before the fork,
    // setsid, sigprocmask, signal, umask, setgroups, setgid, setuid); the groups vector was
    // allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(procs) = &procs {
                nix::unistd::write(procs, b"0")?;
            }
            setsid()?;
            SigSet::empty().thread_set_mask()?;
            signal(Signal::SIGPIPE, SigHandler::SigDfl)?;
            umask(Mode::from_bits_truncate(0o022));
            if let Some((uid, gid, groups)) = &user {
                setgroups(groups)?;
                setgid(*gid)?;
                setuid(*uid)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| ShimError::Spawn(e.to_string()))?;
    // The Child is dropped without waiting: the shim reaps every child itself.
    Ok(child.id())
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::time::Duration;

    use nix::sys::wait::WaitStatus;

    use super::*;

    /// A cgroup below this test process's own (the only place tests may make one), emptied and
    /// removed on drop.
    struct TestCgroup {
        cgroup: ServiceCgroup,
        /// As `/proc/<pid>/cgroup` shows it: `/name` below the v2 mount.
        shown: PathBuf,
    }

    impl TestCgroup {
        fn new(name: &str) -> TestCgroup {
            let detected = cloudlet_cgroups::detect().expect("these tests need cgroup v2");
            let name = format!("cloudlet-spawn-{}-{name}", std::process::id());
            let cgroup = ServiceCgroup::at(&detected.own_dir().join(&name));
            cgroup.create().expect("create a cgroup below our own");
            TestCgroup {
                cgroup,
                shown: detected.own.join(name),
            }
        }

        /// The line of `/proc/<pid>/cgroup` of a process in this cgroup.
        fn line(&self) -> String {
            format!("0::{}", self.shown.display())
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let _ = self.cgroup.kill();
            let _ = self.cgroup.wait_empty(Duration::from_secs(5));
            let _ = self.cgroup.remove();
        }
    }

    /// The two ways to start a run.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Way {
        Clone3,
        Command,
    }

    /// Starts `launch` the given way (clone3 must be offered: this host's kernel is 5.7+).
    fn start(launch: &Launch<'_>, way: Way) -> Result<Spawned, ShimError> {
        let (stdout, stdout_child) = pipe()?;
        let (stderr, stderr_child) = pipe()?;
        let pid = match way {
            Way::Clone3 => {
                let cgroup = launch.cgroup.expect("clone3 needs a cgroup");
                clone_into(launch, cgroup, &stdout_child, &stderr_child)?
                    .expect("this kernel offers clone3(CLONE_INTO_CGROUP)")
            }
            Way::Command => with_command(launch, stdout_child, stderr_child)?,
        };
        Ok(Spawned {
            pid,
            stdout,
            stderr,
        })
    }

    /// Starts `launch`, reads its stdout and stderr to EOF and reaps it.
    fn run(launch: &Launch<'_>, way: Way) -> (String, String, WaitStatus) {
        let child = start(launch, way).unwrap();
        let mut out = String::new();
        std::fs::File::from(child.stdout)
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        std::fs::File::from(child.stderr)
            .read_to_string(&mut err)
            .unwrap();
        let pid = Pid::from_raw(i32::try_from(child.pid).unwrap());
        (out, err, waitpid(pid, None).unwrap())
    }

    /// The value of `key:` in a `/proc/<pid>/status` text.
    fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map_or("", str::trim)
    }

    /// Our children (zombies included) that sit in the cgroup shown as `line`.
    fn children_in(line: &str) -> Vec<String> {
        let me = std::process::id().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .filter(|e| {
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                // pid (comm) state ppid ...: the comm may hold spaces, so split after ')'.
                let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
                after.split_whitespace().nth(1) == Some(me.as_str())
            })
            .filter(|e| {
                std::fs::read_to_string(e.path().join("cgroup"))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l == line)
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_search_path_is_the_one_execvp_tries() {
        assert_eq!(search_path("/bin/x", Some("/a")), ["/bin/x"]);
        assert_eq!(search_path("./x", None), ["./x"]);
        assert_eq!(search_path("x", Some("/a:/b/")), ["/a/x", "/b//x"]);
        assert_eq!(search_path("x", None), ["/bin/x", "/usr/bin/x"]);
        // An empty entry is the working directory, as an empty PATH is.
        assert_eq!(search_path("x", Some("/a::/b")), ["/a/x", "x", "/b/x"]);
        assert_eq!(search_path("x", Some("")), ["x"]);
        assert!(search_path("", Some("/a")).is_empty());
    }

    #[test]
    fn both_ways_start_the_run_in_its_cgroup_set_up_alike() {
        let cg = TestCgroup::new("setup");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("marker"),
            "found in the working directory\n",
        )
        .unwrap();
        let env = BTreeMap::from([
            ("PATH".to_owned(), "/nonexistent:/usr/bin:/bin".to_owned()),
            ("ONLY".to_owned(), "this".to_owned()),
        ]);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // Another user than ours, with exactly one group.
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let (uid, gid) = (nobody.uid, nobody.gid);
        let user = (uid, gid, vec![gid]);
        // A blocked signal here, and SIGPIPE ignored by Rust's runtime: the run gets neither. What
        // this process inherited ignored stays ignored (exec keeps it), as with std.
        let usr1 = SigSet::from(Signal::SIGUSR1);
        usr1.thread_block().unwrap();
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        let ignored = u64::from_str_radix(status_field(&own, "SigIgn"), 16).unwrap();
        let sigpipe = 1 << (libc::SIGPIPE - 1);
        assert_ne!(ignored & sigpipe, 0, "Rust's runtime ignores SIGPIPE");
        let run_ignores = format!("{:016x}", ignored & !sigpipe);
        for way in [Way::Clone3, Way::Command] {
            let argv = [
                "cat",
                "/proc/self/stat",
                "/proc/self/status",
                "/proc/self/cgroup",
                "marker",
            ]
            .map(String::from);
            let launch = Launch {
                argv: &argv,
                env: &env,
                cwd: dir.path(),
                user: Some(&user),
                cgroup: Some(&cg.cgroup),
            };
            let (out, err, status) = run(&launch, way);
            assert_eq!(err, "", "{way:?}");
            assert!(
                matches!(status, WaitStatus::Exited(_, 0)),
                "{way:?}: {status:?}"
            );
            let fields: Vec<&str> = out
                .lines()
                .next()
                .and_then(|l| l.rsplit_once(')'))
                .map(|(head, rest)| {
                    std::iter::once(head.split(' ').next().unwrap_or(""))
                        .chain(rest.split_whitespace())
                        .collect()
                })
                .unwrap_or_default();
            // pid, state, ppid, pgrp, session: its own session and group.
            assert_eq!(fields[4], fields[0], "{way:?}: session of {out}");
            assert_eq!(fields[3], fields[0], "{way:?}: process group of {out}");
            for (key, want) in [
                ("Umask", "0022"),
                ("SigBlk", "0000000000000000"),
                ("SigIgn", &run_ignores),
                ("Groups", &gid.to_string()),
                ("Uid", &vec![uid.to_string(); 4].join("\t")),
                ("Gid", &vec![gid.to_string(); 4].join("\t")),
            ] {
                assert_eq!(status_field(&out, key), want, "{way:?}: {key} in {out}");
            }
            assert!(out.lines().any(|l| l == cg.line()), "{way:?}: {out}");
            assert!(out.ends_with("found in the working directory\n"), "{way:?}");

            let argv = ["readlink", "/proc/self/fd/0", "/proc/self/cwd"].map(String::from);
            let (out, _, _) = run(
                &Launch {
                    argv: &argv,
                    ..launch
                },
                way,
            );
            assert_eq!(
                out,
                format!(
                    "/dev/null\n{}\n",
                    dir.path().canonicalize().unwrap().display()
                ),
                "{way:?}"
            );
            let argv = ["env".to_owned()];
            let (out, _, _) = run(
                &Launch {
                    argv: &argv,
                    ..launch
                },
                way,
            );
            assert_eq!(
                out, "ONLY=this\nPATH=/nonexistent:/usr/bin:/bin\n",
                "{way:?}"
            );

            let argv = ["sh", "-c", "echo out; echo err >&2; exit 3"].map(String::from);
            let (out, err, status) = run(
                &Launch {
                    argv: &argv,
                    ..launch
                },
                way,
            );
            assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"), "{way:?}");
            assert!(
                matches!(status, WaitStatus::Exited(_, 3)),
                "{way:?}: {status:?}"
            );
        }
        usr1.thread_unblock().unwrap();
    }

    #[test]
    fn a_failed_exec_is_reported_as_std_does_and_its_child_is_reaped() {
        let cg = TestCgroup::new("fail");
        let dir = tempfile::tempdir().unwrap();
        let not_executable = dir.path().join("data");
        std::fs::write(&not_executable, "just data\n").unwrap();
        let missing_dir = dir.path().join("gone");
        let (enoent, eacces) = (
            "No such file or directory (os error 2)",
            "Permission denied (os error 13)",
        );
        let data = not_executable.to_str().unwrap();
        let in_dir = dir.path().to_str().unwrap();
        // What fails, the program, the service's PATH, the working directory, the error.
        let cases = [
            (
                "missing program",
                "/nonexistent/program",
                "/bin",
                dir.path(),
                enoent,
            ),
            (
                "not in PATH",
                "no-such-program",
                "/nonexistent:/x",
                dir.path(),
                enoent,
            ),
            ("not executable", data, "/bin", dir.path(), eacces),
            ("denied in PATH", "data", in_dir, dir.path(), eacces),
            ("missing cwd", "true", "/bin:/usr/bin", &missing_dir, enoent),
        ];
        for (what, program, path, cwd, want) in cases {
            let argv = [program.to_owned()];
            let env = BTreeMap::from([("PATH".to_owned(), path.to_owned())]);
            let launch = Launch {
                argv: &argv,
                env: &env,
                cwd,
                user: None,
                cgroup: Some(&cg.cgroup),
            };
            let by_clone3 = start(&launch, Way::Clone3).unwrap_err().to_string();
            let by_command = start(&launch, Way::Command).unwrap_err().to_string();
            assert_eq!(by_clone3, by_command, "{what}");
            assert!(by_clone3.contains(want), "{what}: {by_clone3}");
        }
        // Every failed child was reaped before the error returned: none left, not even a zombie.
        assert_eq!(children_in(&cg.line()), Vec::<String>::new());
    }

    #[test]
    fn an_executable_without_a_shebang_runs_with_sh_found_through_path() {
        let cg = TestCgroup::new("script");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("hello");
        std::fs::write(&script, "echo from the script: \"$1\"\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = BTreeMap::from([(
            "PATH".to_owned(),
            format!("/nonexistent:{}", dir.path().display()),
        )]);
        let argv = ["hello", "world"].map(String::from);
        for way in [Way::Clone3, Way::Command] {
            let launch = Launch {
                argv: &argv,
                env: &env,
                cwd: Path::new("/"),
                user: None,
                cgroup: Some(&cg.cgroup),
            };
            let (out, err, status) = run(&launch, way);
            assert_eq!(
                (out.as_str(), err.as_str()),
                ("from the script: world\n", ""),
                "{way:?}"
            );
            assert!(
                matches!(status, WaitStatus::Exited(_, 0)),
                "{way:?}: {status:?}"
            );
        }
    }

    #[test]
    fn a_run_starts_in_a_cgroup_that_was_killed_before() {
        let cg = TestCgroup::new("killed");
        let env = BTreeMap::new();
        let argv = ["/bin/cat".to_owned(), "/proc/self/cgroup".to_owned()];
        let launch = Launch {
            argv: &argv,
            env: &env,
            cwd: Path::new("/"),
            user: None,
            cgroup: Some(&cg.cgroup),
        };
        for round in 0..3 {
            // Empty, but killed: some kernels now kill a child cloned into it at its birth.
            cg.cgroup.kill().unwrap();
            let child = spawn(&launch).unwrap();
            let mut out = String::new();
            std::fs::File::from(child.stdout)
                .read_to_string(&mut out)
                .unwrap();
            let status = waitpid(Pid::from_raw(i32::try_from(child.pid).unwrap()), None).unwrap();
            assert!(
                matches!(status, WaitStatus::Exited(_, 0)),
                "round {round}: {status:?}"
            );
            assert!(out.lines().any(|l| l == cg.line()), "round {round}: {out}");
        }
        // The children killed at birth were reaped too.
        assert_eq!(children_in(&cg.line()), Vec::<String>::new());
    }

    #[test]
    fn spawn_takes_clone3_with_a_cgroup_and_command_without() {
        let cg = TestCgroup::new("spawn");
        let env = BTreeMap::new();
        let argv = ["/bin/cat".to_owned(), "/proc/self/cgroup".to_owned()];
        for cgroup in [Some(&cg.cgroup), None] {
            let child = spawn(&Launch {
                argv: &argv,
                env: &env,
                cwd: Path::new("/"),
                user: None,
                cgroup,
            })
            .unwrap();
            let mut out = String::new();
            std::fs::File::from(child.stdout)
                .read_to_string(&mut out)
                .unwrap();
            waitpid(Pid::from_raw(i32::try_from(child.pid).unwrap()), None).unwrap();
            assert_eq!(
                out.lines().any(|l| l == cg.line()),
                cgroup.is_some(),
                "{out}"
            );
        }
        let err = spawn(&Launch {
            argv: &[],
            env: &env,
            cwd: Path::new("/"),
            user: None,
            cgroup: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("empty command"), "{err}");
    }
}
