//! Leases on etcd: grant (whole seconds, rounded up), keep-alive (one request on a keep-alive
//! stream opened for it) and revoke.
//!
//! Owns: the TTL rounding and its maximum. Must never: keep a lease alive on its own; the
//! caller sends keep-alives, as with the redb store.

use std::time::Duration;

use super::EtcdStore;
use crate::{LeaseId, StoreError};

/// The longest lease TTL (the redb store's limit; etcd's own is about 285 years).
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Grants a lease of `ttl` rounded up to whole seconds (etcd raises it to its minimum).
pub(super) async fn grant(store: &EtcdStore, ttl: Duration) -> Result<LeaseId, StoreError> {
    if ttl < Duration::from_millis(1) || ttl > MAX_TTL {
        return Err(StoreError::Invalid(format!(
            "lease ttl {ttl:?} is outside 1ms..={MAX_TTL:?}"
        )));
    }
    let seconds = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    let response = store
        .call(
            "grant a lease",
            b"",
            None,
            store.inner.client.lease_client().grant(seconds, None),
        )
        .await?;
    Ok(LeaseId(response.id()))
}

/// Restarts the lease's TTL; [`StoreError::LeaseNotFound`] if it is gone.
pub(super) async fn keep_alive(store: &EtcdStore, lease: LeaseId) -> Result<(), StoreError> {
    // etcd-client sends the first keep-alive and checks the answer's TTL (0: not found).
    let (_keeper, _stream) = store
        .call(
            "keep a lease alive",
            b"",
            Some(lease),
            store.inner.client.lease_client().keep_alive(lease.0),
        )
        .await?;
    Ok(())
}

/// Revokes the lease, deleting its keys in one revision.
pub(super) async fn revoke(store: &EtcdStore, lease: LeaseId) -> Result<(), StoreError> {
    store
        .call(
            "revoke a lease",
            b"",
            Some(lease),
            store.inner.client.lease_client().revoke(lease.0),
        )
        .await?;
    Ok(())
}
