//! The supervisor: one task that owns every service's state on this node and decides what to do.
//!
//! It is driven by a closed set of inputs ([`Input`]): the desired set of services (from the store),
//! operator actions, shim events (a run exited, a shim was lost), results of the operations it
//! started, probe results and timers. After each input it *reconciles* the service concerned: from
//! the facts (desired state, config, is a run alive, backoff deadline, are the dependencies ready)
//! it picks the one next step. Steps that talk to a shim run as separate tasks and report back as
//! [`Input::OpDone`], so the loop never blocks and independent services start in parallel.
//!
//! It must never stop a service on its own initiative (no eviction, no cascade when a dependency
//! becomes unready); it stops a run only when an operator asked for it (stop, restart, delete, a
//! changed command). It never talks to the network beyond the probes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use cloudlet_cgroups::{Hierarchy, ServiceCgroup};

use crate::SupervisorError;
use crate::backoff;
use crate::config::{RestartPolicy, ServiceConfig, Unusable};
use crate::probe::{self, ProbeSpec};
use crate::reaper::Reaper;
use crate::shim::client::{ShimClient, ShimEvent, ShimPaths, spawn_shim};
use crate::shim::identity;
use crate::shim::pidfile::PidRecord;
use crate::shim::process::PID_FILE_NAME;
use crate::shim::proto::{ExitStatus, Op, ShimStatus};

/// Whether the operator wants a service to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    /// Keep it running (per its restart policy).
    Running,
    /// Keep it stopped.
    Stopped,
}

/// One entry of the desired set.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredService {
    /// What to run.
    pub config: ServiceConfig,
    /// Whether to run it.
    pub desired: Desired,
}

/// What an operator can ask of one service directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start now: clears a final failure and any backoff wait.
    Start,
    /// Stop the alive run, then start a new one (not counted as a restart).
    Restart,
}

/// The state shown for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started: a dependency is not ready.
    Waiting,
    /// Running, its readiness not yet passed in this run.
    Starting,
    /// Running and passed readiness in this run (see `ready` for now).
    Running,
    /// Exited; will be restarted at `next_restart_at`.
    Backoff,
    /// A stop was sent; waiting for the exit.
    Stopping,
    /// Not running, as wanted (stopped by an operator, or exited 0 with no restart due).
    Stopped,
    /// Exited with an error and the policy does not restart it.
    Failed,
    /// A oneshot step whose run exited 0: done, and ready for its dependants.
    Completed,
    /// Quarantined: the supervisor cannot act on its configuration (the message and the
    /// `Quarantined` event name the field and why). It is not started; a run it had goes on
    /// until the operator stops or deletes it, which always works.
    Invalid,
}

/// How a run ended, for status and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitView {
    /// Run number that ended.
    pub run: u64,
    /// Exit code.
    pub code: Option<i32>,
    /// Signal name, e.g. `SIGKILL`.
    pub signal: Option<String>,
    /// `Completed`, `Error`, `Signaled`, `StartError`, `ShimLost`.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// A service's status.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Desired state.
    pub desired: Desired,
    /// Shown state.
    pub state: State,
    /// Ready now.
    pub ready: bool,
    /// PID of the alive run's main process.
    pub pid: Option<u32>,
    /// Automatic restarts.
    pub restarts: u64,
    /// Current or last run number.
    pub run: u64,
    /// How the last run ended.
    pub last_exit: Option<ExitView>,
    /// When the state last changed.
    pub since: Timestamp,
    /// Dependencies not ready yet, with why (`db (not ready)`).
    pub waiting_for: Vec<String>,
    /// Last probe failure or start error.
    pub message: Option<String>,
    /// When a backoff ends.
    pub next_restart_at: Option<Timestamp>,
    /// Log lines the shim could not write.
    pub dropped_log_lines: u64,
    /// `enforced`, or `not enforced (<why>)`; None before the first start.
    pub limits: Option<String>,
    /// Its cgroup, relative to cloudlet's base.
    pub cgroup: String,
    /// The tag of the configuration its current (or last) run conforms to
    /// ([`ServiceConfig::tag`]): a run started before a process change keeps the old tag until
    /// it is replaced. `None` before the first run.
    pub run_tag: Option<String>,
}

/// Something that happened to a service; the server stores these as events.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorEvent {
    /// When.
    pub time: Timestamp,
    /// Which service.
    pub service: String,
    /// Short CamelCase reason: Started, Ready, Unready, Exited, BackOff, Stopping, Stopped,
    /// Failed, StartFailed, Adopted, ShimLost, Waiting, Deleted, Quarantined.
    pub reason: &'static str,
    /// Human text.
    pub message: String,
    /// The exit, for Exited.
    pub exit: Option<ExitView>,
}

/// Where the supervisor keeps shims and logs.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// The `cloudlet` executable, run as `cloudlet shim`.
    pub exe: PathBuf,
    /// Parent of every shim's run directory (`DIR/run`).
    pub run_root: PathBuf,
    /// Parent of every service's log directory (`DIR/logs`).
    pub log_root: PathBuf,
    /// cloudlet's cgroup subtree; None on hosts without a usable cgroup v2 hierarchy (services
    /// then run in process groups, without limits).
    pub cgroups: Option<Arc<Hierarchy>>,
    /// Why limits cannot be enforced on this host (no cgroup v2, or controllers missing), shown
    /// as `limits: not enforced (<reason>)` on every service. None when they are.
    pub limits_unenforced: Option<String>,
}

#[derive(Debug)]
enum OpResult {
    Started(Arc<ShimClient>, ShimStatus),
    StartFailed(Option<Arc<ShimClient>>, String),
    StopSent(ShimStatus),
    StopFailed(String),
    ShimExited,
    /// A cgroup teardown run off the loop is done.
    TornDown(AfterTeardown),
}

/// What follows a cgroup teardown (which may wait seconds for a cgroup to empty, so it runs on
/// a blocking thread, never on the supervisor's task).
#[derive(Debug)]
enum AfterTeardown {
    /// The shim died with a run: apply the restart policy to that run's end.
    ShimLost(ExitView),
    /// The service was removed: forget it.
    Forget,
    /// A dead shim found at adoption is cleaned up: its service may start now.
    Adopted,
}

#[derive(Debug)]
enum Input {
    Desired(Vec<DesiredService>),
    Action(String, Action, oneshot::Sender<Result<(), SupervisorError>>),
    Shim(ShimEvent),
    OpDone(String, OpResult),
    Probe {
        name: String,
        run: u64,
        result: Result<(), String>,
    },
    /// The last lines a failed oneshot run wrote, read from its log after the exit.
    FailureOutput {
        name: String,
        run: u64,
        output: String,
    },
    Timer {
        name: String,
        token: u64,
    },
    Snapshot(oneshot::Sender<Vec<ServiceView>>),
    ShimOf(String, oneshot::Sender<Option<Arc<ShimClient>>>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle to the supervisor task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Supervisor {
    tx: mpsc::UnboundedSender<Input>,
}

impl Supervisor {
    /// Starts the supervisor task, which adopts the shims found under `run_root` and then
    /// supervises `initial`. Returns at once (adoption goes on in the task) with the handle and
    /// the stream of events.
    pub async fn start(
        options: SupervisorOptions,
        reaper: Reaper,
        initial: Vec<DesiredService>,
    ) -> Result<(Supervisor, mpsc::UnboundedReceiver<SupervisorEvent>), SupervisorError> {
        std::fs::create_dir_all(&options.run_root)
            .map_err(|e| SupervisorError::io("create", &options.run_root, e))?;
        std::fs::create_dir_all(&options.log_root)
            .map_err(|e| SupervisorError::io("create", &options.log_root, e))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (shim_tx, mut shim_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let mut core = Core {
            options,
            reaper,
            services: HashMap::new(),
            tx: tx.clone(),
            shim_tx,
            events: event_tx,
            rng: rand::SeedableRng::from_os_rng(),
            next_token: 1,
        };
        // Shim events enter the same inbox as everything else.
        let forward = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = shim_rx.recv().await {
                if forward.send(Input::Shim(ev)).is_err() {
                    break;
                }
            }
        });
        // Adoption runs in the supervisor's own task, not before this returns: a slow or stuck
        // shim (each may take up to its call timeout to answer) never delays the caller, which
        // starts the API meanwhile; requests that need the supervisor wait in its inbox.
        tokio::spawn(async move {
            core.adopt().await;
            core.set_desired(initial);
            core.run(rx).await;
        });
        Ok((Supervisor { tx }, event_rx))
    }

    /// Replaces the desired set (a service missing from it is stopped and removed).
    pub fn set_desired(&self, services: Vec<DesiredService>) {
        let _ = self.tx.send(Input::Desired(services));
    }

    /// Asks for `action` on `name`.
    pub async fn action(&self, name: &str, action: Action) -> Result<(), SupervisorError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Input::Action(name.to_owned(), action, tx))
            .map_err(|_| SupervisorError::Gone)?;
        rx.await.map_err(|_| SupervisorError::Gone)?
    }

    /// The status of every service, sorted by name.
    pub async fn snapshot(&self) -> Result<Vec<ServiceView>, SupervisorError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Input::Snapshot(tx))
            .map_err(|_| SupervisorError::Gone)?;
        rx.await.map_err(|_| SupervisorError::Gone)
    }

    /// Asks the service's shim for its current status (log drop counts change between runs,
    /// which the supervisor's own view only learns at the next start or stop). `None` when the
    /// service has no shim.
    pub async fn live_status(&self, name: &str) -> Result<Option<ShimStatus>, SupervisorError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Input::ShimOf(name.to_owned(), tx))
            .map_err(|_| SupervisorError::Gone)?;
        match rx.await.map_err(|_| SupervisorError::Gone)? {
            Some(shim) => shim.call(Op::Status).await.map(Some),
            None => Ok(None),
        }
    }

    /// Lets go of every shim without stopping anything: services keep running.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Input::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// What to do once the alive run has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    Nothing,
    Start,
}

#[derive(Debug)]
struct Svc {
    config: Arc<ServiceConfig>,
    /// `None`: deleted from the desired set; remove once stopped.
    desired: Option<Desired>,
    state: State,
    since: Timestamp,
    ready: bool,
    shim: Option<Arc<ShimClient>>,
    /// An operation for this service is in flight; reconcile waits for its result.
    busy: bool,
    /// Its cgroup is being torn down off the loop; nothing starts in it until that is done.
    teardown: bool,
    pid: Option<u32>,
    run: u64,
    run_started: Option<Instant>,
    stopping: bool,
    after_stop: AfterStop,
    restarts: u64,
    attempt: u32,
    /// The policy said no more restarts; only an operator action starts it again.
    done: bool,
    backoff_until: Option<(Instant, Timestamp)>,
    /// The next start counts as an automatic restart.
    count_restart: bool,
    timer_token: u64,
    last_exit: Option<ExitView>,
    waiting_for: Vec<String>,
    message: Option<String>,
    probe: Option<JoinHandle<()>>,
    probe_ok: u32,
    probe_fail: u32,
    dropped: u64,
    /// An exit notice of a run whose start answer has not arrived yet.
    early_exit: Option<(u64, ExitStatus)>,
    /// `enforced`, or `not enforced (<why>)`, from the last start.
    limits_note: Option<String>,
    /// The tag of the configuration the current (or last) run conforms to: set when a run
    /// starts, and moved to a new configuration that does not change the process.
    run_tag: Option<String>,
    /// The tag an adopted shim's last run was started with (empty: the shim did not say).
    adopted_tag: Option<String>,
    /// Why the supervisor cannot act on the desired configuration; `config` is then the last
    /// one it could act on (or a placeholder), used only to stop and tear down.
    quarantine: Option<Unusable>,
}

impl Svc {
    fn new(config: Arc<ServiceConfig>, desired: Option<Desired>) -> Svc {
        Svc {
            config,
            desired,
            state: State::Waiting,
            since: Timestamp::now(),
            ready: false,
            shim: None,
            busy: false,
            teardown: false,
            pid: None,
            run: 0,
            run_started: None,
            stopping: false,
            after_stop: AfterStop::Nothing,
            restarts: 0,
            attempt: 0,
            done: false,
            backoff_until: None,
            count_restart: false,
            timer_token: 0,
            last_exit: None,
            waiting_for: Vec::new(),
            message: None,
            probe: None,
            probe_ok: 0,
            probe_fail: 0,
            dropped: 0,
            early_exit: None,
            limits_note: None,
            run_tag: None,
            adopted_tag: None,
            quarantine: None,
        }
    }

    fn set_state(&mut self, state: State) {
        if self.state != state {
            self.state = state;
            self.since = Timestamp::now();
        }
    }

    fn view(&self) -> ServiceView {
        ServiceView {
            name: self.config.name.clone(),
            labels: self.config.labels.clone(),
            desired: self.desired.unwrap_or(Desired::Stopped),
            state: if self.quarantine.is_some() {
                State::Invalid
            } else {
                self.state
            },
            ready: self.ready,
            pid: self.pid,
            restarts: self.restarts,
            run: self.run,
            last_exit: self.last_exit.clone(),
            since: self.since,
            waiting_for: self.waiting_for.clone(),
            message: match &self.quarantine {
                Some(q) => Some(format!("quarantined: {q}")),
                None => self.message.clone(),
            },
            next_restart_at: self.backoff_until.map(|(_, t)| t),
            dropped_log_lines: self.dropped,
            limits: self.limits_note.clone(),
            cgroup: self.config.cgroup.clone(),
            run_tag: self.run_tag.clone(),
        }
    }

    fn stop_probe(&mut self) {
        if let Some(p) = self.probe.take() {
            p.abort();
        }
        self.probe_ok = 0;
        self.probe_fail = 0;
    }

    /// Takes the facts of a shim's status (adoption, or the answer to a start).
    fn absorb(&mut self, status: &ShimStatus) {
        self.restarts = status.restarts;
        self.dropped = status.dropped_log_lines;
        self.run = status.last_run;
        match &status.running {
            Some(r) => {
                self.pid = Some(r.pid);
                self.stopping = r.stopping;
            }
            None => self.pid = None,
        }
    }
}

struct Core {
    options: SupervisorOptions,
    reaper: Reaper,
    services: HashMap<String, Svc>,
    tx: mpsc::UnboundedSender<Input>,
    shim_tx: mpsc::UnboundedSender<ShimEvent>,
    events: mpsc::UnboundedSender<SupervisorEvent>,
    rng: rand::rngs::StdRng,
    next_token: u64,
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

fn exit_view(run: u64, status: &ExitStatus) -> ExitView {
    let (reason, signal) = match (status.code, status.signal) {
        (None, Some(s)) if status.oom_killed => ("OOMKilled", Some(signal_name(s))),
        _ if status.oom_killed => ("OOMKilled", None),
        (Some(0), _) => ("Completed", None),
        (Some(_), _) => ("Error", None),
        (None, Some(s)) => ("Signaled", Some(signal_name(s))),
        (None, None) => ("Error", None),
    };
    ExitView {
        run,
        code: status.code,
        signal,
        reason: reason.into(),
        at: Timestamp::from_millisecond(status.at_ms).unwrap_or_else(|_| Timestamp::now()),
    }
}

fn describe_exit(e: &ExitView) -> String {
    if e.reason == "OOMKilled" {
        return format!(
            "run {} was killed by the kernel's OOM killer (memory.max)",
            e.run
        );
    }
    match (&e.code, &e.signal) {
        (Some(c), _) => format!("run {} exited with code {c}", e.run),
        (None, Some(s)) => format!("run {} was killed by {s}", e.run),
        _ => format!("run {} ended: {}", e.run, e.reason),
    }
}

impl Core {
    fn paths(&self, name: &str) -> ShimPaths {
        ShimPaths {
            exe: self.options.exe.clone(),
            run_dir: self.options.run_root.join(name),
            log_dir: self.options.log_root.join(name),
        }
    }

    fn emit(&self, service: &str, reason: &'static str, message: String, exit: Option<ExitView>) {
        tracing::info!(service, reason, "{message}");
        let _ = self.events.send(SupervisorEvent {
            time: Timestamp::now(),
            service: service.to_owned(),
            reason,
            message,
            exit,
        });
    }

    /// Connects to every shim left by an earlier server; kills what a dead shim left behind.
    async fn adopt(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.options.run_root) else {
            return;
        };
        // Every shim is reached at once: a stuck one costs adoption one call timeout, not one
        // per shim.
        let mut reaching = tokio::task::JoinSet::new();
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let run_dir = entry.path();
            let shim_tx = self.shim_tx.clone();
            reaching.spawn(async move {
                let reached = match connect_patiently(&name, &run_dir, shim_tx).await {
                    Ok(c) => {
                        let client = Arc::new(c);
                        Ok(client.call(Op::Status).await.map(|s| (client, s)))
                    }
                    Err(e) => Err(e),
                };
                (name, run_dir, reached)
            });
        }
        let mut found = Vec::new();
        while let Some(joined) = reaching.join_next().await {
            match joined {
                Ok(one) => found.push(one),
                Err(e) => tracing::warn!("adoption task: {e}"),
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, run_dir, reached) in found {
            let (client, status) = match reached {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => {
                    tracing::warn!(service = %name, "shim did not answer: {e}");
                    continue;
                }
                Err(e) => {
                    self.clean_dead_shim(&name, &run_dir, &e);
                    continue;
                }
            };
            // A placeholder config until the desired set arrives; an adopted service that is no
            // longer desired is stopped and removed by reconcile.
            let config = Arc::new(placeholder_config(&name));
            let mut svc = Svc::new(config, None);
            svc.absorb(&status);
            svc.adopted_tag = Some(status.tag.clone()).filter(|t| !t.is_empty());
            svc.shim = Some(client);
            let mut message = format!("adopted shim pid {}", status.shim_pid);
            if let Some(r) = &status.running {
                // The run has been going since it started, not since we came back: that counts
                // for resetAfter and for `since`. Readiness is probed again from scratch.
                let age_ms = Timestamp::now()
                    .as_millisecond()
                    .saturating_sub(r.started_ms)
                    .max(0);
                let age = Duration::from_millis(u64::try_from(age_ms).unwrap_or(0));
                svc.run_started =
                    Some(Instant::now().checked_sub(age).unwrap_or_else(Instant::now));
                svc.set_state(State::Running);
                if let Ok(t) = Timestamp::from_millisecond(r.started_ms) {
                    svc.since = t;
                }
                message.push_str(&format!(", run {} pid {} still running", r.run, r.pid));
            } else if let Some((run, exit)) = &status.last_exit {
                let view = exit_view(*run, exit);
                message.push_str(&format!(
                    ", {} while cloudlet was away",
                    describe_exit(&view)
                ));
                svc.last_exit = Some(view);
                svc.set_state(State::Stopped);
                // Decide by policy once the config is known (see set_desired).
                svc.count_restart = true;
            }
            self.emit(&name, "Adopted", message, None);
            self.services.insert(name, svc);
        }
    }

    fn clean_dead_shim(&mut self, name: &str, run_dir: &std::path::Path, why: &str) {
        // A shim that died left its run's process group without a keeper: end it rather than
        // run a second copy next to it — but only if the pid file proves that the group is
        // still the run's (same boot, start time and cgroup): the run dir outlives reboots and
        // pids are reused.
        if let Ok(text) = std::fs::read_to_string(run_dir.join(PID_FILE_NAME)) {
            let message = match PidRecord::parse(&text) {
                Some(r) if r.still_running() => {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(r.pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    format!(
                        "shim was gone ({why}); killed its orphaned process group {}",
                        r.pid
                    )
                }
                Some(r) => format!(
                    "shim was gone ({why}); its run's process {} is no longer running \
                     (another boot, start time or cgroup): nothing signalled",
                    r.pid
                ),
                None => format!(
                    "shim was gone ({why}); its pid file does not prove which process it \
                     started ({:?}): nothing signalled",
                    text.trim()
                ),
            };
            self.emit(name, "ShimLost", message, None);
        }
        // And whatever still runs in its cgroup (the service's, or a transient one's), off the
        // loop; the service is known (not desired, not shown) until then, so that a start of it
        // waits for its old cgroup to be empty.
        let cgroups = self.options.cgroups.clone();
        let rel = format!("{}/{name}", cloudlet_cgroups::SERVICES);
        let (name_owned, run_dir) = (name.to_owned(), run_dir.to_owned());
        self.services.insert(
            name.to_owned(),
            Svc::new(Arc::new(placeholder_config(name)), None),
        );
        self.teardown(name, AfterTeardown::Adopted, move || {
            let h = cgroups.as_deref();
            let mut rels = vec![rel];
            if let Some(h) = h
                && let Ok(groups) = h.list(cloudlet_cgroups::GROUPS)
            {
                rels.extend(groups.into_iter().map(|g| format!("{g}/{name_owned}")));
            }
            for rel in rels {
                end_cgroup(h, &rel, false);
            }
            let _ = std::fs::remove_dir_all(run_dir);
        });
    }

    /// Runs `job` (a cgroup teardown: it may wait seconds) on a blocking thread; the service
    /// starts nothing until it is done, then `then` follows on the loop.
    fn teardown(&mut self, name: &str, then: AfterTeardown, job: impl FnOnce() + Send + 'static) {
        if let Some(svc) = self.services.get_mut(name) {
            svc.teardown = true;
        }
        let tx = self.tx.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            if let Err(e) = tokio::task::spawn_blocking(job).await {
                tracing::warn!(service = %name, "cgroup teardown: {e}");
            }
            let _ = tx.send(Input::OpDone(name, OpResult::TornDown(then)));
        });
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        while let Some(input) = rx.recv().await {
            match input {
                Input::Desired(set) => self.set_desired(set),
                Input::Action(name, action, reply) => {
                    let _ = reply.send(self.action(&name, action));
                }
                Input::Shim(ev) => self.shim_event(ev),
                Input::OpDone(name, result) => self.op_done(&name, result),
                Input::Probe { name, run, result } => self.probe_result(&name, run, result),
                Input::FailureOutput { name, run, output } => {
                    if let Some(svc) = self.services.get_mut(&name)
                        && svc.run == run
                        && svc.pid.is_none()
                    {
                        svc.message = Some(format!("run {run} failed; its last output: {output}"));
                        self.emit(
                            &name,
                            "StepFailed",
                            format!(
                                "run {run} of the oneshot step failed; its last output: {output}"
                            ),
                            None,
                        );
                    }
                }
                Input::Timer { name, token } => {
                    if let Some(svc) = self.services.get_mut(&name)
                        && svc.timer_token == token
                    {
                        svc.backoff_until = None;
                        self.reconcile(&name);
                    }
                }
                Input::Snapshot(reply) => {
                    let mut views: Vec<_> = self
                        .services
                        .values()
                        .filter(|s| s.desired.is_some() || s.pid.is_some())
                        .map(Svc::view)
                        .collect();
                    views.sort_by(|a, b| a.name.cmp(&b.name));
                    let _ = reply.send(views);
                }
                Input::ShimOf(name, reply) => {
                    let _ = reply.send(self.services.get(&name).and_then(|s| s.shim.clone()));
                }
                Input::Shutdown(reply) => {
                    for svc in self.services.values_mut() {
                        svc.stop_probe();
                        svc.shim = None;
                    }
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }

    fn set_desired(&mut self, set: Vec<DesiredService>) {
        let mut seen = Vec::with_capacity(set.len());
        for d in set {
            let name = d.config.name.clone();
            seen.push(name.clone());
            if let Err(why) = d.config.check() {
                self.quarantine(d, why);
                continue;
            }
            if let Some(svc) = self.services.get_mut(&name)
                && svc.quarantine.take().is_some()
            {
                // Out of quarantine: the valid config is a change like any other, or, for a
                // service that never had one (a placeholder: the only config with no command),
                // its first config.
                svc.done = false;
                if svc.config.process.argv.is_empty() {
                    svc.desired = None;
                }
                if svc.pid.is_some() {
                    svc.set_state(if svc.ready {
                        State::Running
                    } else {
                        State::Starting
                    });
                }
            }
            let config = Arc::new(d.config);
            match self.services.get_mut(&name) {
                None => {
                    self.services
                        .insert(name.clone(), Svc::new(config, Some(d.desired)));
                }
                Some(svc) => {
                    let first_config = svc.desired.is_none();
                    let process_changed = svc.config.process != config.process;
                    let probe_changed = svc.config.readiness != config.readiness;
                    svc.desired = Some(d.desired);
                    if first_config || (!process_changed && svc.run_tag.is_some()) {
                        // An adopted run was started from this configuration as stored; a
                        // change that keeps the process keeps the run, now conforming.
                        svc.run_tag = Some(config.tag.clone());
                    }
                    svc.config = config;
                    if first_config {
                        // An adopted service meets its config: a run that exited while we
                        // were away is handled by its policy now. A oneshot step's finished
                        // run counts only if it ran this manifest; otherwise it runs again.
                        let other_step = svc.config.oneshot
                            && svc
                                .adopted_tag
                                .as_ref()
                                .is_some_and(|t| *t != svc.config.tag);
                        if svc.pid.is_none() && other_step {
                            svc.count_restart = false;
                        } else if svc.pid.is_none()
                            && let Some(exit) = svc.last_exit.clone()
                        {
                            self.decide_after_exit(&name, &exit, false);
                        } else if svc.pid.is_some() {
                            self.arm_probe(&name);
                        }
                    } else if process_changed && svc.pid.is_some() {
                        svc.after_stop = AfterStop::Start;
                        svc.done = false;
                    } else if process_changed {
                        svc.done = false;
                        if svc.config.oneshot {
                            // A completed step of another configuration is not done for this
                            // one: dependants yet to start wait for the new run.
                            svc.ready = false;
                            svc.attempt = 0;
                        }
                    } else if probe_changed && svc.pid.is_some() {
                        self.arm_probe(&name);
                    }
                }
            }
        }
        // Services no longer desired: stop and remove.
        let gone: Vec<String> = self
            .services
            .keys()
            .filter(|n| !seen.contains(n))
            .cloned()
            .collect();
        for name in &gone {
            if let Some(svc) = self.services.get_mut(name) {
                svc.desired = None;
            }
        }
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            self.reconcile(&name);
        }
    }

    /// Puts a service whose config fails [`ServiceConfig::check`] in quarantine: it keeps the
    /// last config it could act on (for stopping a run and tearing down), is never started, and
    /// says why once per distinct reason.
    fn quarantine(&mut self, d: DesiredService, why: Unusable) {
        let name = d.config.name.clone();
        let svc = self.services.entry(name.clone()).or_insert_with(|| {
            let mut config = placeholder_config(&name);
            config.labels = d.config.labels.clone();
            Svc::new(Arc::new(config), None)
        });
        svc.desired = Some(d.desired);
        svc.backoff_until = None;
        svc.timer_token = 0;
        svc.waiting_for.clear();
        if svc.quarantine.as_ref() == Some(&why) {
            return;
        }
        svc.set_state(State::Invalid);
        let message = format!(
            "the supervisor cannot act on this configuration: {why}; it is not started (fix \
             the manifest or delete the service)"
        );
        svc.quarantine = Some(why);
        self.emit(&name, "Quarantined", message, None);
    }

    fn action(&mut self, name: &str, action: Action) -> Result<(), SupervisorError> {
        let svc = match self.services.get_mut(name) {
            Some(s) if s.desired.is_some() => s,
            _ => return Err(SupervisorError::NotFound(name.to_owned())),
        };
        if let Some(q) = &svc.quarantine {
            return Err(SupervisorError::Quarantined {
                name: name.to_owned(),
                why: q.to_string(),
            });
        }
        svc.done = false;
        svc.backoff_until = None;
        svc.timer_token = 0;
        svc.attempt = 0;
        svc.count_restart = false;
        if action == Action::Restart && svc.pid.is_some() {
            svc.after_stop = AfterStop::Start;
        }
        self.reconcile(name);
        Ok(())
    }

    /// Picks the next step for `name` from its facts. Does nothing while an operation is in flight.
    fn reconcile(&mut self, name: &str) {
        let Some(svc) = self.services.get(name) else {
            return;
        };
        if svc.busy || svc.teardown {
            return;
        }
        let wants_run = svc.desired == Some(Desired::Running);
        if svc.pid.is_some() {
            let must_stop = !wants_run || svc.after_stop == AfterStop::Start;
            if must_stop && !svc.stopping {
                self.stop(name);
            }
            return;
        }
        // Not running.
        if svc.desired.is_none() {
            self.remove(name);
            return;
        }
        if svc.quarantine.is_some() {
            let Some(s) = self.services.get_mut(name) else {
                return;
            };
            s.set_state(State::Invalid);
            return;
        }
        if !wants_run {
            let Some(s) = self.services.get_mut(name) else {
                return;
            };
            s.backoff_until = None;
            s.waiting_for.clear();
            if s.state != State::Stopped {
                s.set_state(State::Stopped);
                self.emit(name, "Stopped", "stopped as desired".into(), None);
            }
            return;
        }
        if svc.done && svc.after_stop == AfterStop::Nothing {
            return;
        }
        if let Some((until, _)) = svc.backoff_until
            && until > Instant::now()
        {
            return;
        }
        let waiting: Vec<String> = svc
            .config
            .depends_on
            .iter()
            .filter_map(|dep| match self.services.get(dep) {
                Some(d) if d.desired.is_some() && d.ready => None,
                Some(d) if d.desired == Some(Desired::Stopped) => Some(format!("{dep} (stopped)")),
                Some(d) if d.desired.is_some() => Some(format!("{dep} (not ready)")),
                _ => Some(format!("{dep} (not found)")),
            })
            .collect();
        if !waiting.is_empty() {
            let svc = self.services.get_mut(name).map(|s| {
                let changed = s.waiting_for != waiting || s.state != State::Waiting;
                s.set_state(State::Waiting);
                s.waiting_for = waiting.clone();
                changed
            });
            if svc == Some(true) {
                self.emit(
                    name,
                    "Waiting",
                    format!("waiting for {}", waiting.join(", ")),
                    None,
                );
            }
            return;
        }
        self.start(name);
    }

    fn start(&mut self, name: &str) {
        let paths = self.paths(name);
        let reaper = self.reaper.clone();
        let shim_tx = self.shim_tx.clone();
        let tx = self.tx.clone();
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.busy = true;
        svc.waiting_for.clear();
        svc.after_stop = AfterStop::Nothing;
        svc.set_state(State::Starting);
        svc.run_tag = Some(svc.config.tag.clone());
        let shim = svc.shim.clone();
        let mut spec = svc.config.process.clone();
        match prepare_cgroup(self.options.cgroups.as_deref(), &svc.config) {
            Ok((path, note)) => {
                spec.cgroup = path;
                svc.limits_note = note.or_else(|| self.options.limits_unenforced.clone());
            }
            Err(e) => {
                let error = format!("cgroup {}: {e}", svc.config.cgroup);
                let _ = self.tx.send(Input::OpDone(
                    name.to_owned(),
                    OpResult::StartFailed(None, error),
                ));
                return;
            }
        }
        let cgroups = self.options.cgroups.clone();
        let mut run = svc.run.saturating_add(1);
        let restarts = svc.restarts.saturating_add(u64::from(svc.count_restart));
        let tag = svc.config.tag.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            let result = async {
                let client = match shim {
                    Some(c) => c,
                    None => {
                        // A new shim continues the run numbers found in the service's logs, so
                        // that `logs --previous` never mixes two histories.
                        run = run.max(last_logged_run(&paths.log_dir).await.saturating_add(1));
                        let shim_pid = spawn_shim(&reaper, &name, &paths)
                            .await
                            .map_err(|e| (None, e.to_string()))?;
                        // Shims live in a cgroup of their own, outside any service's limits.
                        if let Some(h) = &cgroups
                            && let Err(e) = place_shim(h, shim_pid)
                        {
                            tracing::warn!(service = %name, "shim {shim_pid}: {e}");
                        }
                        let c = ShimClient::connect(&name, &paths.run_dir, shim_tx)
                            .await
                            .map_err(|e| (None, e.to_string()))?;
                        Arc::new(c)
                    }
                };
                if let Some(user) = spec.user.clone() {
                    let mut env = std::mem::take(&mut spec.env);
                    let (identity, env) = tokio::task::spawn_blocking(move || {
                        let identity = identity::resolve(&user, &mut env);
                        (identity, env)
                    })
                    .await
                    .map_err(|e| (Some(Arc::clone(&client)), e.to_string()))?;
                    spec.env = env;
                    spec.identity =
                        Some(identity.map_err(|e| (Some(Arc::clone(&client)), e.to_string()))?);
                }
                match client
                    .call(Op::Start {
                        spec,
                        run,
                        restarts,
                        tag,
                    })
                    .await
                {
                    Ok(status) => Ok(OpResult::Started(client, status)),
                    Err(e) => Err((Some(client), e.to_string())),
                }
            }
            .await;
            let result = result.unwrap_or_else(|(c, e)| OpResult::StartFailed(c, e));
            let _ = tx.send(Input::OpDone(name, result));
        });
    }

    fn stop(&mut self, name: &str) {
        let tx = self.tx.clone();
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let Some(shim) = svc.shim.clone() else { return };
        svc.busy = true;
        svc.stopping = true;
        svc.set_state(State::Stopping);
        let op = Op::Stop {
            signal: svc.config.stop.signal,
            grace_ms: u64::try_from(svc.config.stop.grace.as_millis()).unwrap_or(u64::MAX),
        };
        let message = format!(
            "sending {} to pid {}, SIGKILL after {:?}",
            signal_name(svc.config.stop.signal),
            svc.pid.unwrap_or_default(),
            svc.config.stop.grace
        );
        self.emit(name, "Stopping", message, None);
        let name = name.to_owned();
        tokio::spawn(async move {
            let result = match shim.call(op).await {
                Ok(s) => OpResult::StopSent(s),
                Err(e) => OpResult::StopFailed(e.to_string()),
            };
            let _ = tx.send(Input::OpDone(name, result));
        });
    }

    /// Tells the shim to exit, then forgets the service. Its logs stay for retention to remove.
    fn remove(&mut self, name: &str) {
        let tx = self.tx.clone();
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.stop_probe();
        let cgroups = self.options.cgroups.clone();
        let rel = svc.config.cgroup.clone();
        match svc.shim.take() {
            Some(shim) => {
                svc.busy = true;
                let name = name.to_owned();
                tokio::spawn(async move {
                    let _ = shim.call(Op::Exit).await;
                    let _ = tokio::task::spawn_blocking(move || {
                        end_cgroup(cgroups.as_deref(), &rel, true)
                    })
                    .await;
                    let _ = tx.send(Input::OpDone(name, OpResult::ShimExited));
                });
            }
            None => self.teardown(name, AfterTeardown::Forget, move || {
                end_cgroup(cgroups.as_deref(), &rel, true);
            }),
        }
    }

    /// Forgets a removed service whose shim is gone: its state and run directory go, its logs
    /// stay for retention to remove.
    fn forget(&mut self, name: &str) {
        self.services.remove(name);
        // Only a plain name is a directory of the run root (a quarantined one may be `..`).
        if cloudlet_spec::check_name(name).is_ok() {
            let _ = std::fs::remove_dir_all(self.options.run_root.join(name));
        }
        self.emit(
            name,
            "Deleted",
            "service removed; its logs are kept".into(),
            None,
        );
    }

    fn op_done(&mut self, name: &str, result: OpResult) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if let OpResult::TornDown(then) = result {
            // Not an operation of `busy`'s: one may still be in flight (failing with the shim).
            svc.teardown = false;
            match then {
                AfterTeardown::ShimLost(exit) => self.decide_after_exit(name, &exit, false),
                AfterTeardown::Forget => {
                    self.forget(name);
                    return;
                }
                AfterTeardown::Adopted if svc.desired.is_none() => {
                    self.services.remove(name);
                    return;
                }
                AfterTeardown::Adopted => {}
            }
            self.reconcile(name);
            return;
        }
        svc.busy = false;
        match result {
            OpResult::Started(client, status) => {
                svc.shim = Some(client);
                svc.count_restart = false;
                svc.absorb(&status);
                let early = svc.early_exit.take().filter(|(run, _)| *run == svc.run);
                svc.run_started = Some(Instant::now());
                svc.ready = false;
                svc.message = None;
                let pid = svc.pid.unwrap_or_default();
                let run = svc.run;
                self.emit(
                    name,
                    "Started",
                    format!("run {run} started, pid {pid}"),
                    None,
                );
                if let Some((run, status)) = early {
                    // The run ended before we heard it had started; handle its exit now.
                    let generation = self
                        .services
                        .get(name)
                        .and_then(|s| s.shim.as_ref())
                        .map(|c| c.generation());
                    if let Some(generation) = generation {
                        self.shim_event(ShimEvent::Exited {
                            name: name.to_owned(),
                            generation,
                            run,
                            status,
                        });
                    }
                    return;
                }
                self.arm_probe(name);
            }
            OpResult::StartFailed(client, error) => {
                if client.is_some() {
                    svc.shim = client;
                }
                svc.message = Some(error.clone());
                // The attempt counts, even though no run came of it.
                svc.restarts = svc
                    .restarts
                    .saturating_add(u64::from(std::mem::take(&mut svc.count_restart)));
                let run = svc.run;
                self.emit(name, "StartFailed", error.clone(), None);
                let exit = ExitView {
                    run,
                    code: None,
                    signal: None,
                    reason: "StartError".into(),
                    at: Timestamp::now(),
                };
                if let Some(svc) = self.services.get_mut(name) {
                    svc.last_exit = Some(exit.clone());
                }
                self.decide_after_exit(name, &exit, false);
            }
            OpResult::StopSent(status) => {
                // Only counters: whether the run is alive is the exit notice's to say (it may
                // have overtaken this answer).
                svc.restarts = status.restarts;
                svc.dropped = status.dropped_log_lines;
            }
            OpResult::StopFailed(error) => {
                svc.stopping = false;
                svc.message = Some(format!("stop failed: {error}"));
                self.emit(name, "StopFailed", error, None);
            }
            OpResult::ShimExited => {
                self.forget(name);
                return;
            }
            OpResult::TornDown(_) => {}
        }
        self.reconcile(name);
    }

    fn shim_event(&mut self, ev: ShimEvent) {
        match ev {
            ShimEvent::Exited {
                name,
                generation,
                run,
                status,
            } => {
                let Some(svc) = self.services.get_mut(&name) else {
                    return;
                };
                if svc.busy && run > svc.run {
                    // The notice overtook the answer to our start: keep it for op_done.
                    svc.early_exit = Some((run, status));
                    return;
                }
                if svc.shim.as_ref().map(|c| c.generation()) != Some(generation) || svc.run != run {
                    return;
                }
                let view = exit_view(run, &status);
                let asked = svc.stopping;
                svc.pid = None;
                svc.stopping = false;
                svc.ready = false;
                svc.stop_probe();
                svc.last_exit = Some(view.clone());
                self.emit(&name, "Exited", describe_exit(&view), Some(view.clone()));
                // Readiness of dependants' dependencies changed: nothing stops (no cascades).
                self.decide_after_exit(&name, &view, asked);
                self.reconcile(&name);
            }
            ShimEvent::Lost { name, generation } => {
                let Some(svc) = self.services.get_mut(&name) else {
                    return;
                };
                if svc.shim.as_ref().map(|c| c.generation()) != Some(generation) {
                    return;
                }
                svc.shim = None;
                svc.stop_probe();
                svc.busy = false;
                let pid_file = self.options.run_root.join(&name).join(PID_FILE_NAME);
                if let Some(pid) = svc.pid.take() {
                    let view = ExitView {
                        run: svc.run,
                        code: None,
                        signal: None,
                        reason: "ShimLost".into(),
                        at: Timestamp::now(),
                    };
                    svc.last_exit = Some(view.clone());
                    svc.ready = false;
                    if let Ok(raw) = i32::try_from(pid) {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(raw),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    svc.set_state(State::Stopping);
                    let (cgroups, rel) = (self.options.cgroups.clone(), svc.config.cgroup.clone());
                    self.emit(
                        &name,
                        "ShimLost",
                        format!("the shim died; killed the orphaned run (pid {pid})"),
                        Some(view.clone()),
                    );
                    // The policy is applied once the run's cgroup is empty (off the loop).
                    self.teardown(&name, AfterTeardown::ShimLost(view), move || {
                        end_cgroup(cgroups.as_deref(), &rel, false);
                        let _ = std::fs::remove_file(pid_file);
                    });
                    return;
                }
                let _ = std::fs::remove_file(pid_file);
                self.reconcile(&name);
            }
        }
    }

    /// Applies the restart policy to an exit. `asked`: the exit followed a stop we sent.
    fn decide_after_exit(&mut self, name: &str, exit: &ExitView, asked: bool) {
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(1);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if asked || svc.desired != Some(Desired::Running) || svc.after_stop == AfterStop::Start {
            // An operator's stop, restart or delete: no policy, no backoff; reconcile goes on.
            return;
        }
        let failed = exit.code != Some(0);
        if svc.config.oneshot && !failed {
            svc.done = true;
            svc.ready = true;
            svc.attempt = 0;
            svc.count_restart = false;
            svc.message = None;
            svc.set_state(State::Completed);
            let msg = format!("{}: the step is done", describe_exit(exit));
            self.emit(name, "Completed", msg, None);
            self.reconcile_all_waiting();
            return;
        }
        if svc.config.oneshot {
            self.read_failure_output(name, exit.run);
        }
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let restart = match svc.config.restart.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        };
        if !restart {
            svc.done = true;
            svc.set_state(if failed {
                State::Failed
            } else {
                State::Stopped
            });
            let reason = if failed { "Failed" } else { "Stopped" };
            let msg = format!(
                "{}; restart policy {:?} does not restart it",
                describe_exit(exit),
                svc.config.restart.policy
            );
            self.emit(name, reason, msg, None);
            return;
        }
        svc.count_restart = true;
        // A long run resets a daemon's backoff; a failing step backs off however long it ran.
        let healthy = !svc.config.oneshot
            && svc
                .run_started
                .is_some_and(|t| t.elapsed() >= svc.config.restart.reset_after);
        let delay = if healthy {
            svc.attempt = 0;
            Duration::ZERO
        } else {
            let d = backoff::delay(
                svc.attempt,
                svc.config.restart.initial,
                svc.config.restart.max,
                &mut self.rng,
            );
            svc.attempt = svc.attempt.saturating_add(1);
            d
        };
        if delay.is_zero() {
            svc.backoff_until = None;
            return;
        }
        // `check` caps every duration (ten years), but a store written by an older version may
        // hold anything: a delay no clock can reach waits the longest the spec allows instead,
        // and a clock that cannot reach even that quarantines the service.
        let now = Instant::now();
        let scheduled = match now.checked_add(delay) {
            Some(until) => Some((until, delay)),
            None => now
                .checked_add(cloudlet_spec::MAX_BACKOFF)
                .map(|until| (until, cloudlet_spec::MAX_BACKOFF)),
        };
        let Some((until, delay)) = scheduled else {
            let why = Unusable {
                field: "spec.restart.backoff.max".into(),
                reason: format!("a restart in {delay:?} cannot be scheduled on this clock"),
            };
            let d = DesiredService {
                config: (*svc.config).clone(),
                desired: Desired::Running,
            };
            self.quarantine(d, why);
            return;
        };
        let at = Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(delay).unwrap_or_default())
            .unwrap_or_else(|_| Timestamp::now());
        svc.backoff_until = Some((until, at));
        svc.timer_token = token;
        svc.set_state(State::Backoff);
        self.emit(
            name,
            "BackOff",
            format!("restarting in {}ms", delay.as_millis()),
            None,
        );
        let tx = self.tx.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep_until(until.into()).await;
            let _ = tx.send(Input::Timer { name, token });
        });
    }

    fn arm_probe(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.stop_probe();
        if svc.config.oneshot {
            // Running is not done: a step is ready when it exits 0.
            svc.set_state(State::Running);
            return;
        }
        let Some(probe) = svc.config.readiness.clone() else {
            let first = !svc.ready;
            svc.ready = true;
            svc.set_state(State::Running);
            if first {
                self.emit(name, "Ready", "running (no readiness probe)".into(), None);
            }
            self.reconcile_all_waiting();
            return;
        };
        let run = svc.run;
        let tx = self.tx.clone();
        let reaper = self.reaper.clone();
        let name_owned = name.to_owned();
        let env = svc.config.process.env.clone();
        svc.probe = Some(tokio::spawn(probe_loop(
            name_owned, run, probe, env, reaper, tx,
        )));
    }

    fn probe_result(&mut self, name: &str, run: u64, result: Result<(), String>) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.run != run || svc.pid.is_none() {
            return;
        }
        let Some(probe) = svc.config.readiness.as_ref() else {
            return;
        };
        let (success_threshold, failure_threshold) =
            (probe.success_threshold, probe.failure_threshold);
        match result {
            Ok(()) => {
                svc.probe_fail = 0;
                svc.probe_ok = svc.probe_ok.saturating_add(1);
                if !svc.ready && svc.probe_ok >= success_threshold {
                    svc.ready = true;
                    svc.message = None;
                    svc.set_state(State::Running);
                    self.emit(
                        name,
                        "Ready",
                        format!("run {run} passed its readiness probe"),
                        None,
                    );
                    self.reconcile_all_waiting();
                }
            }
            Err(e) => {
                svc.probe_ok = 0;
                svc.probe_fail = svc.probe_fail.saturating_add(1);
                svc.message = Some(e.clone());
                if svc.ready && svc.probe_fail >= failure_threshold {
                    // Only a report: nothing is stopped, dependants keep running.
                    svc.ready = false;
                    let fails = svc.probe_fail;
                    self.emit(
                        name,
                        "Unready",
                        format!("readiness probe failed {fails} times: {e}"),
                        None,
                    );
                }
            }
        }
    }

    /// Reads the last lines run `run` of a failed oneshot step wrote, off the loop; they arrive
    /// as [`Input::FailureOutput`] (the "why" for `describe` and the events).
    fn read_failure_output(&self, name: &str, run: u64) {
        const LINES: usize = 5;
        const MAX_CHARS: usize = 1000;
        let dir = self.options.log_root.join(name);
        let tx = self.tx.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            let query = cloudlet_logs::LogQuery {
                run: cloudlet_logs::RunSelect::Current,
                ..Default::default()
            };
            let read = tokio::task::spawn_blocking(move || cloudlet_logs::read(&dir, &query));
            let Ok(Ok(records)) = read.await else { return };
            let lines: Vec<String> = records
                .iter()
                .filter(|r| r.run == run && r.stream != cloudlet_logs::Stream::Event)
                .map(|r| r.text.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect();
            let tail = &lines[lines.len().saturating_sub(LINES)..];
            if tail.is_empty() {
                return;
            }
            let mut output = tail.join(" | ");
            if output.chars().count() > MAX_CHARS {
                let keep: String = output.chars().rev().take(MAX_CHARS).collect();
                output = format!("…{}", keep.chars().rev().collect::<String>());
            }
            let _ = tx.send(Input::FailureOutput { name, run, output });
        });
    }

    fn reconcile_all_waiting(&mut self) {
        let waiting: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.state == State::Waiting && !s.busy)
            .map(|(n, _)| n.clone())
            .collect();
        for name in waiting {
            self.reconcile(&name);
        }
    }
}

/// Connects to a shim left by an earlier server. Only "no such socket" and "refused" mean
/// the shim is gone; any other error (EAGAIN, EMFILE, a full backlog) is tried again after
/// 100, 200, 400 and 800 ms, with a warning each time, and counts as gone only after that.
async fn connect_patiently(
    name: &str,
    run_dir: &std::path::Path,
    shim_tx: mpsc::UnboundedSender<ShimEvent>,
) -> Result<ShimClient, String> {
    let mut wait = Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match ShimClient::connect(name, run_dir, shim_tx.clone()).await {
            Ok(client) => return Ok(client),
            Err(SupervisorError::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(format!("its socket: {source}"));
            }
            Err(e) if attempt > 4 => return Err(format!("{e} ({attempt} attempts)")),
            Err(e) => {
                tracing::warn!(service = %name, "shim not reached yet, trying again: {e}");
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
    }
}

/// The highest run number in a service's logs (0 when there are none).
async fn last_logged_run(dir: &std::path::Path) -> u64 {
    let dir = dir.to_owned();
    let query = cloudlet_logs::LogQuery {
        tail: Some(1),
        ..Default::default()
    };
    tokio::task::spawn_blocking(move || cloudlet_logs::read(&dir, &query))
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|records| records.last().map(|r| r.run))
        .unwrap_or(0)
}

/// How often a run that has not passed its probe yet is probed.
const STARTUP_PROBE_INTERVAL: Duration = Duration::from_millis(200);

async fn probe_loop(
    name: String,
    run: u64,
    probe: ProbeSpec,
    env: std::collections::BTreeMap<String, String>,
    reaper: Reaper,
    tx: mpsc::UnboundedSender<Input>,
) {
    tokio::time::sleep(probe.initial_delay).await;
    // Until the first success of a run, probe every STARTUP_PROBE_INTERVAL (or the period, if
    // shorter): dependants should not wait a whole period for a service that came up at once.
    let mut passed = false;
    loop {
        let started = tokio::time::Instant::now();
        let result = probe::check(&probe.probe, probe.timeout, &env, &reaper).await;
        passed |= result.is_ok();
        if tx
            .send(Input::Probe {
                name: name.clone(),
                run,
                result,
            })
            .is_err()
        {
            return;
        }
        let every = if passed {
            probe.period
        } else {
            probe.period.min(STARTUP_PROBE_INTERVAL)
        };
        // `every` is at most ten years (`ServiceConfig::check`); if a clock still cannot reach
        // it, sleeping `every` from now (tokio caps it) is as good.
        match started.checked_add(every) {
            Some(at) => tokio::time::sleep_until(at).await,
            None => tokio::time::sleep(every).await,
        }
    }
}

fn placeholder_config(name: &str) -> ServiceConfig {
    use crate::config::{RestartSpec, StopSpec};
    use crate::shim::proto::ProcessSpec;
    ServiceConfig {
        name: name.to_owned(),
        tag: String::new(),
        labels: BTreeMap::new(),
        process: ProcessSpec {
            argv: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            user: None,
            identity: None,
            log_max_size: 10 << 20,
            log_max_files: 5,
            cgroup: None,
        },
        depends_on: Vec::new(),
        oneshot: false,
        readiness: None,
        restart: RestartSpec {
            policy: RestartPolicy::Never,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        },
        stop: StopSpec {
            signal: nix::sys::signal::Signal::SIGTERM as i32,
            grace: Duration::from_secs(10),
        },
        cgroup: format!("{}/{name}", cloudlet_cgroups::SERVICES),
        limits: cloudlet_cgroups::Limits::default(),
        io: Vec::new(),
    }
}

/// Creates the service's cgroup and applies its limits. Returns the cgroup's path for the shim
/// and, when some limit could not be applied, `not enforced (<why>)`; `enforced` otherwise.
fn prepare_cgroup(
    cgroups: Option<&Hierarchy>,
    config: &ServiceConfig,
) -> Result<(Option<PathBuf>, Option<String>), cloudlet_cgroups::CgroupError> {
    let Some(h) = cgroups else {
        return Ok((None, None));
    };
    let cg = h.service(&config.cgroup)?;
    cg.create()?;
    let mut limits = config.limits.clone();
    let mut why: Vec<String> = Vec::new();
    for io in &config.io {
        match cloudlet_cgroups::block_device_of(&io.device) {
            Ok(device) => limits.io.push(cloudlet_cgroups::IoLimit {
                device,
                rbps: io.rbps,
                wbps: io.wbps,
                riops: io.riops,
                wiops: io.wiops,
            }),
            Err(e) => why.push(format!("io: {e}")),
        }
    }
    let not_applied = cg.apply_limits(&limits)?;
    why.extend(not_applied.iter().map(ToString::to_string));
    let note = if why.is_empty() {
        "enforced".to_owned()
    } else {
        format!("not enforced ({})", why.join("; "))
    };
    Ok((Some(cg.path().to_owned()), Some(note)))
}

/// The leaf cgroup every shim lives in.
pub const SHIMS_CGROUP: &str = "shims";

fn place_shim(h: &Hierarchy, pid: u32) -> Result<(), cloudlet_cgroups::CgroupError> {
    let cg = h.service(SHIMS_CGROUP)?;
    cg.create()?;
    cg.add_process(pid)
}

/// Kills whatever runs in a service's cgroup (a run whose shim is gone) and, when `remove`,
/// removes the cgroup once it is empty.
fn end_cgroup(cgroups: Option<&Hierarchy>, rel: &str, remove: bool) {
    let Some(h) = cgroups else { return };
    let Ok(cg) = h.service(rel) else { return };
    if !cg.exists() {
        return;
    }
    if cg.is_populated().unwrap_or(false) {
        if let Err(e) = cg.kill() {
            tracing::warn!("kill cgroup {rel}: {e}");
        }
        if let Err(e) = cg.wait_empty(Duration::from_secs(5)) {
            tracing::warn!("cgroup {rel}: {e}");
        }
    }
    if remove && let Err(e) = cg.remove() {
        tracing::warn!("remove cgroup {rel}: {e}");
    }
}

/// Opens a service's cgroup by its relative path, for stats.
pub fn service_cgroup(cgroups: Option<&Hierarchy>, rel: &str) -> Option<ServiceCgroup> {
    cgroups
        .and_then(|h| h.service(rel).ok())
        .filter(ServiceCgroup::exists)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{RestartSpec, StopSpec};

    /// A supervisor on `dir` whose shim program does not exist: every start fails at once
    /// (StartFailed), which is all these tests need of a start.
    async fn supervisor(
        dir: &std::path::Path,
    ) -> (Supervisor, mpsc::UnboundedReceiver<SupervisorEvent>) {
        let options = SupervisorOptions {
            exe: dir.join("no-such-shim"),
            run_root: dir.join("data/run"),
            log_root: dir.join("data/logs"),
            cgroups: None,
            limits_unenforced: None,
        };
        let reaper = Reaper::start().unwrap();
        Supervisor::start(options, reaper, Vec::new())
            .await
            .unwrap()
    }

    fn config(name: &str) -> ServiceConfig {
        let mut c = placeholder_config(name);
        c.process.argv = vec!["/bin/true".into()];
        c.restart = RestartSpec {
            policy: RestartPolicy::Always,
            initial: Duration::from_millis(20),
            max: Duration::from_millis(40),
            reset_after: Duration::from_secs(60),
        };
        c
    }

    fn running(config: ServiceConfig) -> DesiredService {
        DesiredService {
            config,
            desired: Desired::Running,
        }
    }

    async fn next(
        events: &mut mpsc::UnboundedReceiver<SupervisorEvent>,
        service: &str,
        reason: &str,
    ) -> SupervisorEvent {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let e = events.recv().await.unwrap();
                if e.service == service && e.reason == reason {
                    return e;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {reason} of {service}"))
    }

    async fn state_of(sup: &Supervisor, name: &str) -> Option<ServiceView> {
        sup.snapshot()
            .await
            .unwrap()
            .into_iter()
            .find(|v| v.name == name)
    }

    /// A service named `..` (a store that skipped validation) is quarantined: never started, and
    /// its delete removes nothing outside the run root. Before, it was started in the data dir
    /// itself and its delete removed the whole data dir (`run/..`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_service_named_dot_dot_is_quarantined_and_its_delete_removes_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (sup, mut events) = supervisor(dir.path()).await;
        let marker = dir.path().join("data/keep");
        std::fs::write(&marker, "x").unwrap();
        let mut bad = config("..");
        bad.restart.policy = RestartPolicy::Never;
        sup.set_desired(vec![running(bad), running(config("other"))]);
        let q = next(&mut events, "..", "Quarantined").await;
        assert!(q.message.contains("metadata.name"), "{}", q.message);
        // The other service goes on with its life (here: a failing start, backing off).
        next(&mut events, "other", "StartFailed").await;
        next(&mut events, "other", "BackOff").await;
        let v = state_of(&sup, "..").await.unwrap();
        assert_eq!(v.state, State::Invalid);
        assert!(v.message.unwrap().contains("metadata.name"));
        assert_eq!(v.run, 0, "a quarantined service is never started");
        assert_eq!(
            sup.action("..", Action::Start)
                .await
                .unwrap_err()
                .to_string(),
            "service \"..\" is quarantined (metadata.name: invalid name \"..\": expected 1 to 63 \
             lowercase letters, digits and '-', starting with a letter and not ending with '-'): \
             fix its manifest or delete it"
        );
        sup.set_desired(vec![running(config("other"))]);
        next(&mut events, "..", "Deleted").await;
        assert!(state_of(&sup, "..").await.is_none());
        assert!(marker.exists(), "the delete removed the data dir");
        next(&mut events, "other", "StartFailed").await;
    }

    /// A cgroup teardown that waits (here: a fake cgroupfs whose cgroup never empties, so the
    /// teardown waits its full 5 s) runs off the supervisor's task: another service goes on
    /// restarting meanwhile. Before, the teardown ran inline and stopped every other service's
    /// restarts (and every API call to the supervisor) for those 5 s.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_cgroup_teardown_does_not_delay_other_services_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let slow = dir.path().join("cg/cloudlet/services/slow");
        std::fs::create_dir_all(&slow).unwrap();
        std::fs::write(slow.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        std::fs::write(slow.join("cgroup.kill"), "").unwrap();
        std::fs::write(slow.join("cgroup.procs"), "").unwrap();
        let options = SupervisorOptions {
            exe: dir.path().join("no-such-shim"),
            run_root: dir.path().join("data/run"),
            log_root: dir.path().join("data/logs"),
            cgroups: Some(Arc::new(
                Hierarchy::new(dir.path().join("cg"), "cloudlet").unwrap(),
            )),
            limits_unenforced: None,
        };
        let (sup, mut events) = Supervisor::start(options, Reaper::start().unwrap(), Vec::new())
            .await
            .unwrap();
        let mut once = config("slow");
        once.restart.policy = RestartPolicy::Never;
        sup.set_desired(vec![running(once), running(config("other"))]);
        next(&mut events, "slow", "Failed").await;
        next(&mut events, "other", "BackOff").await;
        // Deleting `slow` tears its cgroup down: kill, then wait for it to empty, which it never
        // does.
        let deleted_at = Instant::now();
        sup.set_desired(vec![running(config("other"))]);
        let mut restarts_meanwhile = 0;
        let took = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let e = events.recv().await.unwrap();
                match (e.service.as_str(), e.reason) {
                    ("other", "StartFailed") => restarts_meanwhile += 1,
                    ("slow", "Deleted") => return deleted_at.elapsed(),
                    _ => {}
                }
            }
        })
        .await
        .unwrap();
        assert!(
            took >= Duration::from_secs(4),
            "the teardown did not wait: {took:?}"
        );
        assert_eq!(
            std::fs::read_to_string(slow.join("cgroup.kill")).unwrap(),
            "1"
        );
        assert!(
            restarts_meanwhile >= 10,
            "only {restarts_meanwhile} restarts of another service during a {took:?} teardown"
        );
    }

    /// A quarantined service leaves quarantine when its config is fixed, and is started then.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fixed_config_leaves_quarantine_and_starts() {
        let dir = tempfile::tempdir().unwrap();
        let (sup, mut events) = supervisor(dir.path()).await;
        let mut bad = config("web");
        bad.stop = StopSpec {
            signal: 4242,
            grace: Duration::from_secs(1),
        };
        sup.set_desired(vec![running(bad.clone())]);
        let q = next(&mut events, "web", "Quarantined").await;
        assert!(
            q.message.contains("spec.stop.signal: 4242 is not a signal"),
            "{}",
            q.message
        );
        // The same config again says nothing new.
        sup.set_desired(vec![running(bad)]);
        sup.set_desired(vec![running(config("web"))]);
        let e = events.recv().await.unwrap();
        assert_eq!(e.reason, "StartFailed", "{e:?}");
        let v = state_of(&sup, "web").await.unwrap();
        assert_ne!(v.state, State::Invalid);
    }
}
