//! The agent: a node's link to the cluster's server. It joins once (a token, the server's CA
//! checked against the token's hash before the secret is sent, then a CSR: the key never leaves
//! this machine), then beats every few seconds (resources, conditions, services), mirrors its
//! assignments into the node's own store when the server says they changed, pushes the node's
//! events, and renews its certificate at two thirds of its life, hot-swapped into every later
//! connection.
//!
//! What runs on the node is decided by the local store, which this module only ever syncs from
//! the server: an agent that cannot reach the server keeps running everything it runs, and an
//! agent restart changes nothing. It never starts or stops a process itself (the supervisor does,
//! following the store) and never touches a transient service the node started for itself.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use cloudlet_api::dto::{Assignments, DesiredState, Heartbeat, JoinRequest, RenewRequest};
use cloudlet_api::{Backend as _, Client};
use cloudlet_pki::{Identity, KeyPair, ReloadingResolver, Token};
use cloudlet_spec::ServiceManifest;
use cloudlet_store::{Compare, CompareOp, Op, Store, Txn};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::records::{DesiredRecord, ServiceRecord, assignment_key};
use crate::{Node, NodeError};

/// The agent's certificate files, under `DIR/pki`.
const CA_FILE: &str = "ca.crt";
const CERT_FILE: &str = "node.crt";
const KEY_FILE: &str = "node.key";
/// Where the agent keeps how far its events were pushed.
const EVENTS_CURSOR: &str = "/agent/events-pushed";
/// Most events pushed in one request.
const EVENTS_BATCH: usize = 500;
/// How long one call to the server may take before the agent gives up on it (and tries again at
/// the next beat).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How the agent reaches the cluster.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The server's API, `https://host:port`.
    pub server: String,
    /// The join token (needed only until the node joined).
    pub token: Option<String>,
    /// Labels to join with.
    pub labels: BTreeMap<String, String>,
    /// Where the server reaches this agent's API, `https://host:port`.
    pub address: String,
    /// How often to beat.
    pub heartbeat: Duration,
}

/// The agent's identity: its certificate and key (hot-swapped on renewal) and the CAs it trusts.
#[derive(Debug)]
pub struct Credentials {
    dir: PathBuf,
    /// The config of this node's own API listener, rebuilt when the trusted CAs change.
    listener: Arc<RwLock<Option<Arc<rustls::ServerConfig>>>>,
    /// The node certificate and key, served to the server and presented to it.
    pub resolver: Arc<ReloadingResolver>,
    /// The trusted CA bundle (PEM).
    pub ca_pem: String,
    /// The node certificate now in use.
    pub identity: Identity,
}

impl Credentials {
    /// The trusted CAs.
    pub fn roots(&self) -> Result<Vec<CertificateDer<'static>>, NodeError> {
        cloudlet_pki::certs_from_pem(&self.ca_pem).map_err(pki)
    }

    /// The mutual-TLS client config of this node.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, NodeError> {
        Ok(Arc::new(
            cloudlet_pki::client_config(&self.roots()?, Arc::clone(&self.resolver)).map_err(pki)?,
        ))
    }

    /// The config source of this node's own API listener: only certificates of the cluster's
    /// CAs, following the trusted CAs as they change (a CA rotation).
    pub fn listener_config(&self) -> Result<cloudlet_api::TlsConfigSource, NodeError> {
        self.refresh_listener()?;
        let shared = Arc::clone(&self.listener);
        let fallback = self.build_listener()?;
        Ok(Arc::new(move || {
            shared
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_else(|| Arc::clone(&fallback))
        }))
    }

    fn build_listener(&self) -> Result<Arc<rustls::ServerConfig>, NodeError> {
        Ok(Arc::new(
            cloudlet_pki::server_config(&self.roots()?, Arc::clone(&self.resolver), false)
                .map_err(pki)?,
        ))
    }

    fn refresh_listener(&self) -> Result<(), NodeError> {
        let config = self.build_listener()?;
        *self
            .listener
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(config);
        Ok(())
    }

    fn save_cert(&self, cert_pem: &str, key: &KeyPair) -> Result<(), NodeError> {
        key.save(&self.dir.join(KEY_FILE)).map_err(pki)?;
        cloudlet_pki::write_certificate(&self.dir.join(CERT_FILE), cert_pem).map_err(pki)
    }
}

fn pki(e: cloudlet_pki::PkiError) -> NodeError {
    NodeError::Internal(e.to_string())
}

fn api(what: &str, e: cloudlet_api::ApiError) -> NodeError {
    NodeError::Internal(format!("{what}: {e}"))
}

/// Loads the node's credentials from `DIR/pki`, or joins the cluster to get them.
pub async fn credentials(
    data_dir: &Path,
    node_name: &str,
    options: &AgentOptions,
) -> Result<Credentials, NodeError> {
    let dir = data_dir.join("pki");
    let (cert, key, ca) = (dir.join(CERT_FILE), dir.join(KEY_FILE), dir.join(CA_FILE));
    if cert.exists() && key.exists() && ca.exists() {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| NodeError::Internal(format!("{}: {e}", p.display())))
        };
        let (cert_pem, key_pem, ca_pem) = (read(&cert)?, read(&key)?, read(&ca)?);
        let identity = Identity::from_pem(&cert_pem).map_err(pki)?;
        return Ok(Credentials {
            resolver: Arc::new(ReloadingResolver::new(&cert_pem, &key_pem).map_err(pki)?),
            listener: Arc::default(),
            dir,
            ca_pem,
            identity,
        });
    }
    let Some(token) = &options.token else {
        return Err(NodeError::Invalid(format!(
            "this node has not joined a cluster yet ({} has no certificate): pass --token \
             (from `cloudlet ctl token create` on the server)",
            dir.display()
        )));
    };
    join(&dir, node_name, token, options).await
}

/// Joins: checks the server's CA against the token, then trades the token and a CSR for a
/// certificate.
async fn join(
    dir: &Path,
    node_name: &str,
    token_text: &str,
    options: &AgentOptions,
) -> Result<Credentials, NodeError> {
    let token =
        Token::parse(token_text).map_err(|e| NodeError::Invalid(format!("--token: {e}")))?;
    // Nothing secret goes over this unverified connection: it only fetches the CA bundle, which
    // is then checked against the hash in the token.
    let insecure = Client::https(
        &options.server,
        Arc::new(cloudlet_pki::unverified_client_config()),
    )
    .map_err(|e| api("--server", e))?;
    let bundle = tokio::time::timeout(CALL_TIMEOUT, insecure.cacerts())
        .await
        .map_err(|_| NodeError::Internal(format!("{}: no answer", options.server)))?
        .map_err(|e| api("fetch the server's CA", e))?;
    let pinned: Vec<CertificateDer<'static>> = cloudlet_pki::certs_from_pem(&bundle)
        .map_err(pki)?
        .into_iter()
        .filter(|c| cloudlet_pki::pin_of(c) == token.ca_hash())
        .collect();
    if pinned.is_empty() {
        return Err(NodeError::Invalid(format!(
            "the server at {} does not have the CA the token names (K10{}…): a token of \
             another cluster, or not the server you meant; nothing was sent",
            options.server,
            token.ca_hash().get(..12).unwrap_or_default()
        )));
    }
    let verified = Client::https(
        &options.server,
        Arc::new(cloudlet_pki::verified_client_config_without_cert(&pinned).map_err(pki)?),
    )
    .map_err(|e| api("--server", e))?;
    let key = KeyPair::generate().map_err(pki)?;
    let request = JoinRequest {
        token: token.to_string(),
        node_name: node_name.to_owned(),
        csr: key.csr_pem(node_name).map_err(pki)?,
        labels: options.labels.clone(),
        address: Some(options.address.clone()),
    };
    let answer = tokio::time::timeout(CALL_TIMEOUT, verified.join(&request))
        .await
        .map_err(|_| NodeError::Internal(format!("{}: no answer to the join", options.server)))?
        .map_err(|e| api("join", e))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| NodeError::Internal(format!("{}: {e}", dir.display())))?;
    cloudlet_pki::write_certificate(&dir.join(CA_FILE), &answer.ca).map_err(pki)?;
    let identity = Identity::from_pem(&answer.certificate).map_err(pki)?;
    let creds = Credentials {
        resolver: Arc::new(
            ReloadingResolver::new(&answer.certificate, &key.to_pem()).map_err(pki)?,
        ),
        dir: dir.to_owned(),
        listener: Arc::default(),
        ca_pem: answer.ca,
        identity,
    };
    creds.save_cert(&answer.certificate, &key)?;
    tracing::info!(
        node = node_name,
        roles = ?answer.roles,
        "joined the cluster at {}",
        options.server
    );
    Ok(creds)
}

/// The agent's loop: beat, sync, push events, renew — until the process ends. Failures are
/// logged and retried at the next beat; nothing that runs is touched by them.
pub async fn run<S: Store>(node: Node<S>, mut creds: Credentials, options: AgentOptions) {
    let mut client = match connect(&creds, &options) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("agent: {e}");
            return;
        }
    };
    let mut synced: Option<u64> = None;
    let mut tick = tokio::time::interval(options.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        match beat(&node, &client, &creds, &mut synced).await {
            Ok(ca_changed) => {
                if let Some(since) = unreachable_since.take() {
                    tracing::info!(
                        "agent: the server answers again after {:.0?}",
                        since.elapsed()
                    );
                }
                if ca_changed {
                    if let Err(e) = refresh_ca(&client, &mut creds).await {
                        tracing::warn!("agent: {e}");
                    }
                    match connect(&creds, &options) {
                        Ok(c) => client = c,
                        Err(e) => tracing::warn!("agent: {e}"),
                    }
                    // A rotated CA: get a certificate of the new one at once.
                    if let Err(e) = renew(&node, &client, &mut creds).await {
                        tracing::warn!("agent: renewing after a CA change: {e}");
                    }
                }
            }
            Err(e) => {
                if unreachable_since.is_none() {
                    unreachable_since = Some(std::time::Instant::now());
                    tracing::warn!("agent: {e}; everything this node runs keeps running, retrying");
                } else {
                    tracing::debug!("agent: {e}");
                }
                continue;
            }
        }
        if jiff::Timestamp::now() >= creds.identity.renew_at()
            && let Err(e) = renew(&node, &client, &mut creds).await
        {
            tracing::warn!("agent: certificate renewal failed, retrying: {e}");
        }
        if let Err(e) = push_events(&node, &client).await {
            tracing::debug!("agent: pushing events: {e}");
        }
    }
}

fn connect(creds: &Credentials, options: &AgentOptions) -> Result<Client, NodeError> {
    Client::https(&options.server, creds.client_config()?).map_err(|e| api("--server", e))
}

/// One heartbeat, and the assignments when they changed. True when the server's CA bundle
/// differs from ours.
async fn beat<S: Store>(
    node: &Node<S>,
    client: &Client,
    creds: &Credentials,
    synced: &mut Option<u64>,
) -> Result<bool, NodeError> {
    let name = node.name().to_owned();
    let status = node
        .nodes()
        .await
        .map_err(|e| api("read this node", e))?
        .into_iter()
        .next()
        .ok_or_else(|| NodeError::Internal("no node status".into()))?;
    let services = node
        .list_services(Default::default())
        .await
        .map_err(|e| api("list services", e))?;
    let heartbeat = Heartbeat {
        node: status,
        services,
    };
    let answer = tokio::time::timeout(CALL_TIMEOUT, client.heartbeat(&name, &heartbeat))
        .await
        .map_err(|_| NodeError::Internal("heartbeat: the server did not answer".into()))?
        .map_err(|e| api("heartbeat", e))?;
    if *synced != Some(answer.assignments_revision) {
        let assignments = tokio::time::timeout(CALL_TIMEOUT, client.assignments(&name))
            .await
            .map_err(|_| NodeError::Internal("assignments: the server did not answer".into()))?
            .map_err(|e| api("assignments", e))?;
        sync(node, &assignments).await?;
        *synced = Some(answer.assignments_revision.max(assignments.revision));
    }
    Ok(answer.ca_hash != ca_hash(&creds.ca_pem))
}

/// SHA-256 of a CA bundle, as the server reports it.
pub fn ca_hash(pem: &str) -> String {
    Sha256::digest(pem.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Makes the node's store hold exactly `assignments` (transient services aside), in one
/// transaction guarded by the revisions it read.
pub async fn sync<S: Store>(node: &Node<S>, assignments: &Assignments) -> Result<(), NodeError> {
    let store = node.store();
    let prefix = node.prefix();
    let (kvs, _) = store.list(&prefix).await?;
    let mut have: BTreeMap<String, (ServiceRecord, u64)> = BTreeMap::new();
    for kv in &kvs {
        let record = ServiceRecord::decode(&kv.key, &kv.value)?;
        have.insert(kv.key.clone(), (record, kv.mod_revision));
    }
    let mut compares = Vec::new();
    let mut ops = Vec::new();
    let mut wanted = std::collections::BTreeSet::new();
    for a in &assignments.services {
        let manifest: ServiceManifest = serde_json::from_value(a.manifest.clone())
            .map_err(|e| NodeError::Invalid(format!("an assignment from the server: {e}")))?;
        let key = assignment_key(node.name(), &manifest.metadata.name);
        wanted.insert(key.clone());
        let record = ServiceRecord {
            manifest,
            desired: match a.desired {
                DesiredState::Running => DesiredRecord::Running,
                DesiredState::Stopped => DesiredRecord::Stopped,
            },
            file: a.file.clone(),
            document: a.document,
            applied_at: a.applied_at,
            transient: None,
        };
        match have.get(&key) {
            Some((r, _)) if r.transient.is_some() => {
                tracing::warn!(
                    "agent: {key} is a transient service here; the server's assignment of the \
                     same name is not run"
                );
            }
            Some((r, _)) if *r == record => {}
            Some((_, rev)) => {
                compares.push(Compare::mod_revision(key.clone(), CompareOp::Equal, *rev));
                ops.push(Op::put(key, record.encode()?));
            }
            None => {
                compares.push(Compare::absent(key.clone()));
                ops.push(Op::put(key, record.encode()?));
            }
        }
    }
    for (key, (record, rev)) in &have {
        if record.transient.is_none() && !wanted.contains(key) {
            compares.push(Compare::mod_revision(key.clone(), CompareOp::Equal, *rev));
            ops.push(Op::delete(key.clone()));
            node.event(
                Some(&record.manifest.metadata.name),
                "Unassigned",
                "no longer assigned to this node by the server: stopping this copy".into(),
            );
        }
    }
    if ops.is_empty() {
        return Ok(());
    }
    let txn = Txn {
        compares,
        success: ops,
        failure: Vec::new(),
    };
    if !store.txn(txn).await?.succeeded {
        return Err(NodeError::Conflict(
            "the node's services changed during a sync; syncing again".into(),
        ));
    }
    Ok(())
}

/// A new key, a CSR, a certificate of the server's current CA; swapped in for every later
/// connection (established ones keep theirs).
async fn renew<S: Store>(
    node: &Node<S>,
    client: &Client,
    creds: &mut Credentials,
) -> Result<(), NodeError> {
    let key = KeyPair::generate().map_err(pki)?;
    let request = RenewRequest {
        csr: key.csr_pem(node.name()).map_err(pki)?,
    };
    let answer = tokio::time::timeout(CALL_TIMEOUT, client.renew(node.name(), &request))
        .await
        .map_err(|_| NodeError::Internal("renew: the server did not answer".into()))?
        .map_err(|e| api("renew", e))?;
    creds
        .resolver
        .set(&answer.certificate, &key.to_pem())
        .map_err(pki)?;
    creds.save_cert(&answer.certificate, &key)?;
    creds.identity = Identity::from_pem(&answer.certificate).map_err(pki)?;
    if answer.ca != creds.ca_pem {
        cloudlet_pki::write_certificate(&creds.dir.join(CA_FILE), &answer.ca).map_err(pki)?;
        creds.ca_pem = answer.ca;
        creds.refresh_listener()?;
    }
    tracing::info!(
        serial = %creds.identity.serial,
        not_after = %creds.identity.not_after,
        "agent: certificate renewed"
    );
    Ok(())
}

/// The CA bundle changed on the server (a rotation): fetch it over the verified link, which the
/// server keeps verifiable by the old CA for the whole overlap.
async fn refresh_ca(client: &Client, creds: &mut Credentials) -> Result<(), NodeError> {
    let bundle = tokio::time::timeout(CALL_TIMEOUT, client.cacerts())
        .await
        .map_err(|_| NodeError::Internal("cacerts: the server did not answer".into()))?
        .map_err(|e| api("fetch the CA bundle", e))?;
    cloudlet_pki::certs_from_pem(&bundle).map_err(pki)?;
    cloudlet_pki::write_certificate(&creds.dir.join(CA_FILE), &bundle).map_err(pki)?;
    creds.ca_pem = bundle;
    creds.refresh_listener()?;
    tracing::info!("agent: the cluster's CA bundle changed; trusting the new one");
    Ok(())
}

/// Pushes the node's events the server has not seen yet.
async fn push_events<S: Store>(node: &Node<S>, client: &Client) -> Result<(), NodeError> {
    let store = node.store();
    let cursor: u64 = match store.get(EVENTS_CURSOR).await? {
        Some(kv) => String::from_utf8_lossy(&kv.value).parse().unwrap_or(0),
        None => 0,
    };
    let (events, _) = crate::events::read(store, None, Some(cursor + 1), None).await?;
    for batch in events.chunks(EVENTS_BATCH) {
        let Some(last) = batch.last().map(|e| e.revision) else {
            break;
        };
        tokio::time::timeout(CALL_TIMEOUT, client.push_events(node.name(), batch))
            .await
            .map_err(|_| NodeError::Internal("events: the server did not answer".into()))?
            .map_err(|e| api("push events", e))?;
        store
            .put(EVENTS_CURSOR, last.to_string().into_bytes(), None)
            .await?;
    }
    Ok(())
}
