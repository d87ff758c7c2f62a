//! The cluster CA: its creation (self-signed, ten years, ECDSA P-256), its two files, its pin (the
//! SHA-256 of its certificate, which join tokens carry), the signing of CSRs into server, node
//! and admin certificates, and the cross-signing of the CA that replaces it in a rotation.
//!
//! The CA decides what it certifies: the name, the role and the SANs come from the caller's
//! [`CertSpec`], never from the CSR, whose only contribution is its (signature-checked) public key.
//! The CA key is written with mode 0600 and never leaves the directory it was saved in.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose, SanType,
    SerialNumber,
};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::AttributeTypeAndValue;

use crate::files::{read_pem, write_certificate, write_private_key};
use crate::identity::validity;
use crate::{KeyPair, PkiError, Role};

/// The CA certificate's file name in the CA directory (mode 0644).
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA key's file name in the CA directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// How long a new CA is valid: ten years.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a server, node or admin certificate is valid unless its [`CertSpec`] says otherwise.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// The cluster's certificate authority: its certificate and its signing key.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    /// Creates a new self-signed CA valid for [`CA_LIFETIME`] from now, with a fresh P-256 key.
    ///
    /// Its common name carries a random suffix so that an old and a new CA, trusted together
    /// during a rotation, never share a subject.
    pub fn create() -> Result<Ca, PkiError> {
        let not_before = to_offset(Timestamp::now())?;
        Ca::create_valid(not_before, add(not_before, CA_LIFETIME)?)
    }

    fn create_valid(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<Ca, PkiError> {
        let key = KeyPair::generate()?.inner;
        let mut suffix = [0u8; 4];
        rand::rng().fill_bytes(&mut suffix);
        let mut params = ca_params(dn(&format!("cloudlet-ca-{}", hex(&suffix)), "cloudlet"));
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Crypto {
                what: "self-sign the CA certificate",
                source,
            })?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA from `dir` ([`CA_CERT_FILE`] and [`CA_KEY_FILE`]).
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let cert_pem = read_pem(&cert_path)?;
        let key = KeyPair::load(&dir.join(CA_KEY_FILE))?;
        Ca::from_parts(cert_pem, key, &cert_path.display().to_string())
    }

    /// The CA from its PEM certificate and PEM key (as [`Ca::cert_pem`] and [`Ca::key_pem`]
    /// give them); `what` names where they came from, for errors.
    pub fn from_pem(cert_pem: &str, key_pem: &str, what: &str) -> Result<Ca, PkiError> {
        Ca::from_parts(cert_pem.to_owned(), KeyPair::from_pem(key_pem)?, what)
    }

    fn from_parts(cert_pem: String, key: KeyPair, what: &str) -> Result<Ca, PkiError> {
        let key = key.inner;
        let cert_der = crate::tls::certs_from_pem(&cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::Certificate {
                reason: format!("{what}: no certificate"),
            })?;
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|source| PkiError::Crypto {
                what: "load the CA certificate as an issuer",
                source,
            })?;
        Ok(Ca {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    /// The CA's signing key, PEM: a secret (keep it 0600, or in the store).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Saves the CA into `dir` (which must exist): the certificate 0644, the key 0600.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        write_private_key(&dir.join(CA_KEY_FILE), &self.key_pem())?;
        write_certificate(&dir.join(CA_CERT_FILE), &self.cert_pem)
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate as DER, for a rustls root store.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA's pin: the SHA-256 of its certificate's DER, 64 lowercase hex digits.
    pub fn pin(&self) -> String {
        pin_of(&self.cert_der)
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> Result<Timestamp, PkiError> {
        Ok(validity(&self.cert_der)?.1)
    }

    /// Signs a PEM CSR into a PEM certificate described by `spec`.
    ///
    /// The CSR's signature is checked (the requester holds the key); everything else it asks for
    /// (subject, SANs, key usages, CA flag) is ignored.
    pub fn sign_csr(&self, csr_pem: &str, spec: &CertSpec) -> Result<String, PkiError> {
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::Csr {
                reason: e.to_string(),
            })?;
        let params = spec.params()?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|source| PkiError::Crypto {
                what: "sign the certificate",
                source,
            })?;
        Ok(cert.pem())
    }

    /// Cross-signs `newer`, the CA that replaces this one in a rotation: a CA certificate with
    /// `newer`'s subject and public key (and its key identifier, basic constraints and key
    /// usages), issued and signed by this CA, valid while both CAs are. Returns it as PEM; it is
    /// public, like every certificate.
    ///
    /// It bridges the overlap of a rotation. A certificate `newer` issues, sent with the cross
    /// certificate after it (`leaf, cross`), verifies for a peer that trusts only this (old) CA —
    /// leaf, then cross (whose key is `newer`'s), then this CA's root — and for one that trusts
    /// `newer` — leaf, then `newer`'s root. So a server may present a certificate of the new CA
    /// before every peer has learned of it, and peers learn of it over a link they can still
    /// verify.
    ///
    /// Verifiers that follow RFC 5280 to the letter ignore a trust anchor's path length, as
    /// webpki (rustls) does; those that apply it to the root (OpenSSL, Go) refuse this path,
    /// because every cloudlet CA allows no intermediate below it. They still accept the leaf
    /// through `newer`'s root once they trust it.
    pub fn cross_sign(&self, newer: &Ca) -> Result<String, PkiError> {
        let invalid = |reason: String| PkiError::Certificate { reason };
        let new = parse(newer.cert_der())?;
        let old = parse(self.cert_der())?;
        // A cloudlet CA's subject is a common name and an organization: rebuilt from them, and
        // checked below to have come out byte for byte.
        let subject = new.subject();
        let mut params = ca_params(dn(
            &first_text(subject.iter_common_name()),
            &first_text(subject.iter_organization()),
        ));
        params.not_before = new
            .validity()
            .not_before
            .to_datetime()
            .max(old.validity().not_before.to_datetime());
        params.not_after = new
            .validity()
            .not_after
            .to_datetime()
            .min(old.validity().not_after.to_datetime());
        if params.not_before >= params.not_after {
            return Err(invalid(format!(
                "cannot cross-sign: the CAs are never valid at the same time ({} and {})",
                newer.pin(),
                self.pin()
            )));
        }
        if let Some(ski) = new
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
        {
            params.key_identifier_method = KeyIdMethod::PreSpecified(ski);
        }
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(newer.issuer.key(), &self.issuer)
            .map_err(|source| PkiError::Crypto {
                what: "cross-sign the new CA certificate",
                source,
            })?;
        // Verifiers match an issuer to its certificate byte for byte: the subject must be the
        // newer CA's exactly, the issuer this CA's.
        let cross = parse(cert.der())?;
        if cross.subject().as_raw() != new.subject().as_raw()
            || cross.issuer().as_raw() != old.subject().as_raw()
        {
            return Err(invalid(format!(
                "cannot cross-sign CA {}: its subject is not a common name and an organization",
                newer.pin()
            )));
        }
        Ok(cert.pem())
    }

    /// Makes a key here and certifies it: for certificates used on the CA's own machine (the
    /// server's certificate, the admin certificate of `admin.conf`). Returns the PEM certificate
    /// and the key.
    pub fn issue(&self, spec: &CertSpec) -> Result<(String, KeyPair), PkiError> {
        self.issue_for(spec, KeyPair::generate()?)
    }

    /// Like [`Ca::issue`], for `key` (e.g. an RSA key from [`KeyPair::generate_rsa`]).
    pub fn issue_for(&self, spec: &CertSpec, key: KeyPair) -> Result<(String, KeyPair), PkiError> {
        let cert = self.sign_csr(&key.csr_pem(&spec.name)?, spec)?;
        Ok((cert, key))
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("pin", &self.pin())
            .finish_non_exhaustive()
    }
}

/// The pin of a CA certificate (SHA-256 of its DER, lowercase hex): what an agent compares with
/// the hash in its join token before it trusts the server.
pub fn pin_of(cert_der: &[u8]) -> String {
    hex(&Sha256::digest(cert_der))
}

/// What a certificate will say: who (common name), what (role), where (SANs) and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    role: Role,
    name: String,
    dns_names: Vec<String>,
    ips: Vec<IpAddr>,
    lifetime: Duration,
    not_before: Option<Timestamp>,
}

impl CertSpec {
    /// A certificate for `name` in `role`, valid for [`DEFAULT_CERT_LIFETIME`] from now.
    pub fn new(role: Role, name: impl Into<String>) -> CertSpec {
        CertSpec {
            role,
            name: name.into(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            lifetime: DEFAULT_CERT_LIFETIME,
            not_before: None,
        }
    }

    /// Adds a DNS subject alternative name (what clients connect to, for a server).
    pub fn dns_name(mut self, name: impl Into<String>) -> CertSpec {
        self.dns_names.push(name.into());
        self
    }

    /// Adds an IP subject alternative name.
    pub fn ip(mut self, ip: IpAddr) -> CertSpec {
        self.ips.push(ip);
        self
    }

    /// Sets the lifetime (at least one second; tests use seconds).
    pub fn lifetime(mut self, lifetime: Duration) -> CertSpec {
        self.lifetime = lifetime;
        self
    }

    /// Sets when the certificate starts to be valid (default: now, to the second).
    pub fn not_before(mut self, at: Timestamp) -> CertSpec {
        self.not_before = Some(at);
        self
    }

    fn params(&self) -> Result<CertificateParams, PkiError> {
        let invalid = |reason: String| PkiError::Certificate { reason };
        if self.name.is_empty() {
            return Err(invalid("empty common name".into()));
        }
        if self.lifetime < Duration::from_secs(1) {
            return Err(invalid(format!(
                "lifetime {:?} is shorter than one second",
                self.lifetime
            )));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&self.name, self.role.organization());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Servers, nodes and cloud services may both accept and make connections (an agent
        // serves logs and exec; the services call each other); an admin certificate only ever
        // authenticates a client.
        params.extended_key_usages = match self.role {
            Role::Server | Role::Node | Role::Service => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        for name in &self.dns_names {
            let ia5 = name
                .clone()
                .try_into()
                .map_err(|_| invalid(format!("DNS name {name:?} is not an ASCII (IA5) string")))?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        for ip in &self.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = to_offset(self.not_before.unwrap_or_else(Timestamp::now))?;
        params.not_after = add(params.not_before, self.lifetime)?;
        Ok(params)
    }
}

/// The parameters every cloudlet CA certificate shares (the self-signed and the cross-signed
/// one): a CA that signs end-entity certificates only, with a random serial.
fn ca_params(subject: DistinguishedName) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params
}

/// The first value of a name attribute as text (empty if there is none).
fn first_text<'a>(mut values: impl Iterator<Item = &'a AttributeTypeAndValue<'a>>) -> String {
    values
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| PkiError::Certificate {
            reason: format!("DER: {e}"),
        })
}

fn dn(common_name: &str, organization: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, organization);
    dn
}

/// A random positive 16-byte serial: renewing with the same key still gives a new serial.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    // Positive (top bit clear) and never zero or shortened by a leading zero byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from(bytes.to_vec())
}

fn to_offset(at: Timestamp) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(at.as_second()).map_err(|e| PkiError::Certificate {
        reason: format!("time {at} out of range: {e}"),
    })
}

fn add(from: OffsetDateTime, lifetime: Duration) -> Result<OffsetDateTime, PkiError> {
    time::Duration::try_from(lifetime)
        .ok()
        .and_then(|d| from.checked_add(d))
        .ok_or_else(|| PkiError::Certificate {
            reason: format!("lifetime {lifetime:?} out of range"),
        })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::Identity;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn save_writes_key_0600_and_cert_0644_and_load_gives_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create().unwrap();
        ca.save(dir.path()).unwrap();
        assert_eq!(mode(&dir.path().join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.path().join(CA_CERT_FILE)), 0o644);

        let loaded = Ca::load(dir.path()).unwrap();
        assert_eq!(loaded.pin(), ca.pin());
        // The loaded CA signs certificates that chain to the saved certificate: same issuer name
        // and a key that verifies (the TLS tests check the signature; here the issuer).
        let (cert, _) = loaded.issue(&CertSpec::new(Role::Node, "n1")).unwrap();
        let der = crate::tls::certs_from_pem(&cert).unwrap().remove(0);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        let (_, root) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert_eq!(leaf.issuer(), root.subject());
        leaf.verify_signature(Some(root.public_key())).unwrap();
    }

    #[test]
    fn from_pem_gives_the_same_ca_and_names_the_source_of_a_bad_one() {
        let ca = Ca::create().unwrap();
        let again = Ca::from_pem(ca.cert_pem(), &ca.key_pem(), "the store").unwrap();
        assert_eq!(again.pin(), ca.pin());
        let (cert, _) = again
            .issue(&CertSpec::new(Role::Service, "svc").dns_name("localhost"))
            .unwrap();
        let der = crate::tls::certs_from_pem(&cert).unwrap().remove(0);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        let (_, root) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        leaf.verify_signature(Some(root.public_key())).unwrap();
        assert_eq!(Identity::from_der(&der).unwrap().role, Role::Service);
        let err = Ca::from_pem("", &ca.key_pem(), "the store").unwrap_err();
        assert!(
            err.to_string().contains("the store: no certificate"),
            "{err}"
        );
    }

    #[test]
    fn ca_is_valid_ten_years_and_pin_is_sha256_hex() {
        let ca = Ca::create().unwrap();
        let (nb, na) = validity(ca.cert_der()).unwrap();
        assert_eq!(
            na.as_second() - nb.as_second(),
            i64::try_from(CA_LIFETIME.as_secs()).unwrap()
        );
        let pin = ca.pin();
        assert_eq!(pin.len(), 64);
        assert!(pin.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
        assert_eq!(pin, pin_of(ca.cert_der()));
        assert_ne!(pin, Ca::create().unwrap().pin());
    }

    #[test]
    fn load_error_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Ca::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ca.crt"), "{err}");
    }

    #[test]
    fn csr_claims_are_ignored_the_ca_decides_name_role_and_sans() {
        let ca = Ca::create().unwrap();
        // A CSR that claims admin and another name and a SAN.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        params.distinguished_name = dn("root-of-all", "cloudlet:admin");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();

        let cert = ca
            .sign_csr(&csr, &CertSpec::new(Role::Node, "node-1"))
            .unwrap();
        let id = Identity::from_pem(&cert).unwrap();
        assert_eq!(id.role, Role::Node);
        assert_eq!(id.name, "node-1");
        let der = crate::tls::certs_from_pem(&cert).unwrap().remove(0);
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(x.subject_alternative_name().unwrap().is_none());
        let orgs: Vec<_> = x.subject().iter_organization().collect();
        assert_eq!(orgs.len(), 1);
        // The certified key is the CSR's key.
        assert_eq!(
            x.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
    }

    #[test]
    fn server_cert_has_the_requested_sans_and_lifetime() {
        let ca = Ca::create().unwrap();
        let spec = CertSpec::new(Role::Server, "server")
            .dns_name("localhost")
            .ip("127.0.0.1".parse().unwrap())
            .lifetime(Duration::from_secs(60));
        let (cert, _) = ca.issue(&spec).unwrap();
        let id = Identity::from_pem(&cert).unwrap();
        assert_eq!(id.role, Role::Server);
        assert_eq!(id.not_after.as_second() - id.not_before.as_second(), 60);
        let der = crate::tls::certs_from_pem(&cert).unwrap().remove(0);
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        use x509_parser::extensions::GeneralName;
        let sans = &x
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(
            sans,
            &vec![
                GeneralName::DNSName("localhost"),
                GeneralName::IPAddress(&[127, 0, 0, 1])
            ]
        );
    }

    #[test]
    fn default_lifetime_is_90_days() {
        let ca = Ca::create().unwrap();
        let (cert, _) = ca.issue(&CertSpec::new(Role::Admin, "admin")).unwrap();
        let id = Identity::from_pem(&cert).unwrap();
        assert_eq!(
            id.not_after.as_second() - id.not_before.as_second(),
            90 * 24 * 3600
        );
    }

    #[test]
    fn renewals_get_distinct_serials() {
        let ca = Ca::create().unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = key.csr_pem("n").unwrap();
        let spec = CertSpec::new(Role::Node, "n");
        let a = Identity::from_pem(&ca.sign_csr(&csr, &spec).unwrap()).unwrap();
        let b = Identity::from_pem(&ca.sign_csr(&csr, &spec).unwrap()).unwrap();
        assert_ne!(a.serial, b.serial);
    }

    #[test]
    fn bad_csr_and_bad_spec_are_refused() {
        let ca = Ca::create().unwrap();
        let err = ca
            .sign_csr("not a csr", &CertSpec::new(Role::Node, "n"))
            .unwrap_err();
        assert!(matches!(err, PkiError::Csr { .. }), "{err}");

        // A CSR whose signature does not match its content (its name changed after signing).
        let key = KeyPair::generate().unwrap();
        let pem = key.csr_pem("node-1").unwrap();
        let der: rustls::pki_types::CertificateSigningRequestDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
        let mut bytes = der.as_ref().to_vec();
        let at = bytes.windows(6).position(|w| w == b"node-1").unwrap();
        bytes[at + 5] = b'2';
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64(&bytes)
        );
        let err = ca
            .sign_csr(&tampered, &CertSpec::new(Role::Node, "n"))
            .unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");

        let csr = key.csr_pem("n").unwrap();
        let short = CertSpec::new(Role::Node, "n").lifetime(Duration::from_millis(10));
        assert!(ca.sign_csr(&csr, &short).is_err());
        assert!(ca.sign_csr(&csr, &CertSpec::new(Role::Node, "")).is_err());
        let non_ascii = CertSpec::new(Role::Server, "s").dns_name("bücher");
        assert!(ca.sign_csr(&csr, &non_ascii).is_err());
    }

    fn subject_key_id(cert: &X509Certificate<'_>) -> Vec<u8> {
        cert.iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn cross_sign_certifies_the_newer_ca_as_a_ca_under_the_old_one() {
        let (old, new) = (Ca::create().unwrap(), Ca::create().unwrap());
        let pem = old.cross_sign(&new).unwrap();
        let certs = crate::tls::certs_from_pem(&pem).unwrap();
        assert_eq!(certs.len(), 1);
        let cross = parse(&certs[0]).unwrap();
        let (new_x, old_x) = (
            parse(new.cert_der()).unwrap(),
            parse(old.cert_der()).unwrap(),
        );

        // The newer CA's subject and key, byte for byte, and its key identifier.
        assert_eq!(cross.subject().as_raw(), new_x.subject().as_raw());
        assert_eq!(cross.public_key().raw, new_x.public_key().raw);
        assert_eq!(subject_key_id(&cross), subject_key_id(&new_x));
        // Issued and signed by the old CA.
        assert_eq!(cross.issuer().as_raw(), old_x.subject().as_raw());
        cross.verify_signature(Some(old_x.public_key())).unwrap();
        assert!(cross.verify_signature(Some(new_x.public_key())).is_err());
        let aki = cross
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.clone(),
                _ => None,
            })
            .unwrap();
        assert_eq!(aki.0, subject_key_id(&old_x).as_slice());
        // A CA like the newer one: same basic constraints and key usages.
        let constraints = |c: &X509Certificate<'_>| {
            let bc = c.basic_constraints().unwrap().unwrap().value;
            (bc.ca, bc.path_len_constraint)
        };
        assert_eq!(constraints(&cross), (true, Some(0)));
        assert_eq!(constraints(&cross), constraints(&new_x));
        assert_eq!(
            cross.key_usage().unwrap().unwrap().value,
            new_x.key_usage().unwrap().unwrap().value
        );
        assert_ne!(cross.raw_serial(), new_x.raw_serial());
        // A leaf of the newer CA names the cross certificate's subject as its issuer.
        let (leaf, _) = new.issue(&CertSpec::new(Role::Node, "n")).unwrap();
        let leaf = crate::tls::certs_from_pem(&leaf).unwrap().remove(0);
        let leaf = parse(&leaf).unwrap();
        assert_eq!(leaf.issuer().as_raw(), cross.subject().as_raw());
        leaf.verify_signature(Some(cross.public_key())).unwrap();
    }

    #[test]
    fn cross_sign_validity_is_the_newer_cas_clipped_to_the_old_cas() {
        let now = to_offset(Timestamp::now()).unwrap();
        let hour = time::Duration::hours(1);
        let validity = |pem: &str| {
            let der = crate::tls::certs_from_pem(pem).unwrap().remove(0);
            validity(&der).unwrap()
        };
        let at = |t: OffsetDateTime| Timestamp::from_second(t.unix_timestamp()).unwrap();

        // The old CA ends first: the cross certificate ends with it.
        let old = Ca::create_valid(now - 2 * hour, now + hour).unwrap();
        let new = Ca::create().unwrap();
        let (new_start, _) = validity(new.cert_pem());
        assert_eq!(
            validity(&old.cross_sign(&new).unwrap()),
            (new_start, at(now + hour))
        );

        // The newer CA starts before the old one: the cross certificate starts with the old.
        let old = Ca::create_valid(now - hour, now + 2 * hour).unwrap();
        let new = Ca::create_valid(now - 2 * hour, now + 3 * hour).unwrap();
        assert_eq!(
            validity(&old.cross_sign(&new).unwrap()),
            (at(now - hour), at(now + 2 * hour))
        );

        // Never valid together: nothing to bridge.
        let old = Ca::create_valid(now - 2 * hour, now - hour).unwrap();
        let err = old.cross_sign(&Ca::create().unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("never valid at the same time"),
            "{err}"
        );
    }

    #[test]
    fn cross_sign_works_for_cas_loaded_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let (old_dir, new_dir) = (dir.path().join("old"), dir.path().join("new"));
        fs::create_dir(&old_dir).unwrap();
        fs::create_dir(&new_dir).unwrap();
        Ca::create().unwrap().save(&old_dir).unwrap();
        Ca::create().unwrap().save(&new_dir).unwrap();
        let (old, new) = (Ca::load(&old_dir).unwrap(), Ca::load(&new_dir).unwrap());
        let cross = crate::tls::certs_from_pem(&old.cross_sign(&new).unwrap()).unwrap();
        let cross = parse(&cross[0]).unwrap();
        let (old_x, new_x) = (
            parse(old.cert_der()).unwrap(),
            parse(new.cert_der()).unwrap(),
        );
        assert_eq!(cross.subject().as_raw(), new_x.subject().as_raw());
        assert_eq!(cross.issuer().as_raw(), old_x.subject().as_raw());
        cross.verify_signature(Some(old_x.public_key())).unwrap();
    }

    #[test]
    fn cross_sign_refuses_a_subject_it_cannot_reproduce() {
        // A CA with a subject no cloudlet CA has: an organizational unit besides CN and O.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut subject = dn("foreign-ca", "elsewhere");
        subject.push(DnType::OrganizationalUnitName, "ops");
        let mut params = ca_params(subject);
        params.not_before = to_offset(Timestamp::now()).unwrap();
        params.not_after = add(params.not_before, Duration::from_secs(3600)).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let foreign = Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        };
        let err = Ca::create().unwrap().cross_sign(&foreign).unwrap_err();
        assert!(
            err.to_string()
                .contains("not a common name and an organization"),
            "{err}"
        );
    }

    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
