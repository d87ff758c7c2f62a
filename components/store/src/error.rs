//! `StoreError`, the one error type of this crate, and the mapping of redb errors onto it.
//!
//! Owns: the wording of every store error and the rule that tells a full disk from other I/O
//! failures. Must never: lose the database path of an I/O error, or hide a redb error behind a
//! string.

use std::io;
use std::path::{Path, PathBuf};

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
