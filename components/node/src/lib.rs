//! One node's server process between the API and the components: it applies manifests into the
//! store (all or nothing), feeds the supervisor the desired set from the store (watching it), writes
//! the supervisor's events into the store, keeps log retention, and answers the API's queries
//! ([`backend`] implements `cloudlet_api::Backend`).
//!
//! It owns the node's *policy* glue: which store keys mean what, and how an operator's verb maps to
//! store writes and supervisor actions. It never runs processes itself (the supervisor does), never
//! parses YAML itself (the spec crate does), never knows HTTP (the api crate does), and never stops
//! a service on its own initiative.
//! When the cluster arrives, the apply/placement half moves to the control plane and this crate
//! keeps the agent half (watch assignments, run them, report).
#![warn(missing_docs)]

pub mod agent;
pub mod apply;
pub mod backend;
pub mod events;
pub mod executor;
pub mod files;
pub mod monitor;
pub mod records;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cloudlet_cgroups::Hierarchy;

use cloudlet_store::{EventKind, Store, StoreError};
use cloudlet_supervisor::{
    Desired, DesiredService, Reaper, ServiceConfig, Supervisor, SupervisorEvent, SupervisorOptions,
};
use tokio::sync::mpsc;

use crate::events::EventSink;
use crate::records::{DesiredRecord, EventRecord, ExitRecord, ServiceRecord, assignment_prefix};

/// Errors of the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The supervisor failed.
    #[error(transparent)]
    Supervisor(#[from] cloudlet_supervisor::SupervisorError),
    /// A manifest was rejected; the message names file, document and field.
    #[error("{0}")]
    Invalid(String),
    /// No such service.
    #[error("service {0:?} not found")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A stored record cannot be read.
    #[error("store key {key}: unreadable record: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Reading logs failed.
    #[error(transparent)]
    Logs(#[from] cloudlet_logs::LogsError),
    /// Anything else that should not happen.
    #[error("{0}")]
    Internal(String),
}

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// This node's name.
    pub node_name: String,
    /// The data directory (`run/` and `logs/` live under it).
    pub data_dir: PathBuf,
    /// The `cloudlet` executable, for shims.
    pub exe: PathBuf,
    /// Keep logs of deleted services this long.
    pub log_retention: Duration,
    /// Keep at most this many events.
    pub max_events: usize,
    /// Reserve, thresholds and watched disks of the node monitor.
    pub monitor: monitor::MonitorOptions,
    /// cloudlet's cgroup, relative to the cgroup v2 mount. None: the cgroup cloudlet was started
    /// in when systemd delegated it, or `/cloudlet` when cloudlet was started at the root.
    pub cgroup_root: Option<PathBuf>,
    /// The node's network (OVS bridges, uplinks, firewall) to keep true, if any.
    pub network: Option<cloudlet_netovs::network::NetworkSpec>,
}

/// A running node: the store, the supervisor and the tasks that connect them.
#[derive(Debug, Clone)]
pub struct Node<S> {
    store: S,
    supervisor: Supervisor,
    reaper: Reaper,
    cgroups: Option<Arc<Hierarchy>>,
    limits_unenforced: Option<String>,
    snapshot: monitor::SharedSnapshot,
    network: Option<tokio::sync::watch::Receiver<cloudlet_netovs::reconcile::Status>>,
    started_at: jiff::Timestamp,
    events: EventSink,
    options: NodeOptions,
}

impl<S: Store> Node<S> {
    /// Starts the supervisor on the services assigned to this node in `store` (its task adopts
    /// the shims an earlier server left after this returns, so the caller's API never waits for
    /// adoption), then follows the store. `events` is the store's event writer
    /// (one per store: the control plane shares it). Call inside a tokio runtime.
    pub async fn start(
        store: S,
        options: NodeOptions,
        events: EventSink,
    ) -> Result<Node<S>, NodeError> {
        let reaper = Reaper::start()?;
        let prefix = assignment_prefix(&options.node_name);
        let (records, revision) = load_services(&store, &prefix).await?;
        let (cgroups, limits_unenforced) = setup_cgroups(options.cgroup_root.as_deref());
        if let Some(why) = &limits_unenforced {
            tracing::warn!("service limits are not enforced on this host: {why}");
        }
        let sup_options = SupervisorOptions {
            exe: options.exe.clone(),
            run_root: options.data_dir.join("run"),
            log_root: options.data_dir.join("logs"),
            cgroups: cgroups.clone(),
            limits_unenforced: limits_unenforced.clone(),
        };
        let executor_socket = options.data_dir.join(EXECUTOR_SOCKET);
        let mut written = FileState {
            reserved: files::Reserved::data_dir(&options.data_dir),
            ..FileState::default()
        };
        write_files(&records, &mut written).await;
        let initial = desired_set(&records, &executor_socket, &written);
        let (supervisor, sup_events) =
            Supervisor::start(sup_options, reaper.clone(), initial).await?;
        let node = Node {
            store,
            supervisor,
            reaper,
            cgroups,
            limits_unenforced,
            snapshot: Arc::default(),
            network: None,
            started_at: jiff::Timestamp::now(),
            events,
            options,
        };
        let mut node = node;
        if let Some(spec) = node.options.network.clone() {
            let (tx, rx) = tokio::sync::watch::channel(Default::default());
            let sink = node.events.clone();
            let name = node.options.node_name.clone();
            tokio::spawn(cloudlet_netovs::reconcile::run(
                spec,
                Arc::new(ReaperRunner(node.reaper.clone())),
                move |r| {
                    sink.send(EventRecord {
                        time: jiff::Timestamp::now(),
                        service: None,
                        node: name.clone(),
                        reason: r.reason.to_owned(),
                        message: r.message,
                        exit: None,
                    });
                },
                tx,
            ));
            node.network = Some(rx);
        }
        tokio::spawn(forward_events(
            sup_events,
            node.events.clone(),
            node.options.node_name.clone(),
        ));
        tokio::spawn(follow_services(
            node.store.clone(),
            prefix,
            node.supervisor.clone(),
            records,
            revision,
            executor_socket,
            written,
        ));
        tokio::spawn(log_retention(node.clone()));
        match monitor::read_node(&node.options.data_dir, &node.options.monitor) {
            Ok(first) => {
                for c in first.conditions.iter().filter(|c| c.condition.status) {
                    node.condition_event(&c.condition);
                }
                monitor::store(&node.snapshot, first);
            }
            Err(e) => tracing::warn!("node monitor: {e}"),
        }
        if let Some(why) = &node.limits_unenforced {
            node.event(
                None,
                "LimitsNotEnforced",
                format!("service limits are not enforced on this node: {why}"),
            );
        }
        tokio::spawn(monitor_loop(node.clone()));
        Ok(node)
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.options.node_name
    }

    /// The prefix of this node's assignments in its store.
    pub fn prefix(&self) -> String {
        assignment_prefix(&self.options.node_name)
    }

    /// The node's network as last reconciled, if it manages one.
    pub fn network_status(&self) -> Option<cloudlet_netovs::reconcile::Status> {
        self.network.as_ref().map(|rx| rx.borrow().clone())
    }

    /// The event log of this node's store.
    pub fn event_sink(&self) -> &EventSink {
        &self.events
    }

    /// Completes once the supervisor has adopted what an earlier process left running: its
    /// queue answers only after adoption. An error (the supervisor gone) also completes it.
    pub async fn adopted(&self) {
        if let Err(e) = self.supervisor.snapshot().await {
            tracing::debug!("waiting for adoption: {e}");
        }
    }

    /// Lets go of the shims; services keep running.
    pub async fn shutdown(&self) {
        self.supervisor.shutdown().await;
    }

    /// Records a pressure condition that began, changed or ended: a warning, never an action.
    pub(crate) fn condition_event(&self, c: &cloudlet_host::Condition) {
        let message = match c.severity {
            Some(sev) if c.status => format!(
                "{}: {} (nothing is stopped: a warning only)",
                sev.as_str(),
                c.reason
            ),
            _ => format!("cleared: {}", c.reason),
        };
        self.event(None, c.kind.as_str(), message);
    }

    /// Records an event that did not come from the supervisor (apply, delete, ...).
    pub fn event(&self, service: Option<&str>, reason: &str, message: String) {
        self.events.send(EventRecord {
            time: jiff::Timestamp::now(),
            service: service.map(str::to_owned),
            node: self.options.node_name.clone(),
            reason: reason.to_owned(),
            message,
            exit: None,
        });
    }
}

/// Runs the network's tools (`ip`, `ping`, `ovs-ofctl`) through the node's reaper, which reaps
/// every child of this process.
#[derive(Debug)]
struct ReaperRunner(Reaper);

impl cloudlet_netovs::run::Runner for ReaperRunner {
    fn run(&self, job: cloudlet_netovs::run::Job) -> cloudlet_netovs::run::Running<'_> {
        Box::pin(async move {
            let mut cmd = std::process::Command::new(&job.program);
            cmd.args(&job.args);
            self.0
                .output(&mut cmd, job.input.map(String::into_bytes), job.timeout)
                .await
        })
    }
}

/// Service records by name.
pub type Records = BTreeMap<String, ServiceRecord>;

/// The service records under `prefix` (`/services/`, or a node's assignments), by name.
pub async fn load_services<S: Store>(store: &S, prefix: &str) -> Result<(Records, u64), NodeError> {
    let (kvs, revision) = store.list(prefix).await?;
    let mut records = BTreeMap::new();
    for kv in kvs {
        let record = ServiceRecord::decode(&kv.key, &kv.value)?;
        records.insert(record.manifest.metadata.name.clone(), record);
    }
    Ok((records, revision))
}

/// The executor's socket, in the data dir.
pub const EXECUTOR_SOCKET: &str = "executor.sock";

/// The supervisor's desired set from this node's records. A dependency placed on another node is
/// not waited for here (the supervisor only sees this node's services): the server's placer
/// assigns a service to a node only once its dependencies elsewhere are ready.
fn desired_set(
    records: &Records,
    executor_socket: &std::path::Path,
    files: &FileState,
) -> Vec<DesiredService> {
    records
        .values()
        .map(|r| DesiredService {
            blocked: files.failed.get(&r.manifest.metadata.name).map(|why| {
                cloudlet_supervisor::Unusable {
                    field: "spec.files".into(),
                    reason: why.clone(),
                }
            }),
            config: {
                let mut config = ServiceConfig::from_manifest(&r.manifest);
                config.tag = records::manifest_digest(&r.manifest);
                config.depends_on.retain(|d| records.contains_key(d));
                if let Some(digest) = files::digest(&r.manifest.spec.files) {
                    config.process.env.insert(files::DIGEST_ENV.into(), digest);
                }
                if let Some(t) = &r.transient {
                    config.cgroup = format!(
                        "{}/{}/{}",
                        cloudlet_cgroups::GROUPS,
                        t.group,
                        r.manifest.metadata.name
                    );
                }
                if r.manifest.spec.executor {
                    config.process.env.insert(
                        "CLOUDLET_EXECUTOR".into(),
                        executor_socket.display().to_string(),
                    );
                }
                config
            },
            desired: match r.desired {
                DesiredRecord::Running => Desired::Running,
                DesiredRecord::Stopped => Desired::Stopped,
            },
        })
        .collect()
}

/// How often the files of services held back by a failed write are tried again.
const FILES_RETRY: Duration = Duration::from_secs(10);

/// The declared files as this node wrote them.
#[derive(Debug, Default)]
struct FileState {
    /// What was last written for each service.
    written: files::Written,
    /// Services some of whose files could not be written, with why: held back (shown
    /// `invalid`) until a write succeeds.
    failed: BTreeMap<String, String>,
    /// Where no declared file goes (the data dir but its `etc/`).
    reserved: files::Reserved,
}

/// Writes the declared files that changed since `state` says (and those that failed before),
/// off the async workers (each write is fsynced): a service's files are in place before the
/// supervisor may start it.
async fn write_files(records: &Records, state: &mut FileState) {
    let declared = records
        .iter()
        .map(|(name, r)| (name, r.manifest.spec.files.as_slice()));
    let pending = files::pending(declared, &mut state.written);
    state
        .failed
        .retain(|name, _| pending.iter().any(|p| p.name == *name));
    if pending.is_empty() {
        return;
    }
    let names: Vec<String> = pending.iter().map(|p| p.name.clone()).collect();
    let reserved = state.reserved.clone();
    match tokio::task::spawn_blocking(move || files::write_pending(pending, &reserved)).await {
        Ok(outcome) => {
            state.written.extend(outcome.written);
            for name in names {
                match outcome.failed.get(&name) {
                    Some(errors) => {
                        let why = errors.join("; ");
                        if state.failed.get(&name) != Some(&why) {
                            tracing::warn!(service = name, "spec.files: {why}");
                        }
                        state.failed.insert(name, why);
                    }
                    None => {
                        state.failed.remove(&name);
                    }
                }
            }
        }
        Err(e) => tracing::warn!("spec.files: the writer stopped: {e}"),
    }
}

/// Watches this node's assignments and hands every change of the desired set to the supervisor.
async fn follow_services<S: Store>(
    store: S,
    prefix: String,
    supervisor: Supervisor,
    mut records: Records,
    mut revision: u64,
    executor_socket: PathBuf,
    mut written: FileState,
) {
    loop {
        let mut watcher = match store.watch(&prefix, Some(revision + 1)).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("watch services: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        'watching: loop {
            let next = if written.failed.is_empty() {
                watcher.next().await
            } else {
                tokio::select! {
                    next = watcher.next() => next,
                    () = tokio::time::sleep(FILES_RETRY) => {
                        write_files(&records, &mut written).await;
                        supervisor.set_desired(desired_set(&records, &executor_socket, &written));
                        continue 'watching;
                    }
                }
            };
            let Some(item) = next else { break };
            // Every change already delivered is applied before the supervisor hears of any: a
            // transaction's changes (a whole placement) arrive together, and a service must not
            // be started while the dependency written with it is still on its way.
            let mut item = Some(item);
            while let Some(next) = item.take() {
                match next {
                    Ok(ev) => {
                        revision = ev.revision();
                        let name = ev.kv.key.trim_start_matches(prefix.as_str()).to_owned();
                        match ev.kind {
                            EventKind::Put => {
                                match ServiceRecord::decode(&ev.kv.key, &ev.kv.value) {
                                    Ok(r) => {
                                        records.insert(name, r);
                                    }
                                    Err(e) => tracing::warn!("{e}"),
                                }
                            }
                            EventKind::Delete => {
                                records.remove(&name);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!("services watch ended: {e}; listing again");
                        break 'watching;
                    }
                }
                if let Ok(Some(more)) = tokio::time::timeout(Duration::ZERO, watcher.next()).await {
                    item = Some(more);
                }
            }
            write_files(&records, &mut written).await;
            supervisor.set_desired(desired_set(&records, &executor_socket, &written));
        }
        // The watcher ended (overflow or compaction): start over from a fresh list.
        match load_services(&store, &prefix).await {
            Ok((r, rev)) => {
                records = r;
                revision = rev;
                write_files(&records, &mut written).await;
                supervisor.set_desired(desired_set(&records, &executor_socket, &written));
            }
            Err(e) => {
                tracing::warn!("list services: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn forward_events(
    mut rx: mpsc::UnboundedReceiver<SupervisorEvent>,
    sink: EventSink,
    node: String,
) {
    while let Some(ev) = rx.recv().await {
        sink.send(EventRecord {
            time: ev.time,
            service: Some(ev.service),
            node: node.clone(),
            reason: ev.reason.to_owned(),
            message: ev.message,
            exit: ev.exit.map(|e| ExitRecord {
                code: e.code,
                signal: e.signal,
                reason: e.reason,
                at: e.at,
            }),
        });
    }
}

/// Removes log directories of services that no longer exist once they are older than retention.
async fn log_retention<S: Store>(node: Node<S>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let Ok((records, _)) = load_services(&node.store, &node.prefix()).await else {
            continue;
        };
        let root = node.options.data_dir.join("logs");
        let retention = node.options.log_retention;
        let keep = move |name: &str| records.contains_key(name);
        let result =
            tokio::task::spawn_blocking(move || cloudlet_logs::prune(&root, &keep, retention))
                .await;
        match result {
            Ok(Ok(report)) => {
                for name in &report.removed {
                    tracing::info!("log retention: removed the logs of deleted service {name}");
                }
                for e in &report.failed {
                    tracing::warn!("log retention: {e}");
                }
            }
            Ok(Err(e)) => tracing::warn!("log retention: {e}"),
            Err(e) => tracing::warn!("log retention task: {e}"),
        }
    }
}

/// Finds cloudlet's cgroup subtree and sets it up: the server moves into `<base>/server`, the
/// controllers are enabled for services. On a host where that is impossible, services still run
/// (without limits) and the reason is returned, never hidden.
fn setup_cgroups(root: Option<&std::path::Path>) -> (Option<Arc<Hierarchy>>, Option<String>) {
    let detected = match cloudlet_cgroups::detect() {
        Ok(d) => d,
        Err(e) => return (None, Some(format!("no usable cgroup v2 hierarchy: {e}"))),
    };
    let at_root = detected.own == std::path::Path::new("/");
    let base = match root {
        Some(r) => r.to_owned(),
        None if at_root => PathBuf::from("/cloudlet"),
        None => detected.own.clone(),
    };
    let hierarchy = match Hierarchy::new(detected.mount.clone(), &base) {
        Ok(h) => h.with_v1_bound(detected.v1_bound.clone()),
        Err(e) => return (None, Some(format!("cgroup {}: {e}", base.display()))),
    };
    // A base cloudlet makes under the root needs the root to offer it the controllers.
    if at_root
        && base.parent() == Some(std::path::Path::new("/"))
        && let Err(e) = hierarchy.delegate_from_parent()
    {
        tracing::warn!("cgroup: offering controllers to {}: {e}", base.display());
    }
    let report = match hierarchy.setup("server") {
        Ok(r) => r,
        Err(e) => {
            return (
                None,
                Some(format!("cgroup setup of {}: {e}", base.display())),
            );
        }
    };
    if let Err(e) = hierarchy
        .service("server")
        .and_then(|cg| cg.add_process(std::process::id()))
    {
        tracing::warn!(
            "cgroup: moving the server into {}/server: {e}",
            base.display()
        );
    }
    tracing::info!(
        "cgroup {}: controllers {:?} enabled; cgroup.kill {}",
        hierarchy.base().display(),
        report.enabled,
        if report.kill_supported {
            "supported"
        } else {
            "missing (signals instead)"
        }
    );
    let unenforced = (!report.missing.is_empty()).then(|| {
        // One line per distinct reason: `cpu, memory, pids, io: controller not available ...`.
        let mut by_reason: Vec<(String, Vec<String>)> = Vec::new();
        for (c, why) in &report.missing {
            match by_reason.iter_mut().find(|(w, _)| w == why) {
                Some((_, cs)) => cs.push(c.to_string()),
                None => by_reason.push((why.clone(), vec![c.to_string()])),
            }
        }
        let parts: Vec<String> = by_reason
            .iter()
            .map(|(why, cs)| format!("{}: {why}", cs.join(", ")))
            .collect();
        parts.join("; ")
    });
    (Some(Arc::new(hierarchy)), unenforced)
}

/// Every `interval`: the host's usage and conditions, and each service's cgroup counters.
async fn monitor_loop<S: Store>(node: Node<S>) {
    let mut book = monitor::CounterBook::new();
    let mut tick = tokio::time::interval(node.options.monitor.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (dir, opts) = (node.options.data_dir.clone(), node.options.monitor.clone());
        match tokio::task::spawn_blocking(move || monitor::read_node(&dir, &opts)).await {
            Ok(Ok(mut snap)) => {
                if let Some(old) = monitor::latest(&node.snapshot) {
                    for changed in monitor::carry_over(&old, &mut snap) {
                        node.condition_event(&changed);
                    }
                }
                monitor::store(&node.snapshot, snap);
            }
            Ok(Err(e)) => tracing::warn!("node monitor: {e}"),
            Err(e) => tracing::warn!("node monitor task: {e}"),
        }
        let Some(h) = node.cgroups.as_deref() else {
            continue;
        };
        let Ok(views) = node.supervisor.snapshot().await else {
            continue;
        };
        for v in views {
            let Some(cg) = cloudlet_supervisor::machine::service_cgroup(Some(h), &v.cgroup) else {
                continue;
            };
            let Ok(stats) = cg.stats() else { continue };
            let now = monitor::CgroupCounters {
                oom_kills: stats.memory_events.map_or(0, |e| e.oom_kill),
                pids_max_hits: stats.pids_events_max.unwrap_or(0),
            };
            let before = book.insert(v.name.clone(), now).unwrap_or_default();
            let pids_max = match stats.pids_max {
                Some(cloudlet_cgroups::Max::Value(m)) => Some(m),
                _ => None,
            };
            for (reason, message) in monitor::counter_events(&v.name, before, now, pids_max) {
                node.event(Some(&v.name), reason, message);
            }
        }
    }
}
