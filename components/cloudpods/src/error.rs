//! `CloudpodsError`: what bringing Cloudpods to life can fail at, each with the thing it was
//! about (the file, the database, the URL) so that a step's output says what to fix.

use std::path::PathBuf;

/// Errors of the Cloudpods bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum CloudpodsError {
    /// A file or directory could not be read, written or created.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done: `read`, `create`, `chown`, ...
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A tool the step runs is missing or failed.
    #[error("{tool}: {detail}")]
    Tool {
        /// The program, e.g. `mariadb`.
        tool: String,
        /// What went wrong, with the tool's own last words.
        detail: String,
    },
    /// The database refused a statement or could not be reached.
    #[error("mysql {server}: {what}: {detail}")]
    Mysql {
        /// `host:port`.
        server: String,
        /// What was being done, e.g. `create database keystone`.
        what: String,
        /// The client's error output.
        detail: String,
    },
    /// An HTTP call to a Cloudpods service failed or was answered with an error.
    #[error("{method} {url}: {detail}")]
    Http {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The status and the service's message, or the transport error.
        detail: String,
    },
    /// A service answered something this code does not understand.
    #[error("{what}: unexpected answer: {detail}")]
    Answer {
        /// What was asked.
        what: String,
        /// What is wrong with the answer.
        detail: String,
    },
    /// A plan, config or setting is wrong.
    #[error("{0}")]
    Invalid(String),
}

impl CloudpodsError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CloudpodsError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
