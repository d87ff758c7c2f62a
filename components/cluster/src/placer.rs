//! The placer: turns the cluster's services and nodes into assignments
//! (`/assignments/<node>/<service>`), one round at a time, whenever something changed (an apply,
//! a node joining, a node lost or back, a cordon) — the decision itself is
//! `cloudlet_placement::place`, a pure function.
//!
//! A round writes only differences, each guarded by a compare on the revision it read, so a
//! transient service a node made for itself under the same prefix is never overwritten. It
//! records why a service could not be placed (events, and `ctl get services`), and every
//! relocation as an event. It never stops anything by itself: an assignment goes only when its
//! service was deleted or scaled down, its node no longer matches, or a relocatable copy moved.
//! Two things hold a write back: a copy whose dependency runs on another node is first placed
//! only once that dependency is ready somewhere (start order across nodes), and a new manifest
//! reaches a node that runs the old one only in its rollout's turn (`rollouts.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cloudlet_node::records::{
    ASSIGNMENTS, EventRecord, SERVICES, ServiceRecord, assignment_key, manifest_digest,
    split_assignment_key,
};
use cloudlet_placement::{Health, Rule, Selector};
use cloudlet_spec::NodeRole;
use cloudlet_store::{Compare, CompareOp, Op, Store, Txn};

use crate::records::{NODES, NodeRecord, decode};
use crate::{ClusterError, Inner, rollouts};

/// How often node health is looked at when nothing else happens.
const TICK: Duration = Duration::from_millis(500);
/// Most operations in one transaction: large enough that a round's writes (a whole cluster
/// YAML's services on a node) land together, so a node never sees half of them.
const CHUNK: usize = 4096;

/// Runs rounds until the process ends: after every kick, and when a node's health flips.
pub(crate) async fn run<S: Store>(inner: Arc<Inner<S>>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut known: Vec<String> = Vec::new();
    let mut pending = true;
    loop {
        tokio::select! {
            () = inner.kick.notified() => pending = true,
            _ = tick.tick() => {}
        }
        let flips = inner
            .lock_registry()
            .flips(known.iter().map(String::as_str));
        for (node, before, now) in &flips {
            match (before, now) {
                (Some(Health::Ready) | None, Health::Lost) => inner.event(
                    None,
                    node,
                    "NodeLost",
                    format!(
                        "no heartbeat for {}: its services are unknown; relocatable ones move",
                        humantime_secs(inner.options.node_lost_after)
                    ),
                ),
                (Some(Health::Lost), Health::Ready) => {
                    inner.event(None, node, "NodeReady", "heartbeats again".into());
                }
                _ => {}
            }
        }
        // A rollout under way, or a copy waiting for a dependency on another node (found by
        // this loop or by an apply's own round), is looked at again on every tick: they wait on
        // heartbeats and deadlines, not on store changes.
        if !pending && flips.is_empty() && !inner.again.load(Ordering::Relaxed) {
            continue;
        }
        match locked_round(&inner).await {
            Ok(nodes) => {
                known = nodes;
                pending = false;
            }
            Err(e) => {
                tracing::warn!("placement round failed, retrying: {e}");
            }
        }
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// The cluster's nodes, as stored.
pub(crate) async fn load_nodes<S: Store>(
    store: &S,
) -> Result<BTreeMap<String, NodeRecord>, ClusterError> {
    let (kvs, _) = store.list(NODES).await?;
    kvs.iter()
        .map(|kv| {
            let r: NodeRecord = decode(&kv.key, &kv.value)?;
            Ok((r.name.clone(), r))
        })
        .collect()
}

/// The placement inputs for the stored services and nodes, with health and allocatable from the
/// registry.
pub(crate) fn inputs<S: Store>(
    inner: &Inner<S>,
    services: &BTreeMap<String, ServiceRecord>,
    nodes: &BTreeMap<String, NodeRecord>,
) -> (
    Vec<cloudlet_placement::Service>,
    Vec<cloudlet_placement::Node>,
) {
    let services = services.values().map(placement_service).collect();
    let registry = inner.lock_registry();
    let nodes = nodes
        .values()
        .map(|n| cloudlet_placement::Node {
            name: n.name.clone(),
            roles: n.roles.iter().map(|r| role(*r)).collect(),
            labels: n.labels.clone(),
            health: registry.health(&n.name),
            cordoned: n.cordoned,
            draining: n.draining.map(|force| cloudlet_placement::Drain { force }),
            allocatable: registry.allocatable(&n.name),
        })
        .collect();
    (services, nodes)
}

fn role(r: NodeRole) -> cloudlet_placement::Role {
    match r {
        NodeRole::Control => cloudlet_placement::Role::Control,
        NodeRole::Compute => cloudlet_placement::Role::Compute,
    }
}

fn placement_service(r: &ServiceRecord) -> cloudlet_placement::Service {
    let spec = &r.manifest.spec;
    let p = spec.placement.clone().unwrap_or_default();
    let resources = spec.effective().resources;
    let selector = p.node_selector.unwrap_or_default();
    cloudlet_placement::Service {
        name: r.manifest.metadata.name.clone(),
        rule: if p.every_node {
            Rule::EveryNode
        } else {
            Rule::Replicas(p.replicas.unwrap_or(1))
        },
        selector: Selector {
            roles: selector.roles.into_iter().map(role).collect(),
            labels: selector.labels,
        },
        relocate: p.relocate,
        requests: cloudlet_placement::Resources::new(
            resources.cpu_request_millicores.unwrap_or(0),
            resources.memory_request_bytes.unwrap_or(0),
        ),
    }
}

/// One stored assignment.
struct Stored {
    record: ServiceRecord,
    revision: u64,
}

/// One round now, after any round in progress: what an apply or a stop waits for, so that the
/// assignments match when the operator's command returns. A failure leaves the next round to the
/// background loop.
pub(crate) async fn place_now<S: Store>(inner: &Inner<S>) {
    if let Err(e) = locked_round(inner).await {
        tracing::debug!("placement after a change: {e}; the placer retries");
        inner.kick.notify_one();
    }
}

async fn locked_round<S: Store>(inner: &Inner<S>) -> Result<Vec<String>, ClusterError> {
    let _one_at_a_time = inner.round.lock().await;
    round(inner).await
}

/// One round: move the rollouts on, read, plan, write the differences. Returns the node names
/// it saw.
async fn round<S: Store>(inner: &Inner<S>) -> Result<Vec<String>, ClusterError> {
    let store = &inner.store;
    let (service_kvs, _) = store.list(SERVICES).await?;
    let mut services: BTreeMap<String, (ServiceRecord, u64)> = BTreeMap::new();
    for kv in &service_kvs {
        let record = ServiceRecord::decode(&kv.key, &kv.value)?;
        services.insert(
            record.manifest.metadata.name.clone(),
            (record, kv.mod_revision),
        );
    }
    let nodes = load_nodes(store).await?;
    let (kvs, _) = store.list(ASSIGNMENTS).await?;
    let mut current: BTreeMap<(String, String), Stored> = BTreeMap::new();
    let mut transient: BTreeSet<(String, String)> = BTreeSet::new();
    for kv in &kvs {
        let Some((node, service)) = split_assignment_key(&kv.key) else {
            continue;
        };
        let record = ServiceRecord::decode(&kv.key, &kv.value)?;
        let pair = (service.to_owned(), node.to_owned());
        if record.transient.is_some() {
            transient.insert(pair);
        } else {
            current.insert(
                pair,
                Stored {
                    record,
                    revision: kv.mod_revision,
                },
            );
        }
    }
    // Rollouts step first, on the same reads; a rollback's record replaces the one read.
    let mut on: BTreeMap<String, rollouts::OnNodes<'_>> = BTreeMap::new();
    for ((service, node), stored) in &current {
        on.entry(service.clone())
            .or_default()
            .insert(node.clone(), &stored.record);
    }
    let advanced = rollouts::advance(inner, &services, &on).await?;
    let latest = advanced.latest;
    inner.again.store(
        latest.values().any(|r| r.state.is_active()),
        Ordering::Relaxed,
    );
    let mut services: BTreeMap<String, ServiceRecord> = services
        .into_iter()
        .map(|(name, (record, _))| (name, record))
        .collect();
    services.extend(advanced.restored);
    let (p_services, p_nodes) = inputs(inner, &services, &nodes);
    let now: BTreeSet<(String, String)> = current.keys().cloned().collect();
    let plan = cloudlet_placement::place(&p_services, &p_nodes, &now)
        .map_err(|e| ClusterError::Invalid(e.to_string()))?;

    let ready = ready_somewhere(inner);
    let mut notes: BTreeMap<String, String> = BTreeMap::new();
    // Copies held back for a dependency elsewhere: service -> (dependencies, nodes).
    let mut waiting: BTreeMap<String, (BTreeSet<String>, Vec<String>)> = BTreeMap::new();
    let mut ops: Vec<(Compare, Op, String)> = Vec::new();
    for (service, node) in &plan.assignments {
        let Some(want) = services.get(service) else {
            continue;
        };
        let key = assignment_key(node, service);
        match current.get(&(service.clone(), node.clone())) {
            Some(have) if have.record == *want => {}
            // A new manifest reaches a node that runs the old one only in its rollout's turn.
            Some(have)
                if have.record.manifest != want.manifest
                    && !rollouts::may_update(
                        latest.get(service),
                        node,
                        &manifest_digest(&want.manifest),
                    ) => {}
            Some(have) => ops.push((
                Compare::mod_revision(key.clone(), CompareOp::Equal, have.revision),
                Op::put(key, want.encode()?),
                node.clone(),
            )),
            None if transient.contains(&(service.clone(), node.clone())) => {
                notes.insert(
                    service.clone(),
                    format!(
                        "{service}: node {node} runs a transient service of the same name \
                         (started with `ctl run`): delete it there or rename one of them"
                    ),
                );
            }
            None if let Some(missing) = waits_elsewhere(want, node, &plan.assignments, &ready) => {
                let (deps, nodes) = waiting.entry(service.clone()).or_default();
                deps.extend(missing);
                nodes.push(node.clone());
            }
            None => ops.push((
                Compare::absent(key.clone()),
                Op::put(key, want.encode()?),
                node.clone(),
            )),
        }
    }
    for (service, node) in plan.removed(&now) {
        let key = assignment_key(&node, &service);
        if let Some(have) = current.get(&(service.clone(), node.clone())) {
            ops.push((
                Compare::mod_revision(key.clone(), CompareOp::Equal, have.revision),
                Op::delete(key),
                node,
            ));
        }
    }
    for chunk in ops.chunks(CHUNK) {
        let txn = Txn::guarded(
            chunk.iter().map(|(c, _, _)| c.clone()).collect(),
            chunk.iter().map(|(_, o, _)| o.clone()).collect(),
        );
        let response = store.txn(txn).await?;
        if !response.succeeded {
            inner.kick.notify_one();
            return Err(ClusterError::Conflict(
                "assignments changed during a placement round".into(),
            ));
        }
        let mut revs = inner.lock_revisions();
        for (_, _, node) in chunk {
            revs.insert(node.clone(), response.revision);
        }
    }
    for m in &plan.moves {
        inner.event(Some(&m.service), &m.from, "Relocated", m.to_string());
    }
    let mut unplaced: BTreeMap<String, String> = plan
        .unplaced
        .iter()
        .map(|u| (u.service.clone(), u.to_string()))
        .collect();
    unplaced.extend(notes);
    for (service, (deps, nodes)) in &waiting {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        unplaced.insert(
            service.clone(),
            format!(
                "{service}: waits for {} to be ready on another node before it starts on {}",
                deps.join(", "),
                nodes.join(", ")
            ),
        );
    }
    inner.set_unplaced(unplaced);
    // A copy held back for a dependency is looked at again on every tick (readiness arrives
    // with heartbeats, not as a store change).
    if !waiting.is_empty() {
        inner.again.store(true, Ordering::Relaxed);
    }
    Ok(nodes.into_keys().collect())
}

/// The services ready on at least one node that is heard from, by their last heartbeats.
fn ready_somewhere<S: Store>(inner: &Inner<S>) -> BTreeSet<String> {
    let registry = inner.lock_registry();
    registry
        .nodes()
        .filter(|node| registry.health(node) == Health::Ready)
        .filter_map(|node| registry.get(node))
        .flat_map(|live| live.services.iter().filter(|s| s.ready))
        .map(|s| s.name.clone())
        .collect()
}

/// The dependencies that keep `want` from starting on `node` yet: those this plan does not place
/// on `node` that are not ready anywhere (`None`: it may start). Start order across nodes: a
/// node's supervisor orders only the services it runs, so a copy whose dependency runs elsewhere
/// is placed once that dependency is ready. Only a first placement waits; a copy already placed
/// never goes for a dependency (no cascades).
fn waits_elsewhere(
    want: &ServiceRecord,
    node: &str,
    plan: &BTreeSet<(String, String)>,
    ready: &BTreeSet<String>,
) -> Option<Vec<String>> {
    let missing: Vec<String> = want
        .manifest
        .spec
        .depends_on
        .iter()
        .filter(|d| !plan.contains(&((*d).clone(), node.to_owned())) && !ready.contains(*d))
        .cloned()
        .collect();
    (!missing.is_empty()).then_some(missing)
}

/// An event of the control plane.
pub(crate) fn event_record(
    service: Option<&str>,
    node: &str,
    reason: &str,
    message: String,
) -> EventRecord {
    EventRecord {
        time: jiff::Timestamp::now(),
        service: service.map(str::to_owned),
        node: node.to_owned(),
        reason: reason.to_owned(),
        message,
        exit: None,
    }
}
