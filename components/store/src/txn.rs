//! Transactions: compares, operations and their result, shaped like etcd's `Txn` request.
//!
//! Owns: the meaning of a compare against a key (including an absent key) and the rules a
//! transaction must follow to be valid. Must never: touch storage; backends evaluate these
//! against their own state.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use crate::{KeyValue, LeaseId, Revision};

/// An atomic compare-and-swap: if every compare holds, `success` runs, otherwise `failure`.
/// All writes of the branch that runs commit together at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions, all of which must hold for `success` to run.
    pub compares: Vec<Compare>,
    /// Operations run when every compare holds, in order.
    pub success: Vec<Op>,
    /// Operations run otherwise, in order.
    pub failure: Vec<Op>,
}

impl Txn {
    /// A transaction without compares that runs `ops`.
    pub fn ops(ops: Vec<Op>) -> Self {
        Txn {
            compares: Vec::new(),
            success: ops,
            failure: Vec::new(),
        }
    }

    /// A compare-and-swap: `ops` run only if every compare holds; otherwise nothing does.
    pub fn guarded(compares: Vec<Compare>, ops: Vec<Op>) -> Self {
        Txn {
            compares,
            success: ops,
            failure: Vec::new(),
        }
    }

    /// Checks what etcd also rejects: an empty key, and a branch writing one key twice
    /// (two puts, or a put and a delete or prefix delete covering the same key).
    pub(crate) fn validate(&self) -> Result<(), String> {
        for compare in &self.compares {
            if compare.key.is_empty() {
                return Err("a compare has an empty key".to_string());
            }
        }
        validate_branch(&self.success)?;
        validate_branch(&self.failure)
    }
}

fn validate_branch(ops: &[Op]) -> Result<(), String> {
    let mut puts = BTreeSet::new();
    for op in ops {
        match op {
            Op::Put { key, .. } => {
                if key.is_empty() {
                    return Err("a put has an empty key".to_string());
                }
                if !puts.insert(key.as_str()) {
                    return Err(format!("key {key:?} is put twice in one transaction"));
                }
            }
            Op::Delete { key } | Op::Get { key } if key.is_empty() => {
                return Err("an operation has an empty key".to_string());
            }
            Op::Delete { .. } | Op::DeletePrefix { .. } | Op::Get { .. } => {}
        }
    }
    for op in ops {
        let overlap = match op {
            Op::Delete { key } => puts.get(key.as_str()).copied(),
            Op::DeletePrefix { prefix } => puts
                .range(prefix.as_str()..)
                .take_while(|k| k.starts_with(prefix.as_str()))
                .next()
                .copied(),
            Op::Put { .. } | Op::Get { .. } => None,
        };
        if let Some(key) = overlap {
            return Err(format!(
                "key {key:?} is both put and deleted in one transaction"
            ));
        }
    }
    Ok(())
}

/// A condition on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key compared.
    pub key: String,
    /// What is compared.
    pub target: CompareTarget,
}

impl Compare {
    /// `key`'s mod revision compared to `revision` (0 when the key is absent).
    pub fn mod_revision(key: impl Into<String>, op: CompareOp, revision: Revision) -> Self {
        Compare {
            key: key.into(),
            target: CompareTarget::ModRevision(op, revision),
        }
    }

    /// `key`'s version compared to `version` (0 when the key is absent).
    pub fn version(key: impl Into<String>, op: CompareOp, version: u64) -> Self {
        Compare {
            key: key.into(),
            target: CompareTarget::Version(op, version),
        }
    }

    /// `key`'s value compared to `value` (false whatever `op` is when the key is absent).
    pub fn value(key: impl Into<String>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Compare {
            key: key.into(),
            target: CompareTarget::Value(op, value.into()),
        }
    }

    /// `key` exists.
    pub fn exists(key: impl Into<String>) -> Self {
        Compare {
            key: key.into(),
            target: CompareTarget::Exists,
        }
    }

    /// `key` does not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Compare {
            key: key.into(),
            target: CompareTarget::Absent,
        }
    }

    /// Whether the compare holds for `current`, the key's present state (`None`: absent).
    pub(crate) fn holds(&self, current: Option<&KeyValue>) -> bool {
        match (&self.target, current) {
            (CompareTarget::ModRevision(op, rev), kv) => {
                op.holds(kv.map_or(0, |kv| kv.mod_revision).cmp(rev))
            }
            (CompareTarget::CreateRevision(op, rev), kv) => {
                op.holds(kv.map_or(0, |kv| kv.create_revision).cmp(rev))
            }
            (CompareTarget::Version(op, version), kv) => {
                op.holds(kv.map_or(0, |kv| kv.version).cmp(version))
            }
            // etcd: a value compare against a missing key is false, whatever the operator.
            (CompareTarget::Value(_, _), None) => false,
            (CompareTarget::Value(op, value), Some(kv)) => {
                op.holds(kv.value.as_slice().cmp(value.as_slice()))
            }
            (CompareTarget::Exists, kv) => kv.is_some(),
            (CompareTarget::Absent, kv) => kv.is_none(),
        }
    }
}

/// What a [`Compare`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The revision of the key's last write (0 when absent).
    ModRevision(CompareOp, Revision),
    /// The revision that created the key (0 when absent).
    CreateRevision(CompareOp, Revision),
    /// The key's version (0 when absent).
    Version(CompareOp, u64),
    /// The key's value, compared byte-wise; always false when the key is absent.
    Value(CompareOp, Vec<u8>),
    /// The key exists (same as version > 0).
    Exists,
    /// The key does not exist (same as version == 0).
    Absent,
}

/// How the key's field compares to the given one (`field OP given`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// field == given
    Equal,
    /// field != given
    NotEqual,
    /// field < given
    Less,
    /// field > given
    Greater,
}

impl CompareOp {
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            CompareOp::Equal => ordering == Ordering::Equal,
            CompareOp::NotEqual => ordering != Ordering::Equal,
            CompareOp::Less => ordering == Ordering::Less,
            CompareOp::Greater => ordering == Ordering::Greater,
        }
    }
}

/// One operation of a transaction branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write `value` to `key`, attached to `lease` (`None` detaches it from any lease).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The lease to attach the key to.
        lease: Option<LeaseId>,
    },
    /// Delete `key` (nothing happens if it is absent).
    Delete {
        /// The key.
        key: String,
    },
    /// Delete every key starting with `prefix` (the empty prefix deletes every key).
    DeletePrefix {
        /// The prefix.
        prefix: String,
    },
    /// Read `key`; the result is in [`TxnResponse::gets`]. It sees the earlier operations of
    /// the same branch.
    Get {
        /// The key.
        key: String,
    },
}

impl Op {
    /// A put without a lease.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    /// A delete of one key.
    pub fn delete(key: impl Into<String>) -> Self {
        Op::Delete { key: key.into() }
    }

    /// A delete of every key starting with `prefix`.
    pub fn delete_prefix(prefix: impl Into<String>) -> Self {
        Op::DeletePrefix {
            prefix: prefix.into(),
        }
    }

    /// A read of one key.
    pub fn get(key: impl Into<String>) -> Self {
        Op::Get { key: key.into() }
    }
}

/// The outcome of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (so `success` ran, else `failure`).
    pub succeeded: bool,
    /// The store revision after the transaction: the transaction's own revision if it wrote,
    /// else the revision it read at.
    pub revision: Revision,
    /// One entry per [`Op::Get`] of the branch that ran, in order (`None`: the key is absent).
    pub gets: Vec<Option<KeyValue>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(value: &[u8], create: Revision, modified: Revision, version: u64) -> KeyValue {
        KeyValue {
            key: "k".to_string(),
            value: value.to_vec(),
            create_revision: create,
            mod_revision: modified,
            version,
            lease: None,
        }
    }

    #[test]
    fn compares_against_present_and_absent_keys() {
        use CompareOp::*;
        let present = kv(b"b", 3, 7, 2);
        // (compare, holds when present, holds when absent)
        let table = [
            (Compare::mod_revision("k", Equal, 7), true, false),
            (Compare::mod_revision("k", Equal, 0), false, true),
            (Compare::mod_revision("k", NotEqual, 7), false, true),
            (Compare::mod_revision("k", Less, 8), true, true),
            (Compare::mod_revision("k", Greater, 6), true, false),
            (Compare::version("k", Equal, 0), false, true),
            (Compare::version("k", Equal, 2), true, false),
            (Compare::version("k", Greater, 0), true, false),
            (
                Compare {
                    key: "k".into(),
                    target: CompareTarget::CreateRevision(Equal, 3),
                },
                true,
                false,
            ),
            (Compare::value("k", Equal, "b"), true, false),
            (Compare::value("k", NotEqual, "b"), false, false),
            (Compare::value("k", NotEqual, "c"), true, false),
            (Compare::value("k", Less, "c"), true, false),
            (Compare::value("k", Greater, "a"), true, false),
            (Compare::exists("k"), true, false),
            (Compare::absent("k"), false, true),
        ];
        for (compare, when_present, when_absent) in table {
            assert_eq!(compare.holds(Some(&present)), when_present, "{compare:?}");
            assert_eq!(compare.holds(None), when_absent, "{compare:?} on absent");
        }
    }

    #[test]
    fn validation_rejects_what_etcd_rejects() {
        let check = |ops: Vec<Op>| Txn::ops(ops).validate();
        assert!(check(vec![Op::put("a", "1"), Op::put("b", "2"), Op::get("a")]).is_ok());
        assert!(check(vec![Op::delete("a"), Op::delete("a")]).is_ok());
        assert!(check(vec![Op::delete_prefix("a/"), Op::put("b/1", "x")]).is_ok());
        assert!(check(vec![Op::delete_prefix(""), Op::get("x")]).is_ok());

        let err = check(vec![Op::put("a", "1"), Op::put("a", "2")]).unwrap_err();
        assert_eq!(err, "key \"a\" is put twice in one transaction");
        let err = check(vec![Op::put("a", "1"), Op::delete("a")]).unwrap_err();
        assert_eq!(err, "key \"a\" is both put and deleted in one transaction");
        let err = check(vec![Op::delete_prefix("a/"), Op::put("a/1", "x")]).unwrap_err();
        assert_eq!(
            err,
            "key \"a/1\" is both put and deleted in one transaction"
        );
        assert!(check(vec![Op::put("", "x")]).is_err());
        assert!(check(vec![Op::get("")]).is_err());

        let txn = Txn {
            compares: vec![Compare::exists("")],
            ..Txn::default()
        };
        assert!(txn.validate().is_err());
        let txn = Txn {
            failure: vec![Op::put("a", "1"), Op::put("a", "1")],
            ..Txn::default()
        };
        assert!(txn.validate().is_err());
    }
}
