//! The per-node supervisor: it runs each service through its own shim (a tiny keeper process, so
//! services outlive cloudlet), starts services in dependency order once their dependencies are
//! ready, restarts them per policy with backoff, adopts the shims of an earlier server, and reaps
//! every orphan (it and every shim are child subreapers).
//!
//! It owns process lifecycles on this node. It never talks to the network (beyond readiness probes
//! to the services themselves), never reads the store or YAML, and never stops a service on its own
//! initiative: only an operator's stop, restart, delete or changed command does.
#![warn(missing_docs)]

pub mod backoff;
pub mod config;
pub mod machine;
pub mod probe;
pub mod reaper;
pub mod shim;
mod transition;
mod world;

use std::path::{Path, PathBuf};

pub use config::{RestartPolicy, ServiceConfig, Unusable};
pub use machine::{
    Action, Desired, DesiredService, ExitView, ServiceView, State, Supervisor, SupervisorEvent,
    SupervisorOptions,
};
pub use reaper::Reaper;

/// Errors of the supervisor and the shim.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A file or socket operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Os {
        /// Which call.
        what: &'static str,
        /// The errno.
        #[source]
        source: nix::errno::Errno,
    },
    /// The service process could not be started.
    #[error("{0}")]
    Spawn(String),
    /// The connection to a shim was lost.
    #[error("lost the connection to the shim of {name}")]
    ShimLost {
        /// Service.
        name: String,
    },
    /// The shim refused a request.
    #[error("shim of {name}: {msg}")]
    ShimRefused {
        /// Service.
        name: String,
        /// Its reason.
        msg: String,
    },
    /// A malformed message.
    #[error("shim protocol: {0}")]
    Protocol(String),
    /// No such service.
    #[error("service {0:?} not found")]
    NotFound(String),
    /// The service is quarantined: its config cannot be acted on.
    #[error("service {name:?} is quarantined ({why}): fix its manifest or delete it")]
    Quarantined {
        /// Service.
        name: String,
        /// The field and why.
        why: String,
    },
    /// The supervisor task has ended.
    #[error("the supervisor has shut down")]
    Gone,
}

impl SupervisorError {
    pub(crate) fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        SupervisorError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}
