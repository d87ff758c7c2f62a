//! Transactions on etcd: this crate's [`Txn`] as an etcd `Txn` request, and etcd's answer as a
//! [`TxnResponse`].
//!
//! Owns: the mapping of each compare (exists/absent are version compares, as etcd's clients do)
//! and operation under the namespace. Must never: evaluate a compare itself; etcd does, in one
//! revision.

use etcd_client::{
    Compare as EtcdCompare, CompareOp as EtcdOp, DeleteOptions, PutOptions, TxnOp, TxnOpResponse,
};

use super::EtcdStore;
use crate::{Compare, CompareOp, CompareTarget, LeaseId, Op, StoreError, Txn, TxnResponse};

/// Runs `txn` on etcd after the same validation the redb store does (etcd would refuse most of
/// it too, but an empty key is a valid key once the namespace is prepended).
pub(super) async fn run(store: &EtcdStore, txn: Txn) -> Result<TxnResponse, StoreError> {
    txn.validate().map_err(StoreError::Invalid)?;
    let codec = store.codec();
    let compares = txn
        .compares
        .iter()
        .map(|compare| compare_of(store, compare))
        .collect::<Result<Vec<_>, _>>()?;
    let request = etcd_client::Txn::new()
        .when(compares)
        .and_then(ops_of(store, &txn.success))
        .or_else(ops_of(store, &txn.failure));
    // etcd does not say which lease it did not find: name the first one the request mentions.
    let lease = txn
        .success
        .iter()
        .chain(&txn.failure)
        .find_map(|op| match op {
            Op::Put { lease, .. } => *lease,
            _ => None,
        });
    let key = txn
        .success
        .iter()
        .chain(&txn.failure)
        .map(|op| match op {
            Op::Put { key, .. } | Op::Delete { key } | Op::Get { key } => key,
            Op::DeletePrefix { prefix } => prefix,
        })
        .next()
        .map(|key| codec.key(key))
        .unwrap_or_default();
    let response = store
        .call("txn", &key, lease, store.kv().txn(request))
        .await?;
    let revision = codec.header_revision(&key, response.header())?;
    let mut gets = Vec::new();
    for op in response.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            gets.push(
                get.kvs()
                    .first()
                    .map(|kv| codec.key_value(kv))
                    .transpose()?,
            );
        }
    }
    Ok(TxnResponse {
        succeeded: response.succeeded(),
        revision,
        gets,
    })
}

fn op_of(op: CompareOp) -> EtcdOp {
    match op {
        CompareOp::Equal => EtcdOp::Equal,
        CompareOp::NotEqual => EtcdOp::NotEqual,
        CompareOp::Less => EtcdOp::Less,
        CompareOp::Greater => EtcdOp::Greater,
    }
}

fn compare_of(store: &EtcdStore, compare: &Compare) -> Result<EtcdCompare, StoreError> {
    let codec = store.codec();
    let key = codec.key(&compare.key);
    let version = |version: u64| {
        i64::try_from(version)
            .map_err(|_| StoreError::Invalid(format!("version {version} is beyond etcd's range")))
    };
    Ok(match &compare.target {
        CompareTarget::ModRevision(op, revision) => {
            EtcdCompare::mod_revision(key, op_of(*op), codec.to_etcd(*revision)?)
        }
        CompareTarget::CreateRevision(op, revision) => {
            EtcdCompare::create_revision(key, op_of(*op), codec.to_etcd(*revision)?)
        }
        CompareTarget::Version(op, v) => EtcdCompare::version(key, op_of(*op), version(*v)?),
        CompareTarget::Value(op, value) => EtcdCompare::value(key, op_of(*op), value.clone()),
        CompareTarget::Exists => EtcdCompare::version(key, EtcdOp::Greater, 0),
        CompareTarget::Absent => EtcdCompare::version(key, EtcdOp::Equal, 0),
    })
}

fn ops_of(store: &EtcdStore, ops: &[Op]) -> Vec<TxnOp> {
    let codec = store.codec();
    ops.iter()
        .map(|op| match op {
            Op::Put { key, value, lease } => TxnOp::put(
                codec.key(key),
                value.clone(),
                lease.map(|LeaseId(id)| PutOptions::new().with_lease(id)),
            ),
            Op::Delete { key } => TxnOp::delete(codec.key(key), None),
            Op::DeletePrefix { prefix } => {
                let (start, end) = codec.prefix_range(prefix);
                TxnOp::delete(start, Some(DeleteOptions::new().with_range(end)))
            }
            Op::Get { key } => TxnOp::get(codec.key(key), None),
        })
        .collect()
}
