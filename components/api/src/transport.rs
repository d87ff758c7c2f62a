//! How the client's requests reach the server: the local unix socket (a connection per request)
//! or `https://` with mutual TLS (one kept connection, a request sent again once on a fresh
//! connection when the kept one went away before it was sent), each answer read within its caps
//! and NDJSON answers decoded line by line. The one place of the client that knows about sockets,
//! TLS and HTTP framing; what the requests mean is [`crate::Client`]'s.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::http::{Method, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use tokio::net::{TcpStream, UnixStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use crate::ApiError;
use crate::client::{MAX_RESPONSE_BODY, MAX_STREAM_LINE};
use crate::dto::ErrorBody;

/// How long connecting to an `https://` server, TLS handshake included, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One request, kept whole so that it can be sent again on a fresh connection.
#[derive(Debug)]
pub(crate) struct Call {
    method: Method,
    target: String,
    body: Option<Bytes>,
}

impl Call {
    pub(crate) fn new(method: Method, target: String, body: Option<Bytes>) -> Self {
        Self {
            method,
            target,
            body,
        }
    }

    /// The HTTP request, with `host` as its `Host`.
    fn request(&self, host: &str) -> Result<Request<Full<Bytes>>, ApiError> {
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(&self.target)
            .header(header::HOST, host);
        if self.body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        request
            .body(Full::new(self.body.clone().unwrap_or_default()))
            .map_err(|error| ApiError::Invalid(format!("cannot build the request {self}: {error}")))
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.target)
    }
}

/// How requests reach the server. The one place that knows about sockets and TLS.
#[derive(Debug)]
pub(crate) enum Transport {
    /// The local unix socket: a connection per request.
    Unix(PathBuf),
    /// A remote server over mutual TLS.
    Https(Https),
}

impl Transport {
    /// A server at `https://authority`, whose certificate must name `server_name`.
    pub(crate) fn https(
        authority: String,
        server_name: ServerName<'static>,
        connector: TlsConnector,
    ) -> Self {
        Self::Https(Https {
            url: format!("https://{authority}"),
            authority,
            server_name,
            connector,
            idle: Mutex::new(None),
        })
    }

    /// Where the server is, for messages: its socket path or its `https://` URL.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Unix(path) => path.display().to_string(),
            Self::Https(https) => https.url.clone(),
        }
    }

    /// The server, as errors name it.
    pub(crate) fn endpoint(&self) -> Endpoint {
        match self {
            Self::Unix(path) => Endpoint::Unix(path.clone()),
            Self::Https(https) => https.endpoint(),
        }
    }

    /// Sends `call` and reads its whole answer.
    pub(crate) async fn fetch(&self, call: &Call) -> Result<(StatusCode, Vec<u8>), ApiError> {
        match self {
            Self::Unix(_) => {
                let mut reply = self.open(call).await?;
                let body = reply.read_all().await?;
                Ok((reply.response.status(), body))
            }
            Self::Https(https) => https.fetch(call).await,
        }
    }

    /// Sends `call` on a fresh connection that the answer keeps until it is dropped.
    pub(crate) async fn open(&self, call: &Call) -> Result<Reply, ApiError> {
        match self {
            Self::Unix(path) => {
                let stream =
                    UnixStream::connect(path)
                        .await
                        .map_err(|source| ApiError::Connect {
                            path: path.clone(),
                            source,
                        })?;
                let endpoint = Endpoint::Unix(path.clone());
                let mut connection = handshake(TokioIo::new(stream), &endpoint).await?;
                let response = connection
                    .sender
                    .send_request(call.request("localhost")?)
                    .await
                    .map_err(|error| endpoint.lost(error))?;
                Ok(Reply {
                    response,
                    endpoint,
                    connection: connection.task,
                })
            }
            Self::Https(https) => {
                let mut connection = https.connect().await?;
                let response = connection
                    .sender
                    .send_request(call.request(&https.authority)?)
                    .await
                    .map_err(|error| https.endpoint().lost(error))?;
                Ok(Reply {
                    response,
                    endpoint: https.endpoint(),
                    connection: connection.task,
                })
            }
        }
    }
}

/// A server at an `https://` URL, and the one idle connection kept for its next request.
pub(crate) struct Https {
    /// `https://` and the authority, for messages.
    url: String,
    /// `host:port`, to connect to and to send as `Host`.
    authority: String,
    /// The name the server's certificate must carry.
    server_name: ServerName<'static>,
    connector: TlsConnector,
    /// A connection whose last answer was read whole, ready for another request.
    idle: Mutex<Option<Connection>>,
}

impl fmt::Debug for Https {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Https")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Https {
    /// Checks the server's certificate against `name` instead of the URL's host.
    pub(crate) fn expect_name(&mut self, name: ServerName<'static>) {
        self.server_name = name;
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Https(self.url.clone())
    }

    /// Sends `call` on the idle connection if it is still open, else on a new one, and reads the
    /// whole answer; the connection is then kept for the next call.
    ///
    /// A request that fails on the kept connection before it was sent (the server closed the
    /// connection meanwhile), or a GET that fails on it, is sent again once on a new connection.
    async fn fetch(&self, call: &Call) -> Result<(StatusCode, Vec<u8>), ApiError> {
        let kept = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut connection) = kept
            && connection.sender.ready().await.is_ok()
        {
            match connection
                .sender
                .try_send_request(call.request(&self.authority)?)
                .await
            {
                Ok(response) => return self.finish(connection, response).await,
                Err(mut error) => {
                    let unsent = error.take_message().is_some();
                    if !unsent && call.method != Method::GET {
                        return Err(self.endpoint().lost(error.into_error()));
                    }
                    tracing::debug!(
                        error = %error.into_error(),
                        "api client connection went away; sending on a new one"
                    );
                }
            }
        }
        let mut connection = self.connect().await?;
        let response = connection
            .sender
            .send_request(call.request(&self.authority)?)
            .await
            .map_err(|error| self.endpoint().lost(error))?;
        self.finish(connection, response).await
    }

    /// Reads the answer whole, then keeps its connection for the next call.
    async fn finish(
        &self,
        connection: Connection,
        response: Response<Incoming>,
    ) -> Result<(StatusCode, Vec<u8>), ApiError> {
        let Connection { sender, task } = connection;
        let mut reply = Reply {
            response,
            endpoint: self.endpoint(),
            connection: task,
        };
        let body = reply.read_all().await?;
        let status = reply.response.status();
        let connection = Connection {
            sender,
            task: reply.connection,
        };
        // One idle connection is enough: a concurrent call's connection is replaced and closes.
        *self.idle.lock().unwrap_or_else(PoisonError::into_inner) = Some(connection);
        Ok((status, body))
    }

    /// A new connection: TCP, the TLS handshake (bounded by [`CONNECT_TIMEOUT`]), HTTP/1.1.
    async fn connect(&self) -> Result<Connection, ApiError> {
        let unreachable = |source| ApiError::Unreachable {
            url: self.url.clone(),
            source,
        };
        let connecting = async {
            let tcp = TcpStream::connect(&self.authority)
                .await
                .map_err(unreachable)?;
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            self.connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|error| {
                    unreachable(io::Error::new(
                        error.kind(),
                        format!("TLS handshake failed: {error}"),
                    ))
                })
        };
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| unreachable(io::Error::new(io::ErrorKind::TimedOut, "timed out")))??;
        handshake(TokioIo::new(tls), &self.endpoint()).await
    }
}

/// An HTTP/1.1 client connection: where to send requests, and the task driving it (aborted, which
/// closes the connection, when dropped).
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    task: AbortOnDrop,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

/// Starts HTTP/1.1 on `io`.
async fn handshake<I>(io: I, endpoint: &Endpoint) -> Result<Connection, ApiError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| endpoint.lost(error))?;
    let task = AbortOnDrop(tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "api client connection ended with an error");
        }
    }));
    Ok(Connection { sender, task })
}

/// The server a connection goes to, as its errors name it.
#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    Unix(PathBuf),
    Https(String),
}

impl Endpoint {
    /// `call` got no (whole) answer within `deadline`.
    pub(crate) fn timed_out(&self, call: &Call, deadline: Duration) -> ApiError {
        let error = io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{call} got no answer within {deadline:?}"),
        );
        self.lost(error)
    }

    /// The connection to this server broke. The message has every cause in `error`'s chain:
    /// hyper's own says only "connection error", while its source says which TLS alert ended it.
    fn lost(&self, error: impl std::error::Error) -> ApiError {
        let mut message = error.to_string();
        let mut cause = error.source();
        while let Some(error) = cause {
            message.push_str(": ");
            message.push_str(&error.to_string());
            cause = error.source();
        }
        let source = io::Error::other(message);
        match self {
            Self::Unix(path) => ApiError::Io {
                path: path.clone(),
                source,
            },
            Self::Https(url) => ApiError::Lost {
                url: url.clone(),
                source,
            },
        }
    }
}

/// A response, and the connection it arrives on: dropping the reply closes the connection.
pub(crate) struct Reply {
    response: Response<Incoming>,
    endpoint: Endpoint,
    /// The task driving the connection; it must live as long as the body is read.
    connection: AbortOnDrop,
}

impl Reply {
    /// The answer's status.
    pub(crate) fn status(&self) -> StatusCode {
        self.response.status()
    }

    async fn next_data(&mut self) -> Option<Result<Bytes, ApiError>> {
        loop {
            match self.response.body_mut().frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Err(error) => return Some(Err(self.endpoint.lost(error))),
            }
        }
    }

    /// The whole body, at most [`MAX_RESPONSE_BODY`] bytes.
    pub(crate) async fn read_all(&mut self) -> Result<Vec<u8>, ApiError> {
        let mut body = Vec::new();
        while let Some(data) = self.next_data().await {
            let data = data?;
            if body.len().saturating_add(data.len()) > MAX_RESPONSE_BODY {
                return Err(self.endpoint.lost(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the answer is larger than {MAX_RESPONSE_BODY} bytes"),
                )));
            }
            body.extend_from_slice(&data);
        }
        Ok(body)
    }
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The NDJSON decoder of a streaming reply.
pub(crate) struct Lines {
    reply: Reply,
    buffer: Vec<u8>,
    request: String,
}

impl Lines {
    /// The decoder of `reply`, an answer to `request` (for messages).
    pub(crate) fn new(reply: Reply, request: String) -> Self {
        Self {
            reply,
            buffer: Vec::new(),
            request,
        }
    }

    /// The next item; `None` at the end of the stream. An error ends the stream.
    pub(crate) async fn next_item<T: DeserializeOwned>(&mut self) -> Option<Result<T, ApiError>> {
        let mut searched = 0;
        loop {
            if let Some(offset) = self.buffer[searched..].iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=searched + offset).collect();
                searched = 0;
                if line.trim_ascii().is_empty() {
                    continue;
                }
                return Some(self.decode(&line));
            }
            searched = self.buffer.len();
            if searched > MAX_STREAM_LINE {
                return Some(Err(self.reply.endpoint.lost(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a line of the answer is longer than {MAX_STREAM_LINE} bytes"),
                ))));
            }
            match self.reply.next_data().await {
                Some(Ok(data)) => self.buffer.extend_from_slice(&data),
                Some(Err(error)) => return Some(Err(error)),
                None => {
                    // The server always ends lines, but a last line without one is still a line.
                    let rest = std::mem::take(&mut self.buffer);
                    return (!rest.trim_ascii().is_empty()).then(|| self.decode(&rest));
                }
            }
        }
    }

    /// An item, or the server's final `{"error": ...}` line as an error.
    fn decode<T: DeserializeOwned>(&self, line: &[u8]) -> Result<T, ApiError> {
        serde_json::from_slice(line).map_err(|source| {
            match serde_json::from_slice::<ErrorBody>(line) {
                Ok(body) => ApiError::Status {
                    code: StatusCode::INTERNAL_SERVER_ERROR.as_u16(),
                    message: body.error,
                },
                Err(_) => ApiError::Decode {
                    request: self.request.clone(),
                    source,
                },
            }
        })
    }
}
