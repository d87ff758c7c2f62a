//! The modes that fork: `orphans`, `forkbomb` and `daemon`, and the one `fork` they share.
//!
//! Every child starts with the default SIGTERM disposition, whatever the main process does with
//! it. This module must never leave a zombie of the main process (it reaps every direct child it
//! forks, except `forkbomb`'s, which are meant to pile up).

use std::fs::File;
use std::io::{self, PipeWriter, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{
    ForkResult, Pid, chdir, dup2_stderr, dup2_stdin, dup2_stdout, fork, getpid, setsid,
};

use crate::{exit_now, sleep_forever, write_pidfile};

/// Forks; the child runs `child` and exits with the code it returns, never returning into the
/// caller's code. Returns the child's pid in the parent.
fn fork_child(child: impl FnOnce() -> i32) -> nix::Result<Pid> {
    // SAFETY: the child never returns into the parent's code: it runs `child` (which may exec or
    // sleep until killed) and then `exit_now`. The parent may have one other thread, the SIGTERM
    // thread, which may hold the stderr lock at the fork: so no child code touches stdout or
    // stderr. For malloc the child relies on glibc's fork handlers, as any Rust program that
    // forks and then execs does.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let mut set = SigSet::empty();
            set.add(Signal::SIGTERM);
            // Unblocking cannot fail for a valid signal set; if it did, SIGTERM would stay blocked.
            let _ = set.thread_unblock();
            exit_now(child())
        }
    }
}

/// Forks a child that forks `count` grandchildren (each sleeps `linger`, then exits) and exits
/// at once, so the grandchildren are orphaned. Reaps the child and returns the grandchildren's
/// pids once they are orphaned.
pub fn orphans(count: u32, linger: Duration) -> Result<Vec<Pid>, String> {
    let (mut reader, writer) = io::pipe().map_err(|e| format!("orphans: creating a pipe: {e}"))?;
    let child = fork_child(move || intermediate(writer, count, linger))
        .map_err(|e| format!("orphans: fork: {e}"))?;
    // EOF comes when the intermediate child exits: grandchildren close their copy of the pipe.
    let mut report = String::new();
    let read = reader.read_to_string(&mut report);
    let status = waitpid(child, None).map_err(|e| format!("orphans: waiting for {child}: {e}"))?;
    read.map_err(|e| format!("orphans: reading from {child}: {e}"))?;
    if status != WaitStatus::Exited(child, 0) {
        return Err(format!(
            "orphans: child {child} ended with {status:?}: {}",
            report.trim()
        ));
    }
    report
        .split_whitespace()
        .map(|pid| pid.parse().map(Pid::from_raw))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("orphans: child {child} reported {report:?}: {e}"))
}

/// The intermediate child of `orphans`: forks the grandchildren, reports their pids on `writer`
/// (space-separated; an error after them) and exits, 0 if every fork worked.
fn intermediate(writer: PipeWriter, count: u32, linger: Duration) -> i32 {
    let mut writer = Some(writer);
    let mut pids = Vec::new();
    let mut failure = None;
    for _ in 0..count {
        let grandchild = fork_child(|| {
            drop(writer.take());
            thread::sleep(linger);
            0
        });
        match grandchild {
            Ok(pid) => pids.push(pid.to_string()),
            Err(error) => {
                failure = Some(format!(
                    "fork failed after {} grandchildren: {error}",
                    pids.len()
                ));
                break;
            }
        }
    }
    if let Some(writer) = &mut writer {
        let _ = write!(
            writer,
            "{} {}",
            pids.join(" "),
            failure.as_deref().unwrap_or_default()
        );
    }
    if failure.is_some() { 1 } else { 0 }
}

/// Forks children that sleep until killed, until fork fails or `max` were forked. Returns how
/// many were forked and the fork error, if that is what stopped it.
pub fn forkbomb(max: Option<u64>) -> (u64, Option<nix::Error>) {
    let mut forked = 0;
    while max.is_none_or(|max| forked < max) {
        if let Err(error) = fork_child(|| sleep_forever()) {
            return (forked, Some(error));
        }
        forked += 1;
        if forked % 1000 == 0 {
            say!("forkbomb: {forked} children");
        }
    }
    (forked, None)
}

/// Starts a daemon by double fork: a child that starts a new session, forks the daemon and exits.
/// The daemon writes its pid to `pidfile`, moves to `/` with stdio on `/dev/null`, and sleeps or
/// execs `command`. Reaps the child and returns the daemon's pid once its pid file is written.
pub fn daemon(pidfile: &Path, command: &[String]) -> Result<Pid, String> {
    let (mut reader, writer) = io::pipe().map_err(|e| format!("daemon: creating a pipe: {e}"))?;
    let child = fork_child(move || session_leader(writer, pidfile, command))
        .map_err(|e| format!("daemon: fork: {e}"))?;
    // EOF comes when the daemon closes the pipe: before it sleeps, or by exec (close-on-exec).
    let mut report = String::new();
    let read = reader.read_to_string(&mut report);
    let status = waitpid(child, None).map_err(|e| format!("daemon: waiting for {child}: {e}"))?;
    read.map_err(|e| format!("daemon: reading from {child}: {e}"))?;
    let mut lines = report.lines();
    let pid = lines.next().and_then(|line| line.strip_prefix("pid "));
    match (status, pid.map(str::parse), lines.next()) {
        (WaitStatus::Exited(_, 0), Some(Ok(pid)), None) => Ok(Pid::from_raw(pid)),
        _ => Err(format!(
            "daemon: {} (first child {child}: {status:?})",
            report.trim()
        )),
    }
}

/// The first child of `daemon`: starts a new session, forks the daemon and exits.
fn session_leader(writer: PipeWriter, pidfile: &Path, command: &[String]) -> i32 {
    let mut writer = Some(writer);
    let result = setsid().and_then(|_| {
        fork_child(|| match writer.take() {
            Some(writer) => run_daemon(writer, pidfile, command),
            None => 1,
        })
    });
    match (result, &mut writer) {
        (Ok(_), _) => 0,
        (Err(error), Some(writer)) => {
            let _ = writeln!(writer, "error: setsid or fork: {error}");
            1
        }
        (Err(_), None) => 1,
    }
}

/// The daemon: writes its pid file, reports `pid <pid>` on `writer`, then sleeps or execs.
fn run_daemon(mut writer: PipeWriter, pidfile: &Path, command: &[String]) -> i32 {
    let pid = getpid();
    let Ok(raw) = u32::try_from(pid.as_raw()) else {
        return 1;
    };
    if let Err(error) = write_pidfile(pidfile, raw) {
        let _ = writeln!(writer, "error: {error}");
        return 1;
    }
    let _ = writeln!(writer, "pid {pid}");
    // The daemon must not keep the supervisor's cwd busy.
    let _ = chdir("/");
    let Some((program, arguments)) = command.split_first() else {
        drop(writer);
        if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
            let _ = dup2_stdin(&null)
                .and_then(|()| dup2_stdout(&null))
                .and_then(|()| dup2_stderr(&null));
        }
        sleep_forever()
    };
    // On success the pipe closes by close-on-exec; std resets the signal mask before exec.
    let error = Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .exec();
    let _ = writeln!(writer, "error: exec {program}: {error}");
    127
}
