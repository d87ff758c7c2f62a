//! Operator writes: apply manifests (all or nothing), delete, and the desired state of a service.
//!
//! Every write is a compare-and-swap transaction against the revisions read just before, so two
//! operators applying at once cannot silently overwrite each other: the loser gets a conflict and
//! retries. Nothing invalid reaches the store: all files are parsed and validated together first.
//! A service can be *held*: the control plane names manifests a rollout rolled back from, and an
//! apply leaves such a service as it is instead of rolling the failed manifest out again.

use std::collections::BTreeMap;

use cloudlet_host::Resources;
use cloudlet_spec::{Manifest, ServiceManifest, Source};
use cloudlet_store::{Compare, CompareOp, Op, Store, Txn};

use crate::NodeError;
use crate::records::{DesiredRecord, SERVICES, ServiceRecord, manifest_digest, service_key};

/// What apply did with one manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It was new.
    Created,
    /// It replaced a different manifest.
    Configured,
    /// It was already stored as is.
    Unchanged,
    /// Its manifest is one a rollout rolled back from: the stored one stays (see [`Hold`]).
    Held,
}

/// A manifest an apply must not write for a service: one a rollout rolled back from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// `records::manifest_digest` of the manifest that failed.
    pub digest: String,
    /// Why, for the operator (which rollout, what failed, how to retry).
    pub why: String,
}

/// What an apply checks besides validity.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    /// Refuse manifests that do not fit this node's (name, allocatable resources).
    pub fit: Option<(String, Resources)>,
    /// Per service: a manifest not to write (the service keeps its stored one).
    pub holds: BTreeMap<String, Hold>,
}

impl Checks {
    /// The hold that keeps `manifest` from being written, if any.
    pub fn hold_for(&self, manifest: &ServiceManifest) -> Option<&Hold> {
        self.holds
            .get(&manifest.metadata.name)
            .filter(|hold| hold.digest == manifest_digest(manifest))
    }
}

/// The outcome for one manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Service name.
    pub name: String,
    /// Source file.
    pub file: String,
    /// What happened.
    pub applied: Applied,
    /// Why it was held (with [`Applied::Held`]).
    pub held: Option<String>,
}

/// Parses, validates and stores `files` (name, content) in one transaction.
pub async fn apply<S: Store>(
    store: &S,
    files: &[(String, String)],
    checks: &Checks,
) -> Result<Vec<ApplyOutcome>, NodeError> {
    let manifests = parse(files).await?;
    apply_parsed(store, manifests, checks).await
}

/// How many applies parse at once. Parsing is CPU work (a large or hostile YAML file can take a
/// second within the parser's own limits): it runs on blocking threads, never on the async
/// workers that serve heartbeats, and only this many at once, so a flood of applies queues
/// here instead of taking every CPU.
static PARSERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Parses every file into manifests, off the async workers: every file's problems together,
/// or the manifests (at least one).
pub async fn parse(files: &[(String, String)]) -> Result<Vec<Manifest>, NodeError> {
    let _slot = PARSERS
        .acquire()
        .await
        .map_err(|e| NodeError::Internal(format!("parse manifests: {e}")))?;
    let files = files.to_vec();
    tokio::task::spawn_blocking(move || parse_now(&files))
        .await
        .map_err(|e| NodeError::Internal(format!("parse manifests: {e}")))?
}

fn parse_now(files: &[(String, String)]) -> Result<Vec<Manifest>, NodeError> {
    let mut manifests: Vec<Manifest> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for (name, text) in files {
        match cloudlet_spec::parse_file(name, text) {
            Ok(found) => manifests.extend(found),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(NodeError::Invalid(errors.join("\n")));
    }
    if manifests.is_empty() {
        return Err(NodeError::Invalid(
            "no manifests found in the given files".into(),
        ));
    }
    Ok(manifests)
}

/// [`apply`] of manifests [`parse`] returned.
pub async fn apply_parsed<S: Store>(
    store: &S,
    manifests: Vec<Manifest>,
    checks: &Checks,
) -> Result<Vec<ApplyOutcome>, NodeError> {
    let (kvs, _) = store.list(SERVICES).await?;
    let mut stored: BTreeMap<String, (ServiceRecord, u64)> = BTreeMap::new();
    for kv in &kvs {
        let record = ServiceRecord::decode(&kv.key, &kv.value)?;
        stored.insert(
            record.manifest.metadata.name.clone(),
            (record, kv.mod_revision),
        );
    }
    let existing: Vec<ServiceManifest> = stored.values().map(|(r, _)| r.manifest.clone()).collect();
    cloudlet_spec::validate_set(&manifests, &existing)
        .map_err(|e| NodeError::Invalid(e.to_string()))?;
    if let Some((node, allocatable)) = &checks.fit {
        check_fit(
            node,
            *allocatable,
            &manifests,
            &stored
                .values()
                .map(|(r, _)| r.manifest.clone())
                .collect::<Vec<_>>(),
        )?;
    }

    let now = jiff::Timestamp::now();
    let mut compares = Vec::new();
    let mut ops = Vec::new();
    let mut outcomes = Vec::new();
    for manifest in manifests {
        let Some(service) = manifest.as_service().cloned() else {
            continue;
        };
        let source = service.source().cloned().unwrap_or(Source {
            file: String::new(),
            document: 0,
        });
        let name = service.metadata.name.clone();
        let key = service_key(&name);
        let (applied, desired) = match stored.get(&name) {
            None => {
                compares.push(Compare::absent(key.clone()));
                (Applied::Created, DesiredRecord::Running)
            }
            Some((record, _)) if record.transient.is_some() => {
                return Err(NodeError::Conflict(format!(
                    "{}: service {name} is a transient service (started with `run`): delete it first",
                    source
                )));
            }
            Some((record, rev)) if record.manifest == service => {
                compares.push(Compare::mod_revision(key.clone(), CompareOp::Equal, *rev));
                (Applied::Unchanged, record.desired)
            }
            Some((_, _)) if let Some(hold) = checks.hold_for(&service) => {
                outcomes.push(ApplyOutcome {
                    name,
                    file: source.file,
                    applied: Applied::Held,
                    held: Some(hold.why.clone()),
                });
                continue;
            }
            Some((record, rev)) => {
                compares.push(Compare::mod_revision(key.clone(), CompareOp::Equal, *rev));
                (Applied::Configured, record.desired)
            }
        };
        if applied != Applied::Unchanged {
            let record = ServiceRecord {
                manifest: service,
                desired,
                file: source.file.clone(),
                document: source.document,
                applied_at: now,
                transient: None,
            };
            ops.push(Op::put(key, record.encode()?));
        }
        outcomes.push(ApplyOutcome {
            name,
            file: source.file,
            applied,
            held: None,
        });
    }
    if !ops.is_empty() {
        let response = store.txn(Txn::guarded(compares, ops)).await?;
        if !response.succeeded {
            return Err(NodeError::Conflict(
                "the services changed while this apply was validated; apply again".into(),
            ));
        }
    }
    Ok(outcomes)
}

/// Deletes the record at `key` (a node's transient service) if it is there; false if it was not.
pub async fn delete_key<S: Store>(store: &S, key: &str) -> Result<bool, NodeError> {
    let Some(kv) = store.get(key).await? else {
        return Ok(false);
    };
    let txn = Txn::guarded(
        vec![Compare::mod_revision(
            key.to_owned(),
            CompareOp::Equal,
            kv.mod_revision,
        )],
        vec![Op::delete(key.to_owned())],
    );
    if !store.txn(txn).await?.succeeded {
        return Err(NodeError::Conflict(format!(
            "{key} changed meanwhile; try again"
        )));
    }
    Ok(true)
}

/// Deletes a service; refused while other services depend on it.
pub async fn delete<S: Store>(store: &S, name: &str) -> Result<(), NodeError> {
    let (kvs, _) = store.list(SERVICES).await?;
    let mut found = None;
    let mut dependants = Vec::new();
    for kv in &kvs {
        let record = ServiceRecord::decode(&kv.key, &kv.value)?;
        if record.manifest.metadata.name == name {
            found = Some(kv.mod_revision);
        } else if record.manifest.spec.depends_on.iter().any(|d| d == name) {
            dependants.push(record.manifest.metadata.name.clone());
        }
    }
    let Some(rev) = found else {
        return Err(NodeError::NotFound(name.to_owned()));
    };
    if !dependants.is_empty() {
        return Err(NodeError::Conflict(format!(
            "service {name} is a dependency of {}: delete or change those first",
            dependants.join(", ")
        )));
    }
    let key = service_key(name);
    let txn = Txn::guarded(
        vec![Compare::mod_revision(key.clone(), CompareOp::Equal, rev)],
        vec![Op::delete(key)],
    );
    if !store.txn(txn).await?.succeeded {
        return Err(NodeError::Conflict(format!(
            "service {name} changed meanwhile; try again"
        )));
    }
    Ok(())
}

/// Sets whether the service stored at `key` (named `name`) should run; returns false when it
/// already was so.
pub async fn set_desired<S: Store>(
    store: &S,
    key: &str,
    name: &str,
    desired: DesiredRecord,
) -> Result<bool, NodeError> {
    let key = key.to_owned();
    let Some(kv) = store.get(&key).await? else {
        return Err(NodeError::NotFound(name.to_owned()));
    };
    let mut record = ServiceRecord::decode(&key, &kv.value)?;
    if record.desired == desired {
        return Ok(false);
    }
    record.desired = desired;
    let txn = Txn::guarded(
        vec![Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            kv.mod_revision,
        )],
        vec![Op::put(key, record.encode()?)],
    );
    if !store.txn(txn).await?.succeeded {
        return Err(NodeError::Conflict(format!(
            "service {name} changed meanwhile; try again"
        )));
    }
    Ok(true)
}

/// The sum of what `manifests` request (cpu and memory; pids are not requested).
pub fn requested<'a>(manifests: impl Iterator<Item = &'a ServiceManifest>) -> Resources {
    let mut total = Resources::default();
    for m in manifests {
        let r = m.spec.effective().resources;
        total.cpu_millis = total
            .cpu_millis
            .saturating_add(r.cpu_request_millicores.unwrap_or(0));
        total.memory_bytes = total
            .memory_bytes
            .saturating_add(r.memory_request_bytes.unwrap_or(0));
    }
    total
}

/// Refuses the apply when the node's services would request more than its allocatable: there is
/// no overcommit, because there is no eviction to fall back on.
fn check_fit(
    node: &str,
    allocatable: Resources,
    new: &[Manifest],
    stored: &[ServiceManifest],
) -> Result<(), NodeError> {
    let new: Vec<&ServiceManifest> = new.iter().filter_map(Manifest::as_service).collect();
    let others = stored
        .iter()
        .filter(|s| !new.iter().any(|n| n.metadata.name == s.metadata.name));
    let before = requested(others.clone());
    let total = requested(others.chain(new.iter().copied()));
    let checks = [
        (
            "cpu",
            "spec.resources.requests.cpu",
            total.cpu_millis,
            before.cpu_millis,
            allocatable.cpu_millis,
            "m",
        ),
        (
            "memory",
            "spec.resources.requests.memory",
            total.memory_bytes,
            before.memory_bytes,
            allocatable.memory_bytes,
            " bytes",
        ),
    ];
    for (resource, field, total, before, allocatable, unit) in checks {
        if total <= allocatable {
            continue;
        }
        // Name the first new manifest that asks for this resource.
        let culprit = new.iter().find(|m| {
            let r = m.spec.effective().resources;
            match resource {
                "cpu" => r.cpu_request_millicores.unwrap_or(0) > 0,
                _ => r.memory_request_bytes.unwrap_or(0) > 0,
            }
        });
        let at = culprit
            .and_then(|m| {
                m.source()
                    .map(|s| format!("{s}: {field}: service {}", m.metadata.name))
            })
            .unwrap_or_else(|| field.to_owned());
        return Err(NodeError::Invalid(format!(
            "{at} does not fit node {node}: {resource} requests would total {total}{unit}, \
             allocatable is {allocatable}{unit} ({before}{unit} requested by the other services); \
             lower the request or free the node (cloudlet never overcommits: it has no eviction)"
        )));
    }
    Ok(())
}
