//! rustls configurations for the cluster: TLS 1.3 only, mutual (a server requires a client
//! certificate from one of the trusted CAs, or none at all where it lets anonymous agents join),
//! with certificates served from a [`ReloadingResolver`] so a renewed certificate is used by the
//! next handshake without a restart and without touching established connections.
//!
//! Several CAs may be trusted at once (the overlap of a CA rotation). Session resumption is off on
//! the server: every connection presents and verifies a certificate, so an expired or untrusted one
//! can never ride on an old session. This module never reads or writes key files.
//!
//! The two configs for joining are here too: [`unverified_client_config`], which trusts any server
//! and exists only to download the CA bundle whose SHA-256 the join token pins, and
//! [`verified_client_config_without_cert`] for the join request itself. No other config in the
//! cluster may skip server verification.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::PkiError;

/// Every certificate in a PEM text (a chain, or several CAs in one file), in order.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Certificate {
            reason: format!("PEM: {e}"),
        })
}

/// The current certificate and key of this process, replaced in place by [`ReloadingResolver::set`].
///
/// Serves as both the server's certificate resolver and the client's (for its client
/// certificate). Each handshake takes the certificate current at its start; connections already
/// established are not affected by a change.
pub struct ReloadingResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingResolver {
    /// A resolver serving `cert_pem` (leaf first, then any intermediates) with `key_pem`.
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<ReloadingResolver, PkiError> {
        Ok(ReloadingResolver {
            current: RwLock::new(Arc::new(certified_key(cert_pem, key_pem)?)),
        })
    }

    /// Replaces the certificate and key for every later handshake. On error (unparsable, or a key
    /// that does not match the certificate) the current one stays.
    pub fn set(&self, cert_pem: &str, key_pem: &str) -> Result<(), PkiError> {
        let new = Arc::new(certified_key(cert_pem, key_pem)?);
        // A poisoned lock still holds a valid Arc: nothing can panic while it is held.
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = new;
        Ok(())
    }

    /// The certificate and key the next handshake will use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let serial = self
            .current()
            .end_entity_cert()
            .ok()
            .and_then(|der| crate::Identity::from_der(der).ok())
            .map(|id| id.serial);
        f.debug_struct("ReloadingResolver")
            .field("serial", &serial)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server config that requires a client certificate issued by one of `ca_roots` (give the old
/// and the new CA during a rotation) and presents the resolver's certificate.
///
/// With `anonymous`, a client that presents no certificate at all is let in too (an agent that
/// has not joined yet); the caller must then treat a connection without a peer certificate as
/// anonymous and let it do no more than join. A client that does present a certificate must still
/// present a valid one from `ca_roots`: an expired one or one from another CA fails the handshake
/// either way.
///
/// Set `alpn_protocols` on the result if the protocol needs it.
pub fn server_config(
    ca_roots: &[CertificateDer<'static>],
    resolver: Arc<ReloadingResolver>,
    anonymous: bool,
) -> Result<ServerConfig, PkiError> {
    let provider = provider();
    let builder = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(ca_roots)?),
        Arc::clone(&provider),
    );
    let verifier = if anonymous {
        builder.allow_unauthenticated().build()?
    } else {
        builder.build()?
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| PkiError::Tls {
            what: "choose TLS versions",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A client config that trusts servers with a certificate from one of `ca_roots` and presents the
/// resolver's certificate as its client certificate.
pub fn client_config(
    ca_roots: &[CertificateDer<'static>],
    resolver: Arc<ReloadingResolver>,
) -> Result<ClientConfig, PkiError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| PkiError::Tls {
            what: "choose TLS versions",
            source,
        })?
        .with_root_certificates(root_store(ca_roots)?)
        .with_client_cert_resolver(resolver);
    // The server never resumes; do not keep tickets it will not honour.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// A client config that trusts servers with a certificate from one of `ca_roots` and presents no
/// certificate of its own: for the join request of an agent that has none yet, once it has
/// checked the CA against its token's pin. The server must allow anonymous clients
/// ([`server_config`] with `anonymous`).
pub fn verified_client_config_without_cert(
    ca_roots: &[CertificateDer<'static>],
) -> Result<ClientConfig, PkiError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| PkiError::Tls {
            what: "choose TLS versions",
            source,
        })?
        .with_root_certificates(root_store(ca_roots)?)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// **DANGER: a client config that accepts ANY server certificate**, from anyone, for any name,
/// and presents no certificate of its own. Whoever sits between the client and the server can
/// read and change everything sent over it.
///
/// It exists for exactly one request: an agent downloading the server's CA bundle before it
/// trusts anything (as k3s fetches `/cacerts`). The downloaded bytes are worthless until their
/// SHA-256 has been compared with the pin in the join token ([`crate::pin_of`]); only then may
/// they be used as roots, with [`verified_client_config_without_cert`] or [`client_config`].
/// Nothing else may ever use this config: no join request, no token secret, no CSR, no other API
/// call.
///
/// The server's handshake signature is still checked against the certificate it presents, which
/// proves nothing about who it is.
pub fn unverified_client_config() -> Result<ClientConfig, PkiError> {
    accept_any_server(&[&rustls::version::TLS13])
}

/// A client config for **readiness probes only**: TLS 1.2 or 1.3, any server certificate
/// accepted (as the kubelet's HTTPS probes: a probe asks a service on this node whether it
/// answers, not who it is), no client certificate. A probe sends nothing secret; nothing else may
/// use this config.
pub fn probe_client_config() -> Result<ClientConfig, PkiError> {
    accept_any_server(&[&rustls::version::TLS13, &rustls::version::TLS12])
}

/// A client config with `versions` that accepts any server certificate and presents none.
fn accept_any_server(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<ClientConfig, PkiError> {
    let provider = provider();
    let verifier = Arc::new(AcceptAnyServer {
        provider: Arc::clone(&provider),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|source| PkiError::Tls {
            what: "choose TLS versions",
            source,
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The verifier of [`unverified_client_config`]: any certificate is accepted.
#[derive(Debug)]
struct AcceptAnyServer {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The one crypto provider of the cluster's TLS, chosen explicitly so that no process-wide default
/// has to be installed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn root_store(ca_roots: &[CertificateDer<'static>]) -> Result<RootCertStore, PkiError> {
    if ca_roots.is_empty() {
        return Err(PkiError::Certificate {
            reason: "no CA certificate to trust".into(),
        });
    }
    let mut roots = RootCertStore::empty();
    for root in ca_roots {
        roots.add(root.clone()).map_err(|source| PkiError::Tls {
            what: "add a CA certificate to the trusted roots",
            source,
        })?;
    }
    Ok(roots)
}

fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, PkiError> {
    let chain = certs_from_pem(cert_pem)?;
    if chain.is_empty() {
        return Err(PkiError::Certificate {
            reason: "no certificate in the PEM".into(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| PkiError::Certificate {
            reason: format!("private key PEM: {e}"),
        })?;
    let certified =
        CertifiedKey::from_der(chain, key, &provider()).map_err(|source| PkiError::Tls {
            what: "load the certificate and key",
            source,
        })?;
    // `from_der` accepts a key whose match it cannot check; ours always can, so insist.
    certified.keys_match().map_err(|source| PkiError::Tls {
        what: "check the key matches the certificate",
        source,
    })?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ca, CertSpec, Role};

    #[test]
    fn set_refuses_a_key_of_another_certificate_and_keeps_the_current_one() {
        let ca = Ca::create().unwrap();
        let (cert, key) = ca.issue(&CertSpec::new(Role::Node, "n")).unwrap();
        let (other_cert, other_key) = ca.issue(&CertSpec::new(Role::Node, "n")).unwrap();
        let resolver = ReloadingResolver::new(&cert, &key.to_pem()).unwrap();
        let before = resolver.current();

        let err = resolver.set(&other_cert, &key.to_pem()).unwrap_err();
        assert!(err.to_string().contains("key"), "{err}");
        assert!(Arc::ptr_eq(&before, &resolver.current()));
        assert!(ReloadingResolver::new(&cert, &other_key.to_pem()).is_err());
        assert!(ReloadingResolver::new("", &key.to_pem()).is_err());

        resolver.set(&other_cert, &other_key.to_pem()).unwrap();
        assert!(!Arc::ptr_eq(&before, &resolver.current()));
    }

    #[test]
    fn configs_need_at_least_one_root() {
        let ca = Ca::create().unwrap();
        let (cert, key) = ca.issue(&CertSpec::new(Role::Node, "n")).unwrap();
        let resolver = Arc::new(ReloadingResolver::new(&cert, &key.to_pem()).unwrap());
        assert!(server_config(&[], Arc::clone(&resolver), false).is_err());
        assert!(server_config(&[], Arc::clone(&resolver), true).is_err());
        assert!(client_config(&[], Arc::clone(&resolver)).is_err());
        assert!(verified_client_config_without_cert(&[]).is_err());
        assert!(server_config(&[ca.cert_der().clone()], Arc::clone(&resolver), false).is_ok());
    }

    #[test]
    fn certs_from_pem_reads_every_certificate() {
        let (a, b) = (Ca::create().unwrap(), Ca::create().unwrap());
        let both = format!("{}{}", a.cert_pem(), b.cert_pem());
        let certs = certs_from_pem(&both).unwrap();
        assert_eq!(certs, vec![a.cert_der().clone(), b.cert_der().clone()]);
        assert!(certs_from_pem("no pem here").unwrap().is_empty());
    }
}
