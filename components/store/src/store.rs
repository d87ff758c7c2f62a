//! The `Store` trait: the one door to cluster state, shaped like etcd's KV, Watch and Lease APIs.
//!
//! Owns: the contract every backend (redb and etcd) must keep, checked by
//! [`conformance`](crate::conformance). Must never: mention a service, HTTP or PKI: keys are
//! UTF-8 strings and values are bytes.

use std::future::Future;
use std::time::Duration;

use crate::{KeyValue, LeaseId, Revision, StoreError, Txn, TxnResponse, Watcher};

/// A key-value store with a global revision, transactions, watches and leases.
///
/// Revisions: one global counter. A write transaction that changes at least one key commits at
/// the current revision + 1, all of its changes at that one revision; requests that change
/// nothing (reads, deleting an absent key, granting a lease) do not move it.
pub trait Store: Clone + Send + Sync + 'static {
    /// The revision of the last committed write (0 for a new redb store; etcd starts at 1).
    fn current_revision(&self) -> impl Future<Output = Result<Revision, StoreError>> + Send;

    /// The key, or `None` if it is absent.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<KeyValue>, StoreError>> + Send;

    /// Writes `value` to `key` (attached to `lease`, or to none) and returns the new revision.
    /// Fails with [`StoreError::LeaseNotFound`] if the lease does not exist.
    fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> impl Future<Output = Result<Revision, StoreError>> + Send;

    /// Deletes `key`. Returns the new revision and `true`, or, if the key was absent, the
    /// current revision (unchanged) and `false`.
    fn delete(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<(Revision, bool), StoreError>> + Send;

    /// Every key starting with `prefix`, sorted by key, and the revision this read saw: watching
    /// from that revision + 1 misses nothing and repeats nothing.
    fn list(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<(Vec<KeyValue>, Revision), StoreError>> + Send;

    /// Runs a compare-and-swap transaction atomically. A malformed transaction (see
    /// [`StoreError::Invalid`]) or an unknown lease in a put fails the whole transaction.
    fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnResponse, StoreError>> + Send;

    /// Watches every key starting with `prefix`.
    ///
    /// With `Some(revision)`, the watcher first replays every change from `revision` on (from
    /// history), then continues with live changes; with `None` (or `Some(0)`) it starts after
    /// the current revision. There is no gap and no duplicate between replay and live changes,
    /// even when writes race with the watch being set up. If `revision` is older than the kept
    /// history, the call, or the watcher's first `next`, fails with
    /// [`StoreError::Compacted`]. A watcher that falls behind is ended (see [`Watcher`]).
    fn watch(
        &self,
        prefix: &str,
        from_revision: Option<Revision>,
    ) -> impl Future<Output = Result<Watcher, StoreError>> + Send;

    /// Drops history older than `revision`: watching from an earlier revision then fails with
    /// [`StoreError::Compacted`]. Keys are not affected. Compacting to an already compacted
    /// revision does nothing; a revision after the current one is
    /// [`StoreError::FutureRevision`].
    fn compact(&self, revision: Revision) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Creates a lease that ends `ttl` from now unless kept alive. Backends may round the TTL up
    /// (etcd counts whole seconds and has a minimum).
    fn grant_lease(
        &self,
        ttl: Duration,
    ) -> impl Future<Output = Result<LeaseId, StoreError>> + Send;

    /// Restarts the lease's full TTL. Fails with [`StoreError::LeaseNotFound`] if it is unknown,
    /// revoked or expired.
    fn keep_alive(&self, lease: LeaseId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ends the lease now, deleting its keys in one revision (watchers see the deletes).
    fn revoke_lease(&self, lease: LeaseId) -> impl Future<Output = Result<(), StoreError>> + Send;
}
