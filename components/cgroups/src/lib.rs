//! cloudlet's cgroup v2 module: creating, limiting, reading, killing and removing cgroups, and
//! reading pressure (PSI).
//!
//! It never decides policy (which limits, when to kill) and only ever touches cgroups below the
//! one it was given ([`Hierarchy::new`]'s base): every relative path is checked to stay below it.
//! Every host path is a parameter (the cgroup2 mount, `/proc/self/cgroup`, `/proc/self/mountinfo`,
//! `/sys/dev/block`), so unit tests run against a temporary directory that looks like cgroupfs.
//!
//! # Layout below the base
//!
//! ```text
//! <base>/                         cloudlet's subtree (under systemd: its unit's cgroup, Delegate=yes)
//! <base>/<leaf>/                  the server itself (`setup("server")` moves it there)
//! <base>/services/<name>/         one cgroup per service
//! <base>/groups/<group>/<name>/   services grouped under a shared parent
//! ```
//!
//! cgroup v2 allows no processes in a non-root cgroup that delegates controllers to its
//! children, which is why [`Hierarchy::setup`] first moves the base's processes into a leaf.
//!
//! # Hosts without controllers
//!
//! On a hybrid host (v1 controllers, a v2 hierarchy at `/sys/fs/cgroup/unified`) or without
//! delegation, the v2 hierarchy has no controllers: [`Hierarchy::setup`] succeeds and reports each
//! missing controller with its reason, [`ServiceCgroup::apply_limits`] returns every limit it
//! could not apply, and grouping, `cgroup.kill`, `cgroup.events` and PSI still work. Nothing here
//! pretends a limit holds when it does not.

#![warn(missing_docs)]

mod detect;
mod error;
mod file;
mod hierarchy;
mod limits;
pub mod mountinfo;
mod service;
mod stats;
#[cfg(test)]
mod testroot;

use std::fmt;

pub use detect::{Detected, cgroup2_mount, detect, detect_with, own_cgroup};
pub use error::CgroupError;
pub use hierarchy::{GROUPS, Hierarchy, SERVICES, SetupReport};
pub use limits::{
    CPU_PERIOD_USEC, IoLimit, Limits, NotApplied, NotAppliedReason, block_device_of,
    block_device_of_with,
};
pub use service::{KillMethod, ServiceCgroup};
pub use stats::{CpuStat, Max, MemoryEvents, Pressure, Pressures, PsiLine, Stats, read_pressure};

/// A cgroup v2 controller cloudlet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    /// `cpu`: `cpu.max`.
    Cpu,
    /// `memory`: `memory.max`.
    Memory,
    /// `pids`: `pids.max`.
    Pids,
    /// `io`: `io.max`.
    Io,
}

impl Controller {
    /// Every controller cloudlet uses, in the order they are enabled.
    pub const ALL: [Controller; 4] = [
        Controller::Cpu,
        Controller::Memory,
        Controller::Pids,
        Controller::Io,
    ];

    /// The name in `cgroup.controllers` and `cgroup.subtree_control`.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Io => "io",
        }
    }

    /// The controller a cgroup v1 hierarchy's mount option names (`blkio` is v2's `io`).
    fn from_v1_name(name: &str) -> Option<Controller> {
        match name {
            "cpu" => Some(Controller::Cpu),
            "memory" => Some(Controller::Memory),
            "pids" => Some(Controller::Pids),
            "blkio" => Some(Controller::Io),
            _ => None,
        }
    }

    /// Our controllers listed in the text of a `cgroup.controllers` or `cgroup.subtree_control`.
    fn listed_in(text: &str) -> Vec<Controller> {
        let names: Vec<&str> = text.split_whitespace().collect();
        Controller::ALL
            .into_iter()
            .filter(|c| names.contains(&c.name()))
            .collect()
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
