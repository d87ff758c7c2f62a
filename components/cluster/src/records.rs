//! The control plane's key layout in the store and the records under it:
//!
//! - `/nodes/<name>`: a [`NodeRecord`] (what the node is: roles, labels, address, cordon);
//! - `/tokens/<id>`: a [`TokenRecord`] (a join token; only the secret's hash);
//! - `/revoked/<serial>`: a [`RevokedRecord`] (a node certificate refused before it expires);
//! - `/assignments/<node>/<service>`: which services run where (owned by `cloudlet_node::records`,
//!   written by the placer).
//!
//! Heartbeats are not stored: they live in memory (`registry.rs`), so 300 nodes beating every two
//! seconds cost the store nothing. Records are JSON. This module never does I/O.

use std::collections::BTreeMap;

use cloudlet_spec::NodeRole;
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ClusterError;

/// Prefix of node records.
pub const NODES: &str = "/nodes/";
/// Prefix of join tokens.
pub const TOKENS: &str = "/tokens/";

/// The key of a node's record.
pub fn node_key(name: &str) -> String {
    format!("{NODES}{name}")
}

/// Prefix of revoked certificates.
pub const REVOKED: &str = "/revoked/";

/// The key of a revoked certificate.
pub fn revoked_key(serial: &str) -> String {
    format!("{REVOKED}{serial}")
}

/// The key of a token.
pub fn token_key(id: &str) -> String {
    format!("{TOKENS}{id}")
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// Its name (its certificate's common name).
    pub name: String,
    /// What it is for.
    pub roles: Vec<NodeRole>,
    /// Labels, for placement.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The agent's API, `https://host:port`; `None` for the server's own node (reached in-process).
    #[serde(default)]
    pub address: Option<String>,
    /// No new placements.
    #[serde(default)]
    pub cordoned: bool,
    /// Moving replicated services off: `Some(force)`.
    #[serde(default)]
    pub draining: Option<bool>,
    /// When it joined (first, or again).
    pub joined_at: Timestamp,
    /// The serial of the last certificate issued to it.
    #[serde(default)]
    pub cert_serial: Option<String>,
    /// When that certificate expires.
    #[serde(default)]
    pub cert_not_after: Option<Timestamp>,
    /// SHA-256 (hex) of the secret the node joined with: a join under this name must bring the
    /// same secret. `None` for the server's own node and for nodes that joined without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sha256: Option<String>,
}

impl NodeRecord {
    /// A node just joined (or the server's own): `roles`, no labels, address or cordon yet.
    pub fn new(name: &str, roles: Vec<NodeRole>) -> NodeRecord {
        NodeRecord {
            name: name.to_owned(),
            roles,
            labels: BTreeMap::new(),
            address: None,
            cordoned: false,
            draining: None,
            joined_at: Timestamp::now(),
            cert_serial: None,
            cert_not_after: None,
            secret_sha256: None,
        }
    }
}

/// A node certificate revoked before its expiry: its node was deleted or joined again. Kept until
/// the certificate expires (after that, expiry alone refuses it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokedRecord {
    /// The node it was issued to.
    pub node: String,
    /// When the certificate expires: when this record can go.
    pub not_after: Timestamp,
    /// When it was revoked.
    pub at: Timestamp,
}

/// A join token as stored: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// The public id.
    pub id: String,
    /// `hash_secret` of the secret.
    pub secret_hash: String,
    /// The role a node joining with it gets.
    pub role: NodeRole,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// Who made it.
    pub created_by: String,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// How many joins it served.
    #[serde(default)]
    pub uses: u64,
}

/// Encodes a record as JSON.
pub fn encode<T: Serialize>(key: &str, record: &T) -> Result<Vec<u8>, ClusterError> {
    serde_json::to_vec(record).map_err(|e| ClusterError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// Decodes a record stored at `key`.
pub fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, ClusterError> {
    serde_json::from_slice(value).map_err(|e| ClusterError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
