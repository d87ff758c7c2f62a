//! `StoreError`, the one error type of this crate, and the mapping of redb errors onto it (the
//! mapping of etcd errors is in `etcd_store::errors`).
//!
//! Owns: the wording of every store error and the rule that tells a full disk from other I/O
//! failures. Must never: lose the database path of an I/O error, the etcd endpoints or key of a
//! remote error, or hide a redb or etcd error behind a string.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{LeaseId, Revision};

/// Everything that can go wrong in a [`Store`](crate::Store).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The filesystem holding the database is full (ENOSPC, or EDQUOT for a quota). The write
    /// that hit it was not committed; reads and later writes keep working once space is freed.
    #[error("store {path}: disk full: the write was not saved")]
    DiskFull {
        /// The database file.
        path: PathBuf,
        /// The error the filesystem returned.
        #[source]
        source: io::Error,
    },
    /// An error of the redb database other than a full disk.
    #[error("store {path}: {context}: {source}")]
    Redb {
        /// The database file.
        path: PathBuf,
        /// What the store was doing.
        context: &'static str,
        /// The error redb returned (boxed: it is large).
        #[source]
        source: Box<redb::Error>,
    },
    /// The database file is already open, by this process or another one.
    #[error("store {path}: the database is already open (another process or handle holds it)")]
    AlreadyOpen {
        /// The database file.
        path: PathBuf,
    },
    /// Stored data could not be decoded.
    #[error("store {path}: corrupt data: {detail}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// A watch asked for history that compaction already removed. List the keys again and watch
    /// from the listed revision + 1.
    #[error(
        "revision {requested} is compacted: the oldest revision kept is {oldest}; list again and watch from the listed revision + 1"
    )]
    Compacted {
        /// The revision the watch asked to start from.
        requested: Revision,
        /// The oldest revision still in the history.
        oldest: Revision,
    },
    /// A revision later than the store's current revision was asked for where only past
    /// revisions make sense (compaction).
    #[error("revision {requested} is in the future: the current revision is {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A watcher did not read its events fast enough and its bounded buffer overflowed. It ends
    /// after this error. Every event before `resume_from` was delivered and none after it: watch
    /// again from `resume_from`, or, if that is compacted, list and watch from the listed
    /// revision + 1.
    #[error(
        "watcher fell behind and its buffer overflowed at revision {resume_from}: watch again from revision {resume_from}, or list again and watch from the listed revision + 1"
    )]
    WatchLagged {
        /// The first revision whose events were not delivered.
        resume_from: Revision,
    },
    /// The lease does not exist: it was never granted, was revoked, or expired.
    #[error("lease {0} not found (never granted, revoked or expired)")]
    LeaseNotFound(LeaseId),
    /// The request was malformed (an empty key, a transaction writing one key twice, a zero
    /// TTL, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// An earlier panic inside the store poisoned one of its locks; the store must be reopened.
    #[error("store {path}: an internal lock was poisoned by an earlier panic; reopen the store")]
    Poisoned {
        /// The database file.
        path: PathBuf,
    },
    /// A blocking task of the store panicked or was cancelled (the runtime shutting down).
    #[error("store {path}: background task failed: {detail}")]
    Task {
        /// The database file.
        path: PathBuf,
        /// The join error.
        detail: String,
    },
    /// etcd answered a request with an error, or could not be reached.
    #[error("etcd {endpoints}: {context} {key:?}: {source}")]
    Etcd {
        /// The client's endpoints (comma-separated): the request went to one of them.
        endpoints: String,
        /// What the store was doing.
        context: &'static str,
        /// The key (with the namespace) or prefix the request was about; empty if none.
        key: String,
        /// The error of the etcd client (boxed: it is large).
        #[source]
        source: Box<etcd_client::Error>,
    },
    /// etcd did not answer within the request timeout
    /// ([`EtcdOptions::request_timeout`](crate::EtcdOptions::request_timeout)). A write that
    /// timed out may or may not have been committed.
    #[error(
        "etcd {endpoints}: {context} {key:?}: no answer within {after:?} (a write may or may not have been committed)"
    )]
    EtcdTimeout {
        /// The client's endpoints (comma-separated).
        endpoints: String,
        /// What the store was doing.
        context: &'static str,
        /// The key (with the namespace) or prefix the request was about; empty if none.
        key: String,
        /// The timeout.
        after: Duration,
    },
    /// etcd returned something this store cannot represent: a key that is not UTF-8 or lies
    /// outside the namespace, a negative revision, a response without its header.
    #[error("etcd {endpoints}: key {key:?}: {detail}")]
    EtcdData {
        /// The client's endpoints (comma-separated).
        endpoints: String,
        /// The key (lossily decoded, with the namespace).
        key: String,
        /// What was wrong.
        detail: String,
    },
    /// A TLS file of [`EtcdTls`](crate::EtcdTls) could not be read or was not PEM.
    #[error("etcd TLS file {path}: {detail}")]
    EtcdTlsFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// An etcd watch stream ended under the watcher (etcd restarted, the connection broke, etcd
    /// cancelled it). Every event before `resume_from` was delivered and none after it: watch
    /// again from `resume_from`, or, if that is compacted, list and watch from the listed
    /// revision + 1.
    #[error(
        "etcd {endpoints}: watch of {prefix:?} ended: {detail}; watch again from revision {resume_from}"
    )]
    EtcdWatchEnded {
        /// The client's endpoints (comma-separated).
        endpoints: String,
        /// The watched prefix (with the namespace).
        prefix: String,
        /// The first revision whose events were not delivered.
        resume_from: Revision,
        /// Why it ended.
        detail: String,
    },
    /// [`RedbStore::open`](crate::RedbStore::open) was called outside a tokio runtime.
    #[error("store {path}: must be opened inside a tokio runtime (it spawns the lease task)")]
    NoRuntime {
        /// The database file.
        path: PathBuf,
    },
}

impl StoreError {
    /// Maps a redb error, telling a full disk and an already-open file apart from the rest.
    pub(crate) fn redb(path: &Path, context: &'static str, err: impl Into<redb::Error>) -> Self {
        let path = path.to_path_buf();
        match err.into() {
            redb::Error::Io(source) if is_disk_full(&source) => {
                StoreError::DiskFull { path, source }
            }
            redb::Error::DatabaseAlreadyOpen => StoreError::AlreadyOpen { path },
            redb::Error::Corrupted(detail) => StoreError::Corrupt { path, detail },
            source => StoreError::Redb {
                path,
                context,
                source: Box::new(source),
            },
        }
    }
}

/// ENOSPC and EDQUOT: the filesystem refused to store more bytes.
fn is_disk_full(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    const EIO: i32 = 5;

    fn map(raw: i32) -> StoreError {
        StoreError::redb(
            Path::new("/data/store.redb"),
            "commit",
            redb::Error::Io(io::Error::from_raw_os_error(raw)),
        )
    }

    #[test]
    fn enospc_is_disk_full_with_a_clear_message() {
        let err = map(ENOSPC);
        assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "store /data/store.redb: disk full: the write was not saved"
        );
        assert!(matches!(map(EDQUOT), StoreError::DiskFull { .. }));
    }

    #[test]
    fn other_io_errors_keep_path_and_context() {
        let err = map(EIO);
        assert!(matches!(err, StoreError::Redb { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("store /data/store.redb: commit: "), "{msg}");
    }

    #[test]
    fn already_open_is_its_own_variant() {
        let err = StoreError::redb(
            Path::new("/d/s.redb"),
            "open",
            redb::Error::DatabaseAlreadyOpen,
        );
        assert!(matches!(err, StoreError::AlreadyOpen { .. }), "{err:?}");
    }
}
