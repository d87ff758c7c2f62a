//! The cluster manifest (`kind: Cluster`, after Cloudpods' OnecloudCluster): the one YAML that says
//! which Cloudpods version runs, with which profile, on which nodes, and how each component is
//! overridden. This module owns the types (they are the YAML contract), their checks (every
//! finding names its field path), the canonical export and the field-by-field diff of two
//! revisions.
//!
//! It never does I/O, never renders service templates and never decides placement: callers pass
//! text to [`ClusterManifest::parse`] (or `parse_config::<ClusterManifest>`, which runs the same
//! checks), and render and place elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Problem, SpecError};
use crate::manifest::{
    ApiVersion, Metadata, NodeRole, NodeSelectorSpec, PlacementSpec, ResourcesSpec,
    ServiceManifest, ServiceSpec,
};
use crate::parse::parse_config;
use crate::units::Duration;
use crate::validate::{check_name, check_service};

/// `spec.binDir` unless set: where the Cloudpods binaries are.
pub const DEFAULT_BIN_DIR: &str = "/opt/yunion/bin";
/// `spec.configDir` unless set: each component's config goes to `<configDir>/<component>.conf`.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/yunion";
/// `spec.dataDir` unless set: where the backing stores cloudlet runs keep their data.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cloudpods";
/// `spec.mysql.port` unless set.
pub const DEFAULT_MYSQL_PORT: u16 = 3306;
/// `spec.etcd.port` unless set: etcd's client port.
pub const DEFAULT_ETCD_PORT: u16 = 2379;
/// `spec.loadBalancerEndpoint` unless set: the address the services' endpoints name.
pub const DEFAULT_LOAD_BALANCER_ENDPOINT: &str = "127.0.0.1";
/// `spec.region` unless set.
pub const DEFAULT_REGION: &str = "region0";
/// `spec.zones` unless set: this one zone.
pub const DEFAULT_ZONE: &str = "zone0";
/// `rollout.maxUnavailable` unless set: one node (or replica) at a time.
pub const DEFAULT_MAX_UNAVAILABLE: u32 = 1;
/// `rollout.progressDeadline` unless set: how long one step of a rollout may take to be ready.
pub const DEFAULT_PROGRESS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// Every Cloudpods component a cluster knows, by its key under `spec.components`, with the node
/// role that runs it: control components run as replicas on control nodes, compute components
/// run once on every compute node. The order is the order components are listed in.
pub const COMPONENTS: &[(&str, NodeRole)] = &[
    ("mysql", NodeRole::Control),
    ("etcd", NodeRole::Control),
    ("keystone", NodeRole::Control),
    ("region", NodeRole::Control),
    ("scheduler", NodeRole::Control),
    ("glance", NodeRole::Control),
    ("webconsole", NodeRole::Control),
    ("apigateway", NodeRole::Control),
    ("logger", NodeRole::Control),
    ("yunionconf", NodeRole::Control),
    ("kubeserver", NodeRole::Control),
    ("monitor", NodeRole::Control),
    ("cloudmon", NodeRole::Control),
    ("notify", NodeRole::Control),
    ("esxi-agent", NodeRole::Control),
    ("baremetal-agent", NodeRole::Control),
    ("host", NodeRole::Compute),
    ("host-deployer", NodeRole::Compute),
    ("host-image", NodeRole::Compute),
    ("host-health", NodeRole::Compute),
    ("sdnagent", NodeRole::Compute),
    ("openvswitch-db", NodeRole::Compute),
    ("openvswitch-switch", NodeRole::Compute),
];

/// The node role that runs component `name`, or `None` if no such component is known.
pub fn component_role(name: &str) -> Option<NodeRole> {
    COMPONENTS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, role)| *role)
}

/// A `kind: Cluster` manifest.
///
/// Deserialising it runs [`ClusterManifest::validate`], so a parsed manifest is valid; call
/// `validate` again after changing one by hand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "ClusterDocument")]
pub struct ClusterManifest {
    /// Always [`ApiVersion::V1`].
    pub api_version: ApiVersion,
    /// Always `Cluster`; private so that it cannot be anything else.
    kind: ClusterKind,
    /// Name and labels.
    pub metadata: Metadata,
    /// The cluster.
    pub spec: ClusterSpec,
}

/// `kind: Cluster`, the only value a cluster manifest's `kind` may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum ClusterKind {
    Cluster,
}

/// The manifest as written, before its checks: what [`ClusterManifest`] deserialises through.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a cluster manifest (a mapping with apiVersion, kind, metadata and spec)"
)]
struct ClusterDocument {
    api_version: ApiVersion,
    kind: ClusterKind,
    metadata: Metadata,
    spec: ClusterSpec,
}

impl ClusterDocument {
    /// The manifest, not checked yet.
    fn unchecked(self) -> ClusterManifest {
        let ClusterDocument {
            api_version,
            kind,
            metadata,
            spec,
        } = self;
        ClusterManifest {
            api_version,
            kind,
            metadata,
            spec,
        }
    }
}

impl TryFrom<ClusterDocument> for ClusterManifest {
    type Error = SpecError;

    fn try_from(document: ClusterDocument) -> Result<Self, SpecError> {
        let manifest = document.unchecked();
        manifest.validate()?;
        Ok(manifest)
    }
}

/// `spec` of a Cluster. Fields with a default are not `Option`: the default is filled in when
/// parsing and left out again when exporting, so writing a default changes nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct ClusterSpec {
    /// The Cloudpods version every component runs unless it says otherwise, e.g. `v3.11.9`.
    pub version: String,
    /// Which components this cluster runs (default `edge`).
    #[serde(default, skip_serializing_if = "Profile::is_default")]
    pub profile: Profile,
    /// Where the Cloudpods binaries are (default `/opt/yunion/bin`); absolute.
    #[serde(
        default = "default_bin_dir",
        skip_serializing_if = "is_default_bin_dir"
    )]
    pub bin_dir: PathBuf,
    /// Where component configs are written (default `/etc/yunion`); absolute.
    #[serde(
        default = "default_config_dir",
        skip_serializing_if = "is_default_config_dir"
    )]
    pub config_dir: PathBuf,
    /// Where the backing stores cloudlet runs (MariaDB) keep their data, and the components
    /// their temporary files (default `/var/lib/cloudpods`); absolute.
    #[serde(
        default = "default_data_dir",
        skip_serializing_if = "is_default_data_dir"
    )]
    pub data_dir: PathBuf,
    /// The database (OnecloudCluster's `mysql`). With `host`, an existing MySQL or MariaDB
    /// server that `username` (with `password`) administers; without it, cloudlet runs MariaDB
    /// itself (component `mysql`) on `127.0.0.1:port` and generates its administrator.
    #[serde(default, skip_serializing_if = "MysqlSpec::is_empty")]
    pub mysql: MysqlSpec,
    /// Cloudpods' own etcd (OnecloudCluster's `etcd`), off unless `enable: true` (keystone and
    /// region run without it; host-health needs it): Debian's etcd on `127.0.0.1:port`,
    /// registered in keystone's catalog as the `etcd` service.
    #[serde(default, skip_serializing_if = "EtcdSpec::is_empty")]
    pub etcd: EtcdSpec,
    /// The address (an IP or DNS name, e.g. a VIP) the services' endpoints in keystone's
    /// catalog name (default `127.0.0.1`: every service on one node).
    #[serde(
        default = "default_load_balancer_endpoint",
        skip_serializing_if = "is_default_load_balancer_endpoint"
    )]
    pub load_balancer_endpoint: String,
    /// Run only these components (with what they need: the database and the bootstrap
    /// steps), of those the profile runs: for a stack brought up in stages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
    /// The Cloudpods region (default `region0`).
    #[serde(default = "default_region", skip_serializing_if = "is_default_region")]
    pub region: String,
    /// The region's zones (default `[zone0]`); not empty, no zone twice.
    #[serde(default = "default_zones", skip_serializing_if = "is_default_zones")]
    pub zones: Vec<String>,
    /// Which nodes are control and which are compute nodes.
    #[serde(default, skip_serializing_if = "ClusterNodesSpec::is_empty")]
    pub nodes: ClusterNodesSpec,
    /// The services speak plain HTTP (their `enable_ssl` is off): readiness probes use
    /// `http://`. By default they use `https://`, as the operator's probes do (the services'
    /// certificates are not verified by a probe).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_tls: bool,
    /// cloudlet does not bring Cloudpods to life: it runs no database, writes no generated
    /// config and runs no bootstrap step; the components run with what `config:` gives them
    /// (an installation whose databases, accounts and catalog were set up otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_bootstrap: bool,
    /// Options written to `<configDir>/common/common.conf` (as YAML) for the components that
    /// read it (`--common-config-file`: host, host-deployer, host-image, host-health,
    /// sdnagent), as the operator's `<cluster>-host` ConfigMap is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub common_config: BTreeMap<String, Value>,
    /// How changes roll out, for every component that does not say otherwise.
    #[serde(default, skip_serializing_if = "RolloutSpec::is_empty")]
    pub rollout: RolloutSpec,
    /// Overrides per component, by key (see [`COMPONENTS`]); a component not listed runs with
    /// its defaults if the profile runs it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, ComponentSpec>,
}

impl ClusterSpec {
    /// A spec of `version` with every other field at its default.
    pub fn new(version: impl Into<String>) -> Self {
        Self {
            version: version.into(),
            profile: Profile::default(),
            bin_dir: default_bin_dir(),
            config_dir: default_config_dir(),
            data_dir: default_data_dir(),
            mysql: MysqlSpec::default(),
            etcd: EtcdSpec::default(),
            load_balancer_endpoint: default_load_balancer_endpoint(),
            only: Vec::new(),
            region: default_region(),
            zones: default_zones(),
            nodes: ClusterNodesSpec::default(),
            disable_tls: false,
            disable_bootstrap: false,
            common_config: BTreeMap::new(),
            rollout: RolloutSpec::default(),
            components: BTreeMap::new(),
        }
    }
}

fn default_bin_dir() -> PathBuf {
    PathBuf::from(DEFAULT_BIN_DIR)
}

fn is_default_bin_dir(dir: &Path) -> bool {
    dir == Path::new(DEFAULT_BIN_DIR)
}

fn default_config_dir() -> PathBuf {
    PathBuf::from(DEFAULT_CONFIG_DIR)
}

fn is_default_config_dir(dir: &Path) -> bool {
    dir == Path::new(DEFAULT_CONFIG_DIR)
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

fn is_default_data_dir(dir: &Path) -> bool {
    dir == Path::new(DEFAULT_DATA_DIR)
}

fn default_load_balancer_endpoint() -> String {
    DEFAULT_LOAD_BALANCER_ENDPOINT.to_owned()
}

fn is_default_load_balancer_endpoint(address: &str) -> bool {
    address == DEFAULT_LOAD_BALANCER_ENDPOINT
}

/// `spec.mysql`: the database server.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct MysqlSpec {
    /// An existing server's host name or address; unset: cloudlet runs MariaDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Its port (default 3306); also where the MariaDB cloudlet runs listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The account that may create databases and users on the existing server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Its password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl MysqlSpec {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the database is an existing server (cloudlet runs none).
    pub fn is_external(&self) -> bool {
        self.host.is_some()
    }

    /// The port, default applied.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_MYSQL_PORT)
    }
}

/// `spec.etcd`: Cloudpods' etcd.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct EtcdSpec {
    /// Run it (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable: bool,
    /// Its client port (default 2379); the peer port is the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl EtcdSpec {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The client port, default applied.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_ETCD_PORT)
    }
}

impl fmt::Debug for MysqlSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlSpec")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn default_region() -> String {
    DEFAULT_REGION.to_owned()
}

fn is_default_region(region: &str) -> bool {
    region == DEFAULT_REGION
}

fn default_zones() -> Vec<String> {
    vec![DEFAULT_ZONE.to_owned()]
}

fn is_default_zones(zones: &[String]) -> bool {
    zones.len() == 1 && zones[0] == DEFAULT_ZONE
}

/// `spec.profile`: which components the cluster runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// One node running both the control and the compute components.
    #[default]
    Edge,
    /// The control components only.
    Control,
    /// The compute components only.
    Compute,
    /// Control and compute components, on the nodes `spec.nodes` gives each role.
    Full,
}

impl Profile {
    /// The text written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Edge => "edge",
            Profile::Control => "control",
            Profile::Compute => "compute",
            Profile::Full => "full",
        }
    }

    /// Whether this profile runs the components of `role`.
    pub fn runs(self, role: NodeRole) -> bool {
        match self {
            Profile::Edge | Profile::Full => true,
            Profile::Control => role == NodeRole::Control,
            Profile::Compute => role == NodeRole::Compute,
        }
    }

    fn is_default(&self) -> bool {
        *self == Profile::default()
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `spec.nodes`: which nodes the cluster gives each role, on top of the roles nodes joined with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct ClusterNodesSpec {
    /// The control nodes.
    #[serde(default, skip_serializing_if = "NodeMatchSpec::is_empty")]
    pub control: NodeMatchSpec,
    /// The compute nodes.
    #[serde(default, skip_serializing_if = "NodeMatchSpec::is_empty")]
    pub compute: NodeMatchSpec,
}

impl ClusterNodesSpec {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.control.is_empty() && self.compute.is_empty()
    }

    /// The roles these settings give node `name` with `labels`, control first.
    pub fn roles_of(&self, name: &str, labels: &BTreeMap<String, String>) -> Vec<NodeRole> {
        [
            (NodeRole::Control, &self.control),
            (NodeRole::Compute, &self.compute),
        ]
        .into_iter()
        .filter(|(_, matcher)| matcher.matches(name, labels))
        .map(|(role, _)| role)
        .collect()
    }
}

/// `spec.nodes.control` and `spec.nodes.compute`: a node matches when its name is in `names`, or
/// when it has every label in `labels` (a non-empty set). An empty match matches no node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct NodeMatchSpec {
    /// Node names, any of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Labels, all of.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl NodeMatchSpec {
    /// Whether nothing is set (and so no node matches).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.labels.is_empty()
    }

    /// Whether node `name` with `labels` matches.
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.names.iter().any(|n| n == name)
            || (!self.labels.is_empty()
                && self
                    .labels
                    .iter()
                    .all(|(key, value)| labels.get(key) == Some(value)))
    }
}

/// `rollout` (under `spec` for every component, or under one component): how a change rolls out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct RolloutSpec {
    /// How many nodes (or replicas) may be updating at once (default 1, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,
    /// How long one step may take to become ready before the rollout fails (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<Duration>,
}

impl RolloutSpec {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.max_unavailable.is_none() && self.progress_deadline.is_none()
    }

    /// The settings with the defaults for what is not set.
    pub fn effective(&self) -> Rollout {
        Rollout {
            max_unavailable: self.max_unavailable.unwrap_or(DEFAULT_MAX_UNAVAILABLE),
            progress_deadline: self
                .progress_deadline
                .as_ref()
                .map_or(DEFAULT_PROGRESS_DEADLINE, Duration::get),
        }
    }
}

/// The rollout settings in effect for one component, defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// How many nodes (or replicas) may be updating at once.
    pub max_unavailable: u32,
    /// How long one step may take to become ready.
    pub progress_deadline: std::time::Duration,
}

/// `spec.components.<key>`: how one component differs from its defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub struct ComponentSpec {
    /// Do not run this component, whatever the profile says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable: bool,
    /// Its version, instead of `spec.version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How many copies run (default 1, at least 1); control components only, since a compute
    /// component runs on every compute node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Which of the nodes of its role may run it (by labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<NodeSelectorSpec>,
    /// Resource requests and limits, as for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    /// Options written to `<configDir>/<key>.conf` (as YAML), over the component's defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, Value>,
    /// Environment variables added to the component's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Arguments added to the component's command line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Its working directory (absolute), instead of the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// How changes to this component roll out, over `spec.rollout`.
    #[serde(default, skip_serializing_if = "RolloutSpec::is_empty")]
    pub rollout: RolloutSpec,
}

impl ClusterManifest {
    /// A manifest named by `metadata` with `spec`, not checked: call [`Self::validate`].
    pub fn new(metadata: Metadata, spec: ClusterSpec) -> Self {
        Self {
            api_version: ApiVersion::V1,
            kind: ClusterKind::Cluster,
            metadata,
            spec,
        }
    }

    /// Parses the one-document file `file` (whose contents are `text`) and checks it.
    ///
    /// Like `parse_config::<ClusterManifest>`, but when the document is well-formed and only its
    /// values are wrong, each problem gets its own line naming the file:
    /// `cluster.yaml: spec.zones: must not be empty`.
    pub fn parse(file: &str, text: &str) -> Result<Self, SpecError> {
        let manifest = parse_config::<ClusterDocument>(file, text)?.unchecked();
        manifest.validate().map_err(|err| {
            SpecError::Invalid(
                err.problems()
                    .iter()
                    .cloned()
                    .map(|problem| Problem {
                        file: Some(file.to_owned()),
                        ..problem
                    })
                    .collect(),
            )
        })?;
        Ok(manifest)
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The components this cluster runs: those of its profile, narrowed to `only` when set,
    /// minus the ones with `disable: true`, in [`COMPONENTS`] order. `mysql` (the MariaDB
    /// cloudlet runs) is among them when another control component is, unless `spec.mysql`
    /// names an existing server.
    pub fn profile_components(&self) -> Vec<&'static str> {
        let runs = |name: &str, role: NodeRole| {
            self.spec.profile.runs(role)
                && (self.spec.only.is_empty() || self.spec.only.iter().any(|o| o == name))
                && !self.spec.components.get(name).is_some_and(|c| c.disable)
        };
        let mut out: Vec<&'static str> = COMPONENTS
            .iter()
            .filter(|(name, role)| !["mysql", "etcd"].contains(name) && runs(name, *role))
            .map(|(name, _)| *name)
            .collect();
        let needs_database = out
            .iter()
            .any(|name| component_role(name) == Some(NodeRole::Control));
        let mysql_off = self.spec.components.get("mysql").is_some_and(|c| c.disable);
        let etcd_off = self.spec.components.get("etcd").is_some_and(|c| c.disable);
        if needs_database && self.spec.etcd.enable && !etcd_off {
            out.insert(0, "etcd");
        }
        if needs_database
            && !self.spec.disable_bootstrap
            && !self.spec.mysql.is_external()
            && !mysql_off
        {
            out.insert(0, "mysql");
        }
        out
    }

    /// The overrides of component `name`, if any.
    pub fn component(&self, name: &str) -> Option<&ComponentSpec> {
        self.spec.components.get(name)
    }

    /// The version component `name` runs: its own, or `spec.version`.
    pub fn component_version(&self, name: &str) -> &str {
        self.component(name)
            .and_then(|c| c.version.as_deref())
            .unwrap_or(&self.spec.version)
    }

    /// The rollout settings of component `name`: each of its own, else `spec.rollout`'s; what
    /// neither sets stays unset (`RolloutSpec::effective` gives the defaults).
    pub fn rollout(&self, name: &str) -> RolloutSpec {
        let own = self.component(name).map(|c| &c.rollout);
        let cluster = &self.spec.rollout;
        RolloutSpec {
            max_unavailable: own
                .and_then(|r| r.max_unavailable)
                .or(cluster.max_unavailable),
            progress_deadline: own
                .and_then(|r| r.progress_deadline.clone())
                .or_else(|| cluster.progress_deadline.clone()),
        }
    }

    /// The manifest as canonical YAML: fields in a fixed order, maps sorted by key, defaults
    /// left out, no comments. Parsing it gives this manifest back, and exporting that gives the
    /// same text, so exports of successive revisions diff line by line.
    pub fn export(&self) -> Result<String, SpecError> {
        let options = serde_saphyr::ser_options! {
            // A long one-line string stays on one line: folding it would move words between
            // lines when one of them changes.
            folded_wrap_chars: usize::MAX,
        };
        serde_saphyr::to_string_with_options(self, options).map_err(|err| {
            SpecError::InvalidValue(format!("cannot write cluster {:?}: {err}", self.name()))
        })
    }

    /// Checks everything the types alone do not; every problem names its field path.
    ///
    /// Deserialising already calls this; call it for manifests built or changed otherwise.
    pub fn validate(&self) -> Result<(), SpecError> {
        let findings = check_cluster(self);
        if findings.is_empty() {
            return Ok(());
        }
        Err(SpecError::Invalid(
            findings
                .into_iter()
                .map(|(path, message)| Problem::at(None, Some(path), message))
                .collect(),
        ))
    }
}

/// One field that differs between two revisions of a cluster manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldChange {
    /// The field path, as in error messages: `spec.components.region.version`.
    pub path: String,
    /// The old value, `None` if the field was not set (or was at its default).
    pub old: Option<String>,
    /// The new value, `None` if the field is no longer set (or is back at its default).
    pub new: Option<String>,
}

impl fmt::Display for FieldChange {
    /// `spec.components.region.version: v3.11.9 -> v3.11.10`, `(unset)` for a missing side.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |value: &Option<String>| value.clone().unwrap_or_else(|| "(unset)".to_owned());
        write!(
            f,
            "{}: {} -> {}",
            self.path,
            side(&self.old),
            side(&self.new)
        )
    }
}

/// The fields that differ from `old` to `new`, sorted by path (map keys in byte order at every
/// level). Maps are compared key by key down to their leaves; lists are compared whole. Values
/// are shown as written in YAML, lists and maps as JSON.
pub fn diff(old: &ClusterManifest, new: &ClusterManifest) -> Result<Vec<FieldChange>, SpecError> {
    let to_value = |manifest: &ClusterManifest| {
        serde_json::to_value(manifest).map_err(|err| {
            SpecError::InvalidValue(format!(
                "cannot compare cluster {:?}: {err}",
                manifest.name()
            ))
        })
    };
    let mut changes = Vec::new();
    diff_values(
        "",
        Some(&to_value(old)?),
        Some(&to_value(new)?),
        &mut changes,
    );
    Ok(changes)
}

/// Adds the changes from `old` to `new` at `path` (empty at the root).
fn diff_values(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<FieldChange>) {
    // `Some(None)`: absent; `Some(Some(map))`: a map to walk; `None`: a value to compare whole.
    fn walkable(
        value: Option<&Value>,
        root: bool,
    ) -> Option<Option<&serde_json::Map<String, Value>>> {
        match value {
            None => Some(None),
            Some(Value::Object(map)) if root || !map.is_empty() => Some(Some(map)),
            Some(_) => None,
        }
    }
    let root = path.is_empty();
    match (walkable(old, root), walkable(new, root)) {
        // Two maps, or a map that appeared or went: compare key by key.
        (Some(old_map), Some(new_map)) => {
            let keys: BTreeSet<&String> = old_map
                .into_iter()
                .chain(new_map)
                .flat_map(|map| map.keys())
                .collect();
            for key in keys {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                diff_values(
                    &child,
                    old_map.and_then(|m| m.get(key)),
                    new_map.and_then(|m| m.get(key)),
                    out,
                );
            }
        }
        _ if old != new => out.push(FieldChange {
            path: path.to_owned(),
            old: old.map(show),
            new: new.map(show),
        }),
        _ => {}
    }
}

/// A value as a diff shows it: a string as itself unless it would read as something else (then
/// JSON-quoted), anything else as JSON.
fn show(value: &Value) -> String {
    match value {
        Value::String(text) => {
            let ambiguous = text.is_empty()
                || text.trim() != text
                || text.contains(char::is_control)
                || text.contains(" -> ")
                || serde_json::from_str::<Value>(text).is_ok_and(|v| !v.is_string());
            if ambiguous {
                value.to_string()
            } else {
                text.clone()
            }
        }
        other => other.to_string(),
    }
}

/// Every finding about `manifest`, as `(field path, message)`, in document order.
fn check_cluster(manifest: &ClusterManifest) -> Vec<(String, String)> {
    let mut f = Vec::new();
    let mut add = |path: String, message: String| f.push((path, message));
    if let Err(message) = check_name(&manifest.metadata.name) {
        add("metadata.name".into(), message);
    }
    if manifest.metadata.labels.keys().any(String::is_empty) {
        add(
            "metadata.labels".into(),
            "label names must not be empty".into(),
        );
    }

    let spec = &manifest.spec;
    check_version(&mut add, "spec.version", &spec.version);
    for (path, dir) in [
        ("spec.binDir", &spec.bin_dir),
        ("spec.configDir", &spec.config_dir),
    ] {
        if !dir.is_absolute() {
            add(
                path.into(),
                format!(
                    "must be an absolute path, got {:?}",
                    dir.display().to_string()
                ),
            );
        }
    }
    if !spec.data_dir.is_absolute() {
        add(
            "spec.dataDir".into(),
            format!(
                "must be an absolute path, got {:?}",
                spec.data_dir.display().to_string()
            ),
        );
    }
    check_mysql(&mut add, &spec.mysql);
    if spec.etcd.port.is_some_and(|p| p == 0 || p == u16::MAX) {
        add(
            "spec.etcd.port".into(),
            "must be 1 to 65534 (the peer port is the next one)".into(),
        );
    }
    check_word(
        &mut add,
        "spec.loadBalancerEndpoint",
        "address",
        &spec.load_balancer_endpoint,
    );
    // A host name or an address, never with a port: an IPv6 address has colons of its own.
    let lb = &spec.load_balancer_endpoint;
    if lb.contains(':') && lb.parse::<std::net::Ipv6Addr>().is_err() {
        add(
            "spec.loadBalancerEndpoint".into(),
            format!(
                "invalid address {lb:?}: expected a host name or an IP address, without a port"
            ),
        );
    }
    check_list(&mut add, "spec.only", "component", &spec.only);
    for (i, name) in spec.only.iter().enumerate() {
        if component_role(name).is_none() {
            add(
                format!("spec.only[{i}]"),
                format!("unknown component {name:?}"),
            );
        }
    }
    check_word(&mut add, "spec.region", "region", &spec.region);
    if spec.zones.is_empty() {
        add(
            "spec.zones".into(),
            format!("must not be empty (leave it out for [{DEFAULT_ZONE}])"),
        );
    }
    check_list(&mut add, "spec.zones", "zone", &spec.zones);
    for (role, matcher) in [
        (NodeRole::Control, &spec.nodes.control),
        (NodeRole::Compute, &spec.nodes.compute),
    ] {
        let path = format!("spec.nodes.{}", role.as_str());
        check_list(
            &mut add,
            &format!("{path}.names"),
            "node name",
            &matcher.names,
        );
        if matcher.labels.keys().any(String::is_empty) {
            add(
                format!("{path}.labels"),
                "label names must not be empty".into(),
            );
        }
    }
    check_rollout(&mut add, "spec.rollout", &spec.rollout);
    if spec.common_config.keys().any(String::is_empty) {
        add(
            "spec.commonConfig".to_owned(),
            "option names must not be empty".into(),
        );
    }
    for (name, component) in &spec.components {
        let path = format!("spec.components.{name}");
        match component_role(name) {
            Some(role) => check_component(&mut add, &path, name, role, component),
            None => {
                let known: Vec<&str> = COMPONENTS.iter().map(|(known, _)| *known).collect();
                add(
                    path,
                    format!(
                        "unknown component {name:?}, expected one of {}",
                        known.join(", ")
                    ),
                );
            }
        }
    }
    f
}

/// Checks the overrides of component `name` (which runs on `role` nodes), found at `path`.
fn check_component(
    add: &mut impl FnMut(String, String),
    path: &str,
    name: &str,
    role: NodeRole,
    component: &ComponentSpec,
) {
    if let Some(version) = &component.version {
        check_version(add, &format!("{path}.version"), version);
    }
    match (role, component.replicas) {
        (NodeRole::Compute, Some(_)) => add(
            format!("{path}.replicas"),
            format!(
                "cannot be set: {name} runs once on every compute node \
                 (choose the nodes with nodeSelector or spec.nodes.compute)"
            ),
        ),
        (NodeRole::Control, Some(0)) => add(
            format!("{path}.replicas"),
            "must be at least 1 (set disable: true to run none)".into(),
        ),
        _ => {}
    }
    if let Some(selector) = &component.node_selector
        && !selector.roles.is_empty()
    {
        add(
            format!("{path}.nodeSelector.roles"),
            format!(
                "cannot be set: {name} runs on {} nodes (give nodes their roles under spec.nodes); \
                 select among them with labels",
                role.as_str()
            ),
        );
    }
    // Env, resources and node labels follow the rules of a Service's: check them as one, so
    // that the rules stay in one place, and move the paths under the component.
    let mut service = ServiceSpec::new(vec![name.to_owned()]);
    service.env.clone_from(&component.env);
    service.resources.clone_from(&component.resources);
    service.placement = component
        .node_selector
        .as_ref()
        .map(|selector| PlacementSpec {
            node_selector: Some(selector.clone()),
            ..PlacementSpec::default()
        });
    let metadata = Metadata {
        name: name.to_owned(),
        labels: BTreeMap::new(),
    };
    for (found, message) in check_service(&ServiceManifest::new(metadata, service)) {
        let field = found.strip_prefix("spec.").unwrap_or(&found);
        let field = field.strip_prefix("placement.").unwrap_or(field);
        add(format!("{path}.{field}"), message);
    }
    if component.config.keys().any(String::is_empty) {
        add(
            format!("{path}.config"),
            "option names must not be empty".into(),
        );
    }
    for (i, arg) in component.args.iter().enumerate() {
        if arg.is_empty() {
            add(format!("{path}.args[{i}]"), "must not be empty".into());
        } else if arg.contains('\0') {
            add(
                format!("{path}.args[{i}]"),
                "must not contain a NUL character".into(),
            );
        }
    }
    if let Some(dir) = &component.working_dir
        && !dir.is_absolute()
    {
        add(
            format!("{path}.workingDir"),
            format!(
                "must be an absolute path, got {:?}",
                dir.display().to_string()
            ),
        );
    }
    check_rollout(add, &format!("{path}.rollout"), &component.rollout);
}

pub(crate) fn check_rollout(
    add: &mut impl FnMut(String, String),
    path: &str,
    rollout: &RolloutSpec,
) {
    if rollout.max_unavailable == Some(0) {
        add(
            format!("{path}.maxUnavailable"),
            "must be at least 1 (a rollout updates at least one node at a time)".into(),
        );
    }
    if rollout
        .progress_deadline
        .as_ref()
        .is_some_and(|d| d.get().is_zero())
    {
        add(
            format!("{path}.progressDeadline"),
            "must be more than 0".into(),
        );
    }
}

/// `spec.mysql`: an existing server needs its administrator; the MariaDB cloudlet runs gets one
/// generated (so none may be written).
fn check_mysql(add: &mut impl FnMut(String, String), mysql: &MysqlSpec) {
    if mysql.port == Some(0) {
        add("spec.mysql.port".into(), "must be 1 to 65535".into());
    }
    match &mysql.host {
        Some(host) => {
            check_word(add, "spec.mysql.host", "host", host);
            if mysql.username.as_deref().is_none_or(str::is_empty) {
                add(
                    "spec.mysql.username".into(),
                    "must be set with spec.mysql.host: the account that may create the \
                     components' databases and users"
                        .into(),
                );
            }
            if mysql.password.is_none() {
                add(
                    "spec.mysql.password".into(),
                    "must be set with spec.mysql.host".into(),
                );
            }
        }
        None => {
            for (path, set) in [
                ("spec.mysql.username", mysql.username.is_some()),
                ("spec.mysql.password", mysql.password.is_some()),
            ] {
                if set {
                    add(
                        path.into(),
                        "cannot be set without spec.mysql.host: cloudlet runs MariaDB and \
                         generates its administrator (set host to use an existing server)"
                            .into(),
                    );
                }
            }
        }
    }
    for (path, value) in [
        ("spec.mysql.username", &mysql.username),
        ("spec.mysql.password", &mysql.password),
    ] {
        if value
            .as_deref()
            .is_some_and(|v| v.contains(['\n', '\r', '\0']))
        {
            add(path.into(), "must not contain line breaks or NUL".into());
        }
    }
}

/// A version goes into paths and file names: letters, digits, `.`, `_`, `+` and `-`.
fn check_version(add: &mut impl FnMut(String, String), path: &str, version: &str) {
    let valid = !version.is_empty()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if !valid {
        add(
            path.to_owned(),
            format!(
                "invalid version {version:?}: expected letters, digits, '.', '_', '+' and '-', \
                 e.g. v3.11.9"
            ),
        );
    }
}

/// A name such as a region, zone or node: not empty, no whitespace, control characters or `/`.
fn check_word(add: &mut impl FnMut(String, String), path: &str, what: &str, word: &str) {
    if word.is_empty() || word.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/') {
        add(
            path.to_owned(),
            format!("invalid {what} {word:?}: expected a name without spaces or '/'"),
        );
    }
}

/// Checks each item of a list of names with [`check_word`], and that none is listed twice.
fn check_list(add: &mut impl FnMut(String, String), path: &str, what: &str, items: &[String]) {
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if !seen.insert(item) {
            add(at, format!("{item:?} is listed twice"));
        } else {
            check_word(add, &at, what, item);
        }
    }
}
