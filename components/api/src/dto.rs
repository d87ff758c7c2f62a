//! The JSON contract of the cloudlet API: request and response bodies, stream items and query
//! parameters.
//!
//! These types are the wire format and nothing else. The core's own types are never `Serialize`;
//! `cmd/cloudlet` converts them to these by hand. Keys are camelCase, timestamps are RFC 3339
//! strings, and an absent optional value is `null` (never a missing key), so clients can rely on
//! every key being there. Unknown keys are ignored, so a newer server can add keys without
//! breaking older clients. This module never does I/O.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};

/// Where a service is in its life on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Waiting for its dependencies to become ready.
    Waiting,
    /// Started, not yet ready.
    Starting,
    /// Running.
    Running,
    /// Exited; waiting out the restart backoff.
    Backoff,
    /// Being stopped.
    Stopping,
    /// Stopped on request, or exited and not restarted by policy.
    Stopped,
    /// Gave up: cannot be started as specified.
    Failed,
    /// A oneshot step that exited 0: done, and ready for its dependants.
    Completed,
    /// Quarantined: its node cannot act on its configuration (the message says which field and
    /// why); not started until the manifest is fixed, and `ctl delete` always works.
    Invalid,
    /// Assigned to a node that has not reported it yet, or not placeable (the message says why).
    Pending,
    /// Its node is lost: what runs there is not known. Also what a state this version does not
    /// know reads as (a newer agent's, during an upgrade): the rest of its report still counts.
    #[serde(other)]
    Unknown,
}

/// What the operator asked a service to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Keep it running.
    Running,
    /// Keep it stopped.
    Stopped,
}

/// How a run of a service ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitInfo {
    /// The exit code, when it exited by itself.
    pub code: Option<i32>,
    /// The signal that ended it, e.g. `SIGKILL`.
    pub signal: Option<String>,
    /// `Completed`, `Error`, `Signaled` (later also `OOMKilled`).
    pub reason: String,
    /// When it ended.
    pub at: Timestamp,
}

/// The status of one service on one node, one row of `cloudlet ctl get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// Node it runs on.
    pub node: String,
    /// Where it is in its life.
    pub state: ServiceState,
    /// Whether its readiness probe passes.
    pub ready: bool,
    /// Its main process, `null` when not running.
    pub pid: Option<u32>,
    /// How many times it was restarted.
    pub restarts: u64,
    /// The number of its current (or last) run.
    pub run: u64,
    /// How its last run ended.
    pub last_exit: Option<ExitInfo>,
    /// When it entered `state`.
    pub since: Timestamp,
    /// Dependencies it is waiting for (in state `waiting`).
    pub waiting_for: Vec<String>,
    /// A human explanation of the state, if any.
    pub message: Option<String>,
    /// The service's labels.
    pub labels: BTreeMap<String, String>,
    /// What the operator asked for.
    pub desired: DesiredState,
    /// When the next restart is due (in state `backoff`).
    pub next_restart_at: Option<Timestamp>,
    /// Log lines lost (counted, never silently).
    pub dropped_log_lines: u64,
    /// Who started it, for a transient service (`ctl run`): a service name or `operator`.
    pub owner: Option<String>,
    /// Its group, for a transient service.
    pub group: Option<String>,
    /// `enforced`, or `not enforced (<reason>)` when this host cannot apply cgroup limits.
    pub limits: Option<String>,
    /// A digest of the manifest its current (or last) run conforms to: how a rollout tells the
    /// new version's run from the old one's. `None` before the first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_digest: Option<String>,
}

/// Everything about one service, for `cloudlet ctl describe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDetail {
    /// Its status.
    pub status: ServiceStatus,
    /// The applied manifest, as JSON.
    pub manifest: serde_json::Value,
    /// Its recent events, oldest first.
    pub events: Vec<Event>,
    /// Where its log files are.
    pub log_dir: String,
    /// Its cgroup's limits, usage and pressure, when it has a cgroup.
    pub usage: Option<ServiceUsage>,
}

/// Something that happened, to a service or to the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Store revision of the event; events are ordered by it.
    pub revision: u64,
    /// When it happened.
    pub time: Timestamp,
    /// The service it concerns, `null` for node events.
    pub service: Option<String>,
    /// The node it happened on.
    pub node: String,
    /// `Started`, `Exited`, `Ready`, `Unready`, `Restarting`, `BackOff`, `Stopping`, `Stopped`,
    /// `Applied`, `Deleted`, `Adopted`, ...
    pub reason: String,
    /// A human explanation.
    pub message: String,
    /// How the run ended, for `Exited`.
    pub exit: Option<ExitInfo>,
}

/// One manifest file to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyFile {
    /// File name as the operator gave it, for error messages.
    pub name: String,
    /// The file's YAML text.
    pub content: String,
}

/// Body of `POST /v1/apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyRequest {
    /// The files, applied together.
    pub files: Vec<ApplyFile>,
    /// Roll out again a manifest a rollout rolled back from (otherwise such a service is held
    /// at the manifest it was rolled back to).
    #[serde(default)]
    pub retry: bool,
}

/// What apply did to one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    /// It is new.
    Created,
    /// It existed and changed.
    Configured,
    /// It existed and is the same.
    Unchanged,
    /// Its new manifest is one a rollout rolled back from: it keeps the one it has.
    Held,
}

/// One service in an [`ApplyResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyItem {
    /// Service name.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// What happened to it.
    pub action: ApplyAction,
    /// Why it was held (with [`ApplyAction::Held`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// Answer to `POST /v1/apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    /// One item per service, in file order.
    pub items: Vec<ApplyItem>,
}

/// What to do to a service: `POST /v1/services/{name}/start|stop|restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Start it (desired: running).
    Start,
    /// Stop it (desired: stopped).
    Stop,
    /// Stop it and start it again.
    Restart,
}

impl Action {
    /// The path segment of the action.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Answer to start, stop, restart and delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionResponse {
    /// Service name.
    pub name: String,
    /// What was done, for the operator.
    pub message: String,
}

/// One line of a service's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// When it was read.
    pub ts: Timestamp,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The run of the service that wrote it.
    pub run: u64,
    /// The line was cut (too long, or the run ended without a newline).
    pub partial: bool,
    /// The text, without the newline.
    pub text: String,
}

/// Query of `GET /v1/services/{name}/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LogsQuery {
    /// Keep the stream open and send new lines as they are written. `?follow` alone means true.
    #[serde(deserialize_with = "lenient_bool")]
    pub follow: bool,
    /// Only the last N lines (before following).
    pub tail: Option<usize>,
    /// Only lines at or after this time.
    pub since: Option<Timestamp>,
    /// The previous run's lines instead of the current run's. `?previous` alone means true.
    #[serde(deserialize_with = "lenient_bool")]
    pub previous: bool,
    /// The node whose copy to read (a service that runs on several).
    pub node: Option<String>,
}

/// Query of `GET /v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EventsQuery {
    /// Keep the stream open and send new events as they happen. `?follow` alone means true.
    #[serde(deserialize_with = "lenient_bool")]
    pub follow: bool,
    /// Only events of this service.
    pub service: Option<String>,
    /// Only events with a revision greater than this one.
    pub since_revision: Option<u64>,
    /// At most this many (the most recent) events before following.
    pub limit: Option<usize>,
}

/// Body of every error answer, and the last line of a stream that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// What went wrong, for the operator.
    pub error: String,
}

/// A bool that also accepts the query-string forms `""` (a bare `?follow`), `1`, `0`, `yes`, `no`.
fn lenient_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a boolean (true, false, 1, 0, or empty for true)")
        }
        fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<bool, E> {
            Ok(value)
        }
        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<bool, E> {
            match value {
                "" | "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(E::invalid_value(serde::de::Unexpected::Str(value), &self)),
            }
        }
    }
    deserializer.deserialize_any(Visitor)
}

/// `POST /v1/run`: start a transient service — a daemon in a cgroup of its own that outlives the
/// service that asked for it, stopped and removed only explicitly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRequest {
    /// Service name (unique on the node).
    pub name: String,
    /// Group of transient services it belongs to (its cgroup is `groups/<group>/<name>`).
    pub group: Option<String>,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Memory limit as a quantity (`2Gi`).
    pub memory: Option<String>,
    /// CPU limit as a quantity (`2`, `500m`).
    pub cpu: Option<String>,
    /// Process limit.
    pub pids: Option<u64>,
    /// Restart policy: `always`, `on-failure` or `never` (the default for a transient service).
    pub restart: Option<String>,
}

impl RunRequest {
    /// The service manifest this request asks for, as a JSON document (which is YAML), in
    /// `group`: what the node validates like any manifest before it stores the service.
    pub fn manifest(&self, group: &str) -> serde_json::Value {
        let mut limits = serde_json::Map::new();
        if let Some(m) = &self.memory {
            limits.insert("memory".into(), m.clone().into());
        }
        if let Some(c) = &self.cpu {
            limits.insert("cpu".into(), c.clone().into());
        }
        if let Some(p) = self.pids {
            limits.insert("pids".into(), p.into());
        }
        let mut spec = serde_json::json!({
            "command": self.command,
            "restart": {"policy": self.restart.clone().unwrap_or_else(|| "never".to_owned())},
        });
        if !self.env.is_empty() {
            spec["env"] = serde_json::to_value(&self.env).unwrap_or_default();
        }
        if let Some(dir) = &self.working_dir {
            spec["workingDir"] = dir.clone().into();
        }
        if !limits.is_empty() {
            spec["resources"] = serde_json::json!({ "limits": limits });
        }
        serde_json::json!({
            "apiVersion": "cloudlet/v1",
            "kind": "Service",
            "metadata": {"name": self.name, "labels": {"cloudlet.group": group}},
            "spec": spec,
        })
    }
}

/// `POST /v1/exec`: run a command on the host to completion, streaming its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRequest {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Kill the command (its process group) after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// The node to run it on (the server's own node when absent).
    #[serde(default)]
    pub node: Option<String>,
}

/// One item of an exec stream: a chunk of output, or (last) how the command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecOutput {
    /// `stdout` or `stderr` for output; `None` for the final item.
    pub stream: Option<String>,
    /// Output text (lossy UTF-8).
    pub data: Option<String>,
    /// Exit code, in the final item.
    pub exit_code: Option<i32>,
    /// Signal name, in the final item, when the command was killed.
    pub signal: Option<String>,
    /// Whether the timeout killed it, in the final item.
    pub timed_out: Option<bool>,
}

/// A service's cgroup: what it may use, what it uses, and how it is held back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceUsage {
    /// The cgroup's path.
    pub cgroup: String,
    /// `memory.current`, bytes.
    pub memory_current: Option<u64>,
    /// `memory.max`: bytes, or `max`.
    pub memory_max: Option<String>,
    /// `pids.current`.
    pub pids_current: Option<u64>,
    /// `pids.max`: a number, or `max`.
    pub pids_max: Option<String>,
    /// `cpu.stat` usage_usec.
    pub cpu_usage_usec: Option<u64>,
    /// `cpu.stat` nr_throttled.
    pub cpu_nr_throttled: Option<u64>,
    /// `cpu.stat` throttled_usec.
    pub cpu_throttled_usec: Option<u64>,
    /// `memory.events` oom_kill: processes the OOM killer ended.
    pub oom_kills: Option<u64>,
    /// `pids.events` max: forks refused by `pids.max`.
    pub pids_max_hits: Option<u64>,
    /// `cpu|memory|io.pressure`: the `some` averages over 10 and 60 seconds, in percent.
    pub pressure: BTreeMap<String, PressureAverages>,
}

/// PSI `some` averages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PressureAverages {
    /// Over 10 s.
    pub avg10: f64,
    /// Over 60 s.
    pub avg60: f64,
}

/// CPU, memory and process counts of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeResources {
    /// Thousandths of a CPU.
    pub cpu_millis: u64,
    /// Bytes.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub pids: u64,
}

/// One watched filesystem of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeDisk {
    /// The watched path (the data dir, or one the node config lists).
    pub path: String,
    /// Where its filesystem is mounted.
    pub mount_point: String,
    /// Size.
    pub total_bytes: u64,
    /// Free for unprivileged use.
    pub free_bytes: u64,
    /// Free, in percent (the lower of space and inodes).
    pub free_pct: f64,
}

/// A pressure condition: a warning, never a reason to stop anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCondition {
    /// `MemoryPressure`, `DiskPressure`, `PIDPressure`, `CPUPressure`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether it holds now.
    pub status: bool,
    /// `warning` or `critical` while it holds.
    pub severity: Option<String>,
    /// What was measured, against which threshold.
    pub reason: String,
    /// When the status last changed.
    pub since: Timestamp,
}

/// A node: what it has, what it keeps for itself, what services may request, and its
/// conditions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Name.
    pub name: String,
    /// Total resources.
    pub capacity: NodeResources,
    /// Kept for the system.
    pub reserve: NodeResources,
    /// Capacity less reserve: what services may request.
    pub allocatable: NodeResources,
    /// What the node's services request.
    pub requested: NodeResources,
    /// Memory available now.
    pub memory_available_bytes: u64,
    /// Processes and threads now.
    pub pids_in_use: u64,
    /// Watched filesystems.
    pub disks: Vec<NodeDisk>,
    /// Pressure conditions (every kind present).
    pub conditions: Vec<NodeCondition>,
    /// `enforced`, or `not enforced (<why>)`.
    pub limits: String,
    /// When this was read.
    pub observed_at: Timestamp,
    /// What the node is for: `control`, `compute`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The node's labels (placement selects on them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `Ready`, `Lost` (no heartbeat for `nodeLostAfter`) or `Unknown` (not heard from since the
    /// server started).
    #[serde(default)]
    pub state: String,
    /// No new placements (`ctl cordon`).
    #[serde(default)]
    pub cordoned: bool,
    /// Relocatable services are being moved off (`ctl drain`).
    #[serde(default)]
    pub draining: bool,
    /// The agent's API (`https://host:port`), where the server fetches logs and runs exec.
    #[serde(default)]
    pub address: Option<String>,
    /// When the server last heard from it.
    #[serde(default)]
    pub last_heartbeat: Option<Timestamp>,
    /// When its node certificate expires.
    #[serde(default)]
    pub cert_not_after: Option<Timestamp>,
    /// Its node certificate's serial number (lowercase hex): what deleting the node revokes.
    #[serde(default)]
    pub cert_serial: Option<String>,
    /// How many services are assigned to it.
    #[serde(default)]
    pub services: u64,
}

/// Which services `GET /v1/services` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServicesQuery {
    /// Only this node's services.
    pub node: Option<String>,
}

/// The node a per-service verb is for (`?node=N`); without it, the service's only node, or every
/// node that runs it (restart).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeQuery {
    /// The node.
    pub node: Option<String>,
}

/// `POST /v1/join`: an agent with a join token asks for its node certificate. Its `Debug` shows
/// neither the token's secret nor the node secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    /// The token's `<id>.<secret>` part (the CA hash was checked by the agent).
    pub token: String,
    /// The node's name; becomes its certificate's common name.
    pub node_name: String,
    /// A PEM certificate signing request; the key stays on the node.
    pub csr: String,
    /// Labels to start with.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The agent's API (`https://host:port`).
    pub address: Option<String>,
    /// The node's secret, made at its first join and kept in `DIR/pki/node-secret`: the server
    /// binds the name to it, and a later join under the name must bring it (k3s' node password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_secret: Option<String>,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("token", &redacted_token(&self.token))
            .field("node_name", &self.node_name)
            .field("csr", &self.csr)
            .field("labels", &self.labels)
            .field("address", &self.address)
            .field(
                "node_secret",
                &self.node_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A join token as logs may show it: its public id (`K10<hash>::<id>.` or `<id>.`), never the
/// secret after the last dot.
pub fn redacted_token(token: &str) -> String {
    match token.rsplit_once('.') {
        Some((public, _)) => format!("{public}.<redacted>"),
        None => "<redacted>".to_owned(),
    }
}

/// Answer to a join or a renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateResponse {
    /// The signed certificate (PEM).
    pub certificate: String,
    /// Every CA the cluster trusts now (PEM), the newest first.
    pub ca: String,
    /// The node's roles (from the token it joined with).
    pub roles: Vec<String>,
}

/// `POST /v1/nodes/{name}/renew`: a fresh CSR from a node whose certificate is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewRequest {
    /// A PEM certificate signing request for a new key.
    pub csr: String,
}

/// `POST /v1/nodes/{name}/heartbeat`: the node is alive; its resources, conditions and services.
///
/// A full heartbeat carries every service (`services`); once the server answered one with
/// `deltas: true`, the next may carry only what changed since it (`delta`), which a node with
/// steady services makes ~1 KB instead of ~5 (see [`crate::heartbeat`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// The node's resources and conditions (always: its usage changes every beat).
    pub node: NodeStatus,
    /// Every service it runs, as its supervisor sees them (a full heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceStatus>>,
    /// Only what changed since heartbeat `base` (a delta heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<ServicesDelta>,
    /// This heartbeat's number, from 1, increasing (0: a sender that knows no deltas).
    #[serde(default)]
    pub seq: u64,
}

/// The services that changed since an acknowledged heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicesDelta {
    /// The `seq` of the heartbeat this is relative to (the last one answered with `deltas`).
    pub base: u64,
    /// Services new or different since then, whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<ServiceStatus>,
    /// Names of the services gone since then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    /// The revision of the node's assignments: fetch them when it changed.
    pub assignments_revision: u64,
    /// SHA-256 of the trusted CA bundle: fetch `/v1/cacerts` when it changed (a CA rotation).
    pub ca_hash: String,
    /// The server holds this node's services as of this heartbeat: the next may be a delta on
    /// it. False (or absent: an older server) means the next must be full.
    #[serde(default)]
    pub deltas: bool,
}

/// A service assigned to a node, as the server stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedService {
    /// The applied manifest.
    pub manifest: serde_json::Value,
    /// Running or stopped.
    pub desired: DesiredState,
    /// The file it was applied from.
    pub file: String,
    /// Its document in that file.
    pub document: usize,
    /// When it was applied.
    pub applied_at: Timestamp,
}

/// `GET /v1/nodes/{name}/assignments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignments {
    /// The store revision they were read at.
    pub revision: u64,
    /// Every service assigned to the node.
    pub services: Vec<AssignedService>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenRequest {
    /// Lifetime in seconds (default one day).
    pub ttl_seconds: Option<u64>,
    /// `compute` (default) or `control`.
    pub role: Option<String>,
    /// What it is for.
    pub description: Option<String>,
}

/// A join token, as listed (the secret is never shown again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// Its id (the part before the dot).
    pub id: String,
    /// The role nodes joining with it get.
    pub role: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// Who made it.
    pub created_by: String,
    /// What it is for.
    pub description: Option<String>,
    /// How many nodes joined with it.
    pub uses: u64,
}

/// Answer to `POST /v1/tokens`: the only time the whole token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenCreated {
    /// `K10<sha256 of the CA certificate>::<id>.<secret>`.
    pub token: String,
    /// What was stored (the secret only as a hash).
    pub info: TokenInfo,
}

/// `POST /v1/nodes/{name}/{cordon|uncordon|drain|labels}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum NodeAction {
    /// No new placements.
    Cordon,
    /// Placements again.
    Uncordon,
    /// Cordon, and move the relocatable services elsewhere; `force` moves every replicated one.
    Drain {
        /// Move non-relocatable services too.
        #[serde(default)]
        force: bool,
    },
    /// Set and remove labels.
    Label {
        /// Labels to set.
        #[serde(default)]
        set: BTreeMap<String, String>,
        /// Labels to remove.
        #[serde(default)]
        remove: Vec<String>,
    },
}

/// `POST /v1/ca/rotate`: start a CA rotation, or finish one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CaRotateRequest {
    /// Finish the rotation under way: stop trusting the previous CA.
    pub finish: bool,
}

/// A node's network as cloudlet keeps it: `GET /v1/network`, `ctl get network`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    /// The node.
    pub node: String,
    /// The OVS database it talks to.
    pub ovsdb: String,
    /// Whether it is connected to it now.
    pub connected: bool,
    /// The bridges it owns, as last seen.
    pub bridges: Vec<BridgeStatus>,
    /// The firewall, if one is configured.
    pub firewall: Option<FirewallStatus>,
    /// Drift found and repaired since the node started (a port deleted by hand, a setting
    /// changed, flows removed).
    pub repairs: u64,
    /// The last repair, in words.
    pub last_repair: Option<String>,
    /// When the network last matched its spec.
    pub reconciled_at: Option<Timestamp>,
    /// Why it does not match now, if it does not.
    pub problem: Option<String>,
}

/// One bridge cloudlet owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BridgeStatus {
    /// Its name.
    pub name: String,
    /// Its ports (the bridge's own internal port included).
    pub ports: Vec<String>,
    /// `standalone` or `secure`.
    pub fail_mode: Option<String>,
    /// `system` or `netdev`.
    pub datapath_type: Option<String>,
    /// The uplink: `eth0 (addresses moved)`, `eth0 (rolled back: ...)`.
    pub uplink: Option<String>,
}

/// The node firewall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirewallStatus {
    /// The bridge it is on.
    pub bridge: String,
    /// Rules in the policy.
    pub rules: u64,
    /// OpenFlow flows it installed.
    pub flows: u64,
    /// When flows were last changed.
    pub applied_at: Option<Timestamp>,
}

/// `POST /v1/cluster` (apply) and `POST /v1/cluster/diff`: a cluster YAML (`kind: Cluster`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRequest {
    /// The file name, for messages.
    pub file: String,
    /// Its text.
    pub content: String,
    /// Roll out again the manifests rollouts rolled back from (see [`ApplyRequest::retry`]).
    #[serde(default)]
    pub retry: bool,
}

/// Answer to a cluster apply or rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterApplied {
    /// The new revision (the same as before when nothing changed).
    pub revision: u64,
    /// What changed, in words.
    pub summary: String,
    /// The services rendered from it and what happened to each (`deleted` too).
    pub services: Vec<ServiceChange>,
}

/// The Cloudpods administrator of the cluster (`GET /v1/cloudpods/credentials`): what
/// `climc` needs to log in. Admin only; `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudpodsCredentials {
    /// keystone's admin endpoint, `https://HOST:30357/v3`.
    pub auth_url: String,
    /// `sysadmin`.
    pub user: String,
    /// Its password.
    pub password: String,
    /// `system`.
    pub project: String,
    /// `Default`.
    pub domain: String,
    /// The Cloudpods region.
    pub region: String,
    /// The services CA to verify their HTTPS with, when TLS is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

impl std::fmt::Debug for CloudpodsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudpodsCredentials")
            .field("auth_url", &self.auth_url)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// One applied revision of the cluster YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionInfo {
    /// Its number, from 1.
    pub revision: u64,
    /// When it was applied.
    pub applied_at: Timestamp,
    /// By whom.
    pub applied_by: String,
    /// What it changed.
    pub summary: String,
}

/// What a cluster YAML changes, against the current revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDiff {
    /// The revision compared against (0: none yet).
    pub against: u64,
    /// Changed fields of the cluster YAML, by path.
    pub fields: Vec<FieldChange>,
    /// The services it would add, remove or change, and where they run.
    pub services: Vec<ServiceChange>,
}

/// One changed field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    /// `spec.components.region.version`.
    pub path: String,
    /// The value before (`None`: absent).
    pub old: Option<String>,
    /// The value after (`None`: removed).
    pub new: Option<String>,
}

/// A service a cluster YAML adds, removes or changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceChange {
    /// The service.
    pub name: String,
    /// `added`, `removed`, `changed`, `unchanged` or `held` (its new manifest is one a rollout
    /// rolled back from: it keeps the one it has; `fields` say what it would change).
    pub change: String,
    /// Its manifest fields that change (`spec.command`, `spec.env.X`, ...).
    pub fields: Vec<String>,
    /// The nodes it runs (or would run) on.
    pub nodes: Vec<String>,
}

/// `POST /v1/cluster/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRequest {
    /// The revision to go back to (applied again as a new revision).
    pub to: u64,
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RolloutState {
    /// Nodes are being moved to the new manifest, `maxUnavailable` at a time.
    Progressing,
    /// No node is admitted until `ctl rollout resume`; steps under way finish.
    Paused,
    /// Every node runs the new manifest, ready.
    Complete,
    /// A step was not ready in time (or the operator undid it): the service is back on the
    /// manifest the rollout started from.
    RolledBack,
    /// A newer change of the service replaced it before it finished.
    Superseded,
}

impl RolloutState {
    /// Whether nodes may still be moved by it.
    pub fn is_active(self) -> bool {
        matches!(self, RolloutState::Progressing | RolloutState::Paused)
    }

    /// The name used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Progressing => "progressing",
            RolloutState::Paused => "paused",
            RolloutState::Complete => "complete",
            RolloutState::RolledBack => "rolledBack",
            RolloutState::Superseded => "superseded",
        }
    }
}

/// A rollout of one service: `GET /v1/rollouts/{name}` (the current one, with its nodes) and
/// `GET /v1/rollouts/{name}/history` (every kept one, oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutInfo {
    /// The service.
    pub service: String,
    /// Its number among the service's rollouts, from 1.
    pub number: u64,
    /// Where it is.
    pub state: RolloutState,
    /// Digest of the manifest it started from (`None`: the service was new).
    pub from: Option<String>,
    /// Digest of the manifest it moves to.
    pub to: String,
    /// What applied the new manifest (`cluster revision 3`, a file name).
    pub cause: String,
    /// The manifest fields that changed (`spec.command`, `spec.env`, ...).
    pub fields: Vec<String>,
    /// How many nodes may be updating at once.
    pub max_unavailable: u32,
    /// How long one step may take to be ready, e.g. `10m`.
    pub progress_deadline: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it completed, rolled back or was superseded.
    pub finished_at: Option<Timestamp>,
    /// Why it rolled back or paused, in words.
    pub message: Option<String>,
    /// Every node that runs the service, and where it is in the rollout (empty in history).
    pub nodes: Vec<RolloutNode>,
}

/// One node in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutNode {
    /// The node.
    pub node: String,
    /// `updated` (the new manifest runs, ready), `updating` (admitted, not ready yet),
    /// `pending` (still on the old manifest, waiting its turn), `old` (on the old manifest, the
    /// rollout over: rolled back or superseded), `lost` (its node is lost: neither admitted nor
    /// waited for until it is back).
    pub state: String,
    /// When it was admitted to the rollout.
    pub admitted_at: Option<Timestamp>,
    /// When its run of the new manifest was first seen ready.
    pub ready_at: Option<Timestamp>,
    /// Digest of the manifest its run conforms to, as last reported.
    pub running: Option<String>,
}

/// What `POST /v1/rollouts/{name}/{pause|resume|undo}` carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRequest {
    /// For undo: the rollout whose new manifest to go back to (default: the one the current
    /// rollout started from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

/// An operator's verb on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    /// Admit no more nodes.
    Pause,
    /// Admit nodes again.
    Resume,
    /// Go back: abort a rollout under way, or roll out the previous manifest again.
    Undo,
}

#[cfg(test)]
mod tests {
    /// A newer node's state (`invalid` once was one) used to fail the whole heartbeat on an
    /// older server, which then saw the node as silent and lost.
    #[test]
    fn a_state_this_version_does_not_know_reads_as_unknown() {
        let state: super::ServiceState = serde_json::from_str("\"hibernating\"").unwrap();
        assert_eq!(state, super::ServiceState::Unknown);
        let invalid: super::ServiceState = serde_json::from_str("\"invalid\"").unwrap();
        assert_eq!(invalid, super::ServiceState::Invalid);
        assert_eq!(
            serde_json::to_string(&super::ServiceState::Unknown).unwrap(),
            "\"unknown\""
        );
    }

    use super::*;

    /// A join request reaches logs and error messages through `Debug`: the token's secret and
    /// the node secret must not.
    #[test]
    fn a_join_requests_debug_shows_no_secret() {
        let request = JoinRequest {
            token: "K10abc::tok1.s3cr3tpart".to_owned(),
            node_name: "n1".to_owned(),
            csr: String::new(),
            labels: BTreeMap::new(),
            address: None,
            node_secret: Some("n0desecret".to_owned()),
        };
        let shown = format!("{request:?}");
        assert!(
            !shown.contains("s3cr3tpart") && !shown.contains("n0desecret"),
            "{shown}"
        );
        assert!(shown.contains("K10abc::tok1.<redacted>"), "{shown}");
        assert_eq!(redacted_token("no-dot"), "<redacted>");
    }
}
