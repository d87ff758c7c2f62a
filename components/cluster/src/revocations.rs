//! The deny-list of node certificates: serials revoked before they expire (their node was deleted
//! or joined again), in the store under `/revoked/<serial>` and mirrored in memory, because the
//! API asks on every request over mutual TLS.
//!
//! It owns the in-memory set and the store operations that change it; the caller puts those
//! operations into the same transaction as the change that revokes (deleting a node, a re-join),
//! so a revocation is never lost and never made for a change that failed. An entry is pruned once
//! its certificate has expired: from then on expiry alone refuses it.
//!
//! It never signs or parses certificates. One server reads and writes it; a second server on a
//! shared store (HA) would have to watch the prefix, which this module does not do yet.

use std::collections::{BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock};

use cloudlet_store::{Op, Store};
use jiff::Timestamp;

use crate::ClusterError;
use crate::records::{REVOKED, RevokedRecord, decode, encode, revoked_key};

/// At most this many revoked certificates are held in memory: each is a node deleted or joined
/// again within one certificate lifetime (a year by default), so only a fleet that churns this
/// many nodes inside one lifetime reaches it. Past it, the ones expiring first are forgotten
/// (with a warning) until the next start reads the store again.
pub const MAX_REVOKED: usize = 100_000;

/// The revoked serials and when each certificate expires.
#[derive(Debug, Default)]
pub struct Revocations {
    serials: RwLock<Serials>,
}

/// The set, indexed both ways: by serial for the per-request question, by expiry for pruning
/// (so neither a check nor a revocation walks the whole set).
#[derive(Debug, Default)]
struct Serials {
    by_serial: HashMap<String, Timestamp>,
    by_expiry: BTreeSet<(Timestamp, String)>,
}

impl Serials {
    fn insert(&mut self, serial: &str, not_after: Timestamp) {
        if let Some(old) = self.by_serial.insert(serial.to_owned(), not_after) {
            self.by_expiry.remove(&(old, serial.to_owned()));
        }
        self.by_expiry.insert((not_after, serial.to_owned()));
    }

    /// Drops the first to expire: every one expired by `now`, then any beyond `max`.
    fn prune(&mut self, now: Timestamp, max: usize) {
        while let Some((at, serial)) = self.by_expiry.first().cloned() {
            if at > now && self.by_serial.len() <= max {
                break;
            }
            self.by_expiry.pop_first();
            self.by_serial.remove(&serial);
        }
    }

    /// The serials expired by `now`, first to expire first.
    fn expired(&self, now: Timestamp) -> impl Iterator<Item = &str> {
        self.by_expiry
            .iter()
            .take_while(move |(at, _)| *at <= now)
            .map(|(_, serial)| serial.as_str())
    }
}

impl Revocations {
    /// Reads the deny-list from the store, deleting the entries whose certificate has expired.
    pub async fn load<S: Store>(store: &S, now: Timestamp) -> Result<Revocations, ClusterError> {
        let (kvs, _) = store.list(REVOKED).await?;
        let mut serials = Serials::default();
        let mut expired = Vec::new();
        for kv in kvs {
            let record: RevokedRecord = decode(&kv.key, &kv.value)?;
            if record.not_after <= now {
                expired.push(Op::delete(kv.key));
            } else if let Some(serial) = kv.key.strip_prefix(REVOKED) {
                serials.insert(serial, record.not_after);
            }
        }
        if !expired.is_empty() {
            store.txn(cloudlet_store::Txn::ops(expired)).await?;
        }
        serials.prune(now, MAX_REVOKED);
        Ok(Revocations {
            serials: RwLock::new(serials),
        })
    }

    /// Whether the certificate with `serial` is revoked.
    pub fn contains(&self, serial: &str) -> bool {
        self.read().by_serial.contains_key(serial)
    }

    /// How many serials are revoked.
    pub fn len(&self) -> usize {
        self.read().by_serial.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.read().by_serial.is_empty()
    }

    /// The store operations that revoke `serial` (issued to `node`, expiring `not_after`) and
    /// delete the entries expired by `now`. Commit them with the change that revokes, then call
    /// [`Revocations::committed`] with the same arguments.
    pub fn revoke_ops(
        &self,
        serial: &str,
        node: &str,
        not_after: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<Op>, ClusterError> {
        let key = revoked_key(serial);
        let record = RevokedRecord {
            node: node.to_owned(),
            not_after,
            at: now,
        };
        let mut ops = vec![Op::put(key.clone(), encode(&key, &record)?)];
        ops.extend(
            self.read()
                .expired(now)
                .filter(|s| *s != serial)
                .map(|s| Op::delete(revoked_key(s))),
        );
        Ok(ops)
    }

    /// The operations of [`Revocations::revoke_ops`] were committed: mirror them.
    pub fn committed(&self, serial: &str, not_after: Timestamp, now: Timestamp) {
        let mut serials = self.serials.write().unwrap_or_else(PoisonError::into_inner);
        if not_after > now {
            serials.insert(serial, not_after);
        }
        if serials.by_serial.len() > MAX_REVOKED {
            tracing::warn!(
                "more than {MAX_REVOKED} revoked certificates: forgetting those expiring first"
            );
        }
        serials.prune(now, MAX_REVOKED);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Serials> {
        // Nothing panics while this lock is held; a poisoned one still holds valid data.
        self.serials.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudlet_store::{RedbOptions, RedbStore, Txn};
    use jiff::SignedDuration;

    async fn revoke(store: &RedbStore, list: &Revocations, serial: &str, not_after: Timestamp) {
        let now = Timestamp::now();
        let ops = list.revoke_ops(serial, "n1", not_after, now).unwrap();
        store.txn(Txn::ops(ops)).await.unwrap();
        list.committed(serial, not_after, now);
    }

    #[tokio::test]
    async fn a_revocation_survives_a_restart_and_goes_when_its_certificate_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            RedbStore::open(&dir.path().join("store.redb"), RedbOptions::default()).unwrap();
        let now = Timestamp::now();
        let list = Revocations::load(&store, now).await.unwrap();
        assert!(list.is_empty());

        let soon = now + SignedDuration::from_millis(300);
        revoke(&store, &list, "aa01", now + SignedDuration::from_hours(1)).await;
        revoke(&store, &list, "bb02", soon).await;
        assert!(list.contains("aa01") && list.contains("bb02"));
        assert!(!list.contains("cc03"));

        // A restart reads both back.
        let list = Revocations::load(&store, Timestamp::now()).await.unwrap();
        assert_eq!(list.len(), 2);

        // Past bb02's expiry: the next revocation prunes it, from memory and from the store.
        let later = soon + SignedDuration::from_millis(1);
        let ops = list
            .revoke_ops("cc03", "n2", now + SignedDuration::from_hours(1), later)
            .unwrap();
        store.txn(Txn::ops(ops)).await.unwrap();
        list.committed("cc03", now + SignedDuration::from_hours(1), later);
        assert!(list.contains("aa01") && list.contains("cc03"));
        assert!(!list.contains("bb02"));
        let (kvs, _) = store.list(REVOKED).await.unwrap();
        let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/revoked/aa01", "/revoked/cc03"]);

        // And a load after every expiry deletes what is left.
        let list = Revocations::load(&store, now + SignedDuration::from_hours(2))
            .await
            .unwrap();
        assert!(list.is_empty());
        assert!(store.list(REVOKED).await.unwrap().0.is_empty());
    }

    #[test]
    fn memory_is_bounded_dropping_what_expires_first() {
        let list = Revocations::default();
        let now = Timestamp::now();
        for i in 0..=MAX_REVOKED {
            let at = now + SignedDuration::from_secs(60 + i64::try_from(i).unwrap());
            list.committed(&format!("{i:x}"), at, now);
        }
        assert_eq!(list.len(), MAX_REVOKED);
        assert!(
            !list.contains("0"),
            "the first to expire is the one dropped"
        );
        assert!(list.contains(&format!("{MAX_REVOKED:x}")));
    }
}
