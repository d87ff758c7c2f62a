//! The manifest types: these structs ARE the YAML contract (camelCase, unknown fields rejected).
//!
//! Optional fields stay `Option` here so that what was written serialises back unchanged; read
//! effective values (defaults applied) through [`ServiceSpec::effective`]. This module never
//! parses files or validates semantics: see `parse` and `validate`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::SpecError;
use crate::units::{CpuQuantity, Duration, Quantity};

/// One parsed document: a manifest of some kind. Grows a variant per kind (`Cluster` is next).
#[derive(Clone, Debug, PartialEq)]
pub enum Manifest {
    /// `kind: Service`.
    Service(ServiceManifest),
}

impl Manifest {
    /// The kind of this manifest.
    pub fn kind(&self) -> Kind {
        match self {
            Manifest::Service(_) => Kind::Service,
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        match self {
            Manifest::Service(service) => &service.metadata.name,
        }
    }

    /// Where the manifest was read from, if it was read from a file.
    pub fn source(&self) -> Option<&Source> {
        match self {
            Manifest::Service(service) => service.source(),
        }
    }

    /// The service manifest, if this is one.
    pub fn as_service(&self) -> Option<&ServiceManifest> {
        match self {
            Manifest::Service(service) => Some(service),
        }
    }
}

/// Where a manifest came from: a file name (as given by the caller) and a 1-based document number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The file name as the caller passed it to [`crate::parse_file`].
    pub file: String,
    /// 1-based position of the document in the file (empty documents count).
    pub document: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)
    }
}

/// `apiVersion`: the only version is `cloudlet/v1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiVersion {
    /// `cloudlet/v1`.
    #[serde(rename = "cloudlet/v1")]
    V1,
}

impl ApiVersion {
    /// The text written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "cloudlet/v1",
        }
    }
}

/// `kind`: which manifest type a document holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A supervised service.
    Service,
}

impl Kind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [Kind; 1] = [Kind::Service];

    /// The text written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
        }
    }
}

/// A `kind: Service` manifest.
///
/// Equality ignores [`ServiceManifest::source`]: the same manifest read from two places is equal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct ServiceManifest {
    /// Always [`ApiVersion::V1`].
    pub api_version: ApiVersion,
    /// Always [`Kind::Service`].
    pub kind: Kind,
    /// Name and labels.
    pub metadata: Metadata,
    /// What to run and how.
    pub spec: ServiceSpec,
    /// Where it was parsed from; not part of the contract, so never serialised.
    #[serde(skip)]
    source: Option<Source>,
}

impl ServiceManifest {
    /// A manifest that was not read from a file.
    pub fn new(metadata: Metadata, spec: ServiceSpec) -> Self {
        Self {
            api_version: ApiVersion::V1,
            kind: Kind::Service,
            metadata,
            spec,
            source: None,
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// Where the manifest was parsed from, if it was parsed from a file.
    pub fn source(&self) -> Option<&Source> {
        self.source.as_ref()
    }

    /// Records where the manifest was parsed from (error messages name it).
    pub fn set_source(&mut self, source: Source) {
        self.source = Some(source);
    }
}

impl PartialEq for ServiceManifest {
    fn eq(&self, other: &Self) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
            api_version,
            kind,
            metadata,
            spec,
            source: _,
        } = self;
        *api_version == other.api_version
            && *kind == other.kind
            && *metadata == other.metadata
            && *spec == other.spec
    }
}

/// `metadata`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct Metadata {
    /// DNS-label-like name, unique per node: `[a-z][a-z0-9-]{0,62}`, not ending with `-`.
    pub name: String,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `spec` of a Service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct ServiceSpec {
    /// `daemon` (default): runs until stopped, restarted by its policy. `oneshot`: a step that
    /// runs to completion; done (ready, for its dependants) once it exits 0, retried with
    /// backoff while it fails, run again only when its manifest changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<ServiceType>,
    /// Program and arguments; never empty.
    pub command: Vec<String>,
    /// Environment variables added to the service's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Absolute working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// User name or numeric uid to run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Services that must be ready before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ReadinessSpec>,
    /// Restart policy and backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartSpec>,
    /// How to stop the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSpec>,
    /// Log rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogsSpec>,
    /// Resource requests (for placement) and limits (enforced by cgroups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    /// Give the service the node's executor socket (path in `CLOUDLET_EXECUTOR`), through which
    /// it may run host commands and start daemons that outlive it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executor: bool,
    /// Where in the cluster it runs; without it, one replica that never relocates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSpec>,
    /// Files its node writes before each start (its configuration); a change of one restarts
    /// the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSpec>,
    /// How a change rolls over the nodes that run it: `maxUnavailable` nodes (or replicas) at a
    /// time, each step ready within `progressDeadline` or the service rolls back by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::cluster::RolloutSpec>,
}

/// `spec.files[]`: a file written whole before the service starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct FileSpec {
    /// Absolute path.
    pub path: PathBuf,
    /// The text.
    pub content: String,
    /// Permission bits as an octal string (default `0644`; use `0600` for secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The file's owner, `user` or `user:group` (names or numeric ids; default root), for a
    /// service that runs as another user and must read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl FileSpec {
    /// The permission bits (`0644` unless `mode` says otherwise; `mode` is validated).
    pub fn mode_bits(&self) -> u32 {
        self.mode
            .as_deref()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .unwrap_or(0o644)
    }
}

impl ServiceSpec {
    /// Whether this is a `type: oneshot` step.
    pub fn is_oneshot(&self) -> bool {
        self.r#type == Some(ServiceType::Oneshot)
    }

    /// A spec that runs `command` with every optional section left out.
    pub fn new(command: Vec<String>) -> Self {
        Self {
            r#type: None,
            command,
            env: BTreeMap::new(),
            working_dir: None,
            user: None,
            depends_on: Vec::new(),
            readiness: None,
            restart: None,
            stop: None,
            logs: None,
            resources: None,
            executor: false,
            placement: None,
            files: Vec::new(),
            rollout: None,
        }
    }
}

/// `spec.type`: how a service's life ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// Runs until stopped; an exit is handled by the restart policy.
    #[default]
    Daemon,
    /// Runs to completion: exit 0 is done (systemd's `Type=oneshot` with `RemainAfterExit`,
    /// Compose's `service_completed_successfully`).
    Oneshot,
}

impl ServiceType {
    /// The text written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Daemon => "daemon",
            ServiceType::Oneshot => "oneshot",
        }
    }
}

/// `spec.readiness`: exactly one of `http`, `tcp`, `exec`, plus timing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct ReadinessSpec {
    /// HTTP GET probe: ready on a 2xx or 3xx answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbeSpec>,
    /// TCP connect probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbeSpec>,
    /// Command probe: ready when it exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbeSpec>,
    /// Seconds between probes (default 10, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    /// Seconds before a probe counts as failed (default 1, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// Consecutive failures before not-ready (default 3, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    /// Consecutive successes before ready (default 1, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    /// Seconds to wait after start before the first probe (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
}

/// `spec.readiness.http`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct HttpProbeSpec {
    /// Port, 1..=65535.
    pub port: u16,
    /// Request path (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Host to connect to (default `127.0.0.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `HTTP` (default) or `HTTPS`. Over HTTPS the server's certificate is not verified (as
    /// the kubelet's probes): the probe asks whether the service answers, not who it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<ProbeScheme>,
}

/// `spec.readiness.http.scheme`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeScheme {
    /// Plain HTTP.
    #[serde(rename = "HTTP")]
    Http,
    /// HTTP over TLS.
    #[serde(rename = "HTTPS")]
    Https,
}

/// `spec.readiness.tcp`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct TcpProbeSpec {
    /// Port, 1..=65535.
    pub port: u16,
    /// Host to connect to (default `127.0.0.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// `spec.readiness.exec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct ExecProbeSpec {
    /// Program and arguments; never empty.
    pub command: Vec<String>,
}

/// `spec.restart`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct RestartSpec {
    /// When to restart (default `always`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RestartPolicy>,
    /// Delay between restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffSpec>,
    /// Running this long resets the backoff (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_after: Option<Duration>,
}

/// `spec.restart.backoff`: the delay starts at `initial` and doubles up to `max`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct BackoffSpec {
    /// First delay (default 100ms, more than 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<Duration>,
    /// Largest delay (default 30s, at least `initial`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

/// `spec.restart.policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart whenever the service exits.
    Always,
    /// Restart only when it exits non-zero or is killed by a signal.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// The text written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `spec.stop`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct StopSpec {
    /// First signal sent (default `SIGTERM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    /// Time between the signal and SIGKILL (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Duration>,
}

/// A stop signal. Written with or without the `SIG` prefix, or as its number; stored as `SIGTERM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// SIGHUP (1).
    Hup,
    /// SIGINT (2).
    Int,
    /// SIGQUIT (3).
    Quit,
    /// SIGKILL (9).
    Kill,
    /// SIGUSR1 (10).
    Usr1,
    /// SIGUSR2 (12).
    Usr2,
    /// SIGTERM (15).
    Term,
    /// SIGWINCH (28).
    Winch,
}

impl Signal {
    /// Every accepted signal.
    pub const ALL: [Signal; 8] = [
        Signal::Term,
        Signal::Int,
        Signal::Quit,
        Signal::Hup,
        Signal::Kill,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Winch,
    ];

    /// Canonical name, e.g. `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Kill => "SIGKILL",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Term => "SIGTERM",
            Signal::Winch => "SIGWINCH",
        }
    }

    /// Signal number on Linux.
    pub fn number(self) -> i32 {
        match self {
            Signal::Hup => 1,
            Signal::Int => 2,
            Signal::Quit => 3,
            Signal::Kill => 9,
            Signal::Usr1 => 10,
            Signal::Usr2 => 12,
            Signal::Term => 15,
            Signal::Winch => 28,
        }
    }

    fn unknown(text: &str) -> SpecError {
        let names: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
        SpecError::InvalidValue(format!(
            "unknown signal {text:?}, expected one of {} (the SIG prefix is optional)",
            names.join(", ")
        ))
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Signal {
    type Err = SpecError;

    /// Accepts `SIGTERM`, `TERM`, `sigterm`, `term` or `15`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let upper = text.to_ascii_uppercase();
        let short = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::ALL
            .into_iter()
            .find(|s| s.name().strip_prefix("SIG") == Some(short) || s.number().to_string() == text)
            .ok_or_else(|| Signal::unknown(text))
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SignalVisitor;
        impl Visitor<'_> for SignalVisitor {
            type Value = Signal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a signal name such as SIGTERM")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Signal, E> {
                text.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Signal, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Signal, E> {
                self.visit_str(&n.to_string())
            }
        }
        deserializer.deserialize_any(SignalVisitor)
    }
}

/// `spec.logs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct LogsSpec {
    /// Rotate the log file at this size (default 10Mi, at least 4Ki).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Quantity>,
    /// Rotated files to keep (default 5, 1..=100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u32>,
}

/// `spec.placement`: on every matching node, or `replicas` copies on distinct nodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct PlacementSpec {
    /// One copy on every node the selector matches, including nodes that join later.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub every_node: bool,
    /// Copies on distinct nodes (default 1); not with `everyNode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Which nodes may run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<NodeSelectorSpec>,
    /// Start a copy elsewhere when its node is lost or drained. Off by default: a service that
    /// manages a host (VMs, its network) must never run twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relocate: bool,
}

/// `spec.placement.nodeSelector`: a node matches when it has any of `roles` (or `roles` is
/// empty) and every label in `labels`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct NodeSelectorSpec {
    /// Node roles, any of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<NodeRole>,
    /// Labels, all of.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What a node is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Runs the control services.
    Control,
    /// Runs VMs and their host services.
    Compute,
}

impl NodeRole {
    /// The role as written in manifests and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Control => "control",
            NodeRole::Compute => "compute",
        }
    }
}

impl std::str::FromStr for NodeRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "control" => Ok(NodeRole::Control),
            "compute" => Ok(NodeRole::Compute),
            other => Err(format!(
                "unknown role {other:?}: expected control or compute"
            )),
        }
    }
}

/// `spec.resources`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct ResourcesSpec {
    /// What placement reserves for the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceRequests>,
    /// What the service's cgroup enforces; each at least its request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceLimits>,
}

/// `spec.resources.requests`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct ResourceRequests {
    /// CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuQuantity>,
    /// Memory in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// `spec.resources.limits`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct ResourceLimits {
    /// CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuQuantity>,
    /// Memory in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Largest number of processes and threads (more than 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Block I/O limits, per device (`io.max`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io: Vec<IoLimitSpec>,
}

/// `spec.resources.limits.io[]`: bandwidth and IOPS limits on one block device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct IoLimitSpec {
    /// A block device (`/dev/vda`) or any absolute path on the filesystem to limit (its disk).
    pub device: PathBuf,
    /// Read bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbps: Option<Quantity>,
    /// Written bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wbps: Option<Quantity>,
    /// Read operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub riops: Option<u64>,
    /// Write operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wiops: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        for (text, want) in [
            ("SIGTERM", Signal::Term),
            ("TERM", Signal::Term),
            ("term", Signal::Term),
            ("15", Signal::Term),
            ("INT", Signal::Int),
            ("SIGQUIT", Signal::Quit),
            ("HUP", Signal::Hup),
            ("KILL", Signal::Kill),
            ("USR1", Signal::Usr1),
            ("SIGUSR2", Signal::Usr2),
            ("WINCH", Signal::Winch),
        ] {
            assert_eq!(text.parse::<Signal>().unwrap(), want, "{text}");
        }
        for text in ["", "SIG", "STOP", "SIGFOO", "99", "SIGSIGTERM"] {
            let err = text.parse::<Signal>().unwrap_err().to_string();
            assert!(err.starts_with(&format!("unknown signal {text:?}, expected one of SIGTERM")));
        }
        // Stored canonically, whatever was written.
        let signal: Signal = serde_json::from_str("\"TERM\"").unwrap();
        assert_eq!(serde_json::to_string(&signal).unwrap(), "\"SIGTERM\"");
        let signal: Signal = serde_json::from_str("9").unwrap();
        assert_eq!(signal, Signal::Kill);
    }
}
