//! A node's own key pair and the certificate signing request that asks the CA to certify it.
//!
//! This is the agent's side of joining: the key is generated here, on the machine that will use it,
//! and only the CSR (public key, name, signature) is sent. This module never serializes a key for
//! anything but a 0600 file on this machine.

use std::fmt;
use std::path::Path;

use rcgen::{CertificateParams, DistinguishedName, DnType};

use crate::PkiError;
use crate::files::{read_pem, write_private_key};

/// A private key (ECDSA P-256, or RSA 2048 for peers that accept nothing else) and its public
/// half.
pub struct KeyPair {
    pub(crate) inner: rcgen::KeyPair,
}

impl KeyPair {
    /// Generates a new ECDSA P-256 key with the system's secure random source.
    pub fn generate() -> Result<KeyPair, PkiError> {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map(|inner| KeyPair { inner })
            .map_err(|source| PkiError::Crypto {
                what: "generate key",
                source,
            })
    }

    /// Generates a new RSA 2048 key (signing with SHA-256): for certificates of programs that
    /// take only RSA keys (Cloudpods' keystone parses its service key as RSA).
    pub fn generate_rsa() -> Result<KeyPair, PkiError> {
        rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .map(|inner| KeyPair { inner })
            .map_err(|source| PkiError::Crypto {
                what: "generate RSA key",
                source,
            })
    }

    /// Whether this is an RSA key.
    pub fn is_rsa(&self) -> bool {
        self.inner.is_compatible(&rcgen::PKCS_RSA_SHA256)
    }

    /// Parses a PEM (PKCS#8) private key.
    pub fn from_pem(pem: &str) -> Result<KeyPair, PkiError> {
        rcgen::KeyPair::from_pem(pem)
            .map(|inner| KeyPair { inner })
            .map_err(|source| PkiError::Crypto {
                what: "parse private key",
                source,
            })
    }

    /// Reads a PEM private key from `path`.
    pub fn load(path: &Path) -> Result<KeyPair, PkiError> {
        KeyPair::from_pem(&read_pem(path)?)
    }

    /// Writes the key to `path` as PEM, mode 0600, atomically.
    pub fn save(&self, path: &Path) -> Result<(), PkiError> {
        write_private_key(path, &self.to_pem())
    }

    /// The private key as PEM (PKCS#8), for a 0600 file or an in-process rustls config.
    pub fn to_pem(&self) -> String {
        self.inner.serialize_pem()
    }

    /// A PEM certificate signing request for this key, with `name` as its common name.
    ///
    /// The CA decides the name and role it certifies; the name here is only what is asked for.
    pub fn csr_pem(&self, name: &str) -> Result<String, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params
            .serialize_request(&self.inner)
            .and_then(|csr| csr.pem())
            .map_err(|source| PkiError::Crypto {
                what: "build certificate signing request",
                source,
            })
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithm = if self.is_rsa() { "RSA" } else { "ECDSA P-256" };
        f.debug_struct("KeyPair")
            .field("algorithm", &algorithm)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_the_key() {
        let key = KeyPair::generate().unwrap();
        let again = KeyPair::from_pem(&key.to_pem()).unwrap();
        assert_eq!(key.inner.public_key_raw(), again.inner.public_key_raw());
        let other = KeyPair::generate().unwrap();
        assert_ne!(key.inner.public_key_raw(), other.inner.public_key_raw());
    }

    #[test]
    fn save_writes_0600_and_load_reads_it_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = KeyPair::generate().unwrap();
        key.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = KeyPair::load(&path).unwrap();
        assert_eq!(loaded.inner.public_key_raw(), key.inner.public_key_raw());
        let err = KeyPair::load(&dir.path().join("nope.key")).unwrap_err();
        assert!(err.to_string().contains("nope.key"), "{err}");
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let key = KeyPair::generate().unwrap();
        let pem = key.to_pem();
        let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(!format!("{key:?}").contains(&body));
    }

    #[test]
    fn csr_is_pem_and_parses_with_its_name() {
        let key = KeyPair::generate().unwrap();
        let csr = key.csr_pem("node-1").unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        let cn = parsed.params.distinguished_name.get(&DnType::CommonName);
        assert_eq!(cn, Some(&rcgen::DnValue::Utf8String("node-1".into())));
    }
}
