//! The cluster's public-key infrastructure: the CA ([`Ca`]) and the certificates it signs for
//! servers, nodes and admins ([`CertSpec`]) or, in a rotation, for the CA replacing it
//! ([`Ca::cross_sign`]), the identity a verified certificate carries
//! ([`Identity`]), join tokens ([`Token`]), and rustls configs whose certificate is hot-swapped
//! ([`ReloadingResolver`], [`server_config`], [`client_config`]), and the two configs of joining
//! ([`unverified_client_config`], only for the pinned CA download, and
//! [`verified_client_config_without_cert`]).
//!
//! This crate never sends a private key anywhere (an agent makes its key with [`KeyPair`] and sends
//! only a CSR) and never writes one with a mode other than 0600. It has no network code of its own:
//! callers run the handshakes and the join protocol.
#![warn(missing_docs)]

mod ca;
mod error;
mod files;
mod identity;
mod key;
mod tls;
mod token;

pub use ca::{CA_CERT_FILE, CA_KEY_FILE, CA_LIFETIME, Ca, CertSpec, DEFAULT_CERT_LIFETIME, pin_of};
pub use error::PkiError;
pub use files::{CERT_MODE, KEY_MODE, write_certificate, write_private_key};
pub use identity::{Identity, validity};
pub use key::KeyPair;
pub use tls::{
    ReloadingResolver, certs_from_pem, client_config, probe_client_config, server_config,
    unverified_client_config, verified_client_config_without_cert,
};
pub use token::{MIN_SECRET_LEN, SECRET_LEN, Token, constant_time_eq, hash_secret};

/// What a certificate holder may be, written by the CA into the certificate's organization
/// (`O=cloudlet:<role>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The cluster's server (the HTTPS API).
    Server,
    /// A node's agent; the common name is the node's name.
    Node,
    /// An operator: may do anything.
    Admin,
    /// A cloud service cloudlet runs (its HTTPS certificate, issued by the cluster's *services*
    /// CA): never authorized on cloudlet's own API.
    Service,
}

impl Role {
    /// The organization value that encodes this role.
    pub fn organization(self) -> &'static str {
        match self {
            Role::Server => "cloudlet:server",
            Role::Node => "cloudlet:node",
            Role::Admin => "cloudlet:admin",
            Role::Service => "cloudlet:service",
        }
    }

    /// The role in one word: `server`, `node` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Node => "node",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }

    /// The role an organization value encodes, if any.
    pub fn from_organization(org: &str) -> Option<Role> {
        [Role::Server, Role::Node, Role::Admin, Role::Service]
            .into_iter()
            .find(|r| r.organization() == org)
    }
}
