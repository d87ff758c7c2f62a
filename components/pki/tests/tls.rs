//! Real mutual TLS on loopback with certificates from `cloudlet_pki`: what is accepted, what is
//! refused and why, hot-swapping a server certificate under open connections, and the overlap of a
//! CA rotation. Every wait is bounded by a timeout.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cloudlet_pki::{Ca, CertSpec, Identity, ReloadingResolver, Role, client_config, server_config};
use jiff::{SignedDuration, Timestamp};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const WAIT: Duration = Duration::from_secs(10);

fn server_spec() -> CertSpec {
    CertSpec::new(Role::Server, "server")
        .dns_name("localhost")
        .ip("127.0.0.1".parse().unwrap())
}

/// A resolver holding a fresh certificate from `ca` for `spec`.
fn resolver(ca: &Ca, spec: &CertSpec) -> Arc<ReloadingResolver> {
    let (cert, key) = ca.issue(spec).unwrap();
    Arc::new(ReloadingResolver::new(&cert, &key.to_pem()).unwrap())
}

fn roots(cas: &[&Ca]) -> Vec<CertificateDer<'static>> {
    cas.iter().map(|ca| ca.cert_der().clone()).collect()
}

/// An echo server; every handshake's outcome (the client's identity, or the error) is reported.
struct Server {
    addr: SocketAddr,
    handshakes: mpsc::UnboundedReceiver<Result<Identity, String>>,
}

impl Server {
    async fn start(config: ServerConfig) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, handshakes) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
                    let _ = tx.send(Ok(Identity::from_der(&peer).unwrap()));
                    let mut buf = [0u8; 1024];
                    loop {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if tls.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Server { addr, handshakes }
    }

    async fn next_handshake(&mut self) -> Result<Identity, String> {
        timeout(WAIT, self.handshakes.recv())
            .await
            .unwrap()
            .unwrap()
    }
}

async fn connect(addr: SocketAddr, config: ClientConfig) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    timeout(
        WAIT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .unwrap()
}

/// Sends `msg` and reads the echo back; an error if the server closed or refused.
async fn echo(stream: &mut TlsStream<TcpStream>, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(msg).await?;
    stream.flush().await?;
    let mut buf = vec![0u8; msg.len()];
    timeout(WAIT, stream.read_exact(&mut buf)).await.unwrap()?;
    Ok(buf)
}

fn server_serial(stream: &TlsStream<TcpStream>) -> String {
    let der = &stream.get_ref().1.peer_certificates().unwrap()[0];
    Identity::from_der(der).unwrap().serial
}

#[tokio::test]
async fn mutual_tls_with_one_ca_exchanges_bytes_and_both_sides_see_identities() {
    let ca = Ca::create().unwrap();
    let mut server =
        Server::start(server_config(&roots(&[&ca]), resolver(&ca, &server_spec())).unwrap()).await;
    let client = client_config(
        &roots(&[&ca]),
        resolver(&ca, &CertSpec::new(Role::Node, "node-1")),
    )
    .unwrap();

    let mut stream = connect(server.addr, client).await.unwrap();
    assert_eq!(echo(&mut stream, b"ping").await.unwrap(), b"ping");
    let seen = server.next_handshake().await.unwrap();
    assert_eq!((seen.role, seen.name.as_str()), (Role::Node, "node-1"));
    let der = &stream.get_ref().1.peer_certificates().unwrap()[0];
    assert_eq!(Identity::from_der(der).unwrap().role, Role::Server);
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn client_cert_from_another_ca_is_refused() {
    let (ca, other) = (Ca::create().unwrap(), Ca::create().unwrap());
    let mut server =
        Server::start(server_config(&roots(&[&ca]), resolver(&ca, &server_spec())).unwrap()).await;
    // The client trusts the server's CA but holds a certificate from another CA.
    let client = client_config(
        &roots(&[&ca]),
        resolver(&other, &CertSpec::new(Role::Admin, "intruder")),
    )
    .unwrap();

    let result = match connect(server.addr, client).await {
        Ok(mut stream) => echo(&mut stream, b"ping").await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(result.is_err(), "the refused client could exchange bytes");
    let err = server.next_handshake().await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn expired_client_cert_is_refused() {
    let ca = Ca::create().unwrap();
    let mut server =
        Server::start(server_config(&roots(&[&ca]), resolver(&ca, &server_spec())).unwrap()).await;
    let expired = CertSpec::new(Role::Node, "node-1")
        .not_before(Timestamp::now() - SignedDuration::from_hours(2))
        .lifetime(Duration::from_secs(1));
    let client = client_config(&roots(&[&ca]), resolver(&ca, &expired)).unwrap();

    let result = match connect(server.addr, client).await {
        Ok(mut stream) => echo(&mut stream, b"ping").await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(result.is_err(), "the expired client could exchange bytes");
    let err = server.next_handshake().await.unwrap_err();
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let ca = Ca::create().unwrap();
    let mut server =
        Server::start(server_config(&roots(&[&ca]), resolver(&ca, &server_spec())).unwrap()).await;
    let mut store = rustls::RootCertStore::empty();
    store.add(ca.cert_der().clone()).unwrap();
    let client = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();

    let result = match connect(server.addr, client).await {
        Ok(mut stream) => echo(&mut stream, b"ping").await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        result.is_err(),
        "a client without certificate could exchange bytes"
    );
    let err = server.next_handshake().await.unwrap_err();
    assert!(err.contains("no certificates"), "{err}");
}

#[tokio::test]
async fn client_refuses_a_server_from_another_ca() {
    let (ca, other) = (Ca::create().unwrap(), Ca::create().unwrap());
    let server =
        Server::start(server_config(&roots(&[&ca]), resolver(&other, &server_spec())).unwrap())
            .await;
    let client = client_config(
        &roots(&[&ca]),
        resolver(&ca, &CertSpec::new(Role::Node, "node-1")),
    )
    .unwrap();
    let err = connect(server.addr, client).await.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn hot_swap_serves_the_new_cert_to_new_connections_and_keeps_old_ones() {
    let ca = Ca::create().unwrap();
    let server_resolver = resolver(&ca, &server_spec());
    let config = server_config(&roots(&[&ca]), Arc::clone(&server_resolver)).unwrap();
    let mut server = Server::start(config).await;
    let client = client_config(
        &roots(&[&ca]),
        resolver(&ca, &CertSpec::new(Role::Node, "node-1")),
    )
    .unwrap();

    let mut old = connect(server.addr, client.clone()).await.unwrap();
    assert_eq!(echo(&mut old, b"one").await.unwrap(), b"one");
    server.next_handshake().await.unwrap();
    let old_serial = server_serial(&old);

    // Renew: a new key and certificate, swapped in while `old` is open.
    let (cert, key) = ca.issue(&server_spec()).unwrap();
    let new_serial = Identity::from_pem(&cert).unwrap().serial;
    assert_ne!(new_serial, old_serial);
    server_resolver.set(&cert, &key.to_pem()).unwrap();

    let mut new = connect(server.addr, client).await.unwrap();
    assert_eq!(echo(&mut new, b"two").await.unwrap(), b"two");
    server.next_handshake().await.unwrap();
    assert_eq!(server_serial(&new), new_serial);

    // The connection made before the swap still works.
    assert_eq!(echo(&mut old, b"three").await.unwrap(), b"three");
    assert_eq!(server_serial(&old), old_serial);
}

#[tokio::test]
async fn ca_rotation_overlap_accepts_clients_of_both_cas() {
    let (old_ca, new_ca) = (Ca::create().unwrap(), Ca::create().unwrap());
    let both = roots(&[&old_ca, &new_ca]);
    let mut server =
        Server::start(server_config(&both, resolver(&new_ca, &server_spec())).unwrap()).await;

    for (ca, name) in [(&old_ca, "old-node"), (&new_ca, "new-node")] {
        let client = client_config(&both, resolver(ca, &CertSpec::new(Role::Node, name))).unwrap();
        let mut stream = connect(server.addr, client).await.unwrap();
        assert_eq!(echo(&mut stream, b"hi").await.unwrap(), b"hi");
        assert_eq!(server.next_handshake().await.unwrap().name, name);
    }

    // After the overlap, a server trusting only the new CA refuses the old CA's clients.
    let mut after = Server::start(
        server_config(&roots(&[&new_ca]), resolver(&new_ca, &server_spec())).unwrap(),
    )
    .await;
    let client = client_config(
        &both,
        resolver(&old_ca, &CertSpec::new(Role::Node, "old-node")),
    )
    .unwrap();
    let result = match connect(after.addr, client).await {
        Ok(mut stream) => echo(&mut stream, b"hi").await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(result.is_err());
    let err = after.next_handshake().await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}
