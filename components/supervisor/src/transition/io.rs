//! What goes into the machine ([`Input`], [`OpResult`]) and what comes out of it ([`Effect`]):
//! the whole contract between the machine and the world, as data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::config::ServiceConfig;
use crate::machine::{DesiredService, ExitView};
use crate::probe::ProbeSpec;
use crate::shim::client::ShimEvent;
use crate::shim::proto::ShimStatus;

/// What the machine is told. A closed set: the world reports only through these.
#[derive(Debug)]
pub(crate) enum Input {
    /// The desired set (a service missing from it is stopped and removed).
    Desired(Vec<DesiredService>),
    /// A shim's notice: a run exited, or the connection was lost.
    Shim(ShimEvent),
    /// The result of an effect the machine asked for.
    OpDone(String, OpResult),
    /// One readiness probe of run `run`.
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
    /// A backoff timer fired.
    Timer { name: String, token: u64 },
    /// At start: a shim an earlier server left, reached, with its status.
    Adopted {
        name: String,
        shim: u64,
        status: ShimStatus,
    },
    /// At start: a shim an earlier server left took the connection (`shim`) but did not answer
    /// (`why`): it may still hold a run.
    ShimUnanswered {
        name: String,
        shim: u64,
        why: String,
    },
    /// At start: a shim an earlier server left is gone (`message`: what was done about the
    /// process group its pid file names, if it has one).
    ShimGone {
        name: String,
        message: Option<String>,
    },
}

/// The result of an effect.
#[derive(Debug)]
pub(crate) enum OpResult {
    /// The run started; `shim` is the connection's generation.
    Started {
        shim: u64,
        status: ShimStatus,
        /// `enforced`, or `not enforced (<why>)`.
        limits: Option<String>,
    },
    /// No run came of a start; `shim`: the shim, if one is alive.
    StartFailed { shim: Option<u64>, error: String },
    /// The shim sent the stop signal.
    StopSent(ShimStatus),
    /// The stop could not be sent.
    StopFailed(String),
    /// The shim exited as told and the cgroup is torn down.
    ShimExited,
    /// A cgroup teardown is done.
    TornDown(AfterTeardown),
    /// A shim that did not answer at adoption answered now.
    Status(ShimStatus),
    /// A shim that did not answer at adoption still does not.
    StatusFailed(String),
}

/// What follows a cgroup teardown (which may wait seconds for a cgroup to empty, so it runs on
/// a blocking thread, never on the supervisor's task).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AfterTeardown {
    /// The shim died with a run: apply the restart policy to that run's end.
    ShimLost(ExitView),
    /// The service was removed: forget it.
    Forget,
    /// A dead shim found at adoption is cleaned up: its service may start now.
    Adopted,
}

/// What a teardown does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TeardownJob {
    /// End what runs in the service's cgroup and remove the cgroup (a removed service).
    Remove { cgroup: String },
    /// End what runs in the cgroup of a run whose shim died, and remove the run's pid file.
    LostRun { cgroup: String },
    /// End what a dead shim found at adoption left in the service's cgroups (its own and any
    /// transient group's), and remove its run directory.
    DeadShim,
}

/// What the machine asks of the world ([`crate::world::World`] carries it out). Results come
/// back as [`Input::OpDone`], [`Input::Probe`], [`Input::Timer`] or [`Input::FailureOutput`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// Start run `run` (counting `restarts`) of `config`: prepare its cgroup, then through the
    /// shim of generation `shim`, or a new shim when `None`. Reports `Started`/`StartFailed`.
    Start {
        name: String,
        shim: Option<u64>,
        config: Arc<ServiceConfig>,
        run: u64,
        restarts: u64,
    },
    /// Send `signal` through the shim, SIGKILL after `grace_ms`. Reports `StopSent`/`StopFailed`.
    Stop {
        name: String,
        shim: u64,
        signal: i32,
        grace_ms: u64,
    },
    /// Tell the shim to exit, then remove the service's cgroup. Reports `ShimExited`.
    ExitShim { name: String, cgroup: String },
    /// Forget the connection to a lost shim.
    DropShim { name: String },
    /// SIGKILL the process group `pid` (an orphaned run whose shim died).
    KillGroup { pid: u32 },
    /// Tear down off the loop. Reports `TornDown(then)`.
    Teardown {
        name: String,
        job: TeardownJob,
        then: AfterTeardown,
    },
    /// Remove the run directory of a forgotten service.
    RemoveRunDir { name: String },
    /// Report `Timer { name, token }` at `at`.
    Timer {
        name: String,
        token: u64,
        at: Instant,
    },
    /// Probe run `run` (with the service's `env`) until told to stop; replaces an earlier probe.
    Probe {
        name: String,
        run: u64,
        probe: ProbeSpec,
        env: BTreeMap<String, String>,
    },
    /// Stop probing the service.
    StopProbe { name: String },
    /// Read the last lines run `run` wrote. Reports `FailureOutput` (if there are any).
    ReadFailureOutput { name: String, run: u64 },
    /// Ask the shim for its status. Reports `Status`/`StatusFailed`.
    AskStatus { name: String, shim: u64 },
}
