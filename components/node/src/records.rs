//! The node's key layout in the store and the records stored under it.
//!
//! - `/services/<name>`: a [`ServiceRecord`] (the manifest as applied, where it came from, and
//!   whether the operator wants it running): the cluster's desired services, on the server;
//! - `/assignments/<node>/<name>`: a [`ServiceRecord`] a node runs: written by the server's placer
//!   (and mirrored into an agent's own store), or by the node itself for a transient service
//!   (`transient` set: the placer and the mirror never touch those);
//! - `/events/<20-digit sequence>`: an [`EventRecord`], oldest first, bounded by retention.
//!
//! Records are JSON. This module owns their shapes and never does I/O.

use cloudlet_spec::ServiceManifest;
use serde::{Deserialize, Serialize};

use crate::NodeError;

/// Prefix of service records.
pub const SERVICES: &str = "/services/";
/// Prefix of events.
pub const EVENTS: &str = "/events/";
/// Prefix of every node's assignments.
pub const ASSIGNMENTS: &str = "/assignments/";

/// The prefix of `node`'s assignments.
pub fn assignment_prefix(node: &str) -> String {
    format!("{ASSIGNMENTS}{node}/")
}

/// The key of service `name` assigned to `node`.
pub fn assignment_key(node: &str, name: &str) -> String {
    format!("{ASSIGNMENTS}{node}/{name}")
}

/// The node and service of an assignment key (`/assignments/<node>/<service>`).
pub fn split_assignment_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(ASSIGNMENTS)?.split_once('/')
}

/// The key of a service's record.
pub fn service_key(name: &str) -> String {
    format!("{SERVICES}{name}")
}

/// A digest of a manifest as assigned (16 hex digits of SHA-256 over its JSON): the tag a node
/// gives the run of a service, and how a rollout on the server knows which nodes run a version.
/// Both sides compute it from the same record type, so the same manifest gives the same digest.
pub fn manifest_digest(manifest: &ServiceManifest) -> String {
    use sha2::{Digest, Sha256};
    // Serializing a manifest (strings, numbers and sorted maps) cannot fail; an error would give
    // the digest of nothing, which matches no run and so only delays a rollout.
    let bytes = serde_json::to_vec(manifest).unwrap_or_default();
    Sha256::digest(&bytes)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The key of event number `seq`.
pub fn event_key(seq: u64) -> String {
    format!("{EVENTS}{seq:020}")
}

/// The sequence number in an event key.
pub fn event_seq(key: &str) -> Option<u64> {
    key.strip_prefix(EVENTS)?.parse().ok()
}

/// Whether the operator wants the service running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredRecord {
    /// Run it.
    Running,
    /// Keep it stopped (`ctl stop`).
    Stopped,
}

/// A stored service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRecord {
    /// The manifest as applied.
    pub manifest: ServiceManifest,
    /// Running or stopped.
    pub desired: DesiredRecord,
    /// The file it was applied from.
    pub file: String,
    /// Its document number in that file (1-based).
    pub document: usize,
    /// When it was last applied.
    pub applied_at: jiff::Timestamp,
    /// Set for a transient service (started through the executor with `run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transient: Option<TransientRecord>,
}

/// What makes a service transient: who started it, and its group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransientRecord {
    /// Its group (cgroup `groups/<group>/<name>`).
    pub group: String,
    /// The service (or `operator`) that started it.
    pub owner: String,
}

impl ServiceRecord {
    /// Decodes a stored record.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<ServiceRecord, NodeError> {
        serde_json::from_slice(bytes).map_err(|e| NodeError::Corrupt {
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Encodes for the store.
    pub fn encode(&self) -> Result<Vec<u8>, NodeError> {
        serde_json::to_vec(self).map_err(|e| NodeError::Internal(format!("encode record: {e}")))
    }
}

/// How a run ended, as stored in an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// Exit code.
    pub code: Option<i32>,
    /// Signal name.
    pub signal: Option<String>,
    /// Completed, Error, Signaled, StartError, ShimLost.
    pub reason: String,
    /// When.
    pub at: jiff::Timestamp,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// When it happened.
    pub time: jiff::Timestamp,
    /// The service concerned, if any.
    pub service: Option<String>,
    /// The node it happened on.
    pub node: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human text.
    pub message: String,
    /// The exit, for exits.
    pub exit: Option<ExitRecord>,
}

impl EventRecord {
    /// Decodes a stored event.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<EventRecord, NodeError> {
        serde_json::from_slice(bytes).map_err(|e| NodeError::Corrupt {
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_by_sequence() {
        assert!(event_key(9) < event_key(10));
        assert_eq!(event_seq(&event_key(42)), Some(42));
        assert_eq!(event_seq("/services/x"), None);
    }

    #[test]
    fn assignment_keys_split_into_node_and_service() {
        assert_eq!(
            split_assignment_key(&assignment_key("n1", "web")),
            Some(("n1", "web"))
        );
        assert_eq!(split_assignment_key("/services/web"), None);
    }
}
