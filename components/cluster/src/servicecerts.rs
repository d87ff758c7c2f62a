//! The Cloudpods services' own TLS certificate, kept valid: what the operator's `<cluster>-certs`
//! Secret holds (`ca.crt`, `service.crt`, `service.key` under `<configDir>/pki`), issued by a
//! *services CA* of the cluster's own and renewed at two thirds of its life. The operator issues
//! it once for 800 days and never renews it (cloudpods-facts §7); here it never expires.
//!
//! It owns the record [`SERVICE_CERTS`] (the services CA and the current certificate, keys
//! included: the store is the server's, as the cluster CA's key is on its disk) and the renewal.
//! Rendering a cluster YAML with TLS on puts the three files into every Cloudpods component
//! ([`ServiceCertsRecord::files`]). A renewal writes the new contents into every service record
//! that carries the old ones, in the same transaction as the new certificate, so the services
//! roll to it node by node like any other change (readiness-gated, rolled back on failure) and
//! a held service stays held on its rolled-back manifest, with the new files.
//!
//! It never touches cloudlet's own CA: a service certificate cannot authenticate to cloudlet's
//! API (its CA is not trusted there, and its role, `cloudlet:service`, is refused).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cloudlet_node::records::{SERVICES, ServiceRecord};
use cloudlet_pki::{Ca, CertSpec, Role};
use cloudlet_spec::{FileSpec, ServiceManifest};
use cloudlet_store::{Compare, CompareOp, Op, Store, Txn};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::records::{decode, encode};
use crate::{ClusterError, Inner, placer};

/// The key of the services CA and the current service certificate.
pub const SERVICE_CERTS: &str = "/cluster/service-certs";

/// The directory under `configDir` the services read their certificate from.
pub const PKI_DIR: &str = "pki";

/// The common name of the service certificate.
const NAME: &str = "cloudpods-services";

/// The services CA and the current service certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCertsRecord {
    /// The services CA's certificate, PEM (`ca.crt`).
    pub ca_cert: String,
    /// Its key, PEM.
    pub ca_key: String,
    /// The service certificate, PEM (`service.crt`).
    pub cert: String,
    /// Its key, PEM (`service.key`).
    pub key: String,
    /// When the certificate was issued.
    pub issued_at: Timestamp,
    /// When it expires.
    pub not_after: Timestamp,
    /// Its subject alternative names.
    pub names: Vec<String>,
}

impl ServiceCertsRecord {
    /// When to renew it: two thirds into its life.
    pub fn renew_at(&self) -> Timestamp {
        let life = self.not_after.duration_since(self.issued_at);
        self.issued_at + life * 2 / 3
    }

    /// The three files a Cloudpods component reads, under `config_dir/pki`.
    pub fn files(&self, config_dir: &Path) -> Vec<FileSpec> {
        let dir = config_dir.join(PKI_DIR);
        [
            ("ca.crt", &self.ca_cert, "0644"),
            ("service.crt", &self.cert, "0644"),
            ("service.key", &self.key, "0600"),
        ]
        .into_iter()
        .map(|(name, content, mode)| FileSpec {
            path: dir.join(name),
            content: content.clone(),
            mode: Some(mode.to_owned()),
            owner: None,
        })
        .collect()
    }

    /// `manifest` with this record's contents wherever it carries `old`'s; `None` when it
    /// carries none of them.
    fn renewed(
        &self,
        old: &ServiceCertsRecord,
        manifest: &ServiceManifest,
    ) -> Option<ServiceManifest> {
        let swaps = [
            (&old.ca_cert, &self.ca_cert),
            (&old.cert, &self.cert),
            (&old.key, &self.key),
        ];
        let mut out = manifest.clone();
        let mut changed = false;
        for file in &mut out.spec.files {
            if let Some((_, new)) = swaps.iter().find(|(was, _)| **was == file.content) {
                file.content = (*new).clone();
                changed = true;
            }
        }
        changed.then_some(out)
    }
}

/// Issues a service certificate for `names`, valid for `lifetime`, from `ca` (a new services CA
/// when there is none yet).
fn issue(
    ca: Option<&ServiceCertsRecord>,
    names: Vec<String>,
    lifetime: Duration,
) -> Result<ServiceCertsRecord, ClusterError> {
    let ca = match ca {
        Some(r) => Ca::from_pem(&r.ca_cert, &r.ca_key, SERVICE_CERTS)?,
        None => Ca::create()?,
    };
    let mut spec = CertSpec::new(Role::Service, NAME).lifetime(lifetime);
    for name in &names {
        spec = match name.parse() {
            Ok(ip) => spec.ip(ip),
            Err(_) => spec.dns_name(name.clone()),
        };
    }
    // RSA: Cloudpods' keystone reads the service key as an RSA key (its SAML set-up panics on
    // any other), as the operator's certificates have.
    let (cert, key) = ca.issue_for(&spec, cloudlet_pki::KeyPair::generate_rsa()?)?;
    let der = cloudlet_pki::certs_from_pem(&cert)?;
    // The certificate's own validity (whole seconds), not the clock's reading.
    let Some((issued_at, not_after)) =
        der.first().map(|d| cloudlet_pki::validity(d)).transpose()?
    else {
        return Err(ClusterError::Invalid(
            "the issued service certificate is empty".into(),
        ));
    };
    Ok(ServiceCertsRecord {
        ca_cert: ca.cert_pem().to_owned(),
        ca_key: ca.key_pem(),
        cert,
        key: key.to_pem(),
        issued_at,
        not_after,
        names,
    })
}

/// What the certificate names: this machine (`localhost`, loopback), the server's names and
/// addresses (its URL's host, `--tls-san`), and every node by name and address (the host of its
/// agent's URL), as the services reach each other on the host network. A node that joins later
/// is named from the next renewal on.
async fn names<S: Store>(inner: &Inner<S>) -> Result<Vec<String>, ClusterError> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(inner.pki.server_names());
    for (name, node) in placer::load_nodes(&inner.store).await? {
        names.push(name);
        let host = node.address.as_deref().and_then(crate::backend::host_of);
        names.extend(host.map(str::to_owned));
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The stored record and its revision, if any.
async fn stored<S: Store>(store: &S) -> Result<Option<(ServiceCertsRecord, u64)>, ClusterError> {
    store
        .get(SERVICE_CERTS)
        .await?
        .map(|kv| Ok((decode(SERVICE_CERTS, &kv.value)?, kv.mod_revision)))
        .transpose()
}

/// The current service certificate; the services CA and a first certificate are made on first
/// use (the first cluster YAML applied with TLS on).
pub(crate) async fn current<S: Store>(
    inner: &Inner<S>,
) -> Result<ServiceCertsRecord, ClusterError> {
    for _ in 0..3 {
        if let Some((record, _)) = stored(&inner.store).await? {
            return Ok(record);
        }
        let record = issue(
            None,
            names(inner).await?,
            inner.options.service_cert_lifetime,
        )?;
        let txn = Txn::guarded(
            vec![Compare::absent(SERVICE_CERTS)],
            vec![Op::put(SERVICE_CERTS, encode(SERVICE_CERTS, &record)?)],
        );
        if inner.store.txn(txn).await?.succeeded {
            inner.event(
                None,
                &inner.options.server_name,
                "ServiceCertificateIssued",
                format!(
                    "the Cloudpods services' certificate (new services CA), valid until {}, \
                     for {}",
                    record.not_after,
                    record.names.join(", ")
                ),
            );
            return Ok(record);
        }
    }
    Err(ClusterError::Conflict(format!(
        "{SERVICE_CERTS} kept changing; apply again"
    )))
}

/// The stored record, if the services' certificate was issued.
pub(crate) async fn issued<S: Store>(
    store: &S,
) -> Result<Option<ServiceCertsRecord>, ClusterError> {
    Ok(stored(store).await?.map(|(record, _)| record))
}

/// Renews the certificate if it is due at `now`: a new one from the same CA, written together
/// with every service record that carries the old one. True when it renewed.
pub(crate) async fn renew_due<S: Store>(
    inner: &Inner<S>,
    now: Timestamp,
) -> Result<bool, ClusterError> {
    let Some((old, revision)) = stored(&inner.store).await? else {
        return Ok(false);
    };
    // A certificate issued before the services' key became RSA is renewed at once.
    let rsa = cloudlet_pki::KeyPair::from_pem(&old.key).is_ok_and(|k| k.is_rsa());
    if now < old.renew_at() && rsa {
        return Ok(false);
    }
    let new = issue(
        Some(&old),
        names(inner).await?,
        inner.options.service_cert_lifetime,
    )?;
    let (kvs, _) = inner.store.list(SERVICES).await?;
    let mut compares = vec![Compare::mod_revision(
        SERVICE_CERTS,
        CompareOp::Equal,
        revision,
    )];
    let mut ops = vec![Op::put(SERVICE_CERTS, encode(SERVICE_CERTS, &new)?)];
    let mut services = Vec::new();
    for kv in &kvs {
        let record = ServiceRecord::decode(&kv.key, &kv.value)?;
        if let Some(manifest) = new.renewed(&old, &record.manifest) {
            compares.push(Compare::mod_revision(
                kv.key.clone(),
                CompareOp::Equal,
                kv.mod_revision,
            ));
            services.push(manifest.metadata.name.clone());
            let record = ServiceRecord {
                manifest,
                applied_at: Timestamp::now(),
                ..record
            };
            ops.push(Op::put(kv.key.clone(), record.encode()?));
        }
    }
    if !inner
        .store
        .txn(Txn::guarded(compares, ops))
        .await?
        .succeeded
    {
        // Something changed meanwhile: the next look tries again.
        return Ok(false);
    }
    inner.event(
        None,
        &inner.options.server_name,
        "ServiceCertificateRenewed",
        format!(
            "the Cloudpods services' certificate, valid until {} (was {}), for {}; rolling out \
             to {}",
            new.not_after,
            old.not_after,
            new.names.join(", "),
            if services.is_empty() {
                "no service".to_owned()
            } else {
                services.join(", ")
            }
        ),
    );
    placer::place_now(inner).await;
    Ok(true)
}

/// Renews the services' certificate when it is due, for as long as the server runs.
pub(crate) async fn keep<S: Store>(inner: Arc<Inner<S>>) {
    // Look at least every twentieth of a lifetime (and at least hourly).
    let check = (inner.options.service_cert_lifetime / 20)
        .clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        tokio::time::sleep(check).await;
        if let Err(e) = renew_due(&inner, Timestamp::now()).await {
            tracing::warn!("renewing the services' certificate failed, retrying: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: Vec<FileSpec>) -> ServiceManifest {
        let text = "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: region}\nspec:\n  command: [/bin/true]\n";
        let mut m = cloudlet_spec::parse_file("t.yaml", text).unwrap()[0]
            .as_service()
            .unwrap()
            .clone();
        m.spec.files = files;
        m
    }

    #[test]
    fn a_renewal_keeps_the_ca_and_swaps_exactly_the_old_contents() {
        let names = vec!["localhost".to_owned(), "10.0.0.1".to_owned()];
        let old = issue(None, names.clone(), Duration::from_secs(3000)).unwrap();
        let key = cloudlet_pki::KeyPair::from_pem(&old.key).unwrap();
        assert!(
            key.is_rsa(),
            "Cloudpods' keystone reads its service key as RSA"
        );
        assert_eq!(
            old.renew_at(),
            old.issued_at + jiff::SignedDuration::from_secs(2000)
        );
        let new = issue(Some(&old), names, Duration::from_secs(3000)).unwrap();
        assert_eq!(new.ca_cert, old.ca_cert, "same services CA");
        assert_ne!((&new.cert, &new.key), (&old.cert, &old.key));

        let files = old.files(Path::new("/etc/yunion"));
        assert_eq!(
            files
                .iter()
                .map(|f| (f.path.display().to_string(), f.mode_bits()))
                .collect::<Vec<_>>(),
            [
                ("/etc/yunion/pki/ca.crt".to_owned(), 0o644),
                ("/etc/yunion/pki/service.crt".to_owned(), 0o644),
                ("/etc/yunion/pki/service.key".to_owned(), 0o600),
            ]
        );
        let other = FileSpec {
            path: "/etc/yunion/region.conf".into(),
            content: "x: 1\n".into(),
            mode: None,
            owner: None,
        };
        let mut with = files.clone();
        with.push(other.clone());
        let renewed = new.renewed(&old, &manifest(with)).unwrap();
        let mut want = new.files(Path::new("/etc/yunion"));
        want.push(other.clone());
        assert_eq!(renewed.spec.files, want);
        assert_eq!(new.renewed(&old, &manifest(vec![other])), None);
    }

    #[test]
    fn the_certificate_names_ips_and_dns_names_and_chains_to_the_services_ca() {
        let r = issue(
            None,
            vec!["n1".to_owned(), "10.0.0.1".to_owned()],
            Duration::from_secs(60),
        )
        .unwrap();
        let der = cloudlet_pki::certs_from_pem(&r.cert).unwrap().remove(0);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = cloudlet_pki::certs_from_pem(&r.ca_cert).unwrap().remove(0);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        leaf.verify_signature(Some(ca.public_key())).unwrap();
        let sans = format!(
            "{:?}",
            leaf.subject_alternative_name().unwrap().unwrap().value
        );
        assert!(
            sans.contains("DNSName(\"n1\")") && sans.contains("IPAddress([10, 0, 0, 1])"),
            "{sans}"
        );
        assert_eq!(
            cloudlet_pki::Identity::from_der(&der).unwrap().role,
            Role::Service
        );
    }
}
