//! The revisions of the cluster YAML: every apply is stored whole, in canonical form, under a
//! number one above the last (`/cluster/revisions/<20 digits>`), with when, who and what changed.
//! The current cluster YAML is the highest revision.
//!
//! Revisions are written with a compare-and-swap on the number being absent, so two applies at
//! once never share one; nothing here ever deletes a revision. Pure store access: no rendering,
//! no decisions.

use cloudlet_store::{Compare, Op, Store, Txn};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::ClusterError;
use crate::records::{decode, encode};

/// Prefix of the revisions.
pub const REVISIONS: &str = "/cluster/revisions/";

/// The key of revision `n`.
pub fn revision_key(n: u64) -> String {
    format!("{REVISIONS}{n:020}")
}

/// One applied cluster YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    /// Its number, from 1.
    pub revision: u64,
    /// When it was applied.
    pub applied_at: Timestamp,
    /// By whom.
    pub applied_by: String,
    /// What it changed, in words.
    pub summary: String,
    /// The file it came from (or `rollback to N`).
    pub file: String,
    /// The cluster YAML, canonical.
    pub yaml: String,
}

/// Every revision, oldest first.
pub async fn list<S: Store>(store: &S) -> Result<Vec<RevisionRecord>, ClusterError> {
    let (kvs, _) = store.list(REVISIONS).await?;
    kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect()
}

/// The current revision, if any.
pub async fn current<S: Store>(store: &S) -> Result<Option<RevisionRecord>, ClusterError> {
    Ok(list(store).await?.pop())
}

/// Revision `n`.
pub async fn get<S: Store>(store: &S, n: u64) -> Result<RevisionRecord, ClusterError> {
    let key = revision_key(n);
    let kv = store.get(&key).await?.ok_or_else(|| {
        ClusterError::NotFound(format!(
            "there is no revision {n} (`cloudlet ctl cluster history` lists them)"
        ))
    })?;
    decode(&key, &kv.value)
}

/// The operations that store `record` as a new revision, guarded so that a concurrent apply
/// that took the same number makes the transaction fail.
pub fn store_ops(record: &RevisionRecord) -> Result<(Compare, Op), ClusterError> {
    let key = revision_key(record.revision);
    Ok((
        Compare::absent(key.clone()),
        Op::put(key.clone(), encode(&key, record)?),
    ))
}

/// Stores `record` alone (when nothing else is written with it).
pub async fn store<S: Store>(store: &S, record: &RevisionRecord) -> Result<(), ClusterError> {
    let (compare, op) = store_ops(record)?;
    let response = store.txn(Txn::guarded(vec![compare], vec![op])).await?;
    if response.succeeded {
        Ok(())
    } else {
        Err(ClusterError::Conflict(format!(
            "revision {} was taken by another apply at the same moment; apply again",
            record.revision
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> RevisionRecord {
        RevisionRecord {
            revision: n,
            applied_at: Timestamp::now(),
            applied_by: "operator".into(),
            summary: format!("revision {n}"),
            file: "cluster.yaml".into(),
            yaml: format!("# {n}\n"),
        }
    }

    #[tokio::test]
    async fn revisions_are_kept_in_order_and_a_number_is_never_taken_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = cloudlet_store::RedbStore::open(
            &dir.path().join("s.redb"),
            cloudlet_store::RedbOptions::default(),
        )
        .unwrap();
        assert!(current(&store).await.unwrap().is_none());
        for n in 1..=12 {
            store_record(&store, n).await;
        }
        let all = list(&store).await.unwrap();
        assert_eq!(
            all.iter().map(|r| r.revision).collect::<Vec<_>>(),
            (1..=12).collect::<Vec<_>>()
        );
        assert_eq!(current(&store).await.unwrap().unwrap().revision, 12);
        assert_eq!(get(&store, 3).await.unwrap(), all[2]);
        assert!(
            get(&store, 99)
                .await
                .unwrap_err()
                .to_string()
                .contains("no revision 99")
        );
        let again = store_ops_and_run(&store, 5).await;
        assert!(
            again
                .unwrap_err()
                .to_string()
                .contains("taken by another apply")
        );
    }

    async fn store_record(s: &cloudlet_store::RedbStore, n: u64) {
        store(s, &record(n)).await.unwrap();
    }

    async fn store_ops_and_run(s: &cloudlet_store::RedbStore, n: u64) -> Result<(), ClusterError> {
        store(s, &record(n)).await
    }
}
