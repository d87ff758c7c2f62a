//! The end-to-end harness: drives the real `cloudlet` binary (server, shims, ctl) in a data
//! directory of the test's own, with the `workload` binary as the service that misbehaves on
//! command.
//!
//! It owns test isolation: everything a test starts lives under its temp dir and is killed when the
//! [`Cluster`] drops, even when the test fails. Waiting is event-driven: [`EventWatch`] follows
//! `cloudlet ctl events -f -o json` and tests block on the event they expect, with a deadline.
//! It never touches processes it did not start.

pub mod benchargs;
pub mod fleet;
pub mod https;
pub mod netns;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `cloudlet` binary built by `cargo build --workspace --bins` (scripts/test.sh does that).
pub fn cloudlet_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CLOUDLET_BIN") {
        return PathBuf::from(p);
    }
    let bin = beside_target("cloudlet");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build --workspace --bins` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A one-node cloudlet in a temp dir.
#[derive(Debug)]
pub struct Cluster {
    /// Mounts in the temp dir: dropped (unmounted) after everything the cluster started is
    /// gone and before the temp dir is removed (fields drop in declaration order).
    guards: Vec<Tmpfs>,
    dir: tempfile::TempDir,
    data: PathBuf,
    args: Vec<String>,
    server: Option<Child>,
    bin: PathBuf,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::start()
    }
}

impl Cluster {
    /// Starts a server on a fresh data dir and waits until its API answers.
    pub fn start() -> Cluster {
        let mut c = Cluster::unstarted(None, &[]);
        c.start_server();
        c
    }

    /// A cluster whose server is not started yet: its data dir is the temp dir or `data_subdir`
    /// of it, and `args` go to every `cloudlet server` it starts.
    pub fn unstarted(data_subdir: Option<&str>, args: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("cl-e2e-")
            .tempdir()
            .expect("temp dir");
        let data = data_subdir.map_or_else(|| dir.path().to_owned(), |d| dir.path().join(d));
        Cluster {
            dir,
            data,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            server: None,
            bin: cloudlet_bin(),
            guards: Vec::new(),
        }
    }

    /// Starts every later server (and runs `ctl`) from `bin` instead of [`cloudlet_bin`].
    pub fn set_bin(&mut self, bin: PathBuf) {
        self.bin = bin;
    }

    /// The running server's pid.
    pub fn server_pid(&self) -> u32 {
        self.server.as_ref().expect("server running").id()
    }

    /// Adds arguments for every `cloudlet server` this cluster starts from now on.
    pub fn add_server_args(&mut self, args: &[&str]) {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
    }

    /// Mounts a tmpfs of `size` (e.g. `4m`) at `name` in the temp dir; unmounted after the
    /// cluster is gone.
    pub fn mount_tmpfs(&mut self, name: &str, size: &str) -> PathBuf {
        self.mount_tmpfs_with(name, size, "")
    }

    /// [`Cluster::mount_tmpfs`] with more mount options (`,noexec`).
    pub fn mount_tmpfs_with(&mut self, name: &str, size: &str, options: &str) -> PathBuf {
        let path = self.path(name);
        self.guards.push(Tmpfs::mount_with(&path, size, options));
        path
    }

    /// The test's own cgroup subtree (relative to the cgroup v2 mount), named after its data
    /// dir so that parallel tests never share one.
    pub fn cgroup_root(&self) -> PathBuf {
        let name = self
            .dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        PathBuf::from(format!("/{name}"))
    }

    /// The absolute path of a cgroup of this test's server (`services/web`), if cgroup v2 exists.
    pub fn cgroup_path(&self, rel: &str) -> Option<PathBuf> {
        let detected = cloudlet_cgroups::detect().ok()?;
        let root = self.cgroup_root();
        Some(
            detected
                .mount
                .join(root.strip_prefix("/").unwrap_or(&root))
                .join(rel),
        )
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A path inside the test's temp dir (for pid files, sockets, markers).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts (again) a server on the same data dir and waits until it answers.
    pub fn start_server(&mut self) {
        assert!(self.server.is_none(), "a server is running already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("server.log"))
            .expect("server log");
        let child = Command::new(&self.bin)
            .args(["server", "--data-dir"])
            .arg(self.data_dir())
            .args(["--node-name", "test-node", "--log", "info"])
            // A free port of its own: tests run in parallel.
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.args)
            .arg("--cgroup-root")
            .arg(self.cgroup_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cloudlet server");
        self.server = Some(child);
        self.wait_api();
    }

    /// Waits until a server answers `GET /v1/healthz` on the socket. A connect alone is not
    /// enough: after a SIGKILL, a child the killed server had just forked holds its listener
    /// until it execs, accepting connections that nobody answers and that it then resets.
    fn wait_api(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let sock = self.data_dir().join("cloudlet.sock");
        loop {
            if healthz(&sock) {
                return;
            }
            if let Some(child) = self.server.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "server exited with {status}; its log:\n{}",
                    self.server_log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "server API not up; log:\n{}",
                self.server_log()
            );
            // The socket appears once; there is no event to wait on from outside the process.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's own log so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    /// Polls `done` every 100 ms until it holds (for state with no stream to follow: service
    /// rows, rollout records); panics with `what` and the server's log after `timeout`.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Cluster) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}\nserver log:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs the server (the services and shims must survive).
    pub fn kill_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            child.kill().expect("kill server");
            child.wait().expect("reap server");
        }
    }

    /// SIGTERMs the server and waits for it to exit; returns its exit status.
    pub fn stop_server(&mut self) -> std::process::ExitStatus {
        let mut child = self.server.take().expect("server running");
        signal(child.id(), nix::sys::signal::Signal::SIGTERM);
        child.wait().expect("reap server")
    }

    /// Runs `cloudlet ctl ARGS` against this node.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("ctl")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cloudlet ctl")
    }

    /// Runs `cloudlet ctl ARGS`, asserts success, returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "ctl {args:?} failed ({}):\nstdout: {}\nstderr: {}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.server_log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `yaml` to a file in the temp dir and applies it.
    pub fn apply(&self, file: &str, yaml: &str) -> Output {
        let path = self.path(file);
        std::fs::write(&path, yaml).expect("write manifest");
        self.ctl(&["apply", "-f", path.to_str().expect("utf-8 path")])
    }

    /// Applies and asserts success.
    pub fn apply_ok(&self, file: &str, yaml: &str) {
        let out = self.apply(file, yaml);
        assert!(
            out.status.success(),
            "apply failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `get services -o json`.
    pub fn services(&self) -> Vec<Value> {
        let out = self.ctl_ok(&["get", "services", "-o", "json"]);
        match serde_json::from_str(&out) {
            Ok(Value::Array(items)) => items,
            other => panic!("get services -o json is not an array: {other:?}\n{out}"),
        }
    }

    /// Every service's (pid, restarts) by name: what must not change when nothing is stopped.
    pub fn pids_and_restarts(&self) -> std::collections::BTreeMap<String, (u64, u64)> {
        self.services()
            .iter()
            .map(|s| {
                let name = s["name"].as_str().expect("name").to_owned();
                (
                    name,
                    (
                        s["pid"].as_u64().unwrap_or(0),
                        s["restarts"].as_u64().unwrap_or(0),
                    ),
                )
            })
            .collect()
    }

    /// One service's status.
    pub fn service(&self, name: &str) -> Value {
        self.services()
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("service {name} not listed"))
    }

    /// Follows `ctl logs NAME -f` until a line matches `pred`; returns it.
    pub fn wait_log(
        &self,
        service: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let mut child = Command::new(&self.bin)
            .args(["ctl", "--data-dir"])
            .arg(self.data_dir())
            .args(["logs", service, "-f"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ctl logs -f");
        let rx = lines(child.stdout.take().expect("stdout"), Some);
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let found = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if pred(&line) => break Some(line),
                Ok(line) => seen.push(line),
                Err(_) => break None,
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        found.unwrap_or_else(|| {
            panic!(
                "no matching line in the logs of {service} within {timeout:?}; last lines: {:?}",
                &seen[seen.len().saturating_sub(10)..]
            )
        })
    }

    /// Follows the event stream from now on (and its past, which `wait` skips unless asked).
    pub fn events(&self) -> EventWatch {
        EventWatch::start(&self.bin, self.data_dir())
    }

    /// Every event so far.
    pub fn all_events(&self) -> Vec<Value> {
        self.ctl_ok(&["events", "-o", "json"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("event json"))
            .collect()
    }

    /// A manifest for the workload binary: `name`, its workload args, extra spec YAML lines
    /// (indented under `spec:` by the caller's choice of two spaces).
    pub fn workload_manifest(name: &str, args: &[&str], extra_spec: &str) -> String {
        let mut cmd = vec![workload_bin().display().to_string()];
        cmd.extend(args.iter().map(|s| (*s).to_owned()));
        let cmd = serde_json::to_string(&cmd).expect("json");
        format!(
            "apiVersion: cloudlet/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  command: {cmd}\n{extra_spec}"
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_server();
        kill_everything_under(self.data_dir());
        if let Some(base) = self.cgroup_path("") {
            remove_cgroup_tree(&base);
        }
    }
}

/// Whether a server answers `GET /v1/healthz` with 200 on the unix socket `sock` (within 2 s).
fn healthz(sock: &Path) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(sock) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /v1/healthz HTTP/1.1\r\nHost: cloudlet\r\nConnection: close\r\n\r\n";
    let mut answer = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"HTTP/1.1 200"
}

/// The lines of `pipe` (a child's stdout or stderr), each passed through `keep` (`None` drops
/// it), arriving on the channel as they are written: a thread of its own reads until the pipe
/// closes or the receiver is gone.
pub fn lines<T: Send + 'static>(
    pipe: impl std::io::Read + Send + 'static,
    keep: impl Fn(String) -> Option<T> + Send + 'static,
) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if let Some(item) = keep(line)
                && tx.send(item).is_err()
            {
                return;
            }
        }
    });
    rx
}

/// The `workload` test binary.
pub fn workload_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CLOUDLET_WORKLOAD_BIN") {
        return PathBuf::from(p);
    }
    beside_target("workload")
}

/// `name` in `target/<profile>/`: beside a binary of this crate (`torture`), or one directory
/// up from a test binary (`target/<profile>/deps/<test>`).
fn beside_target(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().expect("target dir");
    match dir.join(name) {
        beside if beside.exists() => beside,
        _ => dir.parent().unwrap_or(dir).join(name),
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
    let _ = nix::sys::signal::kill(pid, sig);
}

/// Waits until `pid` has exited (a pidfd becomes readable at exit: an event, not polling).
/// True when it exited within `timeout`, or was gone already.
pub fn wait_exit(pid: u32, timeout: Duration) -> bool {
    use std::os::fd::AsFd;
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return true;
    };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return true; // ESRCH: gone already
    };
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)), Ok(n) if n > 0)
}

/// Whether `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// PIDs of processes whose command line mentions `dir` (shims carry their run dir; services get
/// it in their arguments only if the test put it there), plus the process groups in pid files.
pub(crate) fn kill_everything_under(dir: &Path) {
    let needle = dir.display().to_string();
    let mut victims = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if u32::try_from(pid).is_ok_and(|p| p == std::process::id()) {
                continue;
            }
            if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline"))
                && String::from_utf8_lossy(&cmdline).contains(&needle)
            {
                victims.push(pid);
            }
        }
    }
    // The services first (their groups, from the shims' pid files), then the shims.
    if let Ok(runs) = std::fs::read_dir(dir.join("run")) {
        for r in runs.flatten() {
            if let Ok(text) = std::fs::read_to_string(r.path().join("service.pid"))
                && let Ok(pid) = text.trim().parse::<i32>()
            {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    for pid in victims {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// A running `cloudlet ctl events -f -o json`, read line by line on a thread.
#[derive(Debug)]
pub struct EventWatch {
    child: Child,
    rx: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    returned: Vec<usize>,
}

impl EventWatch {
    fn start(bin: &Path, data_dir: &Path) -> EventWatch {
        let mut child = Command::new(bin)
            .args(["ctl", "--data-dir"])
            .arg(data_dir)
            .args(["events", "-f", "-o", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ctl events -f");
        let rx = lines(child.stdout.take().expect("stdout"), |line| {
            serde_json::from_str::<Value>(&line).ok()
        });
        EventWatch {
            child,
            rx,
            seen: Vec::new(),
            returned: Vec::new(),
        }
    }

    /// Waits for the first event (received before or now) that matches `pred` and that no
    /// earlier `wait` returned.
    pub fn wait(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) =
            (0..self.seen.len()).find(|i| !self.returned.contains(i) && pred(&self.seen[*i]))
        {
            self.returned.push(i);
            return self.seen[i].clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(ev) => {
                    self.seen.push(ev.clone());
                    if pred(&ev) {
                        self.returned.push(self.seen.len() - 1);
                        return ev;
                    }
                }
                Err(_) => {
                    let mut msg =
                        format!("timed out after {timeout:?} waiting for {what}; events seen:\n");
                    for e in &self.seen {
                        let _ = writeln!(msg, "  {e}");
                    }
                    panic!("{msg}");
                }
            }
        }
    }

    /// Waits for `reason` on `service`.
    pub fn wait_for(&mut self, service: &str, reason: &str, timeout: Duration) -> Value {
        self.wait(&format!("{reason} of {service}"), timeout, |e| {
            e["service"] == service && e["reason"] == reason
        })
    }

    /// Everything received so far.
    pub fn seen(&self) -> &[Value] {
        &self.seen
    }
}

impl Drop for EventWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Kills everything in a cgroup subtree the test made and removes it, leaves first.
pub(crate) fn remove_cgroup_tree(dir: &Path) {
    if let Err(e) = cloudlet_cgroups::ServiceCgroup::at(dir).remove_tree(Duration::from_secs(5)) {
        eprintln!("cleanup: {e}");
    }
}

/// A tmpfs mounted by a test in its own temp dir, unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `path` (created).
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        Tmpfs::mount_with(path, size, "")
    }

    /// [`Tmpfs::mount`] with more options appended (`,noexec`).
    pub fn mount_with(path: &Path, size: &str, options: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700{options}"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(ok.success(), "mount tmpfs at {}", path.display());
        Tmpfs {
            path: path.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes `bytes` of zeros to `path` (creating or growing it); returns how many were written
/// before the filesystem was full.
pub fn fill(path: &Path, bytes: u64) -> u64 {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open fill file");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    while written < bytes {
        let left = usize::try_from(bytes - written)
            .unwrap_or(chunk.len())
            .min(chunk.len());
        match f.write(&chunk[..left]) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    written
}
