//! The cluster as the API sees it: `cloudlet_api::Backend` on [`ControlPlane`].
//!
//! Cluster verbs (apply, delete, start/stop, nodes, tokens, join, heartbeats) act on the store;
//! node-local verbs (describe, restart, logs, exec) go to the node that runs the service: the
//! server's own node in-process, any other through its agent's API over mutual TLS, with the
//! server's certificate. Errors become `ApiError` kinds here and nowhere else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cloudlet_api::dto::{
    self, Action, ActionResponse, ApplyAction, ApplyItem, ApplyRequest, ApplyResponse,
    AssignedService, Assignments, CaRotateRequest, CertificateResponse, CloudpodsCredentials,
    ClusterApplied, ClusterDiff, ClusterRequest, DesiredState, Event, EventsQuery, ExecRequest,
    Heartbeat, HeartbeatResponse, JoinRequest, LogsQuery, NetworkStatus, NodeAction, NodeQuery,
    NodeStatus, RenewRequest, RevisionInfo, RollbackRequest, RolloutAction, RolloutInfo,
    RolloutRequest, RunRequest, ServiceDetail, ServiceState, ServiceStatus, ServicesQuery,
    TokenCreated, TokenInfo, TokenRequest,
};
use cloudlet_api::{ApiError, Backend, Caller, Client, EventStream, ExecStream, LogStream};
use cloudlet_node::Node;
use cloudlet_node::apply::{self, Applied};
use cloudlet_node::records::{
    ASSIGNMENTS, DesiredRecord, EventRecord, SERVICES, ServiceRecord, assignment_prefix,
    service_key, split_assignment_key,
};
use cloudlet_placement::Health;
use cloudlet_spec::NodeRole;
use cloudlet_store::{Compare, CompareOp, Op, Store, Txn};

use crate::records::{NodeRecord, TokenRecord, decode, encode, node_key};
use crate::{ClusterError, ControlPlane, Inner, placer, rollouts, tokens};

/// How long a question to every node (`ctl get network`) waits for all of them together: they
/// are asked at once, and a node that has not answered by then gets a row saying so. Longer than
/// an agent's own deadline on its calls (5 s); an operator waits no more than this.
pub const FAN_OUT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A join token lives one day unless the operator says otherwise.
const DEFAULT_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Node(n) => ApiError::from(n),
            ClusterError::Refused(m) => ApiError::Forbidden(m),
            ClusterError::Invalid(m) => ApiError::Invalid(m),
            ClusterError::NotFound(m) => ApiError::NotFound(m),
            ClusterError::Conflict(m) => ApiError::Conflict(m),
            ClusterError::Agent(m) => ApiError::Unavailable(m),
            ClusterError::Store(s @ cloudlet_store::StoreError::DiskFull { .. }) => {
                ApiError::Unavailable(s.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Where a node-local verb goes.
enum Target<'a, S> {
    Local(&'a Node<S>),
    Remote(Client),
}

impl<S: Store> Inner<S> {
    fn is_local(&self, node: &str) -> bool {
        self.local.as_ref().is_some_and(|l| l.name() == node)
    }

    /// The nodes `service` is assigned to (transient services of the server's node included).
    pub(crate) async fn nodes_of(&self, service: &str) -> Result<Vec<String>, ClusterError> {
        let (kvs, _) = self.store.list(ASSIGNMENTS).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let (node, name) = split_assignment_key(&kv.key)?;
                (name == service).then(|| node.to_owned())
            })
            .collect())
    }

    /// The node a per-service verb is for: the one asked for, or the only one that runs it.
    async fn resolve(&self, service: &str, node: Option<&str>) -> Result<String, ClusterError> {
        if let Some(n) = node {
            return Ok(n.to_owned());
        }
        let nodes = self.nodes_of(service).await?;
        match nodes.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(ClusterError::NotFound(format!(
                "service {service:?} not found on any node"
            ))),
            many => Err(ClusterError::Invalid(format!(
                "service {service} runs on {}: pick one with --node",
                many.join(", ")
            ))),
        }
    }

    async fn target(&self, node: &str) -> Result<Target<'_, S>, ClusterError> {
        if let Some(local) = self.local.as_ref().filter(|l| l.name() == node) {
            return Ok(Target::Local(local));
        }
        Ok(Target::Remote(self.agent(node).await?))
    }

    /// A client of `node`'s agent API.
    async fn agent(&self, node: &str) -> Result<Client, ClusterError> {
        let record = self.node_record(node).await?;
        let address = record.address.ok_or_else(|| {
            ClusterError::Agent(format!("node {node} has no agent address to reach it at"))
        })?;
        let tag = format!("{address} {}", self.pki.ca_hash());
        if let Some((t, c)) = self.agents().get(node)
            && *t == tag
        {
            return Ok(c.clone());
        }
        // The agent's certificate must be the node's: by its name, which only the CA gives
        // out, not by the address the node itself reported.
        let client = Client::https_named(&address, node, self.pki.client_tls())
            .map_err(|e| ClusterError::Agent(format!("node {node}: {e}")))?;
        self.agents().insert(node.to_owned(), (tag, client.clone()));
        Ok(client)
    }

    async fn node_record(&self, node: &str) -> Result<NodeRecord, ClusterError> {
        let key = node_key(node);
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ClusterError::NotFound(format!("node {node:?} not found")))?;
        decode(&key, &kv.value)
    }

    /// Changes a node record with compare-and-swap, retrying on a concurrent change.
    pub(crate) async fn update_node(
        &self,
        node: &str,
        change: impl Fn(&mut NodeRecord),
    ) -> Result<NodeRecord, ClusterError> {
        let key = node_key(node);
        for _ in 0..5 {
            let kv = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| ClusterError::NotFound(format!("node {node:?} not found")))?;
            let mut record: NodeRecord = decode(&key, &kv.value)?;
            change(&mut record);
            let txn = Txn::guarded(
                vec![Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision,
                )],
                vec![Op::put(key.clone(), encode(&key, &record)?)],
            );
            if self.store.txn(txn).await?.succeeded {
                return Ok(record);
            }
        }
        Err(ClusterError::Conflict(format!(
            "node {node} kept changing; try again"
        )))
    }

    /// What an apply checks besides validity: the manifests rollouts rolled back from are held,
    /// unless the operator asked to retry them.
    pub(crate) async fn apply_checks(&self, retry: bool) -> Result<apply::Checks, ClusterError> {
        let holds = match retry {
            true => BTreeMap::new(),
            false => rollouts::holds(&self.store).await?,
        };
        Ok(apply::Checks { fit: None, holds })
    }

    /// Refuses an apply whose new or changed services the placer could not place now.
    pub(crate) async fn check_placeable(
        &self,
        manifests: &[cloudlet_spec::Manifest],
    ) -> Result<(), ClusterError> {
        let mut services = cloudlet_node::load_services(&self.store, SERVICES).await?.0;
        let mut changed = BTreeSet::new();
        for m in manifests.iter().filter_map(|m| m.as_service()) {
            let name = m.metadata.name.clone();
            if services.get(&name).is_some_and(|r| r.manifest == *m) {
                continue;
            }
            changed.insert(name.clone());
            services.insert(
                name,
                ServiceRecord {
                    manifest: m.clone(),
                    desired: DesiredRecord::Running,
                    file: String::new(),
                    document: 0,
                    applied_at: jiff::Timestamp::now(),
                    transient: None,
                },
            );
        }
        if changed.is_empty() {
            return Ok(());
        }
        let nodes = placer::load_nodes(&self.store).await?;
        let (p_services, p_nodes) = placer::inputs(self, &services, &nodes);
        let (kvs, _) = self.store.list(ASSIGNMENTS).await?;
        let current = kvs
            .iter()
            .filter_map(|kv| {
                let (node, name) = split_assignment_key(&kv.key)?;
                Some((name.to_owned(), node.to_owned()))
            })
            .collect();
        let plan = cloudlet_placement::place(&p_services, &p_nodes, &current)
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        let refused: Vec<String> = plan
            .unplaced
            .iter()
            .filter(|u| changed.contains(&u.service))
            .map(|u| {
                let at = services
                    .get(&u.service)
                    .and_then(|r| r.manifest.source().map(|s| format!("{s}: ")))
                    .unwrap_or_default();
                format!("{at}cannot be placed: {u}")
            })
            .collect();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(ClusterError::Invalid(format!(
                "{}\n(cloudlet never overcommits a node: it has no eviction to fall back on)",
                refused.join("\n")
            )))
        }
    }

    /// The status rows of one node: fresh from the server's own node, else its last heartbeat
    /// (marked unknown when the node is lost), plus assigned services it has not reported yet.
    async fn rows_of(
        &self,
        node: &str,
        assigned: &BTreeSet<String>,
    ) -> Result<Vec<ServiceStatus>, ApiError> {
        if let Some(local) = self.local.as_ref().filter(|l| l.name() == node) {
            let mut rows = local.list_services(ServicesQuery::default()).await?;
            let known: BTreeSet<String> = rows.iter().map(|r| r.name.clone()).collect();
            for name in assigned.difference(&known) {
                rows.push(pending_row(name, node, "assigned; starting".into()));
            }
            return Ok(rows);
        }
        let registry = self.lock_registry();
        let lost = registry.health(node) == Health::Lost;
        let mut rows: Vec<ServiceStatus> = registry
            .get(node)
            .map(|l| l.services.clone())
            .unwrap_or_default();
        drop(registry);
        for row in &mut rows {
            if lost {
                let last = serde_json::to_value(row.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                row.message = Some(if assigned.contains(&row.name) {
                    format!("node {node} is lost; last reported {last}")
                } else {
                    format!(
                        "node {node} is lost and this copy was relocated; the node stops it \
                         when it returns"
                    )
                });
                row.state = ServiceState::Unknown;
                row.ready = false;
            }
        }
        let reported: BTreeSet<String> = rows.iter().map(|r| r.name.clone()).collect();
        for name in assigned.difference(&reported) {
            rows.push(pending_row(
                name,
                node,
                format!("assigned to node {node}; not reported by it yet"),
            ));
        }
        Ok(rows)
    }
}

fn pending_row(name: &str, node: &str, message: String) -> ServiceStatus {
    ServiceStatus {
        name: name.to_owned(),
        node: node.to_owned(),
        state: ServiceState::Pending,
        ready: false,
        pid: None,
        restarts: 0,
        run: 0,
        last_exit: None,
        since: jiff::Timestamp::now(),
        waiting_for: Vec::new(),
        message: Some(message),
        labels: BTreeMap::new(),
        desired: DesiredState::Running,
        next_restart_at: None,
        dropped_log_lines: 0,
        owner: None,
        group: None,
        limits: None,
        spec_digest: None,
    }
}

fn role_of(s: Option<&str>) -> Result<NodeRole, ApiError> {
    s.unwrap_or("compute").parse().map_err(ApiError::Invalid)
}

fn token_info(r: &TokenRecord) -> TokenInfo {
    TokenInfo {
        id: r.id.clone(),
        role: r.role.as_str().to_owned(),
        created_at: r.created_at,
        expires_at: r.expires_at,
        created_by: r.created_by.clone(),
        description: r.description.clone(),
        uses: r.uses,
    }
}

/// The host part of an `https://host:port` address, for the node certificate's SAN.
pub(crate) fn host_of(address: &str) -> Option<&str> {
    let rest = address.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next();
    }
    Some(authority.rsplit_once(':').map_or(authority, |(h, _)| h))
}

fn check_node_name(name: &str) -> Result<(), ApiError> {
    cloudlet_spec::check_name(name).map_err(|e| ApiError::Invalid(format!("node name: {e}")))
}

/// At most this many labels a joining node may bring.
const MAX_JOIN_LABELS: usize = 64;
/// The longest label name and value a joining node may bring.
const MAX_LABEL_LEN: usize = 253;
/// The longest agent address (`https://host:port`) a joining node may give.
const MAX_ADDRESS_LEN: usize = 512;

/// What a joiner says about itself, bounded: a name the certificate and the store can hold, a
/// reachable-looking address, and a bounded set of labels.
fn check_join(request: &JoinRequest) -> Result<(), ApiError> {
    check_node_name(&request.node_name)?;
    if request.labels.len() > MAX_JOIN_LABELS {
        return Err(ApiError::Invalid(format!(
            "labels: {} given, at most {MAX_JOIN_LABELS}",
            request.labels.len()
        )));
    }
    if let Some((k, _)) = request
        .labels
        .iter()
        .find(|(k, v)| k.is_empty() || k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN)
    {
        return Err(ApiError::Invalid(format!(
            "labels: {k:?}: names must be 1 to {MAX_LABEL_LEN} bytes, values at most \
             {MAX_LABEL_LEN}"
        )));
    }
    if let Some(address) = &request.address
        && (address.len() > MAX_ADDRESS_LEN || host_of(address).is_none_or(str::is_empty))
    {
        return Err(ApiError::Invalid(format!(
            "address: {:?} is not https://HOST:PORT (at most {MAX_ADDRESS_LEN} bytes)",
            address.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

impl<S: Store> Backend for ControlPlane<S> {
    async fn apply(&self, request: ApplyRequest) -> Result<ApplyResponse, ApiError> {
        let inner = &self.inner;
        let files: Vec<(String, String)> = request
            .files
            .into_iter()
            .map(|f| (f.name, f.content))
            .collect();
        let manifests = apply::parse(&files).await?;
        inner.check_placeable(&manifests).await?;
        let checks = inner.apply_checks(request.retry).await?;
        let outcomes = apply::apply_parsed(&inner.store, manifests, &checks).await?;
        let items = outcomes
            .into_iter()
            .map(|o| {
                let action = match o.applied {
                    Applied::Created => ApplyAction::Created,
                    Applied::Configured => ApplyAction::Configured,
                    Applied::Unchanged => ApplyAction::Unchanged,
                    Applied::Held => ApplyAction::Held,
                };
                match (&action, &o.held) {
                    (ApplyAction::Unchanged, _) => {}
                    (ApplyAction::Held, Some(why)) => inner.event(
                        Some(&o.name),
                        &inner.options.server_name,
                        "Held",
                        format!("not applied from {}: {why}", o.file),
                    ),
                    _ => inner.event(
                        Some(&o.name),
                        &inner.options.server_name,
                        "Applied",
                        format!("{} from {}", format!("{action:?}").to_lowercase(), o.file),
                    ),
                }
                ApplyItem {
                    name: o.name,
                    file: o.file,
                    action,
                    held: o.held,
                }
            })
            .collect();
        placer::place_now(inner).await;
        Ok(ApplyResponse { items })
    }

    async fn list_services(&self, query: ServicesQuery) -> Result<Vec<ServiceStatus>, ApiError> {
        let inner = &self.inner;
        let nodes = placer::load_nodes(&inner.store).await?;
        if let Some(n) = &query.node
            && !nodes.contains_key(n)
        {
            return Err(ApiError::NotFound(format!("node {n:?} not found")));
        }
        let (kvs, _) = inner
            .store
            .list(ASSIGNMENTS)
            .await
            .map_err(ClusterError::from)?;
        let mut assigned: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for kv in &kvs {
            if let Some((node, name)) = split_assignment_key(&kv.key) {
                assigned
                    .entry(node.to_owned())
                    .or_default()
                    .insert(name.to_owned());
            }
        }
        let mut rows = Vec::new();
        for node in nodes.keys() {
            if query.node.as_ref().is_some_and(|n| n != node) {
                continue;
            }
            let empty = BTreeSet::new();
            rows.extend(
                inner
                    .rows_of(node, assigned.get(node).unwrap_or(&empty))
                    .await?,
            );
        }
        if query.node.is_none() {
            for (service, why) in inner.unplaced() {
                rows.push(pending_row(&service, "", why));
            }
        }
        Ok(rows)
    }

    async fn describe_service(
        &self,
        name: &str,
        node: NodeQuery,
    ) -> Result<ServiceDetail, ApiError> {
        let inner = &self.inner;
        let node = inner.resolve(name, node.node.as_deref()).await?;
        match inner.target(&node).await? {
            Target::Local(local) => local.describe_service(name, NodeQuery::default()).await,
            Target::Remote(client) => client.describe_service(name, None).await,
        }
    }

    async fn delete_service(&self, name: &str) -> Result<ActionResponse, ApiError> {
        let inner = &self.inner;
        if inner
            .store
            .get(&service_key(name))
            .await
            .map_err(ClusterError::from)?
            .is_none()
        {
            // Not a cluster service: a transient one of the server's own node, if anything.
            return match &inner.local {
                Some(local) => local.delete_service(name).await,
                None => Err(ApiError::NotFound(format!("service {name:?} not found"))),
            };
        }
        apply::delete(&inner.store, name).await?;
        inner.event(
            Some(name),
            &inner.options.server_name,
            "Deleting",
            "deleted by an operator".into(),
        );
        placer::place_now(inner).await;
        Ok(ActionResponse {
            name: name.to_owned(),
            message: format!("service {name} deleted; its logs are kept"),
        })
    }

    async fn service_action(
        &self,
        name: &str,
        action: Action,
        node: NodeQuery,
    ) -> Result<ActionResponse, ApiError> {
        let inner = &self.inner;
        let key = service_key(name);
        let cluster = inner
            .store
            .get(&key)
            .await
            .map_err(ClusterError::from)?
            .is_some();
        if !cluster {
            return match &inner.local {
                Some(local) => local.service_action(name, action, node).await,
                None => Err(ApiError::NotFound(format!("service {name:?} not found"))),
            };
        }
        let message = match action {
            Action::Stop => {
                if apply::set_desired(&inner.store, &key, name, DesiredRecord::Stopped).await? {
                    inner.event(
                        Some(name),
                        &inner.options.server_name,
                        "StopRequested",
                        "stopped by an operator".into(),
                    );
                    placer::place_now(inner).await;
                    format!("service {name} is stopping and stays stopped until `ctl start {name}`")
                } else {
                    format!("service {name} was already stopped")
                }
            }
            Action::Start | Action::Restart => {
                if action == Action::Start {
                    apply::set_desired(&inner.store, &key, name, DesiredRecord::Running).await?;
                    placer::place_now(inner).await;
                }
                let nodes = match &node.node {
                    Some(n) => vec![n.clone()],
                    None => inner.nodes_of(name).await?,
                };
                // Every node at once, under one deadline.
                let deadline = tokio::time::Instant::now() + FAN_OUT_TIMEOUT;
                let results = futures_util::future::join_all(nodes.iter().map(|n| async move {
                    let ask = async {
                        match inner.target(n).await? {
                            Target::Local(local) => {
                                local
                                    .service_action(name, action, NodeQuery::default())
                                    .await
                            }
                            Target::Remote(client) => {
                                client.service_action(name, action, None).await
                            }
                        }
                    };
                    by_deadline(n, deadline, ask).await
                }))
                .await;
                let mut done = Vec::new();
                for (n, result) in nodes.iter().zip(results) {
                    match result {
                        Ok(_) => done.push(n.clone()),
                        // A start the node has not received yet is done by the placer.
                        Err(e) if action == Action::Start => {
                            tracing::debug!("start {name} on {n}: {e}");
                        }
                        Err(e) => return Err(e),
                    }
                }
                if action == Action::Start {
                    format!("service {name} is starting")
                } else if done.is_empty() {
                    return Err(ApiError::NotFound(format!(
                        "service {name:?} is not running on any node"
                    )));
                } else {
                    format!("service {name} is restarting on {}", done.join(", "))
                }
            }
        };
        Ok(ActionResponse {
            name: name.to_owned(),
            message,
        })
    }

    async fn logs(&self, name: &str, query: LogsQuery) -> Result<LogStream, ApiError> {
        let inner = &self.inner;
        let node = match inner.resolve(name, query.node.as_deref()).await {
            Ok(n) => n,
            // Logs of a deleted service stay on its node: the server's own, if it has one.
            Err(ClusterError::NotFound(_)) if inner.local.is_some() => inner
                .local
                .as_ref()
                .map(|l| l.name().to_owned())
                .unwrap_or_default(),
            Err(e) => return Err(e.into()),
        };
        let query = LogsQuery {
            node: None,
            ..query
        };
        match inner.target(&node).await? {
            Target::Local(local) => local.logs(name, query).await,
            Target::Remote(client) => client.logs(name, &query).await,
        }
    }

    async fn run(&self, caller: Caller, request: RunRequest) -> Result<ActionResponse, ApiError> {
        match &self.inner.local {
            Some(local) => local.run(caller, request).await,
            None => Err(ApiError::NotFound(
                "this server runs no node (--disable-agent): run on a node's agent".into(),
            )),
        }
    }

    async fn exec(&self, caller: Caller, request: ExecRequest) -> Result<ExecStream, ApiError> {
        let inner = &self.inner;
        let node = match (&request.node, &inner.local) {
            (Some(n), _) => n.clone(),
            (None, Some(local)) => local.name().to_owned(),
            (None, None) => {
                return Err(ApiError::Invalid(
                    "this server runs no node: pick one with --node".into(),
                ));
            }
        };
        let request = ExecRequest {
            node: None,
            ..request
        };
        match inner.target(&node).await? {
            Target::Local(local) => local.exec(caller, request).await,
            Target::Remote(client) => client.exec(&request).await,
        }
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>, ApiError> {
        let inner = &self.inner;
        let records = placer::load_nodes(&inner.store).await?;
        let (kvs, _) = inner
            .store
            .list(ASSIGNMENTS)
            .await
            .map_err(ClusterError::from)?;
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for kv in &kvs {
            if let Some((node, _)) = split_assignment_key(&kv.key) {
                *counts.entry(node).or_default() += 1;
            }
        }
        let mut out = Vec::new();
        for (name, record) in &records {
            let mut status = match inner.local.as_ref().filter(|l| l.name() == name) {
                Some(local) => local.nodes().await?.into_iter().next(),
                None => inner.lock_registry().get(name).map(|l| l.status.clone()),
            }
            .unwrap_or_else(|| empty_status(name));
            let registry = inner.lock_registry();
            status.name = name.clone();
            status.roles = record.roles.iter().map(|r| r.as_str().to_owned()).collect();
            status.labels = record.labels.clone();
            status.state = if inner.is_local(name) {
                "Ready".to_owned()
            } else {
                registry.state(name).to_owned()
            };
            status.cordoned = record.cordoned || record.draining.is_some();
            status.draining = record.draining.is_some();
            status.address = record.address.clone();
            status.last_heartbeat = registry.get(name).map(|l| l.at);
            status.cert_not_after = if inner.is_local(name) {
                inner
                    .pki
                    .expiries()
                    .into_iter()
                    .find(|(what, _)| what == "server")
                    .map(|(_, at)| at)
            } else {
                record.cert_not_after
            };
            status.cert_serial = if inner.is_local(name) {
                Some(inner.pki.server_serial())
            } else {
                record.cert_serial.clone()
            };
            status.services = counts.get(name.as_str()).copied().unwrap_or(0);
            out.push(status);
        }
        Ok(out)
    }

    async fn events(&self, query: EventsQuery) -> Result<EventStream, ApiError> {
        cloudlet_node::events::stream(&self.inner.store, query).await
    }

    async fn network(&self, node: NodeQuery) -> Result<Vec<NetworkStatus>, ApiError> {
        let inner = &self.inner;
        let all = node.node.is_none();
        let nodes: Vec<String> = match node.node {
            Some(n) => vec![n],
            None => placer::load_nodes(&inner.store)
                .await?
                .into_keys()
                .collect(),
        };
        // Every node at once, under one deadline: a stalled agent costs the deadline, not a
        // deadline per node.
        let deadline = tokio::time::Instant::now() + FAN_OUT_TIMEOUT;
        let answers = futures_util::future::join_all(nodes.iter().map(|n| async move {
            let ask = async {
                match inner.target(n).await {
                    Ok(Target::Local(local)) => local.network(NodeQuery::default()).await,
                    Ok(Target::Remote(client)) => client.network(None).await,
                    Err(e) => Err(e.into()),
                }
            };
            by_deadline(n, deadline, ask).await
        }))
        .await;
        let mut out = Vec::new();
        for (n, answer) in nodes.iter().zip(answers) {
            match answer {
                Ok(nets) => out.extend(nets),
                // One node's network unknown (not configured, unreachable) is not an error of
                // the others: it says so in its row when asked for all.
                Err(e) if all => out.push(NetworkStatus {
                    node: n.clone(),
                    ovsdb: String::new(),
                    connected: false,
                    bridges: Vec::new(),
                    firewall: None,
                    repairs: 0,
                    last_repair: None,
                    reconciled_at: None,
                    problem: Some(e.to_string()),
                }),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn revoked(&self, serial: &str) -> bool {
        self.inner.revocations.contains(serial)
    }

    async fn cacerts(&self) -> Result<String, ApiError> {
        Ok(self.inner.pki.ca_bundle_pem())
    }

    async fn join(&self, request: JoinRequest) -> Result<CertificateResponse, ApiError> {
        let inner = &self.inner;
        check_join(&request)?;
        // Joins are rare and cheap: one at a time, so that a fleet booting with one token never
        // races on the token's use count.
        let _one_at_a_time = inner.joins.lock().await;
        if inner.is_local(&request.node_name) {
            return Err(ApiError::Conflict(format!(
                "node name {} is the server's own node: pick another --node-name",
                request.node_name
            )));
        }
        let name = request.node_name.clone();
        let key = node_key(&name);
        let existing = inner.store.get(&key).await.map_err(ClusterError::from)?;
        let proof = request.node_secret.as_deref().map(secret_sha256);
        let mut record = match &existing {
            // A name is bound to the secret its node first joined with: a join without it is
            // another machine (or a token holder) claiming the node, its assignments and keys.
            // Checked before the token is redeemed, so a refused claim costs the token nothing.
            Some(kv) => {
                let record = decode::<NodeRecord>(&key, &kv.value)?;
                let proven = matches!(
                    (&record.secret_sha256, &proof),
                    (Some(held), Some(given)) if same_bytes(held.as_bytes(), given.as_bytes())
                );
                if !proven {
                    // 403, not 409: an agent tries a 409 again, and this will not change.
                    return Err(ApiError::Forbidden(format!(
                        "node {name} is already in the cluster and this joiner does not hold \
                         its node secret (DIR/pki/node-secret of the node that joined): to \
                         replace that node, run `cloudlet ctl delete node {name}` first; \
                         otherwise pick another --node-name"
                    )));
                }
                record
            }
            None => NodeRecord {
                secret_sha256: proof,
                ..NodeRecord::new(&name, Vec::new())
            },
        };
        let token = tokens::redeem(
            &inner.store,
            &request.token,
            &inner.pki.accepted_pins(),
            jiff::Timestamp::now(),
        )
        .await?;
        let (certificate, identity) = inner
            .pki
            .sign_node(&request.csr, &request.node_name)
            .map_err(ApiError::from)?;
        if !record.roles.contains(&token.role) {
            record.roles.push(token.role);
        }
        record.labels.extend(request.labels);
        record.address = request.address;
        record.joined_at = jiff::Timestamp::now();
        // A re-join replaces the node's certificate: the one before is refused from now on,
        // in the same transaction as the record that names the new one.
        let now = jiff::Timestamp::now();
        let previous = record.cert_serial.clone().zip(record.cert_not_after);
        record.cert_serial = Some(identity.serial);
        record.cert_not_after = Some(identity.not_after);
        let mut ops = vec![Op::put(key.clone(), encode(&key, &record)?)];
        if let Some((serial, not_after)) = &previous {
            ops.extend(
                inner
                    .revocations
                    .revoke_ops(serial, &name, *not_after, now)?,
            );
        }
        inner
            .store
            .txn(Txn::ops(ops))
            .await
            .map_err(ClusterError::from)?;
        if let Some((serial, not_after)) = previous {
            inner.revocations.committed(&serial, not_after, now);
        }
        inner.agents().remove(&name);
        inner.event(
            None,
            &name,
            if existing.is_some() {
                "NodeRejoined"
            } else {
                "NodeJoined"
            },
            format!(
                "joined with token {} as {}",
                token.id,
                record
                    .roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        inner.kick.notify_one();
        Ok(CertificateResponse {
            certificate,
            ca: inner.pki.ca_bundle_pem(),
            roles: record.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        })
    }

    async fn renew(
        &self,
        node: &str,
        request: RenewRequest,
    ) -> Result<CertificateResponse, ApiError> {
        let inner = &self.inner;
        inner.node_record(node).await?;
        let (certificate, identity) = inner
            .pki
            .sign_node(&request.csr, node)
            .map_err(ApiError::from)?;
        let updated = inner
            .update_node(node, |r| {
                r.cert_serial = Some(identity.serial.clone());
                r.cert_not_after = Some(identity.not_after);
            })
            .await?;
        tracing::info!(node, serial = %identity.serial, "node certificate renewed");
        Ok(CertificateResponse {
            certificate,
            ca: inner.pki.ca_bundle_pem(),
            roles: updated
                .roles
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
        })
    }

    async fn heartbeat(
        &self,
        node: &str,
        heartbeat: Heartbeat,
    ) -> Result<HeartbeatResponse, ApiError> {
        let inner = &self.inner;
        // A node this server heard from is known (deleting a node forgets it here too); only
        // the first heartbeat of a node since the server started reads the store.
        let known = inner.lock_registry().get(node).is_some();
        if !known
            && inner
                .store
                .get(&node_key(node))
                .await
                .map_err(ClusterError::from)?
                .is_none()
        {
            return Err(ApiError::NotFound(format!(
                "node {node} is not part of this cluster (deleted?): join it again with a token"
            )));
        }
        let beat = inner.lock_registry().beat(node, heartbeat);
        if beat.replan {
            inner.kick.notify_one();
        }
        Ok(HeartbeatResponse {
            assignments_revision: inner.assignments_revision(node),
            ca_hash: inner.pki.ca_hash(),
            deltas: beat.deltas,
        })
    }

    async fn assignments(&self, node: &str) -> Result<Assignments, ApiError> {
        let inner = &self.inner;
        // The revision first: a write after it makes the next heartbeat fetch again.
        let revision = inner.assignments_revision(node);
        let (records, _) = cloudlet_node::load_services(&inner.store, &assignment_prefix(node))
            .await
            .map_err(ApiError::from)?;
        let mut services = Vec::new();
        for r in records.into_values().filter(|r| r.transient.is_none()) {
            services.push(AssignedService {
                manifest: serde_json::to_value(&r.manifest)
                    .map_err(|e| ApiError::Internal(format!("encode a manifest: {e}")))?,
                desired: match r.desired {
                    DesiredRecord::Running => DesiredState::Running,
                    DesiredRecord::Stopped => DesiredState::Stopped,
                },
                file: r.file,
                document: r.document,
                applied_at: r.applied_at,
            });
        }
        Ok(Assignments { revision, services })
    }

    async fn push_events(&self, node: &str, events: Vec<Event>) -> Result<(), ApiError> {
        let records = events
            .into_iter()
            .map(|e| EventRecord {
                time: e.time,
                service: e.service,
                node: node.to_owned(),
                reason: e.reason,
                message: e.message,
                exit: e.exit.map(|x| cloudlet_node::records::ExitRecord {
                    code: x.code,
                    signal: x.signal,
                    reason: x.reason,
                    at: x.at,
                }),
            })
            .collect();
        // All or nothing: a refused batch stays with the agent, which pushes it again.
        self.inner.events.push(records)
    }

    async fn create_token(
        &self,
        caller: Caller,
        request: TokenRequest,
    ) -> Result<TokenCreated, ApiError> {
        let inner = &self.inner;
        let role = role_of(request.role.as_deref())?;
        let ttl = request
            .ttl_seconds
            .map_or(DEFAULT_TOKEN_TTL, std::time::Duration::from_secs);
        let by = caller.peer.as_ref().map_or_else(
            || "operator".to_owned(),
            |p| format!("{} {}", p.role.as_str(), p.name),
        );
        let (token, record) = tokens::create(
            &inner.store,
            &inner.pki.pin(),
            role,
            ttl,
            &by,
            request.description,
        )
        .await?;
        inner.event(
            None,
            &inner.options.server_name,
            "TokenCreated",
            format!(
                "join token {} for {} nodes, expires {}",
                record.id,
                role.as_str(),
                record.expires_at
            ),
        );
        Ok(TokenCreated {
            token: token.to_string(),
            info: token_info(&record),
        })
    }

    async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ApiError> {
        Ok(tokens::list(&self.inner.store)
            .await?
            .iter()
            .map(token_info)
            .collect())
    }

    async fn revoke_token(&self, id: &str) -> Result<ActionResponse, ApiError> {
        tokens::revoke(&self.inner.store, id).await?;
        self.inner.event(
            None,
            &self.inner.options.server_name,
            "TokenRevoked",
            format!("join token {id} revoked"),
        );
        Ok(ActionResponse {
            name: id.to_owned(),
            message: format!("token {id} revoked: nodes can no longer join with it"),
        })
    }

    async fn node_action(
        &self,
        node: &str,
        action: NodeAction,
    ) -> Result<ActionResponse, ApiError> {
        let inner = &self.inner;
        let message = match &action {
            NodeAction::Cordon => format!("node {node} cordoned: no new services are placed on it"),
            NodeAction::Uncordon => format!("node {node} uncordoned: it takes new services again"),
            NodeAction::Drain { force: false } => format!(
                "node {node} draining: relocatable services move elsewhere; the others stay \
                 (--force moves every replicated service)"
            ),
            NodeAction::Drain { force: true } => {
                format!("node {node} draining: every replicated service moves elsewhere")
            }
            NodeAction::Label { set, remove } => {
                for k in set.keys().chain(remove) {
                    if k.is_empty() {
                        return Err(ApiError::Invalid("label names must not be empty".into()));
                    }
                }
                format!("node {node} labelled")
            }
        };
        inner
            .update_node(node, |r| match &action {
                NodeAction::Cordon => r.cordoned = true,
                NodeAction::Uncordon => {
                    r.cordoned = false;
                    r.draining = None;
                }
                NodeAction::Drain { force } => {
                    r.cordoned = true;
                    r.draining = Some(*force);
                }
                NodeAction::Label { set, remove } => {
                    for k in remove {
                        r.labels.remove(k);
                    }
                    r.labels.extend(set.clone());
                }
            })
            .await?;
        inner.event(None, node, "NodeChanged", message.clone());
        inner.kick.notify_one();
        Ok(ActionResponse {
            name: node.to_owned(),
            message,
        })
    }

    async fn rotate_ca(&self, request: CaRotateRequest) -> Result<ActionResponse, ApiError> {
        let inner = &self.inner;
        let pki = Arc::clone(&inner.pki);
        let finish = request.finish;
        let done = tokio::task::spawn_blocking(move || {
            if finish {
                pki.finish_rotation()
            } else {
                pki.rotate_ca().map(|()| true)
            }
        })
        .await
        .map_err(|e| ApiError::Internal(format!("the CA task failed: {e}")))??;
        inner.pki_changed.notify_one();
        inner.agents().clear();
        let message = match (finish, done) {
            (false, _) => "a new CA signs from now on; both CAs are trusted until \
                           `cloudlet ctl ca rotate --finish`. Agents fetch the new CA bundle \
                           and renew their certificates with their next heartbeats; copy the \
                           rewritten admin.conf to where operators use it"
                .to_owned(),
            (true, true) => "the previous CA is no longer trusted; nodes that have not renewed \
                             since the rotation must join again"
                .to_owned(),
            (true, false) => "no CA rotation was under way".to_owned(),
        };
        inner.event(
            None,
            &inner.options.server_name,
            if finish {
                "CaRotationFinished"
            } else {
                "CaRotated"
            },
            message.clone(),
        );
        Ok(ActionResponse {
            name: "ca".to_owned(),
            message,
        })
    }

    async fn apply_cluster(
        &self,
        caller: Caller,
        request: ClusterRequest,
    ) -> Result<ClusterApplied, ApiError> {
        Ok(self
            .inner
            .apply_cluster(
                &who(&caller),
                &request.file,
                &request.content,
                request.retry,
            )
            .await?)
    }

    async fn diff_cluster(&self, request: ClusterRequest) -> Result<ClusterDiff, ApiError> {
        Ok(self
            .inner
            .diff_cluster(&request.file, &request.content)
            .await?)
    }

    async fn cloudpods_credentials(&self) -> Result<CloudpodsCredentials, ApiError> {
        Ok(self.inner.cloudpods_credentials().await?)
    }

    async fn cluster_history(&self) -> Result<Vec<RevisionInfo>, ApiError> {
        Ok(crate::revisions::list(&self.inner.store)
            .await?
            .into_iter()
            .map(|r| RevisionInfo {
                revision: r.revision,
                applied_at: r.applied_at,
                applied_by: r.applied_by,
                summary: r.summary,
            })
            .collect())
    }

    async fn export_cluster(&self) -> Result<String, ApiError> {
        Ok(self.inner.export_cluster().await?)
    }

    async fn rollback_cluster(
        &self,
        caller: Caller,
        request: RollbackRequest,
    ) -> Result<ClusterApplied, ApiError> {
        Ok(self
            .inner
            .rollback_cluster(&who(&caller), request.to)
            .await?)
    }

    async fn rollout(&self, name: &str) -> Result<RolloutInfo, ApiError> {
        Ok(self.inner.rollout_info(name).await?)
    }

    async fn rollout_history(&self, name: &str) -> Result<Vec<RolloutInfo>, ApiError> {
        Ok(self.inner.rollout_history(name).await?)
    }

    async fn rollout_action(
        &self,
        caller: Caller,
        name: &str,
        action: RolloutAction,
        request: RolloutRequest,
    ) -> Result<RolloutInfo, ApiError> {
        Ok(self
            .inner
            .rollout_action(&who(&caller), name, action, request.to)
            .await?)
    }

    async fn delete_node(&self, node: &str) -> Result<ActionResponse, ApiError> {
        let inner = &self.inner;
        if inner.is_local(node) {
            return Err(ApiError::Conflict(format!(
                "node {node} is the server's own node: it cannot be deleted"
            )));
        }
        let record = inner.node_record(node).await?;
        let (kvs, _) = inner
            .store
            .list(&assignment_prefix(node))
            .await
            .map_err(ClusterError::from)?;
        let mut ops = vec![Op::delete(node_key(node))];
        ops.extend(kvs.into_iter().map(|kv| Op::delete(kv.key)));
        // Its certificate is refused at once, not when it expires.
        let now = jiff::Timestamp::now();
        let certificate = record.cert_serial.zip(record.cert_not_after);
        if let Some((serial, not_after)) = &certificate {
            ops.extend(
                inner
                    .revocations
                    .revoke_ops(serial, node, *not_after, now)?,
            );
        }
        inner
            .store
            .txn(Txn::ops(ops))
            .await
            .map_err(ClusterError::from)?;
        if let Some((serial, not_after)) = certificate {
            inner.revocations.committed(&serial, not_after, now);
        }
        inner.lock_registry().remove(node);
        inner.agents().remove(node);
        inner.event(None, node, "NodeDeleted", "deleted by an operator".into());
        inner.kick.notify_one();
        Ok(ActionResponse {
            name: node.to_owned(),
            message: format!(
                "node {node} deleted and its certificate revoked: it must join again with a \
                 token; what it runs keeps running (nothing stops a service for lack of a server)"
            ),
        })
    }
}

/// What `node` answers to `ask`, or `Unavailable` naming it once the fan-out's `deadline` has
/// passed.
async fn by_deadline<T>(
    node: &str,
    deadline: tokio::time::Instant,
    ask: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout_at(deadline, ask)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::Unavailable(format!(
                "node {node} did not answer within {FAN_OUT_TIMEOUT:?}"
            )))
        })
}

/// Who is calling, for revisions and events: `admin alice`, `node n1`, or `operator` (the local
/// socket).
fn who(caller: &Caller) -> String {
    caller.peer.as_ref().map_or_else(
        || "operator".to_owned(),
        |p| format!("{} {}", p.role.as_str(), p.name),
    )
}

fn empty_status(name: &str) -> NodeStatus {
    let zero = dto::NodeResources {
        cpu_millis: 0,
        memory_bytes: 0,
        pids: 0,
    };
    NodeStatus {
        name: name.to_owned(),
        capacity: zero,
        reserve: zero,
        allocatable: zero,
        requested: zero,
        memory_available_bytes: 0,
        pids_in_use: 0,
        disks: Vec::new(),
        conditions: Vec::new(),
        limits: String::new(),
        observed_at: jiff::Timestamp::now(),
        roles: Vec::new(),
        labels: BTreeMap::new(),
        state: String::new(),
        cordoned: false,
        draining: false,
        address: None,
        last_heartbeat: None,
        cert_not_after: None,
        cert_serial: None,
        services: 0,
    }
}

/// SHA-256 (hex) of a node secret, as the node record keeps it.
fn secret_sha256(secret: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equal bytes, compared in time that does not depend on where they differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("https://10.0.0.1:10250"), Some("10.0.0.1"));
        assert_eq!(host_of("https://node-a:10250/x"), Some("node-a"));
        assert_eq!(host_of("https://[fd00::1]:10250"), Some("fd00::1"));
        assert_eq!(host_of("http://x:1"), None);
    }
}
