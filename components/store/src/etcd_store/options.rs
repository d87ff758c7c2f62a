//! [`EtcdOptions`] and [`EtcdTls`]: how to reach etcd, every limit with its maximum, and the
//! translation into the etcd client's connect options.
//!
//! Owns: validation of the options (each duration, size and count has a documented maximum) and
//! the reading of the TLS PEM files. Must never: open a connection or send a request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::StoreError;

/// At most this many endpoints.
pub const MAX_ENDPOINTS: usize = 16;
/// An endpoint URL is at most this many bytes.
pub const MAX_ENDPOINT_LEN: usize = 256;
/// The namespace is at most this many bytes.
pub const MAX_NAMESPACE_LEN: usize = 256;
/// The longest connect timeout.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest request timeout.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// The shortest and longest HTTP/2 keep-alive interval.
pub const KEEP_ALIVE_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(300));
/// The largest watch buffer (events).
pub const MAX_WATCH_BUFFER: usize = 65_536;
/// The largest list page (keys).
pub const MAX_LIST_PAGE: usize = 10_000;
/// The smallest and largest response etcd may send (bytes).
pub const RESPONSE_BYTES_RANGE: (usize, usize) = (1 << 20, 1 << 30);
/// A TLS PEM file is at most this many bytes.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// How an [`EtcdStore`](crate::EtcdStore) reaches etcd. Every field has a maximum (the `MAX_*`
/// and `*_RANGE` constants of this module); [`EtcdStore::connect`](crate::EtcdStore::connect)
/// refuses options outside them with [`StoreError::Invalid`].
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Client URLs of the etcd members (1 to [`MAX_ENDPOINTS`], each `http://host:port` or, with
    /// `tls`, `https://host:port`).
    pub endpoints: Vec<String>,
    /// Prepended to every key (at most [`MAX_NAMESPACE_LEN`] bytes), so several clusters or
    /// tests can share one etcd; keys outside it are never read, written or watched. Empty:
    /// the whole keyspace. End it with a separator (`/cloudlet/a/`) so that namespaces do not
    /// overlap. Leases and revisions are etcd's and shared by every namespace.
    pub namespace: String,
    /// Mutual TLS, or `None` for plain HTTP.
    pub tls: Option<EtcdTls>,
    /// How long to wait for a TCP (and TLS) connection to an endpoint (at most
    /// [`MAX_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// How long one request (or one list page, or setting up a watch) may take (at most
    /// [`MAX_REQUEST_TIMEOUT`]); then it fails with [`StoreError::EtcdTimeout`].
    pub request_timeout: Duration,
    /// HTTP/2 ping interval that detects a dead connection (within [`KEEP_ALIVE_RANGE`]); a
    /// ping unanswered for `request_timeout` (at least 1 s) breaks the connection.
    pub keep_alive: Duration,
    /// How many events a watcher may have waiting (1 to [`MAX_WATCH_BUFFER`]). When it is full
    /// the watcher stops reading its etcd stream (etcd holds the rest) until the consumer reads.
    pub watch_buffer: usize,
    /// How many keys a list reads per request (1 to [`MAX_LIST_PAGE`]); the pages are read at
    /// one revision.
    pub list_page: usize,
    /// The largest response accepted from etcd, in bytes (within [`RESPONSE_BYTES_RANGE`]).
    pub max_response_bytes: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            namespace: String::new(),
            tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(10),
            watch_buffer: 1024,
            list_page: 1000,
            max_response_bytes: 64 << 20,
        }
    }
}

/// Mutual TLS to etcd: PEM files, each at most [`MAX_PEM_BYTES`].
#[derive(Clone, Debug)]
pub struct EtcdTls {
    /// The CA that signed etcd's server certificate.
    pub ca: PathBuf,
    /// The client certificate and its key, for etcd's `--client-cert-auth`; `None` for
    /// server-only TLS.
    pub client: Option<(PathBuf, PathBuf)>,
    /// The name to check in the server's certificate; `None`: the endpoint's host.
    pub server_name: Option<String>,
}

impl EtcdOptions {
    /// Checks every limit.
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        let invalid = |what: String| Err(StoreError::Invalid(format!("etcd options: {what}")));
        if self.endpoints.is_empty() || self.endpoints.len() > MAX_ENDPOINTS {
            return invalid(format!(
                "{} endpoints, expected 1 to {MAX_ENDPOINTS}",
                self.endpoints.len()
            ));
        }
        let scheme = if self.tls.is_some() {
            "https://"
        } else {
            "http://"
        };
        for endpoint in &self.endpoints {
            if endpoint.len() > MAX_ENDPOINT_LEN || !endpoint.starts_with(scheme) {
                return invalid(format!(
                    "endpoint {endpoint:?} must start with {scheme} (TLS {}) and have at most {MAX_ENDPOINT_LEN} bytes",
                    if self.tls.is_some() { "on" } else { "off" }
                ));
            }
        }
        if self.namespace.len() > MAX_NAMESPACE_LEN {
            return invalid(format!(
                "the namespace has {} bytes, at most {MAX_NAMESPACE_LEN}",
                self.namespace.len()
            ));
        }
        let in_range = |d: Duration, min: Duration, max: Duration| d >= min && d <= max;
        let ms = Duration::from_millis(1);
        if !in_range(self.connect_timeout, ms, MAX_CONNECT_TIMEOUT) {
            return invalid(format!(
                "connect timeout {:?} is outside 1ms..={MAX_CONNECT_TIMEOUT:?}",
                self.connect_timeout
            ));
        }
        if !in_range(self.request_timeout, ms, MAX_REQUEST_TIMEOUT) {
            return invalid(format!(
                "request timeout {:?} is outside 1ms..={MAX_REQUEST_TIMEOUT:?}",
                self.request_timeout
            ));
        }
        let (min, max) = KEEP_ALIVE_RANGE;
        if !in_range(self.keep_alive, min, max) {
            return invalid(format!(
                "keep-alive {:?} is outside {min:?}..={max:?}",
                self.keep_alive
            ));
        }
        if self.watch_buffer == 0 || self.watch_buffer > MAX_WATCH_BUFFER {
            return invalid(format!(
                "watch buffer {} is outside 1..={MAX_WATCH_BUFFER}",
                self.watch_buffer
            ));
        }
        if self.list_page == 0 || self.list_page > MAX_LIST_PAGE {
            return invalid(format!(
                "list page {} is outside 1..={MAX_LIST_PAGE}",
                self.list_page
            ));
        }
        let (min, max) = RESPONSE_BYTES_RANGE;
        if self.max_response_bytes < min || self.max_response_bytes > max {
            return invalid(format!(
                "max response bytes {} is outside {min}..={max}",
                self.max_response_bytes
            ));
        }
        Ok(())
    }

    /// The etcd client's connect options (reads the TLS files).
    pub(crate) fn connect_options(&self) -> Result<ConnectOptions, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            // A ping gets the request timeout to be answered, but at least a second: a very
            // short request timeout must not break an idle healthy connection.
            .with_keep_alive(
                self.keep_alive,
                self.request_timeout.max(Duration::from_secs(1)),
            )
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &self.tls {
            let mut config =
                TlsOptions::new().ca_certificate(Certificate::from_pem(read_pem(&tls.ca)?));
            if let Some((cert, key)) = &tls.client {
                config = config.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
            }
            if let Some(name) = &tls.server_name {
                config = config.domain_name(name.clone());
            }
            options = options.with_tls(config);
        }
        Ok(options)
    }
}

/// Reads one PEM file of at most [`MAX_PEM_BYTES`].
fn read_pem(path: &Path) -> Result<Vec<u8>, StoreError> {
    let error = |detail: String| StoreError::EtcdTlsFile {
        path: path.to_path_buf(),
        detail,
    };
    let metadata = std::fs::metadata(path).map_err(|err| error(err.to_string()))?;
    if metadata.len() > MAX_PEM_BYTES {
        return Err(error(format!(
            "{} bytes, at most {MAX_PEM_BYTES}",
            metadata.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|err| error(err.to_string()))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(error("not PEM (no -----BEGIN line)".to_string()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_limits_are_enforced() {
        assert!(EtcdOptions::default().validate().is_ok());
        let bad = [
            EtcdOptions {
                endpoints: vec![],
                ..EtcdOptions::default()
            },
            EtcdOptions {
                endpoints: vec!["https://127.0.0.1:2379".into()],
                ..EtcdOptions::default()
            },
            EtcdOptions {
                namespace: "x".repeat(MAX_NAMESPACE_LEN + 1),
                ..EtcdOptions::default()
            },
            EtcdOptions {
                request_timeout: MAX_REQUEST_TIMEOUT + Duration::from_millis(1),
                ..EtcdOptions::default()
            },
            EtcdOptions {
                connect_timeout: Duration::ZERO,
                ..EtcdOptions::default()
            },
            EtcdOptions {
                watch_buffer: MAX_WATCH_BUFFER + 1,
                ..EtcdOptions::default()
            },
            EtcdOptions {
                list_page: 0,
                ..EtcdOptions::default()
            },
            EtcdOptions {
                max_response_bytes: 1,
                ..EtcdOptions::default()
            },
        ];
        for options in bad {
            let err = options.validate().expect_err("out of limits");
            assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        }
    }

    #[test]
    fn a_missing_or_non_pem_tls_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = read_pem(&missing).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, b"not a certificate").unwrap();
        let err = read_pem(&junk).unwrap_err();
        assert!(err.to_string().contains("not PEM"), "{err}");
    }
}
