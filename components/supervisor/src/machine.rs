//! The supervisor's public face and its task: [`Supervisor`] (the handle), what it shows
//! ([`ServiceView`], [`State`], [`SupervisorEvent`]) and the loop that feeds every input to the
//! machine ([`crate::transition::Core`], where all decisions are) and hands the machine's effects
//! to the world ([`crate::world::ShimWorld`], where all I/O is).
//!
//! The loop is one task that owns every service's state on this node. Effects that take time
//! (shim calls, cgroup teardown, timers, probes) run as separate tasks or on blocking threads
//! and report back as inputs, so the loop never blocks and independent services start in
//! parallel. It never stops a service on its own initiative and never talks to the network
//! beyond the probes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};

use cloudlet_cgroups::{Hierarchy, ServiceCgroup};

use crate::SupervisorError;
use crate::config::ServiceConfig;
use crate::reaper::Reaper;
use crate::shim::client::ShimClient;
use crate::shim::proto::{Op, ShimStatus};
use crate::transition::{Core, Input};
use crate::world::{Inbox, ShimWorld, World};

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
    /// Why it cannot be started yet though its config is fine: what the node prepares for it
    /// failed (its `spec.files` could not be written). Held like an unusable config: shown
    /// `invalid` with the reason, never started, a run already going left alone, until a
    /// desired set without it.
    pub blocked: Option<crate::Unusable>,
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

/// A handle to the supervisor task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Supervisor {
    tx: mpsc::UnboundedSender<Request>,
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
        let core = Core::new(event_tx, rand::SeedableRng::from_os_rng());
        let world = ShimWorld::new(options, reaper, shim_tx);
        // Shim events enter the same inbox as everything else.
        let forward = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = shim_rx.recv().await {
                if forward.send(Request::Input(Input::Shim(ev))).is_err() {
                    break;
                }
            }
        });
        // Adoption runs in the supervisor's own task, not before this returns: a slow or stuck
        // shim (each may take up to its call timeout to answer) never delays the caller, which
        // starts the API meanwhile; requests that need the supervisor wait in its inbox.
        tokio::spawn(run(core, world, initial, tx.clone(), rx));
        Ok((Supervisor { tx }, event_rx))
    }

    /// A handle on a task the test runs itself.
    #[cfg(test)]
    pub(crate) fn from_sender(tx: mpsc::UnboundedSender<Request>) -> Supervisor {
        Supervisor { tx }
    }

    /// Replaces the desired set (a service missing from it is stopped and removed).
    pub fn set_desired(&self, services: Vec<DesiredService>) {
        let _ = self.tx.send(Request::Input(Input::Desired(services)));
    }

    /// Asks for `action` on `name`.
    pub async fn action(&self, name: &str, action: Action) -> Result<(), SupervisorError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Action(name.to_owned(), action, tx))
            .map_err(|_| SupervisorError::Gone)?;
        rx.await.map_err(|_| SupervisorError::Gone)?
    }

    /// The status of every service, sorted by name.
    pub async fn snapshot(&self) -> Result<Vec<ServiceView>, SupervisorError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Snapshot(tx))
            .map_err(|_| SupervisorError::Gone)?;
        rx.await.map_err(|_| SupervisorError::Gone)
    }

    /// Asks the service's shim for its current status (log drop counts change between runs,
    /// which the supervisor's own view only learns at the next start or stop). `None` when the
    /// service has no shim.
    pub async fn live_status(&self, name: &str) -> Result<Option<ShimStatus>, SupervisorError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::ShimOf(name.to_owned(), tx))
            .map_err(|_| SupervisorError::Gone)?;
        match rx.await.map_err(|_| SupervisorError::Gone)? {
            Some(shim) => shim.call(Op::Status).await.map(Some),
            None => Ok(None),
        }
    }

    /// Lets go of every shim without stopping anything: services keep running.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// What the supervisor's task is asked: an input for the machine, or a request of the handle.
#[derive(Debug)]
pub(crate) enum Request {
    Input(Input),
    Action(String, Action, oneshot::Sender<Result<(), SupervisorError>>),
    Snapshot(oneshot::Sender<Vec<ServiceView>>),
    ShimOf(String, oneshot::Sender<Option<Arc<ShimClient>>>),
    Shutdown(oneshot::Sender<()>),
}

/// The supervisor's task: adopts, takes the initial desired set, then feeds every request to the
/// machine and the machine's effects to the world, until shut down.
/// Returns the world once shut down (or once every handle is gone).
pub(crate) async fn run<W: World>(
    mut core: Core,
    mut world: W,
    initial: Vec<DesiredService>,
    tx: mpsc::UnboundedSender<Request>,
    mut rx: mpsc::UnboundedReceiver<Request>,
) -> W {
    let (inbox, mut inputs) = mpsc::unbounded_channel();
    // The world reports into `inbox`; those reports join the requests in one queue.
    tokio::spawn(async move {
        while let Some(input) = inputs.recv().await {
            if tx.send(Request::Input(input)).is_err() {
                break;
            }
        }
    });
    let adoption = world.reach_shims().await;
    for input in adoption.into_iter().chain([Input::Desired(initial)]) {
        step(&mut core, &mut world, input, Instant::now(), &inbox);
    }
    while let Some(request) = rx.recv().await {
        match request {
            Request::Input(input) => step(&mut core, &mut world, input, Instant::now(), &inbox),
            Request::Action(name, action, reply) => {
                let _ = reply.send(act(
                    &mut core,
                    &mut world,
                    &name,
                    action,
                    Instant::now(),
                    &inbox,
                ));
            }
            Request::Snapshot(reply) => {
                let _ = reply.send(core.snapshot());
            }
            Request::ShimOf(name, reply) => {
                let _ = reply.send(world.shim(&name));
            }
            Request::Shutdown(reply) => {
                world.shutdown();
                let _ = reply.send(());
                return world;
            }
        }
    }
    world
}

/// Hands `input` at `now` to the machine and the machine's effects to the world.
pub(crate) fn step<W: World>(
    core: &mut Core,
    world: &mut W,
    input: Input,
    now: Instant,
    inbox: &Inbox,
) {
    for effect in core.handle(input, now) {
        world.execute(effect, inbox);
    }
}

/// Hands an operator's action at `now` to the machine and its effects to the world.
pub(crate) fn act<W: World>(
    core: &mut Core,
    world: &mut W,
    name: &str,
    action: Action,
    now: Instant,
    inbox: &Inbox,
) -> Result<(), SupervisorError> {
    let (result, effects) = core.action(name, action, now);
    for effect in effects {
        world.execute(effect, inbox);
    }
    result
}

/// The leaf cgroup every shim lives in.
pub const SHIMS_CGROUP: &str = "shims";

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
    use crate::config::{RestartPolicy, RestartSpec, StopSpec};
    use crate::transition::placeholder_config;

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
            blocked: None,
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
