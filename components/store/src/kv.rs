//! The data model every backend shares: revisions, leases, key-values and watch events.
//!
//! Owns: plain data types shaped like etcd's `mvccpb.KeyValue` and `mvccpb.Event`. Must never:
//! know about a backend, a service or an encoding.

use std::fmt;

/// The store's global revision. Every committed write transaction increments it by exactly one;
/// transactions that change nothing (reads, deletes of missing keys) leave it alone.
pub type Revision = u64;

/// The id of a lease, as etcd numbers them (positive; 0 is never a lease).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// One key with its value and bookkeeping, as etcd reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision of the write that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// The revision of the last write to the key.
    pub mod_revision: Revision,
    /// How many times the key was written since it was created (1 after the first put).
    pub version: u64,
    /// The lease the key is attached to; the key is deleted when the lease ends.
    pub lease: Option<LeaseId>,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or overwritten.
    Put,
    /// The key was deleted (explicitly, by a prefix delete, or because its lease ended).
    Delete,
}

/// One change seen by a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// For a put, the key as written. For a delete, only `key` and `mod_revision` (the deleting
    /// revision) are set; the other fields are zero/empty, as etcd does.
    pub kv: KeyValue,
}

impl WatchEvent {
    /// A delete event of `key` at `revision`.
    pub fn delete(key: String, revision: Revision) -> Self {
        WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key,
                value: Vec::new(),
                create_revision: 0,
                mod_revision: revision,
                version: 0,
                lease: None,
            },
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}
