//! The `serve` mode: a minimal HTTP/1.1 server on 127.0.0.1 (a thread per connection,
//! keep-alive) with a readiness delay, an optional health path and a User-Agent whitelist, over
//! plain TCP or, with `--tls-cert` and `--tls-key`, over TLS 1.2/1.3 (rustls) on the same port.
//!
//! It only answers what `route` decides, the same over TLS as in the clear (one request loop,
//! generic over the stream). It must never listen on anything but 127.0.0.1, or the address
//! `--bind` names, which tests pass only inside a network namespace of their own; it reads the
//! certificate and key once, at start, and never writes them.

use std::convert::Infallible;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::args::{Serve, Tls};

/// An idle keep-alive connection (or a client stalled in the TLS handshake) is closed after this
/// long, so its thread ends.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Loads the TLS files (if any), binds the address and port, logs `listening on ADDR`, and
/// serves until the process ends.
pub fn serve(options: &Serve) -> Result<Infallible, String> {
    let tls = options.tls.as_ref().map(server_config).transpose()?;
    let listener = TcpListener::bind((options.bind, options.port))
        .map_err(|e| format!("serve: binding {}:{}: {e}", options.bind, options.port))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("serve: local address: {e}"))?;
    say!("listening on {address}");
    let ready_at = Instant::now() + options.ready_after;
    let options = Arc::new(options.clone());
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(error) => {
                say!("serve: accept: {error}");
                continue;
            }
        };
        let options = Arc::clone(&options);
        let tls = tls.clone();
        let spawned = thread::Builder::new()
            .name("connection".into())
            .spawn(move || connection(stream, peer, tls, &options, ready_at));
        if let Err(error) = spawned {
            say!("serve: starting a connection thread: {error}");
        }
    }
}

/// The server's TLS config: the certificate chain and key of `tls`, TLS 1.2 and 1.3, with the
/// crypto provider cloudlet uses (aws-lc-rs), no client certificates. Errors are one line naming
/// the file.
fn server_config(tls: &Tls) -> Result<Arc<ServerConfig>, String> {
    let (cert, key) = (tls.cert.as_path(), tls.key.as_path());
    let chain = CertificateDer::pem_slice_iter(&read(cert, "--tls-cert")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("serve: --tls-cert {}: PEM: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "serve: --tls-cert {}: no PEM certificate in it",
            cert.display()
        ));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key, "--tls-key")?).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "serve: --tls-key {}: no PEM private key in it",
            key.display()
        ),
        e => format!("serve: --tls-key {}: PEM: {e}", key.display()),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("serve: choosing TLS versions: {e}"))?
        .with_no_client_auth()
        // Parses the key and checks it is the leaf's.
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "serve: --tls-key {} with --tls-cert {}: {e}",
                key.display(),
                cert.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// Reads the file that `option` names, whole.
fn read(path: &Path, option: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("serve: {option} {}: {e}", path.display()))
}

/// Serves one accepted connection, over TLS if `tls` is set, until the client or an error
/// closes it. A failed handshake is logged and ends only this connection.
fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    options: &Serve,
    ready_at: Instant,
) {
    if let Err(error) = stream.set_read_timeout(Some(IDLE_TIMEOUT)) {
        return say!("serve: {error}");
    }
    let Some(config) = tls else {
        return exchange(&mut stream, options, ready_at);
    };
    let mut tls = match ServerConnection::new(config) {
        Ok(tls) => tls,
        Err(error) => return say!("serve: TLS with {peer}: {error}"),
    };
    // The handshake first (complete_io runs it to the end), so that a failure is reported as
    // one, not as a bad request.
    match tls.complete_io(&mut stream) {
        Err(error) => return say!("serve: TLS handshake with {peer}: {error}"),
        Ok(_) if tls.is_handshaking() => {
            return say!("serve: TLS handshake with {peer}: the client stopped");
        }
        Ok(_) => {}
    }
    let mut stream = StreamOwned::new(tls, stream);
    exchange(&mut stream, options, ready_at);
    // A clean end for the client: it can tell the whole response from a truncated one.
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

/// The parts of a request that `route` looks at.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    method: String,
    target: String,
    user_agent: String,
    keep_alive: bool,
}

/// Serves requests on one connection, plain or TLS, until the client or an error closes it.
fn exchange(stream: &mut (impl Read + Write), options: &Serve, ready_at: Instant) {
    let mut stream = BufReader::new(stream);
    loop {
        let request = match read_request(&mut stream) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(error) => {
                let _ = respond(stream.get_mut(), 400, "bad request", false, false);
                return say!("serve: bad request: {error}");
            }
        };
        let (status, body) = route(&request, options, Instant::now() >= ready_at);
        say!(
            "{} {} user-agent {:?}: {status}",
            request.method,
            request.target,
            request.user_agent
        );
        let head = request.method == "HEAD";
        if respond(stream.get_mut(), status, body, head, request.keep_alive).is_err()
            || !request.keep_alive
        {
            return;
        }
    }
}

/// Decides the status and body of a response.
fn route(request: &Request, options: &Serve, ready: bool) -> (u16, &'static str) {
    if !ready {
        return (503, "not ready");
    }
    if let Some(wanted) = &options.ua
        && !request.user_agent.contains(wanted.as_str())
    {
        return (403, "forbidden");
    }
    if request.method != "GET" && request.method != "HEAD" {
        return (405, "method not allowed");
    }
    let path = request.target.split('?').next().unwrap_or_default();
    if path == "/ping" {
        return (200, "pong");
    }
    match &options.path {
        Some(wanted) if wanted != path => (404, "not found"),
        _ => (200, "ok"),
    }
}

/// Reads one request (head and body, the body skipped); `None` at a clean end of the connection.
fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    // A client may send empty lines between requests (RFC 9112, 2.2).
    while line.trim_end().is_empty() {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            // A TLS client that closes without close_notify, between requests: a clean end too.
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof && line.is_empty() => {
                return Ok(None);
            }
            Err(error) => return Err(error),
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!("request line {:?}", line.trim_end())));
    };
    let mut request = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        keep_alive: version == "HTTP/1.1",
        ..Request::default()
    };
    let mut body: u64 = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("connection closed in the header".into()));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(bad(format!("header {header:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("user-agent") {
            request.user_agent = value.to_owned();
        } else if name.eq_ignore_ascii_case("content-length") {
            body = value
                .parse()
                .map_err(|_| bad(format!("content-length {value:?}")))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad(format!("transfer-encoding {value:?} is not supported")));
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                request.keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                request.keep_alive = true;
            }
        }
    }
    io::copy(&mut reader.take(body), &mut io::sink())?;
    Ok(Some(request))
}

/// Writes a plain-text response (without the body for HEAD).
fn respond(
    out: &mut impl Write,
    status: u16,
    body: &str,
    head: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: {connection}\r\n\r\n",
        body.len()
    );
    if !head {
        response.push_str(body);
    }
    out.write_all(response.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> io::Result<Option<Request>> {
        read_request(&mut BufReader::new(text.as_bytes()))
    }

    fn options(path: Option<&str>, ua: Option<&str>) -> Serve {
        Serve {
            port: 0,
            bind: std::net::Ipv4Addr::LOCALHOST,
            ready_after: Duration::ZERO,
            path: path.map(String::from),
            ua: ua.map(String::from),
            tls: None,
        }
    }

    fn get(target: &str, user_agent: &str) -> Request {
        Request {
            method: "GET".into(),
            target: target.into(),
            user_agent: user_agent.into(),
            keep_alive: true,
        }
    }

    #[test]
    fn reads_requests_and_skips_bodies() {
        let text = "\r\nPOST /x HTTP/1.1\r\nUser-Agent: kube-probe/1.30\r\nContent-Length: 3\r\n\r\nabc\
                    GET / HTTP/1.0\r\n\r\n";
        let mut reader = BufReader::new(text.as_bytes());
        let first = read_request(&mut reader).unwrap().unwrap();
        assert_eq!(
            first,
            Request {
                method: "POST".into(),
                target: "/x".into(),
                user_agent: "kube-probe/1.30".into(),
                keep_alive: true,
            }
        );
        let second = read_request(&mut reader).unwrap().unwrap();
        assert_eq!((second.target.as_str(), second.keep_alive), ("/", false));
        assert_eq!(read_request(&mut reader).unwrap(), None);
    }

    /// A stream that ends as a TLS stream does when the peer closes without close_notify.
    struct Truncated;

    impl Read for Truncated {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }

    #[test]
    fn unclean_tls_end_is_a_clean_end_only_between_requests() {
        let between = "GET / HTTP/1.1\r\n\r\n".as_bytes().chain(Truncated);
        let mut reader = BufReader::new(between);
        assert!(read_request(&mut reader).unwrap().is_some());
        assert_eq!(read_request(&mut reader).unwrap(), None);
        let within = "GET / HT".as_bytes().chain(Truncated);
        assert!(read_request(&mut BufReader::new(within)).is_err());
        let in_head = "GET / HTTP/1.1\r\nHost: x\r\n".as_bytes().chain(Truncated);
        assert!(read_request(&mut BufReader::new(in_head)).is_err());
    }

    #[test]
    fn connection_header_decides_keep_alive() {
        let close = request("GET / HTTP/1.1\r\nconnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!close.keep_alive);
        let keep = request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(keep.keep_alive);
    }

    #[test]
    fn rejects_malformed_requests() {
        for text in [
            "GET /\r\n\r\n",
            "GET / HTTP/1.1\r\nnocolon\r\n\r\n",
            "GET / HTTP/1.1\r\n",
        ] {
            assert!(request(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn routes() {
        let any = options(None, None);
        let healthz = options(Some("/healthz"), Some("kube-probe"));
        let head = Request {
            method: "HEAD".into(),
            ..get("/", "")
        };
        let post = Request {
            method: "POST".into(),
            ..get("/", "")
        };
        let cases = [
            (&get("/anything", ""), &any, false, (503, "not ready")),
            (
                &get("/ping", "kube-probe/1.30"),
                &healthz,
                false,
                (503, "not ready"),
            ),
            (&get("/anything?x=1", ""), &any, true, (200, "ok")),
            (&head, &any, true, (200, "ok")),
            (&post, &any, true, (405, "method not allowed")),
            (&get("/ping", ""), &any, true, (200, "pong")),
            (
                &get("/healthz?full", "kube-probe/1.30"),
                &healthz,
                true,
                (200, "ok"),
            ),
            (
                &get("/ping", "kube-probe/1.30"),
                &healthz,
                true,
                (200, "pong"),
            ),
            (
                &get("/other", "kube-probe/1.30"),
                &healthz,
                true,
                (404, "not found"),
            ),
            (&get("/ping", "curl/8"), &healthz, true, (403, "forbidden")),
            (&get("/healthz", ""), &healthz, true, (403, "forbidden")),
        ];
        for (request, options, ready, want) in cases {
            assert_eq!(
                route(request, options, ready),
                want,
                "{request:?} ready {ready}"
            );
        }
    }
}
