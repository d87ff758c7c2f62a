//! Who a certificate says its holder is: the role and name the CA wrote into it, its serial and its
//! validity, read with x509-parser from a peer's certificate or a file; and when to renew it.
//!
//! This module only reads certificates. It never decides whether one is trusted: that is the TLS
//! handshake's job (the verifiers in `tls`), and an `Identity` must only be built from a
//! certificate the handshake has already verified.

use jiff::Timestamp;
use x509_parser::certificate::X509Certificate;

use crate::{PkiError, Role};

/// The identity a verified certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The role (the certificate's `O=cloudlet:<role>`).
    pub role: Role,
    /// The name (the certificate's common name): the node's name for a node.
    pub name: String,
    /// The serial number, lowercase hex: distinguishes a renewed certificate from the one before.
    pub serial: String,
    /// When the certificate started to be valid.
    pub not_before: Timestamp,
    /// When it stops being valid.
    pub not_after: Timestamp,
}

impl Identity {
    /// Reads the identity from a DER certificate (a peer certificate from rustls).
    pub fn from_der(der: &[u8]) -> Result<Identity, PkiError> {
        let cert = parse(der)?;
        let subject = cert.subject();
        let name = single(
            subject.iter_common_name().map(|a| a.as_str()),
            "common name",
        )?;
        let org = single(
            subject.iter_organization().map(|a| a.as_str()),
            "organization (the role)",
        )?;
        let role = Role::from_organization(&org).ok_or_else(|| PkiError::Certificate {
            reason: format!(
                "organization {org:?} is not a cloudlet role (cloudlet:server|node|admin)"
            ),
        })?;
        let (not_before, not_after) = times(&cert)?;
        Ok(Identity {
            role,
            name,
            serial: crate::ca::hex(cert.raw_serial()),
            not_before,
            not_after,
        })
    }

    /// Reads the identity from the first certificate of a PEM file's contents.
    pub fn from_pem(pem: &str) -> Result<Identity, PkiError> {
        let certs = crate::tls::certs_from_pem(pem)?;
        let first = certs.first().ok_or_else(|| PkiError::Certificate {
            reason: "no certificate in the PEM".into(),
        })?;
        Identity::from_der(first)
    }

    /// When to renew: two thirds into the certificate's lifetime
    /// (`not_before + 2/3 * (not_after - not_before)`), to the second.
    pub fn renew_at(&self) -> Timestamp {
        let start = self.not_before.as_second();
        let lifetime = self.not_after.as_second().saturating_sub(start).max(0);
        // Both ends came from a certificate, so the sum is a valid timestamp; fall back to
        // `not_before` (renew now) rather than fail.
        Timestamp::from_second(start.saturating_add(lifetime / 3 * 2 + lifetime % 3 * 2 / 3))
            .unwrap_or(self.not_before)
    }
}

/// The validity of a DER certificate: (not_before, not_after).
pub fn validity(der: &[u8]) -> Result<(Timestamp, Timestamp), PkiError> {
    times(&parse(der)?)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Certificate {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(PkiError::Certificate {
            reason: format!("{} bytes after the certificate", rest.len()),
        });
    }
    Ok(cert)
}

fn times(cert: &X509Certificate<'_>) -> Result<(Timestamp, Timestamp), PkiError> {
    let at = |t: x509_parser::time::ASN1Time| {
        Timestamp::from_second(t.timestamp()).map_err(|e| PkiError::Certificate {
            reason: format!("validity time out of range: {e}"),
        })
    };
    let v = cert.validity();
    Ok((at(v.not_before)?, at(v.not_after)?))
}

/// Exactly one attribute of a kind, as UTF-8.
fn single<'a>(
    mut values: impl Iterator<Item = Result<&'a str, x509_parser::error::X509Error>>,
    what: &str,
) -> Result<String, PkiError> {
    let invalid = |reason: String| PkiError::Certificate { reason };
    let first = values
        .next()
        .ok_or_else(|| invalid(format!("no {what} in the subject")))?
        .map_err(|e| invalid(format!("{what} is not a string: {e}")))?;
    if values.next().is_some() {
        return Err(invalid(format!("more than one {what} in the subject")));
    }
    Ok(first.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Ca, CertSpec};

    #[test]
    fn renew_at_is_two_thirds_of_the_lifetime() {
        let ca = Ca::create().unwrap();
        let start = Timestamp::from_second(1_800_000_000).unwrap();
        let spec = CertSpec::new(Role::Node, "n1")
            .not_before(start)
            .lifetime(Duration::from_secs(90));
        let (cert, _) = ca.issue(&spec).unwrap();
        let id = Identity::from_pem(&cert).unwrap();
        assert_eq!(id.not_before, start);
        assert_eq!(id.renew_at().as_second(), 1_800_000_060);
        assert_eq!(id.name, "n1");

        let (cert, _) = ca
            .issue(&spec.clone().lifetime(Duration::from_secs(100)))
            .unwrap();
        // 2/3 of 100 s is 66.67 s: renew at 66 s, never after two thirds.
        let id = Identity::from_pem(&cert).unwrap();
        assert_eq!(id.renew_at().as_second(), 1_800_000_066);
    }

    #[test]
    fn ca_certificate_has_no_role() {
        let ca = Ca::create().unwrap();
        let err = Identity::from_der(ca.cert_der()).unwrap_err().to_string();
        assert!(err.contains("not a cloudlet role"), "{err}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Identity::from_der(b"nope").is_err());
        assert!(Identity::from_pem("nope").is_err());
    }
}
