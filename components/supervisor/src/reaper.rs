//! The server's child reaper: cloudlet is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so orphans
//! below it are re-parented to it, and this module reaps every child on SIGCHLD so that zombies never
//! accumulate.
//!
//! Because it waits for *any* child (`waitpid(-1)`), nothing else in the process may wait for
//! children (do not use `tokio::process`): spawn through [`Reaper::spawn`], which hands back the
//! exit status of the child it started. Spawning and reaping take the same lock, so a child that
//! exits at once is never reaped before its waiter is registered.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

use crate::SupervisorError;

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    /// Exited with a code.
    Code(i32),
    /// Killed by a signal number.
    Signal(i32),
}

type Waiters = HashMap<i32, oneshot::Sender<ChildExit>>;

/// Handle to the process-wide reaper. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reaper {
    waiters: Arc<Mutex<Waiters>>,
}

impl Reaper {
    /// Makes this process a child subreaper and starts reaping. Call once, inside a tokio runtime.
    pub fn start() -> Result<Reaper, SupervisorError> {
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| SupervisorError::Os {
            what: "PR_SET_CHILD_SUBREAPER",
            source: e,
        })?;
        let mut sigchld = signal(SignalKind::child()).map_err(|e| SupervisorError::Io {
            what: "listen for",
            path: "SIGCHLD".into(),
            source: e,
        })?;
        let reaper = Reaper {
            waiters: Arc::new(Mutex::new(HashMap::new())),
        };
        let waiters = reaper.waiters.clone();
        tokio::spawn(async move {
            // Children may have exited before the signal stream existed.
            reap_all(&waiters);
            while sigchld.recv().await.is_some() {
                reap_all(&waiters);
            }
        });
        Ok(reaper)
    }

    /// Spawns `cmd` and returns the child with a receiver of its exit. Dropping the receiver is
    /// fine: the child is reaped all the same.
    pub fn spawn(
        &self,
        cmd: &mut Command,
    ) -> Result<(Child, oneshot::Receiver<ChildExit>), std::io::Error> {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        if let Ok(pid) = i32::try_from(child.id()) {
            waiters.insert(pid, tx);
        }
        Ok((child, rx))
    }
}

impl Reaper {
    /// Runs `cmd` to completion (its stdin fed `input`, stdout and stderr collected), killing it
    /// after `timeout`: `std::process::Command::output` for a process whose children this reaper
    /// reaps. The pipes are drained on threads of their own, so a large output never blocks it.
    pub async fn output(
        &self,
        cmd: &mut Command,
        input: Option<Vec<u8>>,
        timeout: std::time::Duration,
    ) -> Result<std::process::Output, std::io::Error> {
        use std::io::{Read, Write};
        use std::process::Stdio;
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let (mut child, exit) = self.spawn(cmd)?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let writer = std::thread::spawn(move || {
            if let (Some(mut stdin), Some(input)) = (stdin, input) {
                // A program that exits without reading all of it is not an error here.
                let _ = stdin.write_all(&input);
            }
        });
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut out);
                }
                out
            })
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let status = match tokio::time::timeout(timeout, exit).await {
            Ok(Ok(exit)) => exit,
            Ok(Err(_)) => {
                return Err(std::io::Error::other("lost track of the child"));
            }
            Err(_) => {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("killed after {timeout:?}"),
                ));
            }
        };
        let join = |h: std::thread::JoinHandle<Vec<u8>>| h.join().unwrap_or_default();
        let _ = writer.join();
        let (stdout, stderr) = tokio::task::spawn_blocking(move || (join(stdout), join(stderr)))
            .await
            .map_err(std::io::Error::other)?;
        use std::os::unix::process::ExitStatusExt;
        let status = match status {
            ChildExit::Code(c) => std::process::ExitStatus::from_raw((c & 0xff) << 8),
            ChildExit::Signal(s) => std::process::ExitStatus::from_raw(s & 0x7f),
        };
        Ok(std::process::Output {
            status,
            stdout,
            stderr,
        })
    }
}

fn reap_all(waiters: &Mutex<Waiters>) {
    let mut waiters = waiters.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => deliver(&mut waiters, pid, ChildExit::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                deliver(&mut waiters, pid, ChildExit::Signal(sig as i32));
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!("waitpid: {e}");
                return;
            }
        }
    }
}

fn deliver(waiters: &mut Waiters, pid: Pid, exit: ChildExit) {
    if let Some(tx) = waiters.remove(&pid.as_raw()) {
        let _ = tx.send(exit);
    } else {
        tracing::debug!(pid = pid.as_raw(), ?exit, "reaped an orphan");
    }
}
