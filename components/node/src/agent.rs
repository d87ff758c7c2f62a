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

use cloudlet_api::dto::{Assignments, DesiredState, Event, JoinRequest, RenewRequest};
use cloudlet_api::heartbeat;
use cloudlet_api::{Backend as _, Client};
use cloudlet_pki::{Identity, KeyPair, ReloadingResolver, Token};
use cloudlet_spec::ServiceManifest;
use cloudlet_store::{Compare, CompareOp, EventKind, Op, Store, Txn};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::records::{DesiredRecord, EVENTS, ServiceRecord, assignment_key};
use crate::{Node, NodeError};

/// The agent's certificate files, under `DIR/pki`.
const CA_FILE: &str = "ca.crt";
const CERT_FILE: &str = "node.crt";
const KEY_FILE: &str = "node.key";
const SECRET_FILE: &str = "node-secret";
/// Where the agent keeps how far its events were pushed.
const EVENTS_CURSOR: &str = "/agent/events-pushed";
/// Most events pushed in one request.
const EVENTS_BATCH: usize = 500;
/// How long one call to the server may take before the agent gives up on it (and tries again at
/// the next beat).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How the agent reaches the cluster. Its `Debug` never shows the token's secret.
#[derive(Clone)]
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

impl std::fmt::Debug for AgentOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentOptions")
            .field("server", &self.server)
            .field(
                "token",
                &self.token.as_deref().map(cloudlet_api::dto::redacted_token),
            )
            .field("labels", &self.labels)
            .field("address", &self.address)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
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

/// The node's secret (`DIR/pki/node-secret`, 0600): made before its first join, and brought to
/// every join after, which the server refuses under this name without it. It outlives a lost
/// certificate, so the node can join again as itself; a new machine under the name cannot.
fn node_secret(dir: &Path) -> Result<String, NodeError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let internal =
        |p: &Path, e: std::io::Error| NodeError::Internal(format!("{}: {e}", p.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| internal(dir, e))?;
    let path = dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(internal(&path, e)),
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| internal(&path, e))?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| internal(&path, e))?;
    Ok(secret)
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
        Arc::new(cloudlet_pki::unverified_client_config().map_err(pki)?),
    )
    .map_err(|e| api("--server", e))?;
    let bundle = retrying("fetch the server's CA", &options.server, || {
        insecure.cacerts()
    })
    .await?;
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
        node_secret: Some(node_secret(dir)?),
    };
    let answer = retrying("join", &options.server, || verified.join(&request)).await?;
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

/// `call` until it succeeds or fails for good: a server that is not up yet, slow, busy (409) or
/// failing (5xx) is waited for with growing pauses, as a fleet that boots before its server
/// needs; a refusal (a bad token: 403, or any other 4xx) ends it at once.
async fn retrying<T, F, Fut>(what: &str, server: &str, mut call: F) -> Result<T, NodeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, cloudlet_api::ApiError>>,
{
    let mut pause = Duration::from_millis(250);
    loop {
        let error = match tokio::time::timeout(CALL_TIMEOUT, call()).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) => {
                let status = e.status_code().as_u16();
                let retry = status == 409 || status >= 500;
                if !retry {
                    return Err(api(what, e));
                }
                e.to_string()
            }
            Err(_) => format!("{server} did not answer within {CALL_TIMEOUT:?}"),
        };
        tracing::warn!("agent: {what}: {error}; trying again in {pause:?}");
        // A little jitter, so that nodes booting together do not retry together.
        let jitter = Duration::from_millis(u64::from(std::process::id() % 250));
        tokio::time::sleep(pause + jitter).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
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
    let (clients, client_rx) = tokio::sync::watch::channel(client.clone());
    tokio::spawn(push_events(node.clone(), client_rx));
    let mut synced: Option<u64> = None;
    // Heartbeats carry only what changed since the last one the server acknowledged.
    let mut sender = heartbeat::Sender::new();
    let mut tick = tokio::time::interval(options.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        match beat(&node, &client, &creds, &mut synced, &mut sender).await {
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
                        Ok(c) => {
                            client = c;
                            clients.send_replace(client.clone());
                        }
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
    sender: &mut heartbeat::Sender,
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
    let heartbeat = sender.next(status, services);
    let answer = tokio::time::timeout(CALL_TIMEOUT, client.heartbeat(&name, &heartbeat))
        .await
        .map_err(|_| NodeError::Internal("heartbeat: the server did not answer".into()))
        .and_then(|r| r.map_err(|e| api("heartbeat", e)));
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            sender.failed();
            return Err(e);
        }
    };
    sender.answered(&answer);
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
    let txn = Txn::guarded(compares, ops);
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

/// Pushes the node's events to the server as they are written, in batches: it follows the
/// store's watch from the cursor (the last revision the server accepted, kept in the store), so
/// no event is scanned twice, and none is lost while the server is away — the store keeps them
/// and the push resumes where it stopped, also across agent restarts.
async fn push_events<S: Store>(node: Node<S>, client: tokio::sync::watch::Receiver<Client>) {
    let store = node.store().clone();
    loop {
        let cursor: u64 = match store.get(EVENTS_CURSOR).await {
            Ok(Some(kv)) => String::from_utf8_lossy(&kv.value).parse().unwrap_or(0),
            Ok(None) => 0,
            Err(e) => {
                tracing::debug!("agent: events cursor: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut watcher = match store.watch(EVENTS, Some(cursor + 1)).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("agent: watching events from revision {}: {e}", cursor + 1);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let Some((batch, last)) = next_batch(&mut watcher).await else {
                break;
            };
            let mut delay = Duration::from_secs(1);
            loop {
                let c = client.borrow().clone();
                match tokio::time::timeout(CALL_TIMEOUT, c.push_events(node.name(), &batch)).await {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) => tracing::debug!("agent: pushing events: {e}"),
                    Err(_) => tracing::debug!("agent: pushing events: the server did not answer"),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            if let Err(e) = store
                .put(EVENTS_CURSOR, last.to_string().into_bytes(), None)
                .await
            {
                tracing::debug!("agent: saving the events cursor: {e}");
            }
        }
    }
}

/// The next events from `watcher`: the first one as it comes, then whatever follows within a
/// moment, up to a batch; with the revision of the last change seen. `None` when the watch ended.
async fn next_batch(watcher: &mut cloudlet_store::Watcher) -> Option<(Vec<Event>, u64)> {
    let mut batch = Vec::new();
    let mut last = 0;
    let mut wait = None;
    while batch.len() < EVENTS_BATCH {
        let item = match wait {
            None => watcher.next().await,
            Some(linger) => match tokio::time::timeout(linger, watcher.next()).await {
                Ok(item) => item,
                Err(_) => break,
            },
        };
        match item {
            Some(Ok(ev)) => {
                last = ev.revision();
                if ev.kind == EventKind::Put {
                    match crate::events::event_dto(&ev.kv) {
                        Ok(e) => batch.push(e),
                        Err(e) => tracing::warn!("agent: an unreadable event: {e}"),
                    }
                }
                wait = Some(Duration::from_millis(100));
            }
            Some(Err(e)) => {
                tracing::debug!("agent: the events watch ended: {e}");
                return (last > 0).then_some((batch, last));
            }
            None => return (last > 0).then_some((batch, last)),
        }
    }
    Some((batch, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_debug_shows_no_token_secret() {
        let options = AgentOptions {
            server: "https://s:6443".to_owned(),
            token: Some("K10abc::tok1.s3cr3tpart".to_owned()),
            labels: BTreeMap::new(),
            address: "https://n1:10250".to_owned(),
            heartbeat: Duration::from_secs(2),
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("s3cr3tpart"), "{shown}");
        assert!(shown.contains("tok1.<redacted>"), "{shown}");
    }
}
