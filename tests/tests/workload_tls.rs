//! `workload serve --tls-cert FILE --tls-key FILE`, the real binary: HTTPS on the port with a
//! certificate from a CA of the test's own (cloudlet_pki), verified by a rustls client that trusts
//! only that CA, over TLS 1.3 and 1.2; no plain HTTP on that port; a failed handshake does not stop
//! the server; a bad file is a one-line error naming it, and exit 1.
//!
//! Everything lives in the test's temp dir; the workload is killed when its guard drops.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use cloudlet_pki::{Ca, CertSpec, Role, certs_from_pem, write_certificate, write_private_key};
use cloudlet_tests::https::{self, https_get};
use cloudlet_tests::workload_bin;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ProtocolVersion};

/// How long any one step (start, a request) may take.
const T: Duration = Duration::from_secs(10);

/// A running `workload`, killed on drop; its stderr lines arrive on `lines`.
struct Workload {
    child: Child,
    lines: Receiver<String>,
}

impl Workload {
    fn start(args: &[&str]) -> Workload {
        let mut child = Command::new(workload_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start workload");
        let lines = cloudlet_tests::lines(child.stderr.take().expect("stderr"), Some);
        Workload { child, lines }
    }

    /// Waits for the first stderr line that contains `needle`, and returns it.
    fn wait_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no stderr line with {needle:?} within {T:?}: {e}"),
            }
        }
    }

    /// Waits until the server is bound (`listening on ADDR`: an event, no polling) and returns ADDR.
    fn address(&self) -> SocketAddr {
        let line = self.wait_line("listening on ");
        let (_, address) = line.split_once("listening on ").expect("address");
        address.parse().expect("socket address")
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1 it issued, written to `dir` as PEM
/// (`server.crt`, `server.key`, PKCS#8 as cloudlet_pki writes it). Returns the CA, the leaf's
/// DER and the two paths.
fn certificate(dir: &Path) -> (Ca, CertificateDer<'static>, PathBuf, PathBuf) {
    let ca = Ca::create().unwrap();
    let spec = CertSpec::new(Role::Server, "workload").ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (cert_pem, key) = ca.issue(&spec).unwrap();
    let (cert, key_path) = (dir.join("server.crt"), dir.join("server.key"));
    write_certificate(&cert, &cert_pem).unwrap();
    write_private_key(&key_path, &key.to_pem()).unwrap();
    let leaf = certs_from_pem(&cert_pem).unwrap().remove(0);
    (ca, leaf, cert, key_path)
}

/// A client that trusts only `ca` and speaks only `version`.
fn client(ca: &Ca, version: &'static rustls::SupportedProtocolVersion) -> Arc<ClientConfig> {
    https::client_trusting(ca.cert_der().clone(), version)
}

#[test]
fn serves_https_with_the_given_certificate_and_no_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, leaf, cert, key) = certificate(dir.path());
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let workload = Workload::start(&[
        "serve",
        "--port",
        "0",
        "--ua",
        "e2e",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]);
    let address = workload.address();

    for (version, want) in [
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
    ] {
        let got = https_get(client(&ca, version), address, "/ping", "e2e-test");
        assert!(
            got.response.starts_with("HTTP/1.1 200 OK\r\n") && got.response.ends_with("\r\npong"),
            "{want:?}: {:?}",
            got.response
        );
        assert_eq!(got.version, Some(want));
        assert_eq!(
            got.presented,
            std::slice::from_ref(&leaf),
            "{want:?}: not exactly the leaf"
        );
    }
    // The same routes as plain HTTP: the --ua whitelist holds over TLS.
    let refused = https_get(
        client(&ca, &rustls::version::TLS13),
        address,
        "/ping",
        "curl",
    );
    assert!(
        refused.response.starts_with("HTTP/1.1 403 "),
        "{:?}",
        refused.response
    );

    // Plain HTTP on the TLS port: no HTTP answer, a logged handshake failure.
    let mut plain = TcpStream::connect(address).unwrap();
    plain.set_read_timeout(Some(T)).unwrap();
    plain
        .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nUser-Agent: e2e\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    // The server may reset the connection instead of closing it: that is no answer either.
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
    workload.wait_line("serve: TLS handshake with 127.0.0.1:");

    // ... and the server goes on.
    let after = https_get(
        client(&ca, &rustls::version::TLS13),
        address,
        "/ping",
        "e2e",
    );
    assert!(after.response.ends_with("\r\npong"), "{:?}", after.response);
}

#[test]
fn a_client_that_trusts_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, cert, key) = certificate(dir.path());
    let workload = Workload::start(&[
        "serve",
        "--port",
        "0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let address = workload.address();
    let stranger = Ca::create().unwrap();
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let mut tls = ClientConnection::new(client(&stranger, &rustls::version::TLS13), name).unwrap();
    let mut socket = TcpStream::connect(address).unwrap();
    socket.set_read_timeout(Some(T)).unwrap();
    let error = tls.complete_io(&mut socket).unwrap_err();
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    workload.wait_line("serve: TLS handshake with 127.0.0.1:");
}

/// Runs `workload serve` with these TLS files and returns its stderr, after checking it exited 1
/// without listening.
fn refused_at_start(cert: &Path, key: &Path) -> String {
    let output = Command::new(workload_bin())
        .args(["serve", "--port", "0", "--tls-cert"])
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .stdin(Stdio::null())
        .output()
        .expect("run workload");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    stderr
}

#[test]
fn a_missing_or_bad_file_is_named_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, cert, key) = certificate(dir.path());
    let (missing, garbage) = (
        dir.path().join("missing.pem"),
        dir.path().join("garbage.pem"),
    );
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let other = tempfile::tempdir().unwrap();
    let (_, _, _, other_key) = certificate(other.path());

    for (cert, key, want) in [
        (
            &missing,
            &key,
            format!("--tls-cert {}: ", missing.display()),
        ),
        (
            &cert,
            &missing,
            format!("--tls-key {}: ", missing.display()),
        ),
        (
            &garbage,
            &key,
            format!("--tls-cert {}: no PEM certificate", garbage.display()),
        ),
        (
            &cert,
            &garbage,
            format!("--tls-key {}: no PEM private key", garbage.display()),
        ),
        // A certificate given as the key: no key in it.
        (
            &cert,
            &cert,
            format!("--tls-key {}: no PEM private key", cert.display()),
        ),
        (
            &cert,
            &other_key,
            format!(
                "--tls-key {} with --tls-cert {}",
                other_key.display(),
                cert.display()
            ),
        ),
    ] {
        // `pid N`, what serve will do, and the error: one line, naming the file.
        let stderr = refused_at_start(cert, key);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 3, "{stderr}");
        assert!(lines[1].starts_with("workload: serve: HTTPS"), "{stderr}");
        assert!(
            lines[2].starts_with(&format!("workload: serve: {want}")),
            "want {want:?} in {stderr}"
        );
    }
}
