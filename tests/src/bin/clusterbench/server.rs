//! The server under test: `cloudlet server` started on a temp dir of the bench's own, on a free
//! port of 127.0.0.1 and in a cgroup subtree named after that dir; its admin client and a join
//! token; its store file; and its stop (SIGTERM, then SIGKILL) with the removal of its cgroup
//! subtree, which also happens when it is dropped.
//!
//! It must never signal a process other than the one it started, and never touch a cgroup other
//! than the one named after its own temp dir.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use cloudlet_api::{AdminConfig, Client};
use cloudlet_cgroups::ServiceCgroup;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a SIGTERMed server may take to exit before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running `cloudlet server`, stopped when dropped.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    pid: i32,
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// Its cgroup subtree (absolute), when the host has cgroup v2.
    cgroup: Option<PathBuf>,
}

impl Server {
    /// Starts `bin server` with its data dir, log and cgroup subtree under `dir` (a temp dir of
    /// the bench's own) and the API on a free port of 127.0.0.1. Returns at once: see
    /// [`Server::ready`].
    pub fn start(bin: &Path, dir: &Path) -> Result<Server, String> {
        let name = dir
            .file_name()
            .ok_or_else(|| format!("{} has no name", dir.display()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let (data, log) = (dir.join("s"), dir.join("server.log"));
        let log_file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = Command::new(bin);
        command
            .arg("server")
            .arg("--data-dir")
            .arg(&data)
            .args(["--node-name", "bench-server", "--log", "warn"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"));
        // A subtree of its own, below the bench's cgroup, named after the temp dir.
        let detected = cloudlet_cgroups::detect().ok();
        if let Some(detected) = &detected {
            command.arg("--cgroup-root").arg(detected.own.join(name));
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            // Its own process group: a Ctrl-C at the terminal is the bench's to handle.
            .process_group(0);
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        Ok(Server {
            pid: i32::try_from(child.id()).map_err(|e| format!("the server's pid: {e}"))?,
            child: Some(child),
            bin: bin.to_owned(),
            data,
            log,
            cgroup: detected.map(|d| d.own_dir().join(name)),
        })
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits until the server wrote `admin.conf` and answers `GET /v1/nodes` over mutual TLS
    /// with it; returns that admin client and the server's URL.
    pub async fn ready(&mut self, within: Duration) -> Result<(Client, String), String> {
        let deadline = Instant::now() + within;
        let config = self.data.join("admin.conf");
        let mut last = String::from("no admin.conf yet");
        while Instant::now() < deadline {
            self.check_running()?;
            if config.exists() {
                match AdminConfig::load(&config).and_then(|c| Ok((c.client()?, c.server))) {
                    Ok((client, url)) => match client.nodes().await {
                        Ok(_) => return Ok((client, url)),
                        Err(e) => last = format!("GET /v1/nodes: {e}"),
                    },
                    Err(e) => last = e.to_string(),
                }
            }
            // Nothing to wait on from outside the process: the file appears once.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("the server is not ready after {within:?}: {last}"))
    }

    /// Fails when the server has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(status))) => Err(format!("the server exited: {status}")),
            Some(Err(e)) => Err(format!("waiting for the server: {e}")),
            None => Err("the server was stopped".into()),
        }
    }

    /// A join token, made by `cloudlet ctl token create --ttl 1h` as an operator would.
    pub async fn token(&self) -> Result<String, String> {
        let output = tokio::process::Command::new(&self.bin)
            .arg("ctl")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["token", "create", "--ttl", "1h"])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("running cloudlet ctl token create: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        match stdout.lines().find(|l| l.starts_with("K10")) {
            Some(token) if output.status.success() => Ok(token.trim().to_owned()),
            _ => Err(format!(
                "cloudlet ctl token create: {}: {}{}",
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            )),
        }
    }

    /// When its store file was last written, and its size.
    pub fn store_state(&self) -> Result<(SystemTime, u64), String> {
        let path = self.data.join("store.redb");
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let modified = meta
            .modified()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((modified, meta.len()))
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`]; reaps it and removes its cgroup subtree.
    /// Returns how long it took to exit and whether it needed the SIGKILL.
    pub fn stop(&mut self) -> Result<(Duration, bool), String> {
        let stopped = self.child.take().map(|child| stop(child, self.pid));
        let removed = self.cgroup.take().map_or(Ok(()), |dir| remove_tree(&dir));
        let stopped = stopped.unwrap_or(Ok((Duration::ZERO, false)))?;
        removed.map(|()| stopped)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("clusterbench: stopping the server: {error}");
        }
    }
}

fn stop(mut child: Child, pid: i32) -> Result<(Duration, bool), String> {
    let begun = Instant::now();
    if let Ok(Some(_)) = child.try_wait() {
        return Ok((Duration::ZERO, false));
    }
    // Our own child, not yet reaped: the pid is still its.
    kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| format!("SIGTERM to {pid}: {e}"))?;
    while begun.elapsed() < STOP_GRACE {
        match child.try_wait() {
            Ok(Some(_)) => return Ok((begun.elapsed(), false)),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for the server: {e}")),
        }
    }
    child
        .kill()
        .and_then(|()| child.wait())
        .map_err(|e| format!("SIGKILL to the server: {e}"))?;
    Ok((begun.elapsed(), true))
}

/// Kills whatever runs in the cgroup subtree at `dir` and removes it, leaves first.
fn remove_tree(dir: &Path) -> Result<(), String> {
    ServiceCgroup::at(dir)
        .remove_tree(Duration::from_secs(5))
        .map_err(|e| format!("removing cgroup {}: {e}", dir.display()))
}
