//! The cluster's control plane, run by `cloudlet server`: who the nodes are (join with a token,
//! certificates renewed), whether they are alive (heartbeats), where each service runs
//! (placement, written as assignments the agents follow), and the one view of every node that the
//! API serves (`backend.rs` implements `cloudlet_api::Backend`, proxying node-local verbs to the
//! node's agent over mutual TLS).
//!
//! It owns the cluster's policy: the key layout of nodes, tokens and assignments, the join and
//! renewal rules, and when a node counts as lost. It never runs processes (each node's agent does),
//! never stops a service because a node is short of anything (placement has no eviction), and never
//! moves a service that is not marked `relocate` off a node that stopped answering.
#![warn(missing_docs)]

pub mod autodeploy;
mod backend;
pub mod cloudpods;
mod error;
pub mod expiry;
pub mod pki;
mod placer;
pub mod records;
pub mod registry;
pub mod release;
pub mod revisions;
pub mod revocations;
pub mod rollouts;
pub mod servicecerts;
pub mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cloudlet_api::Client;
use cloudlet_node::Node;
use cloudlet_node::events::EventSink;
use cloudlet_spec::NodeRole;
use cloudlet_store::Store;
use tokio::sync::Notify;

pub use error::ClusterError;

use crate::pki::ServerPki;
use crate::records::{NodeRecord, encode, node_key};
use crate::registry::Registry;

/// The default port of the server's API (the one Kubernetes' API server had).
pub const DEFAULT_SERVER_PORT: u16 = 6443;
/// The default port of an agent's API (the one the kubelet had).
pub const DEFAULT_AGENT_PORT: u16 = 10250;
/// How long without a heartbeat until a node is lost, by default.
pub const DEFAULT_NODE_LOST_AFTER: Duration = Duration::from_secs(10);
/// How often agents beat, by default.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);

/// How to run the control plane.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The server's data dir.
    pub data_dir: PathBuf,
    /// The server's own node name (also the name in its certificate).
    pub server_name: String,
    /// Heartbeats missing this long make a node lost.
    pub node_lost_after: Duration,
    /// How long node certificates live.
    pub cert_lifetime: Duration,
    /// How long the Cloudpods services' certificate lives (renewed at two thirds).
    pub service_cert_lifetime: Duration,
    /// The embedded service templates a cluster YAML renders: (file name, YAML text).
    pub templates: Vec<(String, String)>,
    /// The `cloudlet` executable the Cloudpods bootstrap steps run (the same path on every
    /// node).
    pub cloudlet_exe: PathBuf,
}

/// The control plane. Cheap to clone.
#[derive(Debug)]
pub struct ControlPlane<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for ControlPlane<S> {
    fn clone(&self) -> Self {
        ControlPlane {
            inner: Arc::clone(&self.inner),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Inner<S> {
    pub(crate) store: S,
    pub(crate) pki: Arc<ServerPki>,
    pub(crate) local: Option<Node<S>>,
    pub(crate) events: EventSink,
    pub(crate) options: ClusterOptions,
    pub(crate) kick: Notify,
    /// Wakes the certificate keeper: the CA changed.
    pub(crate) pki_changed: Notify,
    /// Held by a placement round: rounds never overlap.
    pub(crate) round: tokio::sync::Mutex<()>,
    /// A rollout is under way or a copy waits for a dependency elsewhere: the placer runs a
    /// round on every tick.
    pub(crate) again: std::sync::atomic::AtomicBool,
    /// Held by a join.
    pub(crate) joins: tokio::sync::Mutex<()>,
    registry: Mutex<Registry>,
    /// Per node: the store revision of the last write to its assignments.
    revisions: Mutex<HashMap<String, u64>>,
    /// The store revision when the server started: what a node's assignments revision is until
    /// the placer writes to it.
    base_revision: u64,
    /// Why services are not (fully) placed, by service.
    unplaced: Mutex<BTreeMap<String, String>>,
    /// Clients of agents' APIs, by node.
    agents: Mutex<HashMap<String, (String, Client)>>,
    /// Node certificates refused before they expire.
    pub(crate) revocations: revocations::Revocations,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; a poisoned one still holds valid data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: Store> Inner<S> {
    pub(crate) fn lock_registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    pub(crate) fn lock_revisions(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        lock(&self.revisions)
    }

    pub(crate) fn assignments_revision(&self, node: &str) -> u64 {
        self.lock_revisions()
            .get(node)
            .copied()
            .unwrap_or(self.base_revision)
    }

    /// Records an event of the control plane.
    pub(crate) fn event(&self, service: Option<&str>, node: &str, reason: &str, message: String) {
        self.events
            .send(placer::event_record(service, node, reason, message));
    }

    /// Sets why services are not placed; an event for every new or changed reason.
    pub(crate) fn set_unplaced(&self, now: BTreeMap<String, String>) {
        let mut old = lock(&self.unplaced);
        for (service, why) in &now {
            if old.get(service) != Some(why) {
                self.event(
                    Some(service),
                    &self.options.server_name,
                    "Unplaced",
                    why.clone(),
                );
            }
        }
        *old = now;
    }

    pub(crate) fn unplaced(&self) -> BTreeMap<String, String> {
        lock(&self.unplaced).clone()
    }

    pub(crate) fn agents(&self) -> MutexGuard<'_, HashMap<String, (String, Client)>> {
        lock(&self.agents)
    }
}

impl<S: Store> ControlPlane<S> {
    /// Starts the control plane on `store`: registers the server's own node (when `local` is
    /// given: the node this process runs), and starts placing. Call inside a tokio runtime.
    pub async fn start(
        store: S,
        pki: Arc<ServerPki>,
        events: EventSink,
        local: Option<Node<S>>,
        options: ClusterOptions,
    ) -> Result<ControlPlane<S>, ClusterError> {
        let base_revision = store.current_revision().await?;
        let revocations = revocations::Revocations::load(&store, jiff::Timestamp::now()).await?;
        let inner = Arc::new(Inner {
            revocations,
            registry: Mutex::new(Registry::new(options.node_lost_after)),
            revisions: Mutex::new(HashMap::new()),
            base_revision,
            unplaced: Mutex::new(BTreeMap::new()),
            agents: Mutex::new(HashMap::new()),
            kick: Notify::new(),
            pki_changed: Notify::new(),
            round: tokio::sync::Mutex::new(()),
            again: std::sync::atomic::AtomicBool::new(false),
            joins: tokio::sync::Mutex::new(()),
            store,
            pki,
            local,
            events,
            options,
        });
        let cp = ControlPlane { inner };
        if let Some(node) = &cp.inner.local {
            cp.register_local(node.name()).await?;
            tokio::spawn(local_heartbeats(cp.clone()));
        }
        tokio::spawn(placer::run(Arc::clone(&cp.inner)));
        tokio::spawn(keep_certificates(Arc::clone(&cp.inner)));
        tokio::spawn(servicecerts::keep(Arc::clone(&cp.inner)));
        cp.inner.kick.notify_one();
        Ok(cp)
    }

    /// The server's own node record: both roles, no address (reached in-process).
    async fn register_local(&self, name: &str) -> Result<(), ClusterError> {
        let key = node_key(name);
        if self.inner.store.get(&key).await?.is_some() {
            return Ok(());
        }
        let record = NodeRecord::new(name, vec![NodeRole::Control, NodeRole::Compute]);
        self.inner
            .store
            .put(&key, encode(&key, &record)?, None)
            .await?;
        Ok(())
    }

    /// The PKI of the server.
    pub fn pki(&self) -> &Arc<ServerPki> {
        &self.inner.pki
    }
}

/// The server's own node beats in-process, as often as an agent would.
async fn local_heartbeats<S: Store>(cp: ControlPlane<S>) {
    use cloudlet_api::Backend as _;
    let Some(node) = cp.inner.local.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(DEFAULT_HEARTBEAT);
    loop {
        tick.tick().await;
        let status = match node.nodes().await {
            Ok(mut n) if !n.is_empty() => n.swap_remove(0),
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!("own node status: {e}");
                continue;
            }
        };
        let services = node
            .list_services(cloudlet_api::dto::ServicesQuery::default())
            .await
            .unwrap_or_default();
        let heartbeat = cloudlet_api::dto::Heartbeat {
            node: status,
            services: Some(services),
            delta: None,
            seq: 0,
        };
        let beat = cp.inner.lock_registry().beat(node.name(), heartbeat);
        if beat.replan {
            cp.inner.kick.notify_one();
        }
    }
}

/// Renews the server's own certificate and admin.conf at two thirds of their lives, and warns
/// (an event, once per certificate) about any certificate of the cluster close to an expiry that
/// renewal did not prevent.
async fn keep_certificates<S: Store>(inner: Arc<Inner<S>>) {
    let mut warned = std::collections::BTreeSet::new();
    loop {
        let left = inner
            .pki
            .next_renewal()
            .duration_since(jiff::Timestamp::now());
        let until_renewal = if left.is_positive() {
            left.unsigned_abs()
        } else {
            Duration::ZERO
        };
        // Look at expiries at least every tenth of a lifetime (and at least hourly).
        let check = (inner.options.cert_lifetime / 10).min(Duration::from_secs(3600));
        let wait = until_renewal.min(check).max(Duration::from_millis(200));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = inner.pki_changed.notified() => {}
        }
        let pki = Arc::clone(&inner.pki);
        match tokio::task::spawn_blocking(move || pki.renew_due()).await {
            Ok(Ok(renewed)) if !renewed.is_empty() => {
                tracing::info!("renewed: {}", renewed.join(", "));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("certificate renewal failed, retrying: {e}"),
            Err(e) => tracing::warn!("certificate renewal task failed: {e}"),
        }
        let mut items: Vec<expiry::Item> = inner
            .pki
            .expiries()
            .into_iter()
            .map(|(what, not_after)| expiry::Item {
                node: inner.options.server_name.clone(),
                lifetime: if what.starts_with("ca") {
                    None
                } else {
                    Some(inner.options.cert_lifetime)
                },
                what,
                not_after,
            })
            .collect();
        if let Ok(nodes) = placer::load_nodes(&inner.store).await {
            items.extend(nodes.into_values().filter_map(|n| {
                Some(expiry::Item {
                    what: "node certificate".to_owned(),
                    not_after: n.cert_not_after?,
                    lifetime: Some(inner.options.cert_lifetime),
                    node: n.name,
                })
            }));
        }
        // The Cloudpods services' certificate and its CA: renewal should keep them far away.
        if let Ok(Some(certs)) = servicecerts::issued(&inner.store).await {
            let ca_not_after = cloudlet_pki::certs_from_pem(&certs.ca_cert)
                .ok()
                .and_then(|ders| ders.first().and_then(|d| cloudlet_pki::validity(d).ok()))
                .map(|(_, not_after)| not_after);
            items.push(expiry::Item {
                node: inner.options.server_name.clone(),
                what: "services certificate".to_owned(),
                not_after: certs.not_after,
                lifetime: Some(inner.options.service_cert_lifetime),
            });
            items.extend(ca_not_after.map(|not_after| expiry::Item {
                node: inner.options.server_name.clone(),
                what: "services ca".to_owned(),
                not_after,
                lifetime: None,
            }));
        }
        for warning in expiry::expiring(jiff::Timestamp::now(), &items) {
            if warned.insert(warning.key.clone()) {
                inner.event(None, &warning.node, "CertificateExpiring", warning.message);
            }
        }
    }
}
