//! Translation between this crate's data model and etcd's: namespaced keys, prefix range ends,
//! revisions and lease ids (etcd's are `i64`), key-values, and etcd errors onto [`StoreError`].
//!
//! Owns: the namespace rule (every key sent is `namespace + key`, every key received must start
//! with the namespace and be UTF-8) and the reading of etcd's gRPC status codes. Must never:
//! send a request.

use std::sync::Arc;

use etcd_client::Error as EtcdError;
use tonic::Code;

use crate::{KeyValue, LeaseId, Revision, StoreError};

/// What every request needs to build keys and name errors: shared by the clones of a store.
#[derive(Debug)]
pub(crate) struct Codec {
    /// The comma-separated endpoints, for errors.
    pub(crate) endpoints: Arc<str>,
    /// Prepended to every key.
    pub(crate) namespace: String,
}

/// How an etcd error is to be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `etcdserver: requested lease not found` (or a keep-alive answered with TTL 0).
    LeaseNotFound,
    /// `mvcc: required revision has been compacted`.
    Compacted,
    /// `mvcc: required revision is a future revision`.
    FutureRevision,
    /// A request etcd refused as malformed (too many operations, too large, ...).
    Invalid,
    /// Anything else: unreachable, no leader, ...
    Other,
}

/// Reads an etcd error's kind from its gRPC status (etcd's `rpctypes` errors).
pub(crate) fn kind(err: &EtcdError) -> Kind {
    match err {
        EtcdError::GRpcStatus(status) => {
            let message = status.message();
            match status.code() {
                Code::NotFound if message.contains("lease not found") => Kind::LeaseNotFound,
                Code::OutOfRange if message.contains("compacted") => Kind::Compacted,
                Code::OutOfRange if message.contains("future revision") => Kind::FutureRevision,
                Code::InvalidArgument => Kind::Invalid,
                _ => Kind::Other,
            }
        }
        EtcdError::LeaseKeepAliveError(message) if message.contains("lease not found") => {
            Kind::LeaseNotFound
        }
        _ => Kind::Other,
    }
}

impl Codec {
    /// `namespace + key`.
    pub(crate) fn key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.namespace.len().saturating_add(key.len()));
        full.extend_from_slice(self.namespace.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// The start and end of the range of keys under `prefix` (in the namespace).
    pub(crate) fn prefix_range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let start = self.key(prefix);
        let end = range_end(&start);
        (if start.is_empty() { vec![0] } else { start }, end)
    }

    /// The key without the namespace; fails if it is outside it or not UTF-8.
    pub(crate) fn strip(&self, full: &[u8]) -> Result<String, StoreError> {
        let Some(key) = full.strip_prefix(self.namespace.as_bytes()) else {
            return Err(self.data(full, "is outside the namespace"));
        };
        String::from_utf8(key.to_vec()).map_err(|_| self.data(full, "is not UTF-8"))
    }

    /// An etcd key-value as this crate's.
    pub(crate) fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        Ok(KeyValue {
            key: self.strip(kv.key())?,
            value: kv.value().to_vec(),
            create_revision: self.revision(kv.key(), kv.create_revision())?,
            mod_revision: self.revision(kv.key(), kv.mod_revision())?,
            version: self.revision(kv.key(), kv.version())?,
            lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
        })
    }

    /// A revision (or version) etcd sent; negative is refused.
    pub(crate) fn revision(&self, key: &[u8], revision: i64) -> Result<Revision, StoreError> {
        Revision::try_from(revision)
            .map_err(|_| self.data(key, &format!("negative revision {revision}")))
    }

    /// The revision of a response's header.
    pub(crate) fn header_revision(
        &self,
        key: &[u8],
        header: Option<&etcd_client::ResponseHeader>,
    ) -> Result<Revision, StoreError> {
        match header {
            Some(header) => self.revision(key, header.revision()),
            None => Err(self.data(key, "etcd answered without a response header")),
        }
    }

    /// A revision of ours as etcd's `i64`.
    pub(crate) fn to_etcd(&self, revision: Revision) -> Result<i64, StoreError> {
        i64::try_from(revision)
            .map_err(|_| StoreError::Invalid(format!("revision {revision} is beyond etcd's range")))
    }

    /// [`StoreError::EtcdData`] for `key`.
    pub(crate) fn data(&self, key: &[u8], detail: &str) -> StoreError {
        StoreError::EtcdData {
            endpoints: self.endpoints.to_string(),
            key: String::from_utf8_lossy(key).into_owned(),
            detail: detail.to_string(),
        }
    }

    /// An etcd error as a [`StoreError`]: `lease` names the lease of a lease-not-found error,
    /// malformed requests are [`StoreError::Invalid`], the rest [`StoreError::Etcd`].
    pub(crate) fn error(
        &self,
        context: &'static str,
        key: &[u8],
        lease: Option<LeaseId>,
        err: EtcdError,
    ) -> StoreError {
        let key = String::from_utf8_lossy(key).into_owned();
        match (kind(&err), lease) {
            (Kind::LeaseNotFound, Some(lease)) => StoreError::LeaseNotFound(lease),
            (Kind::Invalid, _) => {
                StoreError::Invalid(format!("etcd {}: {context} {key:?}: {err}", self.endpoints))
            }
            _ => StoreError::Etcd {
                endpoints: self.endpoints.to_string(),
                context,
                key,
                source: Box::new(err),
            },
        }
    }
}

/// The end of the range of every key starting with `prefix`: the prefix with its last byte
/// below 0xff incremented (trailing 0xff bytes dropped); `[0]` (every key from the start on)
/// when there is no such byte, as etcd's clients do.
pub(crate) fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last.saturating_add(1));
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(namespace: &str) -> Codec {
        Codec {
            endpoints: "http://e:1".into(),
            namespace: namespace.to_string(),
        }
    }

    #[test]
    fn range_ends_cover_exactly_the_prefix() {
        assert_eq!(range_end(b"a/"), b"a0");
        assert_eq!(range_end(b"a\xff"), b"b");
        assert_eq!(range_end(b"\xff\xff"), [0]);
        assert_eq!(range_end(b""), [0]);
        assert_eq!(codec("").prefix_range(""), (vec![0], vec![0]));
        assert_eq!(
            codec("ns/").prefix_range("x"),
            (b"ns/x".to_vec(), b"ns/y".to_vec())
        );
    }

    #[test]
    fn keys_outside_the_namespace_or_not_utf8_are_refused() {
        let codec = codec("ns/");
        assert_eq!(codec.key("a"), b"ns/a");
        assert_eq!(codec.strip(b"ns/a").unwrap(), "a");
        let err = codec.strip(b"other/a").unwrap_err();
        assert!(err.to_string().contains("outside the namespace"), "{err}");
        let err = codec.strip(b"ns/\xff").unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        assert!(codec.revision(b"k", -1).is_err());
        assert!(codec.to_etcd(u64::MAX).is_err());
    }

    #[test]
    fn etcd_status_codes_are_read() {
        let status = |code, message: &str| EtcdError::GRpcStatus(tonic::Status::new(code, message));
        let table = [
            (
                status(Code::NotFound, "etcdserver: requested lease not found"),
                Kind::LeaseNotFound,
            ),
            (
                status(
                    Code::OutOfRange,
                    "etcdserver: mvcc: required revision has been compacted",
                ),
                Kind::Compacted,
            ),
            (
                status(
                    Code::OutOfRange,
                    "etcdserver: mvcc: required revision is a future revision",
                ),
                Kind::FutureRevision,
            ),
            (
                status(
                    Code::InvalidArgument,
                    "etcdserver: too many operations in txn request",
                ),
                Kind::Invalid,
            ),
            (
                status(Code::Unavailable, "etcdserver: no leader"),
                Kind::Other,
            ),
            (
                EtcdError::LeaseKeepAliveError("lease not found".into()),
                Kind::LeaseNotFound,
            ),
        ];
        for (err, expected) in table {
            assert_eq!(kind(&err), expected, "{err}");
        }
    }
}
