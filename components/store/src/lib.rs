//! cloudlet's datastore: the [`Store`] trait, its embedded redb backend ([`RedbStore`]) and its
//! etcd backend ([`EtcdStore`]).
//!
//! Owns: all cluster state behind one trait shaped like etcd's KV, Watch and Lease APIs (one
//! global revision, compare-and-swap transactions, watch from a past revision, leases), and the
//! [`conformance`] suite every backend must pass. Must never: know what a service, an HTTP
//! request or a certificate is. Keys are UTF-8 strings, values are bytes.

#![warn(missing_docs)]

pub mod conformance;
mod error;
mod etcd_store;
mod kv;
mod redb_store;
mod store;
mod txn;
mod watch;

pub use error::StoreError;
pub use etcd_store::{EtcdOptions, EtcdStore, EtcdTls, limits as etcd_limits};
pub use kv::{EventKind, KeyValue, LeaseId, Revision, WatchEvent};
pub use redb_store::{RedbOptions, RedbStore};
pub use store::Store;
pub use txn::{Compare, CompareOp, CompareTarget, Op, Txn, TxnResponse};
pub use watch::Watcher;
