//! The shim process (`cloudlet shim`): the tiny keeper that holds one service across its runs.
//!
//! It owns the service's main process (its child), the stdout/stderr pipes (written to the log
//! files through `cloudlet_logs::LogWriter`, so lines written while the server is down are kept)
//! and the exit status, and serves [`crate::proto`] on `<run dir>/shim.sock`. The server decides
//! *when* to start and stop; the shim only does it. Because the shim is its own session and not
//! tied to the server's life, services outlive the server (the containerd-shim / conmon pattern).
//!
//! It is single-threaded with no async runtime, to stay small (one per service): a `poll(2)` loop
//! over the listening socket, the clients, the pipes and a signalfd for SIGCHLD. It is a child
//! subreaper, so orphans of the service are re-parented to it and reaped here.
//!
//! It must never restart the service by itself, never exit while a run is alive, and never let a
//! protocol error from one client take it down. A run's process is started by `crate::spawn`,
//! directly in the service's cgroup.
//! Hand-written because no maintained crate is a process keeper of this shape, and std cannot
//! spawn into a cgroup.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cloudlet_cgroups::ServiceCgroup;
use cloudlet_logs::{LineSplitter, LogLimits, LogWriter, Stream};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, SigSet, Signal, kill, killpg, signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::{Mode, umask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, Uid, setsid};

use crate::ShimError;
use crate::proto::{
    ExitStatus, FromShim, Identity, Notice, Op, ProcessSpec, Reply, Request, Response, RunInfo,
    ShimStatus,
};
use crate::spawn::{self, Launch, spawn};

/// The file name of a shim's socket inside its run directory.
pub const SOCKET_NAME: &str = "shim.sock";
/// The file name of the pid file of the alive run (the service's main process and process group).
pub const PID_FILE_NAME: &str = "service.pid";
/// The line a shim prints on its stdout once its socket accepts connections.
pub const READY_LINE: &str = "ready";

/// How to start a shim.
#[derive(Debug, Clone)]
pub struct ShimArgs {
    /// The service's name (for status and messages).
    pub name: String,
    /// Directory for the socket and pid file.
    pub run_dir: PathBuf,
    /// Directory of the service's log files.
    pub log_dir: PathBuf,
}

impl ShimArgs {
    /// Reads `--name N --run-dir D --log-dir L` (any order), the arguments the server passes.
    /// Hand-written so that the shim never builds the CLI's command tree (see `cmd/cloudlet`).
    pub fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<ShimArgs, String> {
        let (mut name, mut run_dir, mut log_dir) = (None, None, None);
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .ok_or_else(|| format!("shim: {flag:?} needs a value"))?;
            match flag.to_str() {
                Some("--name") => {
                    name = Some(
                        value
                            .into_string()
                            .map_err(|v| format!("shim: --name {v:?}: not UTF-8"))?,
                    );
                }
                Some("--run-dir") => run_dir = Some(PathBuf::from(value)),
                Some("--log-dir") => log_dir = Some(PathBuf::from(value)),
                _ => {
                    return Err(format!(
                        "shim: unknown argument {flag:?} (this command is started by `cloudlet server`)"
                    ));
                }
            }
        }
        match (name, run_dir, log_dir) {
            (Some(name), Some(run_dir), Some(log_dir)) => Ok(ShimArgs { name, run_dir, log_dir }),
            _ => Err("shim: --name, --run-dir and --log-dir are required (this command is started by `cloudlet server`)".into()),
        }
    }
}

/// The largest read from a pipe in one go: one log line (16 KiB) at most, so the shim's heap
/// stays small (one shim runs per service).
const READ_CHUNK: usize = 16 * 1024;

/// Runs the shim until it is told to exit. Called by `cloudlet shim`.
pub fn run(args: ShimArgs) -> Result<(), ShimError> {
    // Our own session: a Ctrl-C in the server's terminal or the server's death never reaches us.
    // Fails only when we already lead a process group, which is fine.
    let _ = setsid();
    set_child_subreaper()?;
    // Sockets, pid and log files of the shim are for root only; the service gets 022 back.
    umask(Mode::from_bits_truncate(0o077));
    // SAFETY: setting a signal to SIG_IGN installs no handler code; we are single-threaded here.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }.map_err(|e| ShimError::Os {
        what: "ignore SIGPIPE",
        source: e,
    })?;
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    mask.thread_block().map_err(|e| ShimError::Os {
        what: "block signals",
        source: e,
    })?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| ShimError::Os {
            what: "signalfd",
            source: e,
        })?;

    std::fs::create_dir_all(&args.run_dir)
        .map_err(|e| ShimError::io("create", &args.run_dir, e))?;
    let sock_path = args.run_dir.join(SOCKET_NAME);
    let listener = bind_socket(&sock_path)?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ShimError::io("set non-blocking", &sock_path, e))?;

    let mut shim = Shim::new(args, sigfd, listener);
    // Tell the server we are listening, then let go of its pipe.
    announce_ready();
    let outcome = shim.serve();
    let _ = std::fs::remove_file(&sock_path);
    outcome
}

fn set_child_subreaper() -> Result<(), ShimError> {
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| ShimError::Os {
        what: "PR_SET_CHILD_SUBREAPER",
        source: e,
    })
}

/// Binds the socket, replacing a stale file but refusing a live shim.
fn bind_socket(path: &Path) -> Result<UnixListener, ShimError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ShimError::ShimAlive {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(|e| ShimError::io("remove stale", path, e))?;
    }
    UnixListener::bind(path).map_err(|e| ShimError::io("bind", path, e))
}

fn announce_ready() {
    let mut out = std::io::stdout();
    // If the server is gone already there is no one to tell; carry on.
    let _ = writeln!(out, "{READY_LINE}");
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A connected server (or `ctl` debugging client).
#[derive(Debug)]
struct Client {
    stream: UnixStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    closed: bool,
}

/// One pipe of one run, read until EOF even after the run ended (a child may still hold it).
#[derive(Debug)]
struct Pipe {
    fd: OwnedFd,
    stream: Stream,
    run: u64,
    splitter: LineSplitter,
}

#[derive(Debug)]
struct Alive {
    info: RunInfo,
    kill_at: Option<Instant>,
    /// The run's cgroup and its `oom_kill` count when the run started.
    cgroup: Option<(ServiceCgroup, u64)>,
}

#[derive(Debug)]
struct Shim {
    args: ShimArgs,
    sigfd: SignalFd,
    listener: UnixListener,
    clients: Vec<Client>,
    pipes: Vec<Pipe>,
    alive: Option<Alive>,
    last_run: u64,
    /// The server's tag of the last run started.
    tag: String,
    last_exit: Option<(u64, ExitStatus)>,
    restarts: u64,
    log: Option<(LogLimits, LogWriter)>,
    exit_requested: bool,
    buf: Vec<u8>,
}

impl Shim {
    fn new(args: ShimArgs, sigfd: SignalFd, listener: UnixListener) -> Self {
        Shim {
            args,
            sigfd,
            listener,
            clients: Vec::new(),
            pipes: Vec::new(),
            alive: None,
            last_run: 0,
            tag: String::new(),
            last_exit: None,
            restarts: 0,
            log: None,
            exit_requested: false,
            buf: vec![0; READ_CHUNK],
        }
    }

    fn status(&self) -> ShimStatus {
        ShimStatus {
            name: self.args.name.clone(),
            shim_pid: std::process::id(),
            running: self.alive.as_ref().map(|a| a.info.clone()),
            last_run: self.last_run,
            tag: self.tag.clone(),
            last_exit: self.last_exit,
            restarts: self.restarts,
            dropped_log_lines: self.log.as_ref().map_or(0, |(_, w)| w.dropped_total()),
        }
    }

    fn serve(&mut self) -> Result<(), ShimError> {
        loop {
            if self.exit_requested && self.clients.iter().all(|c| c.wbuf.is_empty()) {
                return Ok(());
            }
            let timeout = self.poll_timeout();
            let (ready_listener, ready_sig, client_ready, pipe_ready) = {
                let mut fds = Vec::with_capacity(2 + self.clients.len() + self.pipes.len());
                fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
                fds.push(PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN));
                for c in &self.clients {
                    let mut flags = PollFlags::POLLIN;
                    if !c.wbuf.is_empty() {
                        flags |= PollFlags::POLLOUT;
                    }
                    fds.push(PollFd::new(c.stream.as_fd(), flags));
                }
                for p in &self.pipes {
                    fds.push(PollFd::new(p.fd.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        return Err(ShimError::Os {
                            what: "poll",
                            source: e,
                        });
                    }
                }
                let hit = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                let n_clients = self.clients.len();
                (
                    hit(&fds[0]),
                    hit(&fds[1]),
                    fds[2..2 + n_clients].iter().map(hit).collect::<Vec<_>>(),
                    fds[2 + n_clients..].iter().map(hit).collect::<Vec<_>>(),
                )
            };

            // Pipes first: lines a dying process wrote belong before its exit record.
            for (i, ready) in pipe_ready.iter().enumerate().rev() {
                if *ready {
                    self.read_pipe(i);
                }
            }
            if ready_sig {
                self.handle_signals();
            }
            self.check_kill_deadline();
            for (i, ready) in client_ready.iter().enumerate() {
                if *ready {
                    self.service_client(i);
                }
            }
            self.clients.retain(|c| !c.closed);
            if ready_listener {
                self.accept();
            }
        }
    }

    fn poll_timeout(&self) -> PollTimeout {
        match self.alive.as_ref().and_then(|a| a.kill_at) {
            None => PollTimeout::NONE,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                // Round up so we never wake a millisecond early and spin.
                let ms = u16::try_from(left.as_millis() + 1).unwrap_or(u16::MAX);
                PollTimeout::from(ms)
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.clients.push(Client {
                            stream,
                            rbuf: Vec::new(),
                            wbuf: Vec::new(),
                            closed: false,
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("shim {}: accept: {e}", self.args.name);
                    return;
                }
            }
        }
    }

    fn service_client(&mut self, i: usize) {
        // Flush what is pending.
        flush_client(&mut self.clients[i]);
        // Read what arrived.
        loop {
            match self.clients[i].stream.read(&mut self.buf) {
                Ok(0) => {
                    self.clients[i].closed = true;
                    break;
                }
                Ok(n) => {
                    let chunk = &self.buf[..n];
                    self.clients[i].rbuf.extend_from_slice(chunk);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.clients[i].closed = true;
                    break;
                }
            }
        }
        while let Some(pos) = self.clients[i].rbuf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.clients[i].rbuf.drain(..=pos).collect();
            let response = match serde_json::from_slice::<Request>(&line) {
                Ok(req) => Response {
                    id: req.id,
                    result: self.handle(req.op),
                },
                Err(e) => Response {
                    id: 0,
                    result: Reply::Err(format!("bad request: {e}")),
                },
            };
            send(&mut self.clients[i], &FromShim::Response(response));
        }
        if self.clients[i].rbuf.len() > 1 << 20 {
            // A client that never sends a newline is not a client.
            self.clients[i].closed = true;
        }
    }

    fn handle(&mut self, op: Op) -> Reply {
        match op {
            Op::Status => Reply::Ok(self.status()),
            Op::Start {
                spec,
                run,
                restarts,
                tag,
            } => {
                if let Some(a) = &self.alive {
                    return Reply::Err(format!(
                        "run {} is alive (pid {}): stop it first",
                        a.info.run, a.info.pid
                    ));
                }
                self.restarts = restarts;
                match self.start(&spec, run.max(self.last_run.saturating_add(1))) {
                    Ok(()) => {
                        self.tag = tag;
                        Reply::Ok(self.status())
                    }
                    Err(e) => {
                        let msg = format!("cannot start {:?}: {e}", spec.argv.first());
                        self.log_event(self.last_run, msg.as_bytes());
                        Reply::Err(msg)
                    }
                }
            }
            Op::Stop { signal, grace_ms } => {
                let Some(alive) = &mut self.alive else {
                    return Reply::Ok(self.status());
                };
                let pid = alive.info.pid;
                let sig = Signal::try_from(signal).unwrap_or(Signal::SIGTERM);
                alive.info.stopping = true;
                alive.kill_at = Some(Instant::now() + Duration::from_millis(grace_ms));
                signal_group(pid, sig);
                let run = alive.info.run;
                self.log_event(
                    run,
                    format!("stopping: sent {sig} to process group {pid}").as_bytes(),
                );
                Reply::Ok(self.status())
            }
            Op::Exit => {
                if let Some(a) = &self.alive {
                    return Reply::Err(format!(
                        "run {} is alive (pid {}): stop it first",
                        a.info.run, a.info.pid
                    ));
                }
                self.exit_requested = true;
                Reply::Ok(self.status())
            }
        }
    }

    fn log_writer(&mut self, limits: LogLimits) -> Option<&mut LogWriter> {
        let reopen = match &self.log {
            Some((have, _)) => *have != limits,
            None => true,
        };
        if reopen {
            match LogWriter::open(&self.args.log_dir, limits) {
                Ok(w) => self.log = Some((limits, w)),
                Err(e) => {
                    // Keep the old writer if there is one; say why on the shim's stderr.
                    eprintln!("shim {}: open logs: {e}", self.args.name);
                }
            }
        }
        self.log.as_mut().map(|(_, w)| w)
    }

    fn log_event(&mut self, run: u64, text: &[u8]) {
        if let Some((_, w)) = &mut self.log {
            w.write(Stream::Event, run, text, false);
        }
    }

    fn start(&mut self, spec: &ProcessSpec, run: u64) -> Result<(), ShimError> {
        let limits = LogLimits {
            max_size: spec.log_max_size,
            max_files: spec.log_max_files,
        };
        let _ = self.log_writer(limits);

        let user = match (&spec.user, &spec.identity) {
            (_, Some(id)) => Some(identity(id)),
            (Some(user), None) => {
                return Err(ShimError::Spawn(format!(
                    "user {user:?} came without its ids (the server looks users up): restart the \
                     cloudlet server so that it runs a shim of its own version"
                )));
            }
            (None, None) => None,
        };
        let cgroup = spec.cgroup.as_deref().map(ServiceCgroup::at);
        let oom_before = cgroup.as_ref().map_or(0, oom_kills);
        let child = spawn(&Launch {
            argv: &spec.argv,
            env: &spec.env,
            cwd: spec.cwd.as_deref().unwrap_or(Path::new("/")),
            user: user.as_ref(),
            cgroup: cgroup.as_ref(),
        })?;
        let pid = child.pid;
        self.last_run = run;
        let info = RunInfo {
            run,
            pid,
            started_ms: now_ms(),
            stopping: false,
        };
        self.alive = Some(Alive {
            info,
            kill_at: None,
            cgroup: cgroup.map(|cg| (cg, oom_before)),
        });
        for (fd, stream) in [
            (child.stdout, Stream::Stdout),
            (child.stderr, Stream::Stderr),
        ] {
            let _ = fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
            self.pipes.push(Pipe {
                fd,
                stream,
                run,
                splitter: LineSplitter::new(),
            });
        }
        let pid_file = self.args.run_dir.join(PID_FILE_NAME);
        // The pid with what proves it (boot, start time, cgroup); the pid alone if /proc cannot
        // say, which a server never signals on (`pidfile`).
        let record = i32::try_from(pid)
            .ok()
            .and_then(|p| crate::pidfile::PidRecord::of(p).ok())
            .map_or_else(|| format!("{pid}\n"), |r| r.render());
        if let Err(e) = std::fs::write(&pid_file, record) {
            eprintln!("shim {}: write {}: {e}", self.args.name, pid_file.display());
        }
        self.log_event(
            run,
            format!("started pid {pid}: {}", spec.argv.join(" ")).as_bytes(),
        );
        Ok(())
    }

    fn read_pipe(&mut self, i: usize) {
        let Shim {
            pipes, log, buf, ..
        } = self;
        let pipe = &mut pipes[i];
        let mut eof = false;
        loop {
            match nix::unistd::read(&pipe.fd, buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    let (stream, run) = (pipe.stream, pipe.run);
                    pipe.splitter.push(&buf[..n], |line, partial| {
                        if let Some((_, w)) = log {
                            w.write(stream, run, line, partial);
                        }
                    });
                    if n < buf.len() {
                        break;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if eof {
            let mut pipe = pipes.swap_remove(i);
            let (stream, run) = (pipe.stream, pipe.run);
            pipe.splitter.finish(|line, partial| {
                if let Some((_, w)) = log {
                    w.write(stream, run, line, partial);
                }
            });
        }
    }

    fn drain_pipes_of(&mut self, run: u64) {
        for i in (0..self.pipes.len()).rev() {
            if self.pipes[i].run == run {
                self.read_pipe(i);
            }
        }
    }

    fn handle_signals(&mut self) {
        loop {
            match self.sigfd.read_signal() {
                Ok(Some(info)) => {
                    let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
                    if signo != Signal::SIGCHLD as i32 {
                        let name = Signal::try_from(signo).map(|s| s.as_str()).unwrap_or("?");
                        eprintln!(
                            "shim {}: ignoring {name} (stop the service through cloudlet)",
                            self.args.name
                        );
                    }
                }
                Ok(None) | Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    eprintln!("shim {}: read signalfd: {e}", self.args.name);
                    break;
                }
            }
        }
        self.reap();
    }

    /// Reaps every child that has exited: the service's main process and any orphan.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    eprintln!("shim {}: waitpid: {e}", self.args.name);
                    return;
                }
                Ok(status) => {
                    let (pid, code, sig) = match status {
                        WaitStatus::Exited(pid, code) => (pid, Some(code), None),
                        WaitStatus::Signaled(pid, sig, _) => (pid, None, Some(sig as i32)),
                        _ => continue,
                    };
                    let is_main = self
                        .alive
                        .as_ref()
                        .is_some_and(|a| i64::from(a.info.pid) == i64::from(pid.as_raw()));
                    if is_main {
                        self.main_exited(ExitStatus {
                            code,
                            signal: sig,
                            at_ms: now_ms(),
                            oom_killed: false,
                            requested: false,
                        });
                    }
                }
            }
        }
    }

    fn main_exited(&mut self, mut status: ExitStatus) {
        let Some(alive) = self.alive.take() else {
            return;
        };
        let run = alive.info.run;
        status.requested = alive.info.stopping;
        // What it left behind dies with the run: its cgroup, and its process group. An empty
        // cgroup is not killed: after a `cgroup.kill`, kernels such as 6.18 kill every child
        // cloned into the cgroup at its birth, so the next run would be migrated in (see spawn).
        if let Some((cgroup, oom_before)) = &alive.cgroup {
            status.oom_killed = oom_kills(cgroup) > *oom_before;
            if cgroup.is_populated().unwrap_or(true)
                && let Err(e) = cgroup.kill()
            {
                eprintln!("shim {}: kill what run {run} left: {e}", self.args.name);
            }
        }
        signal_group(alive.info.pid, Signal::SIGKILL);
        self.drain_pipes_of(run);
        let _ = std::fs::remove_file(self.args.run_dir.join(PID_FILE_NAME));
        let how = match (status.code, status.signal) {
            _ if status.oom_killed => "killed by the kernel's OOM killer (memory.max)".to_owned(),
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(s)) => {
                let name = Signal::try_from(s).map(|s| s.as_str()).unwrap_or("?");
                format!("killed by signal {s} ({name})")
            }
            _ => "ended".to_string(),
        };
        self.log_event(run, how.as_bytes());
        self.last_exit = Some((run, status));
        let notice = FromShim::Notice(Notice::Exited { run, status });
        for c in &mut self.clients {
            send(c, &notice);
        }
    }

    fn check_kill_deadline(&mut self) {
        let Some(alive) = &mut self.alive else { return };
        let Some(at) = alive.kill_at else { return };
        if Instant::now() < at {
            return;
        }
        alive.kill_at = None;
        let (pid, run) = (alive.info.pid, alive.info.run);
        if let Some((cgroup, _)) = &alive.cgroup {
            let _ = cgroup.kill();
        }
        signal_group(pid, Signal::SIGKILL);
        // The main process may have left its group; it dies too.
        let _ = kill(
            Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
            Signal::SIGKILL,
        );
        self.log_event(run, b"grace period over: sent SIGKILL to the process group");
    }
}

/// How many times the OOM killer has killed in `cgroup` (0 without the memory controller).
fn oom_kills(cgroup: &ServiceCgroup) -> u64 {
    cgroup
        .stats()
        .ok()
        .and_then(|s| s.memory_events)
        .map_or(0, |e| e.oom_kill)
}

/// Sends `sig` to the process group led by `pid`; a group that is gone already is fine.
fn signal_group(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid)
        && raw > 1
    {
        let _ = killpg(Pid::from_raw(raw), sig);
    }
}

fn send(client: &mut Client, msg: &FromShim) {
    if client.closed {
        return;
    }
    if serde_json::to_writer(&mut client.wbuf, msg).is_ok() {
        client.wbuf.push(b'\n');
    }
    flush_client(client);
}

fn flush_client(client: &mut Client) {
    while !client.wbuf.is_empty() {
        match client.stream.write(&client.wbuf) {
            Ok(0) => {
                client.closed = true;
                return;
            }
            Ok(n) => {
                client.wbuf.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                client.closed = true;
                return;
            }
        }
    }
}

/// The ids the server looked up, as `spawn` takes them.
fn identity(id: &Identity) -> spawn::User {
    (
        Uid::from_raw(id.uid),
        Gid::from_raw(id.gid),
        id.groups.iter().copied().map(Gid::from_raw).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_args_are_read_in_any_order_and_incomplete_ones_refused() {
        let os = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let a =
            ShimArgs::parse(os(&["--run-dir", "/r", "--name", "web", "--log-dir", "/l"])).unwrap();
        assert_eq!(
            (a.name.as_str(), a.run_dir.as_path(), a.log_dir.as_path()),
            ("web", Path::new("/r"), Path::new("/l"))
        );
        assert!(
            ShimArgs::parse(os(&["--name", "web"]))
                .unwrap_err()
                .contains("required")
        );
        assert!(
            ShimArgs::parse(os(&["--bogus", "x"]))
                .unwrap_err()
                .contains("unknown argument")
        );
        assert!(
            ShimArgs::parse(os(&["--name"]))
                .unwrap_err()
                .contains("needs a value")
        );
    }

    #[test]
    fn stale_socket_is_replaced_and_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let first = bind_socket(&path).unwrap();
        let err = bind_socket(&path).unwrap_err();
        assert!(matches!(err, ShimError::ShimAlive { .. }), "{err}");
        drop(first);
        // The file is still there but nobody listens: a stale socket.
        assert!(path.exists());
        bind_socket(&path).unwrap();
    }
}
