//! HTTPS from the tests' side: a rustls client that trusts exactly one CA, and a GET that
//! reports what the server presented. For tests of servers that speak TLS (the `workload`
//! fixture, the Cloudpods services' certificate); never used by cloudlet itself.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ProtocolVersion, RootCertStore, StreamOwned};

/// How long a request may take.
const T: Duration = Duration::from_secs(10);

/// A client that trusts only `ca` and speaks only `version`.
pub fn client_trusting(
    ca: CertificateDer<'static>,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca).expect("a CA certificate");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// What an HTTPS GET of `path` returned: the response (head and body), the protocol version and
/// the certificates the server presented.
#[derive(Debug)]
pub struct Fetched {
    /// Head and body.
    pub response: String,
    /// The TLS version spoken.
    pub version: Option<ProtocolVersion>,
    /// The server's certificates, leaf first.
    pub presented: Vec<CertificateDer<'static>>,
}

/// GETs `path` over TLS from `address` (as 127.0.0.1, which the certificate must name) with
/// `Connection: close`, reading to the server's close_notify. Panics (the test fails) when the
/// connection or the handshake does, with the error.
pub fn https_get(config: Arc<ClientConfig>, address: SocketAddr, path: &str, ua: &str) -> Fetched {
    try_https_get(config, address, path, ua).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// [`https_get`], with the error returned.
pub fn try_https_get(
    config: Arc<ClientConfig>,
    address: SocketAddr,
    path: &str,
    ua: &str,
) -> std::io::Result<Fetched> {
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let tls = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let socket = TcpStream::connect(address)?;
    socket.set_read_timeout(Some(T))?;
    let mut stream = StreamOwned::new(tls, socket);
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: {ua}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(Fetched {
        response,
        version: stream.conn.protocol_version(),
        presented: stream
            .conn
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.clone().into_owned())
            .collect(),
    })
}
