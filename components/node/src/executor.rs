//! The node's executor (Cloudpods' `executor-server`, built in): starting transient services —
//! daemons such as a qemu VM that outlive the service that asked for them — and running host
//! commands to completion with their output streamed.
//!
//! A transient service is an ordinary stored service with an owner and a group: the supervisor
//! runs it under its own shim, so restarting, stopping or deleting its owner never touches it; only
//! an explicit stop or delete does. Every call is an event naming who asked, what, and how it
//! ended. This module never runs anything in the server's own process group: each command gets a
//! process group of its own, killed whole on timeout.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloudlet_api::Caller;
use cloudlet_api::dto::{ExecOutput, ExecRequest, RunRequest};
use cloudlet_store::{Compare, Op, Store, Txn};
use cloudlet_supervisor::reaper::{ChildExit, Reaper};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::NodeError;
use crate::records::{DesiredRecord, ServiceRecord, TransientRecord, assignment_key, service_key};

/// The group of a transient service started without one.
pub const DEFAULT_GROUP: &str = "transient";

/// Who is asking, in words: the service whose process made the call, else `operator` (the API
/// socket) or `pid N` (the executor socket from outside any service).
pub fn caller_name(caller: &Caller) -> String {
    if let Some(service) = caller.pid.and_then(service_of_pid) {
        return service;
    }
    if let Some(peer) = &caller.peer {
        return format!("{} {}", peer.role.as_str(), peer.name);
    }
    match (caller.socket, caller.pid) {
        (cloudlet_api::Socket::Api | cloudlet_api::Socket::Tls, _) => "operator".to_owned(),
        (cloudlet_api::Socket::Executor, Some(pid)) => format!("pid {pid}"),
        (cloudlet_api::Socket::Executor, None) => "unknown".to_owned(),
    }
}

/// The service a process belongs to: the nearest ancestor that is a `cloudlet shim` names it.
fn service_of_pid(pid: u32) -> Option<String> {
    let mut pid = pid;
    for _ in 0..64 {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.get(1) == Some(&&b"shim"[..]) {
            let name = args.windows(2).find(|w| w[0] == b"--name").map(|w| w[1])?;
            return Some(String::from_utf8_lossy(name).into_owned());
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        if ppid <= 1 {
            return None;
        }
        pid = ppid;
    }
    None
}

/// Validates and stores a transient service. It goes through the same parser and validation as
/// any manifest (a JSON document is YAML), so its errors name the field like any other.
pub async fn run<S: Store>(
    store: &S,
    node: &str,
    owner: &str,
    request: &RunRequest,
) -> Result<ServiceRecord, NodeError> {
    let group = request
        .group
        .clone()
        .unwrap_or_else(|| DEFAULT_GROUP.to_owned());
    cloudlet_spec::check_name(&group)
        .map_err(|e| NodeError::Invalid(format!("ctl run: --group {group:?}: {e}")))?;
    let mut limits = serde_json::Map::new();
    if let Some(m) = &request.memory {
        limits.insert("memory".into(), m.clone().into());
    }
    if let Some(c) = &request.cpu {
        limits.insert("cpu".into(), c.clone().into());
    }
    if let Some(p) = request.pids {
        limits.insert("pids".into(), p.into());
    }
    let mut spec = serde_json::json!({
        "command": request.command,
        "restart": {"policy": request.restart.clone().unwrap_or_else(|| "never".to_owned())},
    });
    if !request.env.is_empty() {
        spec["env"] = serde_json::to_value(&request.env).unwrap_or_default();
    }
    if let Some(dir) = &request.working_dir {
        spec["workingDir"] = dir.clone().into();
    }
    if !limits.is_empty() {
        spec["resources"] = serde_json::json!({ "limits": limits });
    }
    let manifest = serde_json::json!({
        "apiVersion": "cloudlet/v1",
        "kind": "Service",
        "metadata": {"name": request.name, "labels": {"cloudlet.group": group}},
        "spec": spec,
    });
    let source = format!("run {}", request.name);
    let parsed = cloudlet_spec::parse_file(&source, &manifest.to_string())
        .map_err(|e| NodeError::Invalid(e.to_string()))?;
    let Some(service) = parsed.into_iter().find_map(|m| m.as_service().cloned()) else {
        return Err(NodeError::Internal(
            "run: no manifest came out of the request".into(),
        ));
    };
    if !service.spec.depends_on.is_empty() {
        return Err(NodeError::Invalid(
            "a transient service has no dependencies".into(),
        ));
    }
    let record = ServiceRecord {
        manifest: service,
        desired: DesiredRecord::Running,
        file: source,
        document: 1,
        applied_at: jiff::Timestamp::now(),
        transient: Some(TransientRecord {
            group,
            owner: owner.to_owned(),
        }),
    };
    let key = assignment_key(node, &request.name);
    // Also free as a cluster service (on the server's store; an agent's has none).
    let txn = Txn::guarded(
        vec![
            Compare::absent(key.clone()),
            Compare::absent(service_key(&request.name)),
        ],
        vec![Op::put(key, record.encode()?)],
    );
    if !store.txn(txn).await?.succeeded {
        return Err(NodeError::Conflict(format!(
            "service {} exists already: pick another name, or delete it first",
            request.name
        )));
    }
    Ok(record)
}

/// How an exec ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecEnd {
    /// The exit of the command.
    pub exit: Option<ChildExit>,
    /// Whether the timeout ended it.
    pub timed_out: bool,
    /// How long it ran.
    pub elapsed: Duration,
}

/// The longest an exec may run when the caller sets no timeout.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(600);

/// Starts `request` and returns its output as it comes; the last item carries the exit. `done` is
/// called once with how it ended (for the event).
pub fn exec(
    reaper: &Reaper,
    request: &ExecRequest,
    done: impl FnOnce(ExecEnd) + Send + 'static,
) -> Result<mpsc::Receiver<ExecOutput>, NodeError> {
    let Some(program) = request.command.first() else {
        return Err(NodeError::Invalid("exec: the command is empty".into()));
    };
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert(
        "PATH".into(),
        cloudlet_supervisor::config::DEFAULT_PATH.into(),
    );
    env.extend(request.env.clone());
    let mut cmd = Command::new(program);
    cmd.args(&request.command[1..])
        .env_clear()
        .envs(&env)
        .current_dir(request.working_dir.as_deref().unwrap_or("/"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let (mut child, exit) = reaper
        .spawn(&mut cmd)
        .map_err(|e| NodeError::Invalid(format!("exec {program}: {e}")))?;
    let pid = child.id();
    let timeout = request
        .timeout_ms
        .map_or(DEFAULT_EXEC_TIMEOUT, Duration::from_millis);
    let (tx, rx) = mpsc::channel(64);
    let pipes = [
        child
            .stdout
            .take()
            .map(|p| ("stdout", std::os::fd::OwnedFd::from(p))),
        child
            .stderr
            .take()
            .map(|p| ("stderr", std::os::fd::OwnedFd::from(p))),
    ];
    let mut readers = Vec::new();
    for (stream, fd) in pipes.into_iter().flatten() {
        let tx = tx.clone();
        let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
            .map_err(|e| NodeError::Internal(format!("exec: read {stream}: {e}")))?;
        readers.push(tokio::spawn(forward(stream, pipe, tx)));
    }
    let started = Instant::now();
    tokio::spawn(async move {
        let (exit, timed_out) = match tokio::time::timeout(timeout, exit).await {
            Ok(exit) => (exit.ok(), false),
            Err(_) => {
                kill_group(pid);
                (None, true)
            }
        };
        // The output a command wrote before it ended comes before its exit.
        for r in readers {
            let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
        }
        let (exit_code, signal) = match exit {
            Some(ChildExit::Code(c)) => (Some(c), None),
            Some(ChildExit::Signal(s)) => (None, Some(signal_name(s))),
            None => (None, timed_out.then(|| "SIGKILL".to_owned())),
        };
        let last = ExecOutput {
            stream: None,
            data: None,
            exit_code,
            signal,
            timed_out: Some(timed_out),
        };
        let _ = tx.send(last).await;
        done(ExecEnd {
            exit,
            timed_out,
            elapsed: started.elapsed(),
        });
    });
    Ok(rx)
}

async fn forward(
    stream: &'static str,
    mut pipe: tokio::net::unix::pipe::Receiver,
    tx: mpsc::Sender<ExecOutput>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let item = ExecOutput {
                    stream: Some(stream.to_owned()),
                    data: Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    exit_code: None,
                    signal: None,
                    timed_out: None,
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {sig}"))
}
