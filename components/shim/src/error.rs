//! The shim's errors: each names the call or the file that failed.

use std::path::{Path, PathBuf};

/// Errors of the shim process.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// A file or socket operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Os {
        /// Which call.
        what: &'static str,
        /// The errno.
        #[source]
        source: nix::errno::Errno,
    },
    /// The service process could not be started.
    #[error("{0}")]
    Spawn(String),
    /// Another shim already serves this socket.
    #[error("a shim is already listening on {}", path.display())]
    ShimAlive {
        /// The socket.
        path: PathBuf,
    },
}

impl ShimError {
    pub(crate) fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        ShimError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}
