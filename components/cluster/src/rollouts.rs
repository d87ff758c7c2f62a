//! Rollouts: a change of a service's manifest reaches the nodes that run it a few at a time, and
//! goes back by itself when a step is not ready in time.
//!
//! It owns `/rollouts/<service>/<20-digit number>`: one [`RolloutRecord`] per change of a
//! service's manifest, the highest number being the current one ([`KEEP`] kept per service). At
//! the start of every placement round [`advance`]:
//! - starts a rollout when a service's manifest is not the one its latest rollout heads to
//!   (an apply, a cluster revision, an undo), superseding one still under way;
//! - admits nodes still on the old manifest, in name order, while fewer than `maxUnavailable`
//!   admitted nodes are not ready on the new one (the placer then writes the new manifest to
//!   exactly those: [`may_update`]);
//! - marks a node's step done when its heartbeat shows a run of the new manifest ready (the
//!   digest of the manifest a run conforms to travels in every service status);
//! - completes the rollout when no node is left;
//! - rolls the service back by itself when a step is not ready within `progressDeadline`: the
//!   service's record becomes the one the rollout started from (an event says which node and
//!   why), and every node still on the new manifest returns to the old one at once.
//!
//! A node that gets the service for the first time gets the current manifest at once: nothing
//! runs there to keep available. A lost node is neither admitted nor waited for; it takes the new
//! manifest when it is back. This module never starts or stops a process and never writes an
//! assignment; it writes only rollout records and, to roll back, the service's record.

use std::collections::BTreeMap;
use std::time::Duration;

use cloudlet_api::dto::{RolloutAction, RolloutInfo, RolloutNode, RolloutState, ServiceState};
use cloudlet_node::apply::Hold;
use cloudlet_node::records::{
    ASSIGNMENTS, DesiredRecord, ServiceRecord, manifest_digest, service_key, split_assignment_key,
};
use cloudlet_placement::Health;
use cloudlet_store::{Compare, CompareOp, Op, Store, Txn};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::records::{decode, encode};
use crate::{ClusterError, Inner, placer};

/// Prefix of every rollout record.
pub const ROLLOUTS: &str = "/rollouts/";
/// Rollouts kept per service (older ones are deleted when a new one starts).
pub const KEEP: usize = 10;

/// The prefix of `service`'s rollouts.
pub fn rollout_prefix(service: &str) -> String {
    format!("{ROLLOUTS}{service}/")
}

/// The key of rollout `number` of `service`.
pub fn rollout_key(service: &str, number: u64) -> String {
    format!("{ROLLOUTS}{service}/{number:020}")
}

/// One change of a service's manifest, moving over its nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    /// The service.
    pub service: String,
    /// Its number among the service's rollouts, from 1.
    pub number: u64,
    /// Where it is.
    pub state: RolloutState,
    /// The record it started from, restored on a rollback (`None`: the service was new).
    pub from: Option<ServiceRecord>,
    /// The record it moves the nodes to.
    pub to: ServiceRecord,
    /// Digest of `from`'s manifest.
    pub from_digest: Option<String>,
    /// Digest of `to`'s manifest.
    pub to_digest: String,
    /// The manifest fields that changed.
    pub fields: Vec<String>,
    /// How many admitted nodes may be not ready at once.
    pub max_unavailable: u32,
    /// How long one node's step may take, in milliseconds.
    pub progress_deadline_ms: u64,
    /// When it started.
    pub started_at: Timestamp,
    /// When it completed, rolled back or was superseded.
    pub finished_at: Option<Timestamp>,
    /// Why it rolled back, in words.
    pub message: Option<String>,
    /// The nodes admitted so far.
    pub steps: BTreeMap<String, StepRecord>,
}

/// One node's step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// When the node was admitted (its deadline runs from here).
    pub admitted_at: Timestamp,
    /// When its run of the new manifest was first seen ready.
    pub ready_at: Option<Timestamp>,
}

impl RolloutRecord {
    /// A rollout from `from` to `to`, numbered `number`, not yet stepped.
    pub fn new(number: u64, from: Option<ServiceRecord>, to: ServiceRecord) -> RolloutRecord {
        let settings = to
            .manifest
            .spec
            .rollout
            .clone()
            .unwrap_or_default()
            .effective();
        let fields = from
            .as_ref()
            .map(|f| changed_fields(&f.manifest, &to.manifest))
            .unwrap_or_default();
        RolloutRecord {
            service: to.manifest.metadata.name.clone(),
            number,
            state: RolloutState::Progressing,
            from_digest: from.as_ref().map(|f| manifest_digest(&f.manifest)),
            to_digest: manifest_digest(&to.manifest),
            from,
            to,
            fields,
            max_unavailable: settings.max_unavailable.max(1),
            progress_deadline_ms: u64::try_from(settings.progress_deadline.as_millis())
                .unwrap_or(u64::MAX),
            started_at: Timestamp::now(),
            finished_at: None,
            message: None,
            steps: BTreeMap::new(),
        }
    }

    /// The digest the service's manifest has while this is its latest rollout: the new one,
    /// or the old one after a rollback.
    pub fn target_digest(&self) -> Option<&str> {
        match self.state {
            RolloutState::RolledBack => self.from_digest.as_deref(),
            _ => Some(&self.to_digest),
        }
    }

    /// How long one step may take.
    pub fn progress_deadline(&self) -> Duration {
        Duration::from_millis(self.progress_deadline_ms)
    }

    /// Ends it in `state`, now.
    fn finish(&mut self, state: RolloutState, message: Option<String>) {
        self.state = state;
        self.finished_at = Some(Timestamp::now());
        self.message = message;
    }

    /// The API's view, with `nodes` as given.
    pub fn info(&self, nodes: Vec<RolloutNode>) -> RolloutInfo {
        RolloutInfo {
            service: self.service.clone(),
            number: self.number,
            state: self.state,
            from: self.from_digest.clone(),
            to: self.to_digest.clone(),
            cause: self.to.file.clone(),
            fields: self.fields.clone(),
            max_unavailable: self.max_unavailable,
            progress_deadline: humantime::format_duration(self.progress_deadline()).to_string(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            message: self.message.clone(),
            nodes,
        }
    }
}

/// The names of the manifest fields that differ (`spec.command`, `metadata.labels`).
pub(crate) fn changed_fields(
    old: &cloudlet_spec::ServiceManifest,
    new: &cloudlet_spec::ServiceManifest,
) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return vec!["spec".to_owned()];
    };
    let mut out = Vec::new();
    for part in ["metadata", "spec"] {
        let (pa, pb) = (&a[part], &b[part]);
        let keys: std::collections::BTreeSet<&String> = pa
            .as_object()
            .into_iter()
            .chain(pb.as_object())
            .flat_map(|o| o.keys())
            .collect();
        for k in keys {
            if pa.get(k) != pb.get(k) {
                out.push(format!("{part}.{k}"));
            }
        }
    }
    out
}

/// One node that runs the service, as a round sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeView {
    /// Digest of the manifest assigned to it now.
    pub assigned: String,
    /// Digest of the manifest its run conforms to, from its last heartbeat.
    pub running: Option<String>,
    /// Whether that run is ready (or completed successfully, for a one-shot service).
    pub ready: bool,
    /// Why the node holds the service back (`invalid`: it cannot act on the manifest it was
    /// given, or cannot write its files); `None` when it does not.
    pub refused: Option<String>,
}

impl NodeView {
    /// Whether it runs `digest`, ready (or stopped by the operator: nothing to wait for).
    fn done(&self, digest: &str, stopped: bool) -> bool {
        self.assigned == digest
            && self.running.as_deref() == Some(digest)
            && (self.ready || stopped)
    }
}

/// What one step of a rollout did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Stepped {
    /// The record changed and must be stored.
    pub changed: bool,
    /// Nodes admitted now.
    pub admitted: Vec<String>,
    /// Nodes whose step ran past the deadline, or that refuse the new manifest (`invalid`):
    /// the rollout must roll back.
    pub overdue: Vec<String>,
    /// It completed now.
    pub completed: bool,
}

/// Moves an active rollout one step on, given the nodes that run the service now: marks ready
/// steps, finds overdue ones (then does nothing else: the caller rolls back), admits nodes, and
/// completes it when no node is left to move. Pure: `now` is passed in.
pub(crate) fn step(
    r: &mut RolloutRecord,
    nodes: &BTreeMap<String, NodeView>,
    stopped: bool,
    now: Timestamp,
) -> Stepped {
    let mut out = Stepped::default();
    if !r.state.is_active() {
        return out;
    }
    for (node, s) in &mut r.steps {
        if s.ready_at.is_none()
            && nodes
                .get(node)
                .is_some_and(|v| v.done(&r.to_digest, stopped))
        {
            s.ready_at = Some(now);
            out.changed = true;
        }
    }
    if r.state == RolloutState::Paused {
        return out;
    }
    let in_flight: Vec<&String> = r
        .steps
        .iter()
        .filter(|(n, s)| s.ready_at.is_none() && nodes.contains_key(*n))
        .map(|(n, _)| n)
        .collect();
    let deadline = r.progress_deadline();
    out.overdue = in_flight
        .iter()
        .filter(|n| {
            // A node that holds the new manifest back will not run it however long we wait.
            let refused = nodes
                .get(**n)
                .is_some_and(|v| v.assigned == r.to_digest && v.refused.is_some());
            let spent = now.duration_since(r.steps[**n].admitted_at);
            refused || (!spent.is_negative() && spent.unsigned_abs() >= deadline)
        })
        .map(|n| (*n).clone())
        .collect();
    if !out.overdue.is_empty() {
        return out;
    }
    let slots = usize::try_from(r.max_unavailable)
        .unwrap_or(usize::MAX)
        .saturating_sub(in_flight.len());
    let in_flight = in_flight.len();
    let pending: Vec<String> = nodes
        .iter()
        .filter(|(n, v)| v.assigned != r.to_digest && !r.steps.contains_key(*n))
        .map(|(n, _)| n.clone())
        .collect();
    for node in pending.iter().take(slots) {
        r.steps.insert(
            node.clone(),
            StepRecord {
                admitted_at: now,
                ready_at: None,
            },
        );
        out.admitted.push(node.clone());
        out.changed = true;
    }
    if pending.is_empty() && in_flight == 0 {
        r.state = RolloutState::Complete;
        r.finished_at = Some(now);
        out.completed = true;
        out.changed = true;
    }
    out
}

/// Whether the placer may replace `node`'s copy of a service, whose manifest differs from the
/// service's (digest `want`), with the service's record: only when the service's latest rollout
/// heads to `want`, and either is over or has admitted `node`.
pub(crate) fn may_update(latest: Option<&RolloutRecord>, node: &str, want: &str) -> bool {
    latest.is_some_and(|r| {
        r.target_digest() == Some(want) && (!r.state.is_active() || r.steps.contains_key(node))
    })
}

/// The latest rollout of every service, as read at the start of a round.
pub(crate) type Latest = BTreeMap<String, RolloutRecord>;

/// A rollout record as read, with what guards its rewrite.
struct Read {
    record: RolloutRecord,
    mod_revision: u64,
    /// The numbers of the service's kept rollouts, oldest first.
    numbers: Vec<u64>,
}

/// Every service's rollouts, by service.
async fn read_all<S: Store>(store: &S) -> Result<BTreeMap<String, Read>, ClusterError> {
    let (kvs, _) = store.list(ROLLOUTS).await?;
    let mut out: BTreeMap<String, Read> = BTreeMap::new();
    for kv in &kvs {
        let record: RolloutRecord = decode(&kv.key, &kv.value)?;
        let entry = out.entry(record.service.clone());
        match entry {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(Read {
                    numbers: vec![record.number],
                    record,
                    mod_revision: kv.mod_revision,
                });
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let read = o.get_mut();
                read.numbers.push(record.number);
                // Keys sort by number: the last one read is the latest.
                read.record = record;
                read.mod_revision = kv.mod_revision;
            }
        }
    }
    Ok(out)
}

/// What an apply must not roll out again: for each service whose latest rollout rolled back, the
/// manifest it rolled back from. The hold ends with the service's next rollout (to any other
/// manifest, or to this one again when the apply asks to retry).
pub(crate) async fn holds<S: Store>(store: &S) -> Result<BTreeMap<String, Hold>, ClusterError> {
    let holds = read_all(store)
        .await?
        .into_values()
        .filter(|read| read.record.state == RolloutState::RolledBack)
        .map(|read| {
            let r = read.record;
            let why = format!(
                "rollout {} rolled it back from this manifest ({}); it keeps the one it has: \
                 change the manifest, or apply with --retry to roll it out again",
                r.number,
                r.message.as_deref().unwrap_or("rolled back")
            );
            (
                r.service,
                Hold {
                    digest: r.to_digest,
                    why,
                },
            )
        })
        .collect();
    Ok(holds)
}

/// Every assignment of every service: service → node → record.
async fn assigned<S: Store>(
    store: &S,
) -> Result<BTreeMap<String, BTreeMap<String, ServiceRecord>>, ClusterError> {
    let (kvs, _) = store.list(ASSIGNMENTS).await?;
    let mut out: BTreeMap<String, BTreeMap<String, ServiceRecord>> = BTreeMap::new();
    for kv in &kvs {
        let Some((node, service)) = split_assignment_key(&kv.key) else {
            continue;
        };
        let record = ServiceRecord::decode(&kv.key, &kv.value)?;
        if record.transient.is_none() {
            out.entry(service.to_owned())
                .or_default()
                .insert(node.to_owned(), record);
        }
    }
    Ok(out)
}

/// The nodes that run one service (not transiently), with the record each was assigned.
pub(crate) type OnNodes<'a> = BTreeMap<String, &'a ServiceRecord>;

/// What a round of [`advance`] leaves for the placer.
pub(crate) struct Advanced {
    /// The latest rollout of every service, for [`may_update`].
    pub latest: Latest,
    /// Service records this round rolled back, by name: they replace what the round read.
    pub restored: BTreeMap<String, ServiceRecord>,
}

/// Moves every rollout on (see the module doc), given the round's services (with their store
/// revisions) and where each runs, as the placer read them. A write that lost a race is left to
/// the next round.
pub(crate) async fn advance<S: Store>(
    inner: &Inner<S>,
    services: &BTreeMap<String, (ServiceRecord, u64)>,
    assignments: &BTreeMap<String, OnNodes<'_>>,
) -> Result<Advanced, ClusterError> {
    let store = &inner.store;
    let mut rollouts = read_all(store).await?;
    let now = Timestamp::now();
    let mut latest = Latest::new();
    let mut restored = BTreeMap::new();
    let no_nodes = BTreeMap::new();
    for (name, (service, service_revision)) in services {
        let name = name.clone();
        let on = assignments.get(&name).unwrap_or(&no_nodes);
        let stopped = service.desired == DesiredRecord::Stopped;
        let read = rollouts.remove(&name);
        let want = manifest_digest(&service.manifest);
        let fresh = read
            .as_ref()
            .is_none_or(|r| r.record.target_digest() != Some(want.as_str()));
        let record = match read {
            read if fresh => {
                let views = node_views(inner, &name, on);
                start(inner, read, service.clone(), on, &views, now).await?
            }
            Some(mut read) if read.record.state.is_active() => {
                let views = node_views(inner, &name, on);
                let stepped = step(&mut read.record, &views, stopped, now);
                if stepped.overdue.is_empty() {
                    // A step that lost a race to an operator's verb is taken again next round;
                    // until then the placer holds every node (no latest rollout).
                    let stored =
                        !stepped.changed || store_step(inner, &read, &stepped, views.len()).await?;
                    stored.then_some(read.record)
                } else {
                    let why = overdue_why(&read.record, &stepped.overdue, &views);
                    let back =
                        roll_back(inner, read, (*service_revision, service.desired), why).await?;
                    back.map(|(r, record)| {
                        if let Some(record) = record {
                            restored.insert(name.clone(), record);
                        }
                        r
                    })
                }
            }
            // Over: nothing to step.
            other => other.map(|r| r.record),
        };
        if let Some(r) = record {
            latest.insert(name, r);
        }
    }
    // Rollouts of deleted services go with them.
    for name in rollouts.keys() {
        store
            .txn(Txn::ops(vec![Op::delete_prefix(rollout_prefix(name))]))
            .await?;
    }
    Ok(Advanced { latest, restored })
}

/// Stores a stepped rollout (guarded by the revision it was read at) and reports the step.
/// False when the rollout changed since it was read.
async fn store_step<S: Store>(
    inner: &Inner<S>,
    read: &Read,
    stepped: &Stepped,
    nodes: usize,
) -> Result<bool, ClusterError> {
    let key = rollout_key(&read.record.service, read.record.number);
    let txn = Txn::guarded(
        vec![Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            read.mod_revision,
        )],
        vec![Op::put(key.clone(), encode(&key, &read.record)?)],
    );
    let stored = inner.store.txn(txn).await?.succeeded;
    if stored {
        report(inner, &read.record, stepped, nodes);
    }
    Ok(stored)
}

/// The nodes that run `service` now, with their last reported run of it. A lost node is left
/// out: it is neither admitted nor waited for (a rollout never fails, nor hangs, on a node that
/// cannot answer); it takes the new manifest when it is back, in its turn or at once if the
/// rollout is over.
fn node_views<S: Store>(
    inner: &Inner<S>,
    service: &str,
    on: &OnNodes<'_>,
) -> BTreeMap<String, NodeView> {
    let registry = inner.lock_registry();
    on.iter()
        .filter(|(node, _)| registry.health(node) == Health::Ready)
        .map(|(node, record)| {
            let status = registry
                .get(node)
                .and_then(|l| l.services.iter().find(|s| s.name == service));
            (
                node.clone(),
                NodeView {
                    assigned: manifest_digest(&record.manifest),
                    running: status.and_then(|s| s.spec_digest.clone()),
                    // A run that completed successfully and is not restarted by its policy
                    // (a one-shot job) is as good as ready.
                    ready: status.is_some_and(|s| {
                        s.ready
                            || (s.state == ServiceState::Stopped
                                && s.last_exit.as_ref().is_some_and(|e| e.code == Some(0)))
                    }),
                    refused: status
                        .filter(|s| s.state == ServiceState::Invalid)
                        .map(|s| {
                            s.message
                                .clone()
                                .unwrap_or_else(|| "shown invalid".to_owned())
                        }),
                },
            )
        })
        .collect()
}

/// Starts a rollout to `service`'s record, superseding `previous` if it is still under way, and
/// takes its first step. Returns the new latest rollout (or the previous one, when the write lost
/// a race).
async fn start<S: Store>(
    inner: &Inner<S>,
    previous: Option<Read>,
    service: ServiceRecord,
    on: &OnNodes<'_>,
    views: &BTreeMap<String, NodeView>,
    now: Timestamp,
) -> Result<Option<RolloutRecord>, ClusterError> {
    let name = service.manifest.metadata.name.clone();
    let want = manifest_digest(&service.manifest);
    // What the nodes are known to run well: the last good record.
    let from = match previous.as_ref().map(|r| &r.record) {
        Some(r) if r.state == RolloutState::Complete => Some(r.to.clone()),
        Some(r) => r.from.clone(),
        None => on
            .values()
            .find(|a| manifest_digest(&a.manifest) != want)
            .map(|a| (*a).clone()),
    };
    let number = previous.as_ref().map_or(1, |r| r.record.number + 1);
    let stopped = service.desired == DesiredRecord::Stopped;
    let mut record = RolloutRecord::new(number, from, service);
    let stepped = step(&mut record, views, stopped, now);
    let key = rollout_key(&name, number);
    let mut compares = vec![Compare::absent(key.clone())];
    let mut ops = vec![Op::put(key.clone(), encode(&key, &record)?)];
    if let Some(prev) = &previous {
        let prev_key = rollout_key(&name, prev.record.number);
        compares.push(Compare::mod_revision(
            prev_key.clone(),
            CompareOp::Equal,
            prev.mod_revision,
        ));
        if prev.record.state.is_active() {
            let mut old = prev.record.clone();
            old.finish(
                RolloutState::Superseded,
                Some(format!("replaced by rollout {number}")),
            );
            ops.push(Op::put(prev_key.clone(), encode(&prev_key, &old)?));
        }
        let kept = prev.numbers.len() + 1;
        for n in prev.numbers.iter().take(kept.saturating_sub(KEEP)) {
            ops.push(Op::delete(rollout_key(&name, *n)));
        }
    }
    let response = inner.store.txn(Txn::guarded(compares, ops)).await?;
    if !response.succeeded {
        return Ok(previous.map(|p| p.record));
    }
    if record.from.is_some() {
        inner.event(
            Some(&name),
            &inner.options.server_name,
            "RolloutStarted",
            format!(
                "rollout {number} ({}): {} node(s), {} at a time, each ready within {}; changed: {}",
                record.to.file,
                views.len(),
                record.max_unavailable,
                humantime::format_duration(record.progress_deadline()),
                if record.fields.is_empty() {
                    "nothing".to_owned()
                } else {
                    record.fields.join(", ")
                }
            ),
        );
    }
    report(inner, &record, &stepped, views.len());
    Ok(Some(record))
}

/// Events for what a step did.
fn report<S: Store>(inner: &Inner<S>, r: &RolloutRecord, stepped: &Stepped, nodes: usize) {
    let done = r.steps.values().filter(|s| s.ready_at.is_some()).count();
    for node in &stepped.admitted {
        inner.event(
            Some(&r.service),
            node,
            "RolloutStep",
            format!(
                "rollout {}: updating on {node} ({} of {nodes} admitted, {done} ready)",
                r.number,
                r.steps.len()
            ),
        );
    }
    if stepped.completed && r.from.is_some() {
        inner.event(
            Some(&r.service),
            &inner.options.server_name,
            "RolloutComplete",
            format!(
                "rollout {}: {nodes} node(s) run the new manifest, ready",
                r.number
            ),
        );
    }
}

/// Why `overdue` nodes fail a rollout, in words.
fn overdue_why(
    r: &RolloutRecord,
    overdue: &[String],
    views: &BTreeMap<String, NodeView>,
) -> String {
    let refused: Vec<String> = overdue
        .iter()
        .filter_map(|n| {
            let why = views.get(n)?.refused.as_deref()?;
            Some(format!("{n} ({why})"))
        })
        .collect();
    if !refused.is_empty() {
        return format!("the new manifest is refused on {}", refused.join(", "));
    }
    let seen: Vec<String> = overdue
        .iter()
        .map(|n| {
            let what = match views.get(n).and_then(|v| v.running.as_deref()) {
                Some(d) if d == r.to_digest => "runs it, not ready",
                Some(_) => "still runs the old manifest",
                None => "reports no run of it",
            };
            format!("{n} ({what})")
        })
        .collect();
    format!(
        "not ready within progressDeadline {} on {}",
        humantime::format_duration(r.progress_deadline()),
        seen.join(", ")
    )
}

/// Rolls the service back to the record `read`'s rollout started from, for `why`, keeping the
/// service's current `desired`. Guarded by the service record's revision: an apply in between
/// wins. Returns the rollout as stored and the service record written (none for a new
/// service), or `None` when the write lost a race.
async fn roll_back<S: Store>(
    inner: &Inner<S>,
    mut read: Read,
    (service_revision, desired): (u64, DesiredRecord),
    why: String,
) -> Result<Option<(RolloutRecord, Option<ServiceRecord>)>, ClusterError> {
    let name = read.record.service.clone();
    let key = rollout_key(&name, read.record.number);
    let mut ops = Vec::new();
    let mut written = None;
    let mut compares = vec![Compare::mod_revision(
        key.clone(),
        CompareOp::Equal,
        read.mod_revision,
    )];
    match read.record.from.clone() {
        // A new service has nothing to go back to: the rollout stops, the service stays.
        None => read.record.finish(
            RolloutState::RolledBack,
            Some(format!("{why}; the service was new: nothing to go back to")),
        ),
        Some(from) => {
            read.record.finish(
                RolloutState::RolledBack,
                Some(format!("{why}; rolled back to {}", from.file)),
            );
            let skey = service_key(&name);
            compares.push(Compare::mod_revision(
                skey.clone(),
                CompareOp::Equal,
                service_revision,
            ));
            // The operator's running/stopped stays as it is now.
            let restored = ServiceRecord {
                desired,
                applied_at: Timestamp::now(),
                ..from
            };
            ops.push(Op::put(skey, restored.encode()?));
            written = Some(restored);
        }
    }
    ops.push(Op::put(key.clone(), encode(&key, &read.record)?));
    let txn = Txn::guarded(compares, ops);
    if !inner.store.txn(txn).await?.succeeded {
        return Ok(None);
    }
    let server = &inner.options.server_name;
    let number = read.record.number;
    inner.event(
        Some(&name),
        server,
        "RolloutFailed",
        format!("rollout {number}: {why}"),
    );
    if let Some(from) = &read.record.from {
        inner.event(
            Some(&name),
            server,
            "RolledBack",
            format!(
                "rollout {number}: back to the manifest of {} (digest {}); nodes never admitted \
                 kept it",
                from.file,
                read.record.from_digest.as_deref().unwrap_or("-"),
            ),
        );
    }
    Ok(Some((read.record, written)))
}

/// A service's kept rollouts, oldest first, with the revision of each.
async fn read_service<S: Store>(
    store: &S,
    service: &str,
) -> Result<Vec<(RolloutRecord, u64)>, ClusterError> {
    let (kvs, _) = store.list(&rollout_prefix(service)).await?;
    let out: Vec<(RolloutRecord, u64)> = kvs
        .iter()
        .map(|kv| Ok((decode(&kv.key, &kv.value)?, kv.mod_revision)))
        .collect::<Result<_, ClusterError>>()?;
    if out.is_empty() {
        return Err(ClusterError::NotFound(format!(
            "service {service} has no rollout: it is not applied (`cloudlet ctl get services`)"
        )));
    }
    Ok(out)
}

impl<S: Store> Inner<S> {
    /// The current rollout of `service`, with every node that runs it.
    pub(crate) async fn rollout_info(&self, service: &str) -> Result<RolloutInfo, ClusterError> {
        let mut all = read_service(&self.store, service).await?;
        let Some((r, _)) = all.pop() else {
            return Err(ClusterError::NotFound(service.to_owned()));
        };
        let assignments = assigned(&self.store).await?;
        let on: OnNodes<'_> = assignments
            .get(service)
            .map(|nodes| nodes.iter().map(|(n, r)| (n.clone(), r)).collect())
            .unwrap_or_default();
        let views = node_views(self, service, &on);
        let stopped = r.to.desired == DesiredRecord::Stopped;
        let nodes = on
            .keys()
            .map(|node| {
                let step = r.steps.get(node);
                let Some(v) = views.get(node) else {
                    return RolloutNode {
                        node: node.clone(),
                        state: "lost".to_owned(),
                        admitted_at: step.map(|s| s.admitted_at),
                        ready_at: step.and_then(|s| s.ready_at),
                        running: None,
                    };
                };
                let state = if v.done(&r.to_digest, stopped) {
                    "updated"
                } else if v.assigned == r.to_digest || step.is_some_and(|s| s.ready_at.is_none()) {
                    "updating"
                } else if r.state.is_active() {
                    "pending"
                } else {
                    "old"
                };
                RolloutNode {
                    node: node.clone(),
                    state: state.to_owned(),
                    admitted_at: step.map(|s| s.admitted_at),
                    ready_at: step.and_then(|s| s.ready_at),
                    running: v.running.clone(),
                }
            })
            .collect();
        Ok(r.info(nodes))
    }

    /// Every kept rollout of `service`, oldest first.
    pub(crate) async fn rollout_history(
        &self,
        service: &str,
    ) -> Result<Vec<RolloutInfo>, ClusterError> {
        Ok(read_service(&self.store, service)
            .await?
            .iter()
            .map(|(r, _)| r.info(Vec::new()))
            .collect())
    }

    /// Pauses, resumes or undoes `service`'s rollout, for `by`.
    pub(crate) async fn rollout_action(
        &self,
        by: &str,
        service: &str,
        action: RolloutAction,
        to: Option<u64>,
    ) -> Result<RolloutInfo, ClusterError> {
        {
            // Between rounds, so a round never steps a rollout from a record read before this.
            let _one_at_a_time = self.round.lock().await;
            self.act(by, service, action, to).await?;
        }
        placer::place_now(self).await;
        self.rollout_info(service).await
    }

    async fn act(
        &self,
        by: &str,
        service: &str,
        action: RolloutAction,
        to: Option<u64>,
    ) -> Result<(), ClusterError> {
        let mut all = read_service(&self.store, service).await?;
        let numbers: Vec<u64> = all.iter().map(|(r, _)| r.number).collect();
        let Some((mut r, revision)) = all.pop() else {
            return Err(ClusterError::NotFound(service.to_owned()));
        };
        let key = rollout_key(service, r.number);
        let n = r.number;
        let put = |r: &RolloutRecord| -> Result<Txn, ClusterError> {
            Ok(Txn::guarded(
                vec![Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    revision,
                )],
                vec![Op::put(key.clone(), encode(&key, r)?)],
            ))
        };
        let skey = service_key(service);
        let current =
            self.store.get(&skey).await?.ok_or_else(|| {
                ClusterError::NotFound(format!("service {service} is not applied"))
            })?;
        let record = ServiceRecord::decode(&skey, &current.value)?;
        let event = |reason: &str, message: String| {
            self.event(Some(service), &self.options.server_name, reason, message);
        };
        match (action, r.state) {
            (RolloutAction::Pause, RolloutState::Paused)
            | (RolloutAction::Resume, RolloutState::Progressing) => return Ok(()),
            (RolloutAction::Pause, RolloutState::Progressing) => {
                r.state = RolloutState::Paused;
                r.message = Some(format!("paused by {by}"));
                self.commit(put(&r)?).await?;
                event("RolloutPaused", format!("rollout {n}: paused by {by}"));
            }
            (RolloutAction::Resume, RolloutState::Paused) => {
                r.state = RolloutState::Progressing;
                r.message = None;
                // Steps under way get their whole deadline again.
                let now = Timestamp::now();
                for s in r.steps.values_mut().filter(|s| s.ready_at.is_none()) {
                    s.admitted_at = now;
                }
                self.commit(put(&r)?).await?;
                event("RolloutResumed", format!("rollout {n}: resumed by {by}"));
            }
            (RolloutAction::Pause | RolloutAction::Resume, state) => {
                return Err(ClusterError::Conflict(format!(
                    "rollout {n} of {service} is {}: only one under way can be paused or resumed",
                    state.as_str()
                )));
            }
            (RolloutAction::Undo, state) if to.is_none() && state.is_active() => {
                let why = format!("undone by {by}");
                let read = Read {
                    record: r,
                    mod_revision: revision,
                    numbers,
                };
                if roll_back(self, read, (current.mod_revision, record.desired), why)
                    .await?
                    .is_none()
                {
                    return Err(ClusterError::Conflict(format!(
                        "{service} changed meanwhile: look again (`cloudlet ctl rollout status {service}`)"
                    )));
                }
            }
            (RolloutAction::Undo, state) => {
                // Roll out an earlier manifest again: rollout `to`'s, else the one this one
                // started from.
                let target = match to {
                    Some(m) => {
                        let Some((old, _)) = read_service(&self.store, service)
                            .await?
                            .into_iter()
                            .find(|(o, _)| o.number == m)
                        else {
                            return Err(ClusterError::NotFound(format!(
                                "{service} has no rollout {m} (`cloudlet ctl rollout history {service}` lists them)"
                            )));
                        };
                        old.to
                    }
                    None if state == RolloutState::Complete => r.from.clone().ok_or_else(|| {
                        ClusterError::Conflict(format!(
                            "rollout {n} of {service} created it: there is nothing before it"
                        ))
                    })?,
                    None => {
                        return Err(ClusterError::Conflict(format!(
                            "rollout {n} of {service} is {} already; `--to N` picks an earlier \
                             one (`cloudlet ctl rollout history {service}`)",
                            state.as_str()
                        )));
                    }
                };
                if target.manifest == record.manifest {
                    return Err(ClusterError::Conflict(format!(
                        "{service} already has that manifest"
                    )));
                }
                let restored = ServiceRecord {
                    desired: record.desired,
                    applied_at: Timestamp::now(),
                    ..target
                };
                self.commit(Txn::guarded(
                    vec![Compare::mod_revision(
                        skey.clone(),
                        CompareOp::Equal,
                        current.mod_revision,
                    )],
                    vec![Op::put(skey.clone(), restored.encode()?)],
                ))
                .await?;
                event(
                    "RolloutUndo",
                    format!(
                        "{by} rolls {service} back to the manifest of {} (digest {})",
                        restored.file,
                        manifest_digest(&restored.manifest)
                    ),
                );
            }
        }
        Ok(())
    }

    async fn commit(&self, txn: Txn) -> Result<(), ClusterError> {
        if self.store.txn(txn).await?.succeeded {
            Ok(())
        } else {
            Err(ClusterError::Conflict(
                "the rollout changed meanwhile: look again and retry".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudlet_spec::{Manifest, ServiceManifest};

    fn record(version: &str, rollout: &str) -> ServiceRecord {
        let text = format!(
            "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  command: [/bin/web, {version}]\n{rollout}"
        );
        let parsed = cloudlet_spec::parse_file("web.yaml", &text).unwrap();
        let manifest: ServiceManifest = parsed
            .iter()
            .find_map(Manifest::as_service)
            .unwrap()
            .clone();
        ServiceRecord {
            manifest,
            desired: DesiredRecord::Running,
            file: format!("{version}.yaml"),
            document: 1,
            applied_at: Timestamp::UNIX_EPOCH,
            transient: None,
        }
    }

    fn view(assigned: &str, running: Option<&str>, ready: bool) -> NodeView {
        NodeView {
            assigned: assigned.to_owned(),
            running: running.map(str::to_owned),
            ready,
            refused: None,
        }
    }

    /// `names`, each running `digest`, ready.
    fn all_on(names: &[&str], digest: &str) -> BTreeMap<String, NodeView> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), view(digest, Some(digest), true)))
            .collect()
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    /// Three nodes on v1, a rollout to v2 with the defaults: one node at a time, in name order,
    /// each admitted only when the one before is ready on v2.
    #[test]
    fn one_node_at_a_time_in_name_order() {
        let (v1, v2) = (record("v1", ""), record("v2", ""));
        let (d1, d2) = (manifest_digest(&v1.manifest), manifest_digest(&v2.manifest));
        let mut r = RolloutRecord::new(2, Some(v1), v2);
        assert_eq!(r.fields, ["spec.command"]);
        let mut nodes = all_on(&["a", "b", "c"], &d1);

        let s = step(&mut r, &nodes, false, at(0));
        assert_eq!(s.admitted, ["a"]);
        assert!(may_update(Some(&r), "a", &d2));
        assert!(!may_update(Some(&r), "b", &d2));

        // a has the new manifest but still reports the old run: not done, nothing admitted.
        nodes.insert("a".into(), view(&d2, Some(&d1), true));
        let s = step(&mut r, &nodes, false, at(1));
        assert_eq!(s, Stepped::default());
        // The new run, not ready yet: still nothing.
        nodes.insert("a".into(), view(&d2, Some(&d2), false));
        assert_eq!(step(&mut r, &nodes, false, at(2)), Stepped::default());
        // Ready: b is next.
        nodes.insert("a".into(), view(&d2, Some(&d2), true));
        let s = step(&mut r, &nodes, false, at(3));
        assert_eq!(s.admitted, ["b"]);
        assert_eq!(r.steps["a"].ready_at, Some(at(3)));

        nodes.insert("b".into(), view(&d2, Some(&d2), true));
        assert_eq!(step(&mut r, &nodes, false, at(4)).admitted, ["c"]);
        nodes.insert("c".into(), view(&d2, Some(&d2), true));
        let s = step(&mut r, &nodes, false, at(5));
        assert!(s.completed);
        assert_eq!(r.state, RolloutState::Complete);
        // Over: the placer may write v2 anywhere (a node that gets it late, too).
        assert!(may_update(Some(&r), "d", &d2));
        assert!(!may_update(Some(&r), "d", &d1));
    }

    /// A node that shows the new manifest `invalid` will never run it: the rollout fails at
    /// once, naming the node and why, instead of waiting out its progress deadline.
    #[test]
    fn a_node_that_refuses_the_new_manifest_fails_the_step_at_once() {
        let (v1, v2) = (
            record("v1", ""),
            record("v2", "  rollout: {progressDeadline: 10m}\n"),
        );
        let (d1, d2) = (manifest_digest(&v1.manifest), manifest_digest(&v2.manifest));
        let mut r = RolloutRecord::new(1, Some(v1), v2);
        let mut nodes = all_on(&["a", "b"], &d1);
        assert_eq!(step(&mut r, &nodes, false, at(0)).admitted, ["a"]);
        // Still the old manifest shown invalid (the new one not yet taken): not a refusal.
        nodes.get_mut("a").unwrap().refused = Some("old trouble".into());
        assert!(step(&mut r, &nodes, false, at(1)).overdue.is_empty());
        let refusing = NodeView {
            refused: Some("spec.files[0]: inside the data dir".into()),
            ..view(&d2, Some(&d1), false)
        };
        nodes.insert("a".into(), refusing);
        let s = step(&mut r, &nodes, false, at(2));
        assert_eq!(s.overdue, ["a"], "failed at 2 s of a 10 min deadline");
        assert_eq!(
            overdue_why(&r, &s.overdue, &nodes),
            "the new manifest is refused on a (spec.files[0]: inside the data dir)"
        );
    }

    /// A step past its deadline is reported, and nothing more is admitted.
    #[test]
    fn a_step_not_ready_in_time_is_overdue() {
        let (v1, v2) = (
            record("v1", ""),
            record(
                "v2",
                "  rollout: {maxUnavailable: 2, progressDeadline: 30s}\n",
            ),
        );
        let (d1, d2) = (manifest_digest(&v1.manifest), manifest_digest(&v2.manifest));
        let mut r = RolloutRecord::new(1, Some(v1), v2);
        assert_eq!(r.max_unavailable, 2);
        let mut nodes = all_on(&["a", "b", "c"], &d1);
        assert_eq!(step(&mut r, &nodes, false, at(0)).admitted, ["a", "b"]);
        nodes.insert("a".into(), view(&d2, Some(&d2), true));
        nodes.insert("b".into(), view(&d2, Some(&d2), false));
        // a is ready: c takes its slot; b is still within its deadline.
        assert_eq!(step(&mut r, &nodes, false, at(29)).admitted, ["c"]);
        // b's 30 s are up; c, admitted at 29 s, still has time.
        let s = step(&mut r, &nodes, false, at(30));
        assert_eq!(s.overdue, ["b"]);
        assert!(s.admitted.is_empty());
        assert_eq!(r.state, RolloutState::Progressing);
        // After the caller rolls back, the old manifest is the target everywhere.
        r.finish(RolloutState::RolledBack, None);
        assert_eq!(r.target_digest(), Some(d1.as_str()));
        assert!(may_update(Some(&r), "b", &d1));
        assert!(!may_update(Some(&r), "b", &d2));
    }

    /// A paused rollout admits nobody and never runs out of time; a stopped service has no
    /// readiness to wait for.
    #[test]
    fn paused_admits_nobody_and_stopped_needs_no_readiness() {
        let (v1, v2) = (record("v1", ""), record("v2", ""));
        let (d1, d2) = (manifest_digest(&v1.manifest), manifest_digest(&v2.manifest));
        let mut r = RolloutRecord::new(1, Some(v1), v2);
        let mut nodes = all_on(&["a", "b"], &d1);
        assert_eq!(step(&mut r, &nodes, false, at(0)).admitted, ["a"]);
        r.state = RolloutState::Paused;
        nodes.insert("a".into(), view(&d2, Some(&d2), false));
        assert!(step(&mut r, &nodes, true, at(10_000)).changed);
        assert!(r.steps["a"].ready_at.is_some());
        assert!(!r.steps.contains_key("b"));
        r.state = RolloutState::Progressing;
        assert_eq!(step(&mut r, &nodes, true, at(10_001)).admitted, ["b"]);
    }

    /// Nothing to move: complete at once; no rollout yet: nothing may be replaced.
    #[test]
    fn nothing_to_move_completes_at_once() {
        let v1 = record("v1", "");
        let d1 = manifest_digest(&v1.manifest);
        let mut r = RolloutRecord::new(1, None, v1);
        let nodes = BTreeMap::from([("a".to_owned(), view(&d1, None, false))]);
        assert!(step(&mut r, &nodes, false, at(0)).completed);
        assert!(!may_update(None, "a", &d1));
    }
}
