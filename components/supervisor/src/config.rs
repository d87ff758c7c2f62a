//! What the supervisor runs: [`ServiceConfig`], the runtime form of a Service manifest, resolved
//! once at the edge (defaults applied, durations parsed) so the state machine never reads YAML
//! types, and [`ServiceConfig::check`], the supervisor's own test of whether it can act on one.
//!
//! The check does not trust that a config came through manifest validation (a store written by
//! an older version, or a caller building configs by hand, may hold anything): a config that fails
//! it is quarantined by the machine (state `invalid`), never run, and never takes the process down.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Component;
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

/// Why the supervisor cannot act on a [`ServiceConfig`]: the field (as the manifest names it) and
/// the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    /// The field, e.g. `spec.stop.gracePeriod`.
    pub field: String,
    /// Why it cannot be acted on.
    pub reason: String,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

fn unusable(field: impl Into<String>, reason: impl Into<String>) -> Unusable {
    Unusable {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The longest duration the supervisor acts on ([`cloudlet_spec::MAX_DURATION`], ten years):
/// every deadline it derives from one (`now + duration`) is then representable.
pub const MAX_DURATION: Duration = cloudlet_spec::MAX_DURATION;

impl ServiceConfig {
    /// Whether the supervisor can act on this config: its name is a file name, its process can
    /// be executed (a command, no NUL byte), every duration is at most [`MAX_DURATION`], its
    /// signal exists, its readiness probe has a period, its cgroup is a relative path, its log
    /// rotation is within the spec's bounds and it does not depend on itself. The first problem
    /// found is returned.
    pub fn check(&self) -> Result<(), Unusable> {
        cloudlet_spec::check_name(&self.name).map_err(|e| unusable("metadata.name", e))?;
        let p = &self.process;
        if p.argv.is_empty() {
            return Err(unusable("spec.command", "is empty"));
        }
        let nul = "contains a NUL byte";
        for (i, arg) in p.argv.iter().enumerate() {
            if arg.contains('\0') {
                return Err(unusable(format!("spec.command[{i}]"), nul));
            }
        }
        for (k, v) in &p.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(unusable(
                    format!("spec.env.{k}"),
                    "a name must be non-empty, without '=' or NUL",
                ));
            }
            if v.contains('\0') {
                return Err(unusable(format!("spec.env.{k}"), nul));
            }
        }
        if p.cwd
            .as_ref()
            .is_some_and(|c| c.as_os_str().as_encoded_bytes().contains(&0))
        {
            return Err(unusable("spec.workingDir", nul));
        }
        if p.user.as_ref().is_some_and(|u| u.contains('\0')) {
            return Err(unusable("spec.user", nul));
        }
        if !(1..=cloudlet_spec::MAX_LOG_MAX_FILES).contains(&p.log_max_files) {
            return Err(unusable(
                "spec.logs.maxFiles",
                format!(
                    "must be 1 to {}, got {}",
                    cloudlet_spec::MAX_LOG_MAX_FILES,
                    p.log_max_files
                ),
            ));
        }
        if p.log_max_size < cloudlet_spec::MIN_LOG_MAX_SIZE {
            return Err(unusable(
                "spec.logs.maxSize",
                format!(
                    "must be at least {} bytes, got {}",
                    cloudlet_spec::MIN_LOG_MAX_SIZE,
                    p.log_max_size
                ),
            ));
        }
        let mut durations = vec![
            ("spec.restart.backoff.initial", self.restart.initial),
            ("spec.restart.backoff.max", self.restart.max),
            ("spec.restart.resetAfter", self.restart.reset_after),
            ("spec.stop.gracePeriod", self.stop.grace),
        ];
        if let Some(r) = &self.readiness {
            durations.extend([
                ("spec.readiness.initialDelaySeconds", r.initial_delay),
                ("spec.readiness.periodSeconds", r.period),
                ("spec.readiness.timeoutSeconds", r.timeout),
            ]);
            if r.period.is_zero() {
                return Err(unusable(
                    "spec.readiness.periodSeconds",
                    "must be more than 0",
                ));
            }
        }
        for (field, d) in durations {
            if d > MAX_DURATION {
                return Err(unusable(
                    field,
                    format!("{d:?} is longer than the longest the supervisor acts on (87600h)"),
                ));
            }
        }
        if nix::sys::signal::Signal::try_from(self.stop.signal).is_err() {
            return Err(unusable(
                "spec.stop.signal",
                format!("{} is not a signal", self.stop.signal),
            ));
        }
        let rel = std::path::Path::new(&self.cgroup);
        if self.cgroup.is_empty()
            || self.cgroup.contains('\0')
            || !rel.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(unusable(
                "cgroup",
                format!(
                    "{:?} is not a relative path of plain names (from metadata.name and the \
                     transient group)",
                    self.cgroup
                ),
            ));
        }
        if self.depends_on.contains(&self.name) {
            return Err(unusable(
                "spec.dependsOn",
                "a service cannot depend on itself",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ServiceConfig {
        let yaml = "apiVersion: cloudlet/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  \
                    command: [/bin/true]\n  readiness: {tcp: {port: 80}}\n";
        let docs = cloudlet_spec::parse_file("web.yaml", yaml).unwrap();
        let [cloudlet_spec::Manifest::Service(m)] = docs.as_slice() else {
            panic!("one service: {docs:?}");
        };
        ServiceConfig::from_manifest(m)
    }

    /// Each config the supervisor cannot act on names its field.
    #[test]
    fn check_names_the_field_it_cannot_act_on() {
        assert_eq!(base().check(), Ok(()));
        let too_long = MAX_DURATION + Duration::from_secs(1);
        type Change = Box<dyn Fn(&mut ServiceConfig)>;
        let table: Vec<(&str, Change)> = vec![
            ("metadata.name", Box::new(|c| c.name = "../x".into())),
            ("spec.command", Box::new(|c| c.process.argv.clear())),
            (
                "spec.command[0]",
                Box::new(|c| c.process.argv[0] = "a\0b".into()),
            ),
            (
                "spec.env.A=B",
                Box::new(|c| {
                    c.process.env.insert("A=B".into(), "v".into());
                }),
            ),
            (
                "spec.env.A",
                Box::new(|c| {
                    c.process.env.insert("A".into(), "\0".into());
                }),
            ),
            (
                "spec.workingDir",
                Box::new(|c| c.process.cwd = Some("/a\0".into())),
            ),
            (
                "spec.user",
                Box::new(|c| c.process.user = Some("a\0".into())),
            ),
            (
                "spec.logs.maxFiles",
                Box::new(|c| c.process.log_max_files = 0),
            ),
            (
                "spec.logs.maxSize",
                Box::new(|c| c.process.log_max_size = 1),
            ),
            (
                "spec.restart.backoff.initial",
                Box::new(move |c| c.restart.initial = too_long),
            ),
            (
                "spec.restart.backoff.max",
                Box::new(move |c| c.restart.max = Duration::MAX),
            ),
            (
                "spec.restart.resetAfter",
                Box::new(move |c| c.restart.reset_after = too_long),
            ),
            (
                "spec.stop.gracePeriod",
                Box::new(|c| c.stop.grace = Duration::MAX),
            ),
            ("spec.stop.signal", Box::new(|c| c.stop.signal = 0)),
            (
                "spec.readiness.periodSeconds",
                Box::new(|c| {
                    c.readiness.as_mut().unwrap().period = Duration::ZERO;
                }),
            ),
            (
                "spec.readiness.periodSeconds",
                Box::new(|c| {
                    c.readiness.as_mut().unwrap().period = Duration::MAX;
                }),
            ),
            (
                "spec.readiness.timeoutSeconds",
                Box::new(|c| {
                    c.readiness.as_mut().unwrap().timeout = Duration::MAX;
                }),
            ),
            (
                "spec.readiness.initialDelaySeconds",
                Box::new(|c| {
                    c.readiness.as_mut().unwrap().initial_delay = Duration::MAX;
                }),
            ),
            ("cgroup", Box::new(|c| c.cgroup = "services/../x".into())),
            ("cgroup", Box::new(|c| c.cgroup = "/services/x".into())),
            ("cgroup", Box::new(|c| c.cgroup = String::new())),
            (
                "spec.dependsOn",
                Box::new(|c| c.depends_on.push("web".into())),
            ),
        ];
        for (field, change) in table {
            let mut c = base();
            change(&mut c);
            let why = c.check().expect_err(field);
            assert_eq!(why.field, field, "{why}");
        }
    }
}
