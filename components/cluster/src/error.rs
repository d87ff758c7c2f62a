//! `ClusterError`: what the control plane can fail at. Each variant maps to one API status in
//! `backend.rs`; messages are complete sentences for the operator.

use std::path::PathBuf;

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] cloudlet_store::StoreError),
    /// The node glue failed (apply, delete, records).
    #[error(transparent)]
    Node(#[from] cloudlet_node::NodeError),
    /// Certificates or keys failed.
    #[error(transparent)]
    Pki(#[from] cloudlet_pki::PkiError),
    /// A file of the control plane could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A join or renewal was refused: bad, expired or revoked token, wrong node.
    #[error("{0}")]
    Refused(String),
    /// The request is wrong.
    #[error("{0}")]
    Invalid(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// It conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A node's agent could not be reached or answered with an error.
    #[error("{0}")]
    Agent(String),
    /// A stored record cannot be read.
    #[error("store key {key}: unreadable record: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}
