//! The wire protocol between the server and a shim: one JSON object per line over the shim's unix
//! socket (`<run dir>/shim.sock`).
//!
//! The server sends [`Request`]s, each with an `id`; the shim answers each with a [`Response`] that
//! carries the same `id`, and pushes [`Notice`]s (no `id`) when something happens on its own: the
//! service exited. Both sides treat an unknown line as a protocol error of that line only.
//!
//! This module owns the message shapes; it never does I/O.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the server asks of a shim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Report [`ShimStatus`].
    Status,
    /// Start a new run of the service. Refused while a run is alive.
    ///
    /// The server numbers runs and counts restarts (a new shim for an old service continues its
    /// history); the shim keeps the numbers so that the next server can adopt them.
    Start {
        /// How to run it.
        spec: ProcessSpec,
        /// The number of this run; the shim uses one above its last run if this is not higher
        /// (`u64::MAX` stays the last number: it never wraps to 0).
        run: u64,
        /// Automatic restarts so far, this start included.
        restarts: u64,
        /// The server's name for the configuration this run starts from (a digest of its
        /// manifest), kept so that a later server knows what a finished run ran.
        #[serde(default)]
        tag: String,
    },
    /// Send `signal` to the service's process group; SIGKILL the group after `grace_ms` if the
    /// main process has not exited by then. The shim keeps the deadline itself, so a stop completes
    /// even when the server goes away in the middle of it.
    Stop {
        /// Signal number to send first.
        signal: i32,
        /// Milliseconds before SIGKILL.
        grace_ms: u64,
    },
    /// Exit the shim. Refused while a run is alive: stop it first.
    Exit,
}

/// One request line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Request {
    /// Matches the response to the request.
    pub id: u64,
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
}

/// How to run the service process; resolved by the server from the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessSpec {
    /// Program and arguments (`argv[0]` is the program).
    pub argv: Vec<String>,
    /// The complete environment of the process (nothing is inherited from the shim).
    pub env: BTreeMap<String, String>,
    /// Working directory; `/` when absent.
    pub cwd: Option<PathBuf>,
    /// User name or numeric uid to run as; the shim's own user when absent. For messages and for
    /// shims of earlier versions, which look it up themselves.
    pub user: Option<String>,
    /// `user` as the server looked it up when it asked for this run (this shim never reads the
    /// user database: glibc's NSS would make every shim carry a dynamic loader). Required with
    /// `user`.
    #[serde(default)]
    pub identity: Option<Identity>,
    /// Rotation: bytes per log file.
    pub log_max_size: u64,
    /// Rotation: number of log files kept, the current one included.
    pub log_max_files: u32,
    /// The cgroup the process starts in (cloned straight into it, or made to join before exec:
    /// nothing it forks escapes); what a run leaves there is killed when it ends. None on hosts
    /// without cgroup v2.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

/// The ids a run's process takes (`setgroups`, `setgid`, `setuid`, in that order).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Every group the user is in, the primary one included.
    pub groups: Vec<u32>,
}

/// How a run ended, as the kernel reported it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code when the process exited by itself.
    pub code: Option<i32>,
    /// Signal number when the process was killed by a signal.
    pub signal: Option<i32>,
    /// Unix time in milliseconds when the shim saw the exit.
    pub at_ms: i64,
    /// The kernel's OOM killer ended the run (its cgroup's `memory.events` `oom_kill` grew).
    #[serde(default)]
    pub oom_killed: bool,
    /// The run ended after the server asked it to stop (an operator's stop, restart or
    /// delete): a server that comes back to this exit must not take it for a crash.
    #[serde(default)]
    pub requested: bool,
}

impl ExitStatus {
    /// True for a clean exit (code 0).
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// The current run, when one is alive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    /// Run number, 1 for the first run the shim started.
    pub run: u64,
    /// PID of the main process (also its process group id).
    pub pid: u32,
    /// Unix time in milliseconds when it was started.
    pub started_ms: i64,
    /// Set once a stop was asked for.
    pub stopping: bool,
}

/// Everything a server needs to adopt a shim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShimStatus {
    /// Service name the shim was started for.
    pub name: String,
    /// PID of the shim itself.
    pub shim_pid: u32,
    /// The alive run, if any.
    pub running: Option<RunInfo>,
    /// Number of the last run started (0 before the first).
    pub last_run: u64,
    /// The `tag` the last run was started with (empty before the first, or when the server
    /// gave none).
    #[serde(default)]
    pub tag: String,
    /// How the last finished run ended, with its run number.
    pub last_exit: Option<(u64, ExitStatus)>,
    /// Automatic restarts so far, as the server last said.
    pub restarts: u64,
    /// Log lines that could not be written, over the shim's life.
    pub dropped_log_lines: u64,
}

/// One response line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// The result.
    #[serde(flatten)]
    pub result: Reply,
}

/// The outcome of a request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Done; the shim's status after the operation.
    Ok(ShimStatus),
    /// Refused or failed, with the reason.
    Err(String),
}

/// A line the shim sends on its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// The main process of `run` exited.
    Exited {
        /// Which run.
        run: u64,
        /// How.
        status: ExitStatus,
    },
}

/// Any line from the shim to the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum FromShim {
    /// An answer.
    Response(Response),
    /// A notice.
    Notice(Notice),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_are_distinguishable() {
        let req = Request {
            id: 7,
            op: Op::Stop {
                signal: 15,
                grace_ms: 10_000,
            },
        };
        let line = serde_json::to_string(&req).unwrap();
        assert_eq!(line, r#"{"id":7,"op":"stop","signal":15,"grace_ms":10000}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);

        let status = ShimStatus {
            name: "web".into(),
            shim_pid: 10,
            running: None,
            last_run: 0,
            tag: "abc".into(),
            last_exit: None,
            restarts: 0,
            dropped_log_lines: 0,
        };
        let resp = FromShim::Response(Response {
            id: 7,
            result: Reply::Ok(status),
        });
        let line = serde_json::to_string(&resp).unwrap();
        assert_eq!(serde_json::from_str::<FromShim>(&line).unwrap(), resp);

        let notice = FromShim::Notice(Notice::Exited {
            run: 3,
            status: ExitStatus {
                code: None,
                signal: Some(9),
                at_ms: 1,
                oom_killed: true,
                requested: true,
            },
        });
        let line = serde_json::to_string(&notice).unwrap();
        assert_eq!(serde_json::from_str::<FromShim>(&line).unwrap(), notice);

        let err = FromShim::Response(Response {
            id: 1,
            result: Reply::Err("no".into()),
        });
        let line = serde_json::to_string(&err).unwrap();
        assert_eq!(serde_json::from_str::<FromShim>(&line).unwrap(), err);
    }
}
