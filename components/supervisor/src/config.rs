//! What the supervisor runs: [`ServiceConfig`], the runtime form of a Service manifest, resolved
//! once at the edge (defaults applied, durations parsed) so the state machine never reads YAML
//! types.

use std::collections::BTreeMap;
use std::time::Duration;

use cloudlet_spec::ServiceManifest;

use crate::probe::ProbeSpec;
use crate::shim::proto::ProcessSpec;

/// When an exited service is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// After every exit.
    Always,
    /// After an exit with a non-zero code or by a signal.
    OnFailure,
    /// Never: the exit is final until an operator starts it.
    Never,
}

/// Restart policy and backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartSpec {
    /// The policy.
    pub policy: RestartPolicy,
    /// First backoff delay.
    pub initial: Duration,
    /// Largest backoff delay.
    pub max: Duration,
    /// A run at least this long resets the backoff; the restart after it is immediate.
    pub reset_after: Duration,
}

/// How a run is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSpec {
    /// Signal number sent first.
    pub signal: i32,
    /// Time before SIGKILL of the process group.
    pub grace: Duration,
}

/// One service as the supervisor runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Unique name on the node.
    pub name: String,
    /// The caller's name for this configuration (a digest of the manifest it came from), reported
    /// as the `run_tag` of a run that conforms to it; empty when the caller has none.
    pub tag: String,
    /// Labels, shown in status.
    pub labels: BTreeMap<String, String>,
    /// The process and its logs.
    pub process: ProcessSpec,
    /// Services that must be ready before this one starts.
    pub depends_on: Vec<String>,
    /// A `type: oneshot` step: done (and ready) once a run exits 0, never probed, not run
    /// again until its process changes or an operator starts it.
    pub oneshot: bool,
    /// Readiness probe; none means ready once running.
    pub readiness: Option<ProbeSpec>,
    /// Restart policy.
    pub restart: RestartSpec,
    /// Stop signal and grace period.
    pub stop: StopSpec,
    /// Its cgroup, relative to cloudlet's base: `services/<name>`, or `groups/<group>/<name>`
    /// for a transient service.
    pub cgroup: String,
    /// Its cgroup limits (`pids` is always set: 1024 unless the manifest says otherwise). The
    /// io limits are in `io`, by path, resolved to devices when the service starts.
    pub limits: cloudlet_cgroups::Limits,
    /// `io.max` limits by device path.
    pub io: Vec<IoSpec>,
}

/// An `io.max` limit on the block device of `device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoSpec {
    /// A block device, or a path on the filesystem to limit.
    pub device: std::path::PathBuf,
    /// Read bytes per second.
    pub rbps: Option<u64>,
    /// Written bytes per second.
    pub wbps: Option<u64>,
    /// Read operations per second.
    pub riops: Option<u64>,
    /// Write operations per second.
    pub wiops: Option<u64>,
}

/// `pids.max` of a service whose manifest sets none (the article's fix for leaked processes).
pub const DEFAULT_PIDS_MAX: u64 = 1024;

/// The PATH a service gets unless its manifest sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl ServiceConfig {
    /// Resolves a validated manifest.
    pub fn from_manifest(m: &ServiceManifest) -> ServiceConfig {
        let spec = &m.spec;
        let mut env: BTreeMap<String, String> = spec.env.clone().into_iter().collect();
        env.entry("PATH".into())
            .or_insert_with(|| DEFAULT_PATH.into());
        let effective = spec.effective();
        let (logs, restart, stop) = (effective.logs, effective.restart, effective.stop);
        ServiceConfig {
            name: m.metadata.name.clone(),
            tag: String::new(),
            labels: m.metadata.labels.clone().into_iter().collect(),
            process: ProcessSpec {
                argv: spec.command.clone(),
                env,
                cwd: spec.working_dir.clone(),
                user: spec.user.clone(),
                identity: None,
                log_max_size: logs.max_size,
                log_max_files: logs.max_files,
                cgroup: None,
            },
            depends_on: spec.depends_on.clone(),
            oneshot: spec.is_oneshot(),
            readiness: effective.readiness,
            restart: RestartSpec {
                policy: match restart.policy {
                    cloudlet_spec::RestartPolicy::Always => RestartPolicy::Always,
                    cloudlet_spec::RestartPolicy::OnFailure => RestartPolicy::OnFailure,
                    cloudlet_spec::RestartPolicy::Never => RestartPolicy::Never,
                },
                initial: restart.backoff_initial,
                max: restart.backoff_max,
                reset_after: restart.reset_after,
            },
            stop: StopSpec {
                signal: stop.signal.number(),
                grace: stop.grace_period,
            },
            cgroup: format!("{}/{}", cloudlet_cgroups::SERVICES, m.metadata.name),
            limits: cloudlet_cgroups::Limits {
                cpu_millis: effective.resources.cpu_limit_millicores,
                memory_bytes: effective.resources.memory_limit_bytes,
                pids: Some(effective.resources.pids_limit.unwrap_or(DEFAULT_PIDS_MAX)),
                io: Vec::new(),
            },
            io: spec
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .map(|l| {
                    l.io.iter()
                        .map(|io| IoSpec {
                            device: io.device.clone(),
                            rbps: io.rbps.as_ref().map(cloudlet_spec::Quantity::bytes),
                            wbps: io.wbps.as_ref().map(cloudlet_spec::Quantity::bytes),
                            riops: io.riops,
                            wiops: io.wiops,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}
