//! The supervisor's decisions: every service's state and the one place its transitions happen.
//!
//! [`Core::handle`] takes one [`Input`] (the desired set, an operator's action, a shim's notice,
//! the result of an operation the machine asked for, a probe result, a timer) at a given instant
//! and updates the services' states; everything it wants done in the world it returns as
//! [`Effect`]s (start a run, send a stop, tear a cgroup down, arm a timer, ...), whose results come
//! back later as inputs. After each input it *reconciles* the service concerned: from the facts
//! (desired state, config, is a run alive, backoff deadline, are the dependencies ready) it picks
//! the one next step.
//!
//! It owns the per-service state and the restart policy. It never does I/O, never spawns a task
//! and never reads a clock of its own (the instant comes with the input), so every transition is
//! unit-tested without a process (`tests.rs`, through a recording [`crate::world::World`]); [`crate::world`] carries
//! the effects out. It never stops a service on its own initiative (no eviction, no cascade when
//! a dependency becomes unready): it stops a run only when an operator asked for it (stop,
//! restart, delete, a changed command).

mod exits;
mod io;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::mpsc;

pub(crate) use self::io::{AfterTeardown, Effect, Input, OpResult, TeardownJob};
use crate::SupervisorError;
use crate::config::{RestartPolicy, ServiceConfig, Unusable};
use crate::machine::{
    Action, Desired, DesiredService, ExitView, ServiceView, State, SupervisorEvent,
};
use crate::shim::proto::{ExitStatus, ShimStatus};

/// Where a service is in the machine: what it waits for. The one enum of its states; next to
/// it are only facts (what the shim reported: a run alive, stopping, ready, the last exit; and
/// the operator's intent: desired, a restart after the stop), and the shown [`State`], which the
/// transitions set with the time it last changed.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Nothing in flight and nothing to wait out: reconcile picks the next step from the facts.
    Idle,
    /// A start, stop or shim exit was asked of the world: nothing else happens until its answer.
    Asked(Asked),
    /// A cgroup teardown runs off the loop: nothing starts in that cgroup until it is done.
    TearingDown,
    /// Exited; the next start waits until `until` (when timer `token` fires; `at` is shown).
    Backoff {
        until: Instant,
        at: Timestamp,
        token: u64,
    },
    /// The restart policy (or a completed step) says no more: only an operator's start or a
    /// changed process starts it again.
    Done,
    /// Its shim took the connection but did not answer (`why`) and may hold a run: nothing is
    /// started next to it (shown `invalid`); it is asked again when timer `token` fires, adopted
    /// once it answers, and its cgroup cleaned up and the service started once it is gone.
    Unanswered { why: String, token: u64 },
}

/// How long a shim that did not answer at adoption is left before it is asked again.
pub(crate) const UNANSWERED_RETRY: Duration = Duration::from_secs(10);

/// What was asked of the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Start,
    Stop,
    Exit,
}

impl Phase {
    /// Waiting for the world: reconcile does nothing.
    fn in_flight(&self) -> bool {
        matches!(self, Phase::Asked(_) | Phase::TearingDown)
    }

    /// An operator's start, or a changed process: what was waited out or final is not any more.
    fn release(&mut self) {
        if matches!(self, Phase::Done | Phase::Backoff { .. }) {
            *self = Phase::Idle;
        }
    }
}

/// What to do once the alive run has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    Nothing,
    Start,
}

/// One service's state.
#[derive(Debug)]
struct Svc {
    config: Arc<ServiceConfig>,
    /// `None`: deleted from the desired set; remove once stopped.
    desired: Option<Desired>,
    state: State,
    since: Timestamp,
    ready: bool,
    /// The generation of the connection to its shim.
    shim: Option<u64>,
    /// What the machine waits for.
    phase: Phase,
    pid: Option<u32>,
    run: u64,
    run_started: Option<Instant>,
    stopping: bool,
    after_stop: AfterStop,
    restarts: u64,
    attempt: u32,
    /// The next start counts as an automatic restart.
    count_restart: bool,
    /// The adopted shim's last run ended after a stop an earlier server sent: not a crash.
    adopted_exit_asked: bool,
    last_exit: Option<ExitView>,
    waiting_for: Vec<String>,
    message: Option<String>,
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
            phase: Phase::Idle,
            pid: None,
            run: 0,
            run_started: None,
            stopping: false,
            after_stop: AfterStop::Nothing,
            restarts: 0,
            attempt: 0,
            count_restart: false,
            adopted_exit_asked: false,
            last_exit: None,
            waiting_for: Vec::new(),
            message: None,
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
            state: if self.quarantine.is_some() || matches!(self.phase, Phase::Unanswered { .. }) {
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
            message: match (&self.quarantine, &self.phase) {
                (Some(q), _) => Some(format!("quarantined: {q}")),
                (None, Phase::Unanswered { why, .. }) => {
                    Some(format!("quarantined: its shim did not answer ({why})"))
                }
                (None, _) => self.message.clone(),
            },
            next_restart_at: match self.phase {
                Phase::Backoff { at, .. } => Some(at),
                _ => None,
            },
            dropped_log_lines: self.dropped,
            limits: self.limits_note.clone(),
            cgroup: self.config.cgroup.clone(),
            run_tag: self.run_tag.clone(),
        }
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

/// Every service's state, and the transitions.
#[derive(Debug)]
pub(crate) struct Core {
    services: HashMap<String, Svc>,
    events: mpsc::UnboundedSender<SupervisorEvent>,
    effects: Vec<Effect>,
    rng: rand::rngs::StdRng,
    next_token: u64,
    /// The instant of the input being handled.
    now: Instant,
}

impl Core {
    /// A machine with no services; its events go to `events`, backoff jitter comes from `rng`.
    pub(crate) fn new(
        events: mpsc::UnboundedSender<SupervisorEvent>,
        rng: rand::rngs::StdRng,
    ) -> Core {
        Core {
            services: HashMap::new(),
            events,
            effects: Vec::new(),
            rng,
            next_token: 1,
            now: Instant::now(),
        }
    }

    /// Handles one input at `now`; returns what the world is to do.
    pub(crate) fn handle(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        self.now = now;
        match input {
            Input::Desired(set) => self.set_desired(set),
            Input::Shim(ev) => self.shim_event(ev),
            Input::OpDone(name, result) => self.op_done(&name, result),
            Input::Probe { name, run, result } => self.probe_result(&name, run, result),
            Input::FailureOutput { name, run, output } => {
                self.failure_output(&name, run, &output);
            }
            Input::Timer { name, token } => {
                let Some(svc) = self.services.get_mut(&name) else {
                    return std::mem::take(&mut self.effects);
                };
                match &svc.phase {
                    Phase::Backoff { token: t, .. } if *t == token => {
                        svc.phase = Phase::Idle;
                        self.reconcile(&name);
                    }
                    Phase::Unanswered { token: t, .. } if *t == token => {
                        if let Some(shim) = svc.shim {
                            self.effects.push(Effect::AskStatus { name, shim });
                        }
                    }
                    _ => {}
                }
            }
            Input::Adopted { name, shim, status } => self.adopted(name, shim, &status),
            Input::ShimGone { name, message } => self.shim_gone(&name, message),
            Input::ShimUnanswered { name, shim, why } => self.shim_unanswered(name, shim, why),
        }
        std::mem::take(&mut self.effects)
    }

    /// An operator's `action` on `name` at `now`.
    pub(crate) fn action(
        &mut self,
        name: &str,
        action: Action,
        now: Instant,
    ) -> (Result<(), SupervisorError>, Vec<Effect>) {
        self.now = now;
        let result = self.act(name, action);
        (result, std::mem::take(&mut self.effects))
    }

    /// The status of every service shown (desired, or with a run), sorted by name.
    pub(crate) fn snapshot(&self) -> Vec<ServiceView> {
        let mut views: Vec<_> = self
            .services
            .values()
            .filter(|s| s.desired.is_some() || s.pid.is_some())
            .map(Svc::view)
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
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

    fn stop_probe(&mut self, name: &str) {
        if let Some(svc) = self.services.get_mut(name) {
            svc.probe_ok = 0;
            svc.probe_fail = 0;
        }
        self.effects.push(Effect::StopProbe {
            name: name.to_owned(),
        });
    }

    fn set_desired(&mut self, set: Vec<DesiredService>) {
        let mut seen = Vec::with_capacity(set.len());
        for d in set {
            seen.push(d.config.name.clone());
            self.desire_one(d);
        }
        // Services no longer desired: stop and remove.
        for (name, svc) in &mut self.services {
            if !seen.contains(name) {
                svc.desired = None;
            }
        }
        let mut names: Vec<String> = self.services.keys().cloned().collect();
        names.sort();
        for name in names {
            self.reconcile(&name);
        }
    }

    /// Takes one entry of the desired set (reconcile follows).
    fn desire_one(&mut self, d: DesiredService) {
        let name = d.config.name.clone();
        if let Err(why) = d.blocked.clone().map_or_else(|| d.config.check(), Err) {
            self.quarantine(d, why);
            return;
        }
        if let Some(svc) = self.services.get_mut(&name)
            && svc.quarantine.take().is_some()
        {
            // Out of quarantine: the valid config is a change like any other, or, for a
            // service that never had one (a placeholder: the only config with no command),
            // its first config.
            svc.phase.release();
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
                        let asked = svc.adopted_exit_asked;
                        self.decide_after_exit(&name, &exit, asked);
                    } else if svc.pid.is_some() {
                        self.arm_probe(&name);
                    }
                } else if process_changed && svc.pid.is_some() {
                    svc.after_stop = AfterStop::Start;
                    svc.phase.release();
                } else if process_changed {
                    svc.phase.release();
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
        if matches!(svc.phase, Phase::Backoff { .. }) {
            svc.phase = Phase::Idle;
        }
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

    fn act(&mut self, name: &str, action: Action) -> Result<(), SupervisorError> {
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
        if let Phase::Unanswered { why, .. } = &svc.phase {
            return Err(SupervisorError::Quarantined {
                name: name.to_owned(),
                why: format!("its shim did not answer ({why})"),
            });
        }
        svc.phase.release();
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
        if svc.phase.in_flight() {
            return;
        }
        if matches!(svc.phase, Phase::Unanswered { .. }) {
            // Deleted: the shim is told to exit (its cgroup, if any, is torn down); otherwise
            // nothing happens until it answers or is gone.
            if svc.desired.is_none() {
                self.remove(name);
            } else if let Some(s) = self.services.get_mut(name) {
                s.set_state(State::Invalid);
            }
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
            if let Some(s) = self.services.get_mut(name) {
                s.set_state(State::Invalid);
            }
            return;
        }
        if !wants_run {
            let Some(s) = self.services.get_mut(name) else {
                return;
            };
            if matches!(s.phase, Phase::Backoff { .. }) {
                s.phase = Phase::Idle;
            }
            s.waiting_for.clear();
            if s.state != State::Stopped {
                s.set_state(State::Stopped);
                self.emit(name, "Stopped", "stopped as desired".into(), None);
            }
            return;
        }
        match svc.phase {
            Phase::Done if svc.after_stop == AfterStop::Nothing => return,
            Phase::Backoff { until, .. } if until > self.now => return,
            _ => {}
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
            let changed = self.services.get_mut(name).map(|s| {
                let changed = s.waiting_for != waiting || s.state != State::Waiting;
                s.set_state(State::Waiting);
                s.waiting_for = waiting.clone();
                changed
            });
            if changed == Some(true) {
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
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.phase = Phase::Asked(Asked::Start);
        svc.waiting_for.clear();
        svc.after_stop = AfterStop::Nothing;
        svc.set_state(State::Starting);
        svc.run_tag = Some(svc.config.tag.clone());
        self.effects.push(Effect::Start {
            name: name.to_owned(),
            shim: svc.shim,
            config: Arc::clone(&svc.config),
            run: svc.run.saturating_add(1),
            restarts: svc.restarts.saturating_add(u64::from(svc.count_restart)),
        });
    }

    fn stop(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let Some(shim) = svc.shim else { return };
        svc.phase = Phase::Asked(Asked::Stop);
        svc.stopping = true;
        svc.set_state(State::Stopping);
        let (signal, grace) = (svc.config.stop.signal, svc.config.stop.grace);
        let message = format!(
            "sending {} to pid {}, SIGKILL after {grace:?}",
            signal_name(signal),
            svc.pid.unwrap_or_default(),
        );
        self.effects.push(Effect::Stop {
            name: name.to_owned(),
            shim,
            signal,
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        });
        self.emit(name, "Stopping", message, None);
    }

    /// Tells the shim to exit (or, with none, tears the cgroup down), then forgets the service.
    /// Its logs stay for retention to remove.
    fn remove(&mut self, name: &str) {
        self.stop_probe(name);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let cgroup = svc.config.cgroup.clone();
        let effect = if svc.shim.take().is_some() {
            svc.phase = Phase::Asked(Asked::Exit);
            Effect::ExitShim {
                name: name.to_owned(),
                cgroup,
            }
        } else {
            svc.phase = Phase::TearingDown;
            Effect::Teardown {
                name: name.to_owned(),
                job: TeardownJob::Remove { cgroup },
                then: AfterTeardown::Forget,
            }
        };
        self.effects.push(effect);
    }

    /// Forgets a removed service whose shim is gone: its state and run directory go, its logs
    /// stay for retention to remove.
    fn forget(&mut self, name: &str) {
        self.services.remove(name);
        // Only a plain name is a directory of the run root (a quarantined one may be `..`).
        if cloudlet_spec::check_name(name).is_ok() {
            self.effects.push(Effect::RemoveRunDir {
                name: name.to_owned(),
            });
        }
        self.emit(
            name,
            "Deleted",
            "service removed; its logs are kept".into(),
            None,
        );
    }

    fn reconcile_all_waiting(&mut self) {
        let mut waiting: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.state == State::Waiting && !s.phase.in_flight())
            .map(|(n, _)| n.clone())
            .collect();
        waiting.sort();
        for name in waiting {
            self.reconcile(&name);
        }
    }
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// The config of a service known only from its shim (adoption) or from a config the supervisor
/// cannot act on: the only config with no command.
pub(crate) fn placeholder_config(name: &str) -> ServiceConfig {
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
