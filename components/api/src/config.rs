//! `AdminConfig`: the admin config file, with which `cloudlet ctl --config FILE` reaches a server
//! from another machine over mutual TLS: the server's URL, the CA certificates to trust it by, and
//! the admin's certificate and key.
//!
//! ```yaml
//! apiVersion: cloudlet/v1
//! kind: Config
//! server: https://10.77.0.1:6443
//! ca: |
//!   -----BEGIN CERTIFICATE-----
//!   ...
//! cert: |
//!   -----BEGIN CERTIFICATE-----
//!   ...
//! key: |
//!   -----BEGIN PRIVATE KEY-----
//!   ...
//! ```
//!
//! The file holds a private key: it is only ever written with mode 0600 (atomically, never a
//! moment with a looser mode), and the key never appears in a message or in `Debug`. This module
//! never decides what the admin may do; it only builds the client.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use cloudlet_pki::{PkiError, ReloadingResolver, certs_from_pem, client_config};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::client::parse_https_url;
use crate::{ApiError, Client};

/// The `apiVersion` of an admin config file.
pub const ADMIN_CONFIG_API_VERSION: &str = "cloudlet/v1";

/// The `kind` of an admin config file.
pub const ADMIN_CONFIG_KIND: &str = "Config";

/// What it takes to reach a cloudlet server as an admin from anywhere.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// The server's URL, `https://HOST:PORT`.
    pub server: String,
    /// The CA certificates to trust the server by (PEM, one or more).
    pub ca: String,
    /// The admin's certificate (PEM).
    pub cert: String,
    /// The admin's private key (PEM).
    pub key: String,
}

/// The file as written, with its header.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    api_version: String,
    kind: String,
    server: String,
    ca: String,
    cert: String,
    key: String,
}

impl AdminConfig {
    /// Reads and checks the file at `path`: the header, the URL, the certificates and the key
    /// (that it parses and belongs to the certificate). Errors name the file and the field.
    pub fn load(path: &Path) -> Result<AdminConfig, ApiError> {
        let error = |reason: String| ApiError::Config {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|source| error(format!("cannot read it: {source}")))?;
        let options = serde_saphyr::options! {
            strict_booleans: true,
            with_snippet: false,
        };
        let file: File = serde_saphyr::from_str_with_options(&text, options)
            .map_err(|source| error(describe(&source)))?;
        if file.api_version != ADMIN_CONFIG_API_VERSION {
            return Err(error(format!(
                "apiVersion: must be {ADMIN_CONFIG_API_VERSION:?}, not {:?}",
                file.api_version
            )));
        }
        if file.kind != ADMIN_CONFIG_KIND {
            return Err(error(format!(
                "kind: must be {ADMIN_CONFIG_KIND:?}, not {:?}",
                file.kind
            )));
        }
        let config = AdminConfig {
            server: file.server,
            ca: file.ca,
            cert: file.cert,
            key: file.key,
        };
        parse_https_url(&config.server).map_err(|why| {
            error(format!(
                "server: {:?} is not https://HOST:PORT: {why}",
                config.server
            ))
        })?;
        config
            .credentials()
            .map_err(|(field, source)| error(format!("{field}: {source}")))?;
        Ok(config)
    }

    /// Writes the file at `path` with mode 0600, atomically: a temporary file in the same
    /// directory, created 0600, then renamed over `path`.
    pub fn save(&self, path: &Path) -> Result<(), ApiError> {
        let file = File {
            api_version: ADMIN_CONFIG_API_VERSION.to_owned(),
            kind: ADMIN_CONFIG_KIND.to_owned(),
            server: self.server.clone(),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        };
        let text = serde_saphyr::to_string(&file).map_err(|error| ApiError::Config {
            path: path.to_owned(),
            reason: format!("cannot encode it: {error}"),
        })?;
        // The file holds a private key: written as one, 0600 from its first byte.
        cloudlet_pki::write_private_key(path, &text).map_err(|error| match error {
            PkiError::Write { path, source } => ApiError::Config {
                path,
                reason: format!("cannot write it: {source}"),
            },
            other => ApiError::Config {
                path: path.to_owned(),
                reason: format!("cannot write it: {other}"),
            },
        })
    }

    /// A client of the server that trusts it by `ca` and presents `cert`.
    pub fn client(&self) -> Result<Client, ApiError> {
        let (roots, resolver) = self
            .credentials()
            .map_err(|(what, source)| ApiError::Credentials { what, source })?;
        let config = client_config(&roots, resolver)
            .map_err(|source| ApiError::Credentials { what: "ca", source })?;
        Client::https(&self.server, Arc::new(config))
    }

    /// The trusted roots and the client certificate, or the field at fault and why.
    #[expect(clippy::type_complexity, reason = "a private helper's two results")]
    fn credentials(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, Arc<ReloadingResolver>), (&'static str, PkiError)>
    {
        let roots = certs_from_pem(&self.ca).map_err(|error| ("ca", error))?;
        if roots.is_empty() {
            return Err(("ca", no_certificate()));
        }
        if certs_from_pem(&self.cert)
            .map_err(|error| ("cert", error))?
            .is_empty()
        {
            return Err(("cert", no_certificate()));
        }
        cloudlet_pki::KeyPair::from_pem(&self.key).map_err(|error| ("key", error))?;
        let resolver = ReloadingResolver::new(&self.cert, &self.key)
            .map_err(|error| ("cert and key", error))?;
        Ok((roots, Arc::new(resolver)))
    }
}

impl fmt::Debug for AdminConfig {
    /// Everything but the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

fn no_certificate() -> PkiError {
    PkiError::Certificate {
        reason: "no certificate in it".to_owned(),
    }
}

/// A YAML or shape error in the operator's words, naming the field when one is at fault.
fn describe(error: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error as E;
    let error = error.without_snippet();
    match error {
        E::SerdeMissingField { field, .. } => format!("{field}: is required"),
        E::SerdeUnknownField {
            field, expected, ..
        } => format!(
            "unknown field {field:?}, expected one of {}",
            expected.join(", ")
        ),
        other => other.to_string(),
    }
}
