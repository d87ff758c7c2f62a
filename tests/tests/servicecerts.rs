//! End to end: the Cloudpods services' certificate. A cluster YAML with TLS on gets
//! `<configDir>/pki/{ca.crt,service.crt,service.key}` written before its services start; a
//! fixture `region` serves HTTPS with them (its readiness probe passes over TLS) and a client
//! that trusts only `ca.crt` verifies it for 127.0.0.1. With a 30 s lifetime the certificate is
//! renewed at two thirds by itself: the new one reaches the disk through a rollout of region, the
//! CA stays, and the running service presents the new certificate.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use cloudlet_tests::Cluster;
use cloudlet_tests::https::{client_trusting, https_get};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// The fixture `region`: the workload serving `/ping` on region's port over TLS with the files
/// cloudlet wrote.
fn fixture_bin_dir(bin: &Path, conf: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    let pki = conf.join("pki");
    let script = format!(
        "#!/bin/sh\nexec {} serve --port 30888 --ua kube-probe --tls-cert {} --tls-key {}\n",
        cloudlet_tests::workload_bin().display(),
        pki.join("service.crt").display(),
        pki.join("service.key").display()
    );
    let path = bin.join("region");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// An edge cluster with TLS on that runs only region.
fn cluster_yaml(bin: &Path, conf: &Path) -> String {
    let mut components = String::new();
    for (name, _) in cloudlet_spec::COMPONENTS {
        let line = if *name == "region" {
            "{resources: {requests: {cpu: 10m, memory: 8Mi}}}"
        } else {
            "{disable: true}"
        };
        components.push_str(&format!("    {name}: {line}\n"));
    }
    format!(
        "apiVersion: cloudlet/v1\nkind: Cluster\nmetadata: {{name: tls}}\nspec:\n  version: v1\n  \
         binDir: {}\n  configDir: {}\n  disableBootstrap: true\n  components:\n{components}",
        bin.display(),
        conf.display()
    )
}

/// The first certificate in a PEM file, DER.
fn der(path: &Path) -> rustls::pki_types::CertificateDer<'static> {
    let pem = std::fs::read_to_string(path).unwrap();
    cloudlet_pki::certs_from_pem(&pem).unwrap().remove(0)
}

/// What region presents on its port to a client that trusts only `ca.crt`; the response too.
fn presented(pki: &Path) -> (String, rustls::pki_types::CertificateDer<'static>) {
    let client = client_trusting(der(&pki.join("ca.crt")), &rustls::version::TLS13);
    let address: SocketAddr = "127.0.0.1:30888".parse().unwrap();
    let fetched = https_get(client, address, "/ping", "kube-probe/1.0");
    (fetched.response, fetched.presented[0].clone())
}

/// `ctl rollout status region -o json` (null while there is none).
fn rollout(c: &Cluster) -> Value {
    let out = c.ctl(&["rollout", "status", "region", "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn the_services_certificate_is_written_served_and_renewed_by_itself() {
    let mut c = Cluster::unstarted(None, &["--service-cert-lifetime", "30s"]);
    let (bin, conf) = (c.path("yunion-bin"), c.path("etc"));
    let pki = conf.join("pki");
    fixture_bin_dir(&bin, &conf);
    c.start_server();
    let mut events = c.events();
    let file = c.path("cluster.yaml");
    std::fs::write(&file, cluster_yaml(&bin, &conf)).unwrap();
    c.ctl_ok(&["cluster", "apply", "-f", file.to_str().unwrap()]);

    let issued = events.wait("ServiceCertificateIssued", T, |e| {
        e["reason"] == "ServiceCertificateIssued"
    });
    // It names loopback and the node, by name.
    let names = issued["message"].as_str().unwrap();
    assert!(
        names.contains("127.0.0.1") && names.contains("test-node"),
        "{issued}"
    );
    // Ready through its HTTPS probe: the files were in place before it started.
    events.wait_for("region", "Ready", T);
    let mode = |name: &str| {
        std::fs::metadata(pki.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        (mode("ca.crt"), mode("service.crt"), mode("service.key")),
        (0o644, 0o644, 0o600)
    );
    let (ca, first) = (der(&pki.join("ca.crt")), der(&pki.join("service.crt")));
    let (response, leaf) = presented(&pki);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(leaf, first, "region serves the certificate cloudlet wrote");

    // Two thirds into its 30 s: renewed, rolled out to region, served.
    let renewed = events.wait("ServiceCertificateRenewed", T, |e| {
        e["reason"] == "ServiceCertificateRenewed"
    });
    assert!(
        renewed["message"].as_str().unwrap().contains("region"),
        "{renewed}"
    );
    c.wait_until("the renewal rolled out to region (rollout 2)", T, |c| {
        let r = rollout(c);
        r["number"] == 2 && r["state"] == "complete"
    });
    let second = der(&pki.join("service.crt"));
    assert_ne!(second, first, "a new certificate on disk");
    assert_eq!(der(&pki.join("ca.crt")), ca, "the services CA stays");
    let (response, leaf) = presented(&pki);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(leaf, second, "region serves the renewed certificate");
}
