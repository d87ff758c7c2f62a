//! Real mutual TLS on loopback with certificates from `cloudlet_pki`: what is accepted, what is
//! refused and why, anonymous clients where the server allows them, the unverified config of the
//! pinned CA download, hot-swapping a server certificate under open connections, and the overlap
//! of a CA rotation (both CAs trusted; a new CA's certificates sent with the cross certificate
//! verified by peers that trust only the old one). Every wait is bounded by a timeout.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cloudlet_pki::{
    Ca, CertSpec, Identity, ReloadingResolver, Role, client_config, server_config,
    unverified_client_config, verified_client_config_without_cert,
};
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

/// An echo server; every handshake's outcome (the client's identity, `None` for a client without
/// a certificate, or the error) is reported.
struct Server {
    addr: SocketAddr,
    handshakes: mpsc::UnboundedReceiver<Result<Option<Identity>, String>>,
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
                    let peer = tls.get_ref().1.peer_certificates().map(|c| c[0].clone());
                    let _ = tx.send(Ok(peer.map(|der| Identity::from_der(&der).unwrap())));
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

    async fn next_handshake(&mut self) -> Result<Option<Identity>, String> {
        timeout(WAIT, self.handshakes.recv())
            .await
            .unwrap()
            .unwrap()
    }

    /// The identity of the next client, which must have presented a certificate.
    async fn next_identity(&mut self) -> Identity {
        self.next_handshake().await.unwrap().unwrap()
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
        Server::start(server_config(&roots(&[&ca]), resolver(&ca, &server_spec()), false).unwrap())
            .await;
    let client = client_config(
        &roots(&[&ca]),
        resolver(&ca, &CertSpec::new(Role::Node, "node-1")),
    )
    .unwrap();

    let mut stream = connect(server.addr, client).await.unwrap();
    assert_eq!(echo(&mut stream, b"ping").await.unwrap(), b"ping");
    let seen = server.next_identity().await;
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
        Server::start(server_config(&roots(&[&ca]), resolver(&ca, &server_spec()), false).unwrap())
            .await;
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
        Server::start(server_config(&roots(&[&ca]), resolver(&ca, &server_spec()), false).unwrap())
            .await;
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
        Server::start(server_config(&roots(&[&ca]), resolver(&ca, &server_spec()), false).unwrap())
            .await;
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
    let server = Server::start(
        server_config(&roots(&[&ca]), resolver(&other, &server_spec()), false).unwrap(),
    )
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
    let config = server_config(&roots(&[&ca]), Arc::clone(&server_resolver), false).unwrap();
    let mut server = Server::start(config).await;
    let client = client_config(
        &roots(&[&ca]),
        resolver(&ca, &CertSpec::new(Role::Node, "node-1")),
    )
    .unwrap();

    let mut old = connect(server.addr, client.clone()).await.unwrap();
    assert_eq!(echo(&mut old, b"one").await.unwrap(), b"one");
    server.next_identity().await;
    let old_serial = server_serial(&old);

    // Renew: a new key and certificate, swapped in while `old` is open.
    let (cert, key) = ca.issue(&server_spec()).unwrap();
    let new_serial = Identity::from_pem(&cert).unwrap().serial;
    assert_ne!(new_serial, old_serial);
    server_resolver.set(&cert, &key.to_pem()).unwrap();

    let mut new = connect(server.addr, client).await.unwrap();
    assert_eq!(echo(&mut new, b"two").await.unwrap(), b"two");
    server.next_identity().await;
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
        Server::start(server_config(&both, resolver(&new_ca, &server_spec()), false).unwrap())
            .await;

    for (ca, name) in [(&old_ca, "old-node"), (&new_ca, "new-node")] {
        let client = client_config(&both, resolver(ca, &CertSpec::new(Role::Node, name))).unwrap();
        let mut stream = connect(server.addr, client).await.unwrap();
        assert_eq!(echo(&mut stream, b"hi").await.unwrap(), b"hi");
        assert_eq!(server.next_identity().await.name, name);
    }

    // After the overlap, a server trusting only the new CA refuses the old CA's clients.
    let mut after = Server::start(
        server_config(&roots(&[&new_ca]), resolver(&new_ca, &server_spec()), false).unwrap(),
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

/// Whether `client` can exchange bytes with `addr`: a refused handshake, or one the server
/// rejects after the client's side of it finished (TLS 1.3), is an error.
async fn exchange(addr: SocketAddr, client: ClientConfig) -> std::io::Result<()> {
    let mut stream = connect(addr, client).await?;
    echo(&mut stream, b"ping").await.map(|_| ())
}

#[tokio::test]
async fn anonymous_server_lets_in_a_client_without_certificate_but_no_bad_certificate() {
    let (ca, other) = (Ca::create().unwrap(), Ca::create().unwrap());
    let config = server_config(&roots(&[&ca]), resolver(&ca, &server_spec()), true).unwrap();
    let mut server = Server::start(config).await;

    // No certificate: in, and the server sees no identity.
    let anonymous = verified_client_config_without_cert(&roots(&[&ca])).unwrap();
    exchange(server.addr, anonymous).await.unwrap();
    assert_eq!(server.next_handshake().await.unwrap(), None);

    // A valid certificate: in, with its identity.
    let node = client_config(
        &roots(&[&ca]),
        resolver(&ca, &CertSpec::new(Role::Node, "node-1")),
    )
    .unwrap();
    exchange(server.addr, node).await.unwrap();
    assert_eq!(server.next_identity().await.name, "node-1");

    // A certificate from another CA: refused, not downgraded to anonymous.
    let intruder = client_config(
        &roots(&[&ca]),
        resolver(&other, &CertSpec::new(Role::Admin, "intruder")),
    )
    .unwrap();
    assert!(exchange(server.addr, intruder).await.is_err());
    let err = server.next_handshake().await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");

    // An expired certificate: refused too.
    let expired = CertSpec::new(Role::Node, "node-1")
        .not_before(Timestamp::now() - SignedDuration::from_hours(2))
        .lifetime(Duration::from_secs(1));
    let client = client_config(&roots(&[&ca]), resolver(&ca, &expired)).unwrap();
    assert!(exchange(server.addr, client).await.is_err());
    let err = server.next_handshake().await.unwrap_err();
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

#[tokio::test]
async fn client_without_certificate_still_verifies_the_server() {
    let (ca, other) = (Ca::create().unwrap(), Ca::create().unwrap());
    let config = server_config(&roots(&[&other]), resolver(&other, &server_spec()), true).unwrap();
    let server = Server::start(config).await;
    let client = verified_client_config_without_cert(&roots(&[&ca])).unwrap();
    let err = connect(server.addr, client).await.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn unverified_config_completes_a_handshake_with_any_server() {
    // The server's certificate is from a CA the client has never seen, and names another host:
    // the handshake still succeeds. That is the danger, and why only the pinned download uses it.
    let ca = Ca::create().unwrap();
    let spec = CertSpec::new(Role::Server, "server").dns_name("elsewhere.example");
    let config = server_config(&roots(&[&ca]), resolver(&ca, &spec), true).unwrap();
    let mut server = Server::start(config).await;

    let mut stream = connect(server.addr, unverified_client_config().unwrap())
        .await
        .unwrap();
    assert_eq!(echo(&mut stream, b"cacerts").await.unwrap(), b"cacerts");
    assert_eq!(server.next_handshake().await.unwrap(), None);
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

/// A resolver holding a fresh certificate from `ca` for `spec`, followed by `intermediate`.
fn resolver_with(ca: &Ca, spec: &CertSpec, intermediate: &str) -> Arc<ReloadingResolver> {
    let (cert, key) = ca.issue(spec).unwrap();
    let chain = format!("{}{intermediate}", cert);
    Arc::new(ReloadingResolver::new(&chain, &key.to_pem()).unwrap())
}

#[tokio::test]
async fn a_new_ca_leaf_sent_with_the_cross_certificate_verifies_against_either_root() {
    let (old_ca, new_ca) = (Ca::create().unwrap(), Ca::create().unwrap());
    let cross = old_ca.cross_sign(&new_ca).unwrap();
    let node = CertSpec::new(Role::Node, "node-1");

    // Both sides present a certificate of the new CA with the cross certificate; each trusts only
    // the old CA (a peer from before the rotation): both chains verify, leaf -> cross -> old root.
    let only_old = roots(&[&old_ca]);
    let mut server = Server::start(
        server_config(
            &only_old,
            resolver_with(&new_ca, &server_spec(), &cross),
            false,
        )
        .unwrap(),
    )
    .await;
    let client = client_config(&only_old, resolver_with(&new_ca, &node, &cross)).unwrap();
    exchange(server.addr, client).await.unwrap();
    assert_eq!(server.next_identity().await.name, "node-1");

    // A client trusting only the new CA verifies the same chain (leaf -> new root).
    let client = client_config(&roots(&[&new_ca]), resolver_with(&new_ca, &node, &cross)).unwrap();
    exchange(server.addr, client).await.unwrap();
    assert_eq!(server.next_identity().await.name, "node-1");

    // A server trusting only the new CA, or both, accepts the client's chain too.
    for trusted in [roots(&[&new_ca]), roots(&[&old_ca, &new_ca])] {
        let mut server = Server::start(
            server_config(
                &trusted,
                resolver_with(&new_ca, &server_spec(), &cross),
                false,
            )
            .unwrap(),
        )
        .await;
        let client = client_config(&trusted, resolver_with(&new_ca, &node, &cross)).unwrap();
        exchange(server.addr, client).await.unwrap();
        assert_eq!(server.next_identity().await.name, "node-1");
    }

    // Without the cross certificate, the old CA alone verifies nothing of the new one.
    let bare =
        Server::start(server_config(&only_old, resolver(&new_ca, &server_spec()), false).unwrap())
            .await;
    let client = client_config(&only_old, resolver(&old_ca, &node)).unwrap();
    let err = connect(bare.addr, client).await.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");

    // A cross certificate of another CA bridges nothing.
    let stranger = Ca::create().unwrap().cross_sign(&new_ca).unwrap();
    let server = Server::start(
        server_config(
            &only_old,
            resolver_with(&new_ca, &server_spec(), &stranger),
            false,
        )
        .unwrap(),
    )
    .await;
    let client = client_config(&only_old, resolver(&old_ca, &node)).unwrap();
    let err = connect(server.addr, client).await.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
}
