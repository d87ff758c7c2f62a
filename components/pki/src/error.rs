//! The one error type of this crate. It owns the wording of PKI failures: which file could not be
//! read or written, which certificate or request is malformed, what is wrong with a join token.
//! It must never carry key material or a token's secret in a message.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong with the cluster's keys, certificates, tokens and TLS configs.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read.
    #[error("read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file could not be written (created, written, synced, given its mode or renamed into place).
    #[error("write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A key could not be generated, parsed or used, or a certificate could not be built or signed.
    #[error("{what}: {source}")]
    Crypto {
        /// What was being done.
        what: &'static str,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// A certificate (or a PEM file that should hold one) could not be parsed.
    #[error("invalid certificate: {reason}")]
    Certificate {
        /// What was wrong.
        reason: String,
    },
    /// A certificate signing request could not be parsed or its signature is wrong.
    #[error("invalid certificate signing request: {reason}")]
    Csr {
        /// What was wrong.
        reason: String,
    },
    /// A join token is malformed.
    #[error("invalid join token: {reason}")]
    Token {
        /// What was wrong (never the secret itself).
        reason: String,
    },
    /// rustls refused a key, a certificate or a configuration.
    #[error("{what}: {source}")]
    Tls {
        /// What was being done.
        what: &'static str,
        /// rustls' error.
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built from the CA roots.
    #[error("build client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}
