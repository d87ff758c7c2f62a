//! `ApiError`: the one error type of the API, on both sides of the wire.
//!
//! The server-side variants (`NotFound` .. `Internal`) are what a [`crate::Backend`] returns; each
//! maps to exactly one HTTP status, and that mapping lives here and nowhere else. The client-side
//! variants say why a request from [`crate::Client`] did not produce an answer, or why a client
//! could not be set up (a bad admin config file, unusable credentials). Every message is
//! complete on its own, because it is what the operator reads. This module never decides what a
//! status *means* for the core: it only translates.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::http::StatusCode;

/// Everything that can go wrong serving or calling the cloudlet API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The named thing does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request is wrong, e.g. a manifest fails validation (400). The message is passed through
    /// verbatim, so a multi-line validation report reaches the operator unchanged.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The caller did not say who it is, or its certificate expired (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The server cannot do it right now, e.g. the store's disk is full (503).
    #[error("{0}")]
    Unavailable(String),
    /// The server failed in a way the caller cannot fix (500).
    #[error("{0}")]
    Internal(String),

    /// Server: a live server already listens on the socket path.
    #[error("another server is listening on {}", .path.display())]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Server: the socket path exists but is not a socket, so it is left alone.
    #[error("{} exists and is not a socket", .path.display())]
    NotASocket {
        /// The path that is in the way.
        path: PathBuf,
    },
    /// Server: creating, binding or placing the listening socket failed.
    #[error("cannot listen on {}: {source}", .path.display())]
    Listen {
        /// The path the operation was on.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Server: binding the TCP address of the TLS listener failed.
    #[error("cannot listen on {addr}: {source}")]
    ListenTcp {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },

    /// Client: the server could not be reached at all.
    #[error(
        "cannot reach the cloudlet server at {}: {} (is 'cloudlet server --data-dir {}' running?)",
        .path.display(),
        short_io(.source),
        data_dir(.path)
    )]
    Connect {
        /// The socket path that was tried.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Client: the server at an `https://` URL could not be reached, or the TLS handshake with
    /// it failed (an untrusted server certificate, say).
    #[error("cannot reach the cloudlet server at {url}: {}", short_io(.source))]
    Unreachable {
        /// The server's URL.
        url: String,
        /// What went wrong.
        source: io::Error,
    },
    /// Client: the connection to the server at an `https://` URL broke while talking to it (this
    /// is also how a server that refuses this client's certificate shows, in TLS 1.3).
    #[error("lost the connection to the cloudlet server at {url}: {source}")]
    Lost {
        /// The server's URL.
        url: String,
        /// What went wrong.
        source: io::Error,
    },
    /// Client: an admin config file cannot be read, parsed or written. `reason` names the field
    /// when one is at fault.
    #[error("{}: {reason}", .path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Client: certificates or a key given to build a TLS client are unusable.
    #[error("invalid {what}: {source}")]
    Credentials {
        /// Which of them, e.g. `ca` or `cert and key`.
        what: &'static str,
        /// What the PKI said.
        source: cloudlet_pki::PkiError,
    },
    /// Client: the server answered with an error status. `message` is the server's `error` text,
    /// verbatim. A stream that fails after it started has no status line of its own; it is reported
    /// with `code` 500.
    #[error("{message}")]
    Status {
        /// The HTTP status code.
        code: u16,
        /// The server's error message.
        message: String,
    },
    /// Client: the server's answer is not what this client understands.
    #[error("cannot decode the server's answer to {request}: {source}")]
    Decode {
        /// The request, e.g. `GET /v1/services`.
        request: String,
        /// What did not parse.
        source: serde_json::Error,
    },
    /// Client: the connection broke while talking to the server.
    #[error("lost the connection to the cloudlet server at {}: {source}", .path.display())]
    Io {
        /// The socket path of the server.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

impl ApiError {
    /// The HTTP status this error is served with. Client-side errors inside a backend (one that
    /// proxies to another server) become 502, except `Status`, which keeps the upstream's code.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Internal(_)
            | Self::SocketInUse { .. }
            | Self::NotASocket { .. }
            | Self::Listen { .. }
            | Self::ListenTcp { .. }
            | Self::Config { .. }
            | Self::Credentials { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Status { code, .. } => {
                StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Self::Connect { .. }
            | Self::Unreachable { .. }
            | Self::Lost { .. }
            | Self::Decode { .. }
            | Self::Io { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// The cause in the operator's words: "connection refused", not
/// "Connection refused (os error 111)".
fn short_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => error.to_string(),
    }
}

/// The data dir a socket path belongs to (the socket lives directly in it).
fn data_dir(socket: &Path) -> String {
    match socket.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.display().to_string(),
        _ => ".".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_message_tells_the_operator_what_to_do() {
        let error = ApiError::Connect {
            path: PathBuf::from("/x/cloudlet.sock"),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(
            error.to_string(),
            "cannot reach the cloudlet server at /x/cloudlet.sock: connection refused \
             (is 'cloudlet server --data-dir /x' running?)"
        );
    }

    #[test]
    fn server_variants_map_to_their_status() {
        let cases = [
            (ApiError::NotFound(String::new()), 404),
            (ApiError::Invalid(String::new()), 400),
            (ApiError::Conflict(String::new()), 409),
            (ApiError::Unauthorized(String::new()), 401),
            (ApiError::Forbidden(String::new()), 403),
            (ApiError::Unavailable(String::new()), 503),
            (ApiError::Internal(String::new()), 500),
            (
                ApiError::Status {
                    code: 418,
                    message: String::new(),
                },
                418,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.status_code().as_u16(), code, "{error:?}");
        }
    }
}
