//! The `serve` mode: a minimal HTTP/1.1 server on 127.0.0.1 (a thread per connection,
//! keep-alive) with a readiness delay, an optional health path and a User-Agent whitelist.
//!
//! It only answers what `route` decides; it must never listen on anything but 127.0.0.1, or the
//! address `--bind` names, which tests pass only inside a network namespace of their own.

use std::convert::Infallible;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::args::Serve;

/// An idle keep-alive connection is closed after this long, so its thread ends.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Binds the address and port, logs `listening on ADDR`, and serves until the process ends.
pub fn serve(options: &Serve) -> Result<Infallible, String> {
    let listener = TcpListener::bind((options.bind, options.port))
        .map_err(|e| format!("serve: binding {}:{}: {e}", options.bind, options.port))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("serve: local address: {e}"))?;
    say!("listening on {address}");
    let ready_at = Instant::now() + options.ready_after;
    let options = Arc::new(options.clone());
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(error) => {
                say!("serve: accept: {error}");
                continue;
            }
        };
        let options = Arc::clone(&options);
        let spawned = thread::Builder::new()
            .name("connection".into())
            .spawn(move || connection(stream, &options, ready_at));
        if let Err(error) = spawned {
            say!("serve: starting a connection thread: {error}");
        }
    }
}

/// The parts of a request that `route` looks at.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    method: String,
    target: String,
    user_agent: String,
    keep_alive: bool,
}

/// Serves requests on one connection until the client or an error closes it.
fn connection(stream: TcpStream, options: &Serve, ready_at: Instant) {
    let result = stream
        .set_read_timeout(Some(IDLE_TIMEOUT))
        .and_then(|()| stream.try_clone());
    let mut reader = match result {
        Ok(clone) => BufReader::new(clone),
        Err(error) => return say!("serve: {error}"),
    };
    let mut writer = stream;
    loop {
        let request = match read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(error) => {
                let _ = respond(&mut writer, 400, "bad request", false, false);
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
        if respond(&mut writer, status, body, head, request.keep_alive).is_err()
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
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
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
