//! cloudlet-spec: the Service manifest types (the YAML contract), parsing of YAML files with
//! several documents, defaults, and validation with precise error paths.
//!
//! Every rejection names the file, the document, the field path and what is expected:
//! `services.yaml: document 2: spec.restart.backoff.max: invalid duration "30x": ...`.
//!
//! This crate never does I/O: callers pass a file name and its text to [`parse_file`], and the
//! stored manifests to [`validate_set`].
//!
//! Typical use:
//! 1. [`parse_file`] for each file (deserialise, then check each manifest on its own);
//! 2. [`validate_set`] over everything being applied plus what is stored (names, dependencies);
//! 3. read effective values through [`ServiceSpec::effective`], never the raw `Option` fields.
#![warn(missing_docs)]

mod cluster;
mod effective;
mod error;
mod manifest;
mod parse;
mod set;
mod units;
mod validate;

pub use cluster::{
    COMPONENTS, ClusterManifest, ClusterNodesSpec, ClusterSpec, ComponentSpec, DEFAULT_BIN_DIR,
    DEFAULT_CONFIG_DIR, DEFAULT_MAX_UNAVAILABLE, DEFAULT_PROGRESS_DEADLINE, DEFAULT_REGION,
    DEFAULT_ZONE, EtcdSpec, FieldChange, MysqlSpec, NodeMatchSpec, Profile, Rollout, RolloutSpec,
    component_role, diff,
};
pub use effective::{
    DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX, DEFAULT_FAILURE_THRESHOLD, DEFAULT_GRACE_PERIOD,
    DEFAULT_INITIAL_DELAY_SECONDS, DEFAULT_LOG_MAX_FILES, DEFAULT_LOG_MAX_SIZE,
    DEFAULT_PERIOD_SECONDS, DEFAULT_PROBE_HOST, DEFAULT_PROBE_PATH, DEFAULT_RESET_AFTER,
    DEFAULT_RESTART_POLICY, DEFAULT_STOP_SIGNAL, DEFAULT_SUCCESS_THRESHOLD,
    DEFAULT_TIMEOUT_SECONDS, Effective, Logs, Probe, Readiness, Resources, Restart, Stop,
};
pub use error::{Problem, SpecError};
pub use manifest::{
    ApiVersion, BackoffSpec, ExecProbeSpec, FileSpec, HttpProbeSpec, IoLimitSpec, Kind, LogsSpec,
    Manifest, Metadata, NodeRole, NodeSelectorSpec, PlacementSpec, ProbeScheme, ReadinessSpec,
    ResourceLimits, ResourceRequests, ResourcesSpec, RestartPolicy, RestartSpec, ServiceManifest,
    ServiceSpec, ServiceType, Signal, Source, StopSpec, TcpProbeSpec,
};
pub use parse::{parse_config, parse_file};
pub use set::validate_set;
pub use units::{CpuQuantity, Duration, MAX_DURATION, Quantity, parse_duration};
pub use validate::{MAX_BACKOFF, MAX_LOG_MAX_FILES, MIN_LOG_MAX_SIZE, check_name};
