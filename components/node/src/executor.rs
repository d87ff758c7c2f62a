//! The node's executor (Cloudpods' `executor-server`, built in): starting transient services —
//! daemons such as a qemu VM that outlive the service that asked for them — and running host
//! commands to completion with their output streamed.
//!
//! A transient service is an ordinary stored service with an owner and a group: the supervisor
//! runs it under its own shim, so restarting, stopping or deleting its owner never touches it; only
//! an explicit stop or delete does. Every call is an event naming who asked, what, and how it
//! ended. A caller on the executor socket is the service whose cgroup holds its process (never
//! what its command line says, which any process can set). This module never runs anything in
//! the server's own process group: each command gets a process group of its own, killed whole
//! on timeout.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::path::{Component, Path};

use cloudlet_api::dto::{ExecOutput, ExecRequest, RunRequest};
use cloudlet_api::{ApiError, Caller};
use cloudlet_cgroups::Hierarchy;
use cloudlet_store::{Compare, Op, Store, Txn};
use cloudlet_supervisor::reaper::{ChildExit, Reaper};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::NodeError;
use crate::records::{DesiredRecord, ServiceRecord, TransientRecord, assignment_key, service_key};

/// The group of a transient service started without one.
pub const DEFAULT_GROUP: &str = "transient";

/// Who is asking, in words, off the executor socket: the holder of a client certificate, else
/// `operator`. (On the executor socket it is a service: [`executor_service`].)
pub fn caller_name(caller: &Caller) -> String {
    match &caller.peer {
        Some(peer) => format!("{} {}", peer.role.as_str(), peer.name),
        None => "operator".to_owned(),
    }
}

/// The service calling on the executor socket: the one whose cgroup holds the calling process
/// (its pid from `SO_PEERCRED`, its cgroup from `/proc/PID/cgroup`, which the process cannot
/// change; its command line it can). A process in no service's cgroup is refused (403).
pub fn executor_service(caller: &Caller, cgroups: Option<&Hierarchy>) -> Result<String, ApiError> {
    let refuse = |why: String| ApiError::Forbidden(format!("executor socket: {why}"));
    let pid = caller
        .pid
        .ok_or_else(|| refuse("the kernel did not say which process is calling".to_owned()))?;
    let hierarchy = cgroups.ok_or_else(|| {
        refuse(format!(
            "pid {pid}: this node has no cgroup hierarchy to tell its service by"
        ))
    })?;
    let path = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| refuse(format!("pid {pid}: cannot read {path}: {e}")))?;
    service_in_cgroup(&text, hierarchy.mount(), hierarchy.base()).ok_or_else(|| {
        refuse(format!(
            "pid {pid} runs in no service's cgroup: the executor socket serves the services \
             given it (spec.executor)"
        ))
    })
}

/// The service whose cgroup `proc_cgroup` (the text of `/proc/PID/cgroup`) puts the process in:
/// its cgroup v2 path must be below `base` (cloudlet's subtree, under `mount`) as
/// `services/<name>/...` or `groups/<group>/<name>/...`.
fn service_in_cgroup(proc_cgroup: &str, mount: &Path, base: &Path) -> Option<String> {
    let rel = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    if rel.ends_with(" (deleted)") {
        return None;
    }
    let path = mount.join(rel.trim_start_matches('/'));
    let below = path.strip_prefix(base).ok()?;
    let parts: Vec<&str> = below
        .components()
        .map(|c| match c {
            Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [services, name, ..] if *services == cloudlet_cgroups::SERVICES => Some((*name).to_owned()),
        [groups, _group, name, ..] if *groups == cloudlet_cgroups::GROUPS => {
            Some((*name).to_owned())
        }
        _ => None,
    }
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
    let manifest = request.manifest(&group);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_is_the_service_whose_cgroup_holds_it() {
        let mount = Path::new("/sys/fs/cgroup");
        let base = Path::new("/sys/fs/cgroup/system.slice/cloudlet.service");
        let of = |text: &str| service_in_cgroup(text, mount, base);
        let under = "0::/system.slice/cloudlet.service";
        assert_eq!(
            of(&format!("{under}/services/web\n")).as_deref(),
            Some("web")
        );
        assert_eq!(
            of(&format!("{under}/services/web/inner\n")).as_deref(),
            Some("web")
        );
        assert_eq!(
            of(&format!("12:pids:/x\n0::{}/groups/vms/vm-1\n", &under[3..])).as_deref(),
            Some("vm-1")
        );
        // The server itself, another subtree, a removed cgroup, a v1-only line: nobody.
        assert_eq!(of(&format!("{under}/server\n")), None);
        assert_eq!(of("0::/user.slice/services/web\n"), None);
        assert_eq!(of(&format!("{under}/services/web (deleted)\n")), None);
        assert_eq!(of(&format!("{under}/groups/vms\n")), None);
        assert_eq!(
            of("4:memory:/system.slice/cloudlet.service/services/web\n"),
            None
        );
    }
}
