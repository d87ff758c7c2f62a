//! `Client`: the typed client of the API, as `cloudlet ctl` uses it.
//!
//! Each method is one request; errors the server sends come back as [`ApiError::Status`] with the
//! server's message intact. The transport is one seam (`Transport`): today a unix socket, one
//! connection per request; mutual TLS is to be added there. This module never interprets what it
//! receives beyond decoding it.

use std::io;
use std::path::{Path, PathBuf};

use axum::http::{Method, Request, Response, StatusCode, header};
use bytes::Bytes;
use futures_util::{Stream, stream};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use crate::dto::{
    Action, ActionResponse, ApplyRequest, ApplyResponse, ErrorBody, EventsQuery, ExecRequest,
    LogsQuery, NodeStatus, RunRequest, ServiceDetail, ServiceStatus,
};
use crate::{ApiError, EventStream, ExecStream, LogStream};

/// A client of one cloudlet server.
#[derive(Debug, Clone)]
pub struct Client {
    transport: Transport,
}

impl Client {
    /// A client of the server listening on the unix socket `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self {
            transport: Transport::Unix(path.into()),
        }
    }

    /// Checks that the server answers.
    pub async fn healthz(&self) -> Result<(), ApiError> {
        let target = "/v1/healthz".to_owned();
        let mut reply = self.send(Method::GET, &target, None).await?;
        let body = reply.read_all().await?;
        check_status(reply.response.status(), &body)
    }

    /// Applies manifest files: `POST /v1/apply`.
    pub async fn apply(&self, request: &ApplyRequest) -> Result<ApplyResponse, ApiError> {
        self.call(Method::POST, "/v1/apply".to_owned(), Some(request))
            .await
    }

    /// The status of every service: `GET /v1/services`.
    pub async fn list_services(&self) -> Result<Vec<ServiceStatus>, ApiError> {
        self.call(Method::GET, "/v1/services".to_owned(), None::<&()>)
            .await
    }

    /// Everything about one service: `GET /v1/services/{name}`.
    pub async fn describe_service(&self, name: &str) -> Result<ServiceDetail, ApiError> {
        self.call(Method::GET, service_path(name, None), None::<&()>)
            .await
    }

    /// Deletes one service: `DELETE /v1/services/{name}`.
    pub async fn delete_service(&self, name: &str) -> Result<ActionResponse, ApiError> {
        self.call(Method::DELETE, service_path(name, None), None::<&()>)
            .await
    }

    /// Starts, stops or restarts one service: `POST /v1/services/{name}/{action}`.
    pub async fn service_action(
        &self,
        name: &str,
        action: Action,
    ) -> Result<ActionResponse, ApiError> {
        let target = service_path(name, Some(action.as_str()));
        self.call(Method::POST, target, None::<&()>).await
    }

    /// One service's log lines: `GET /v1/services/{name}/logs`. With `follow`, the stream runs
    /// until it is dropped (which closes the connection) or the server goes away.
    pub async fn logs(&self, name: &str, query: &LogsQuery) -> Result<LogStream, ApiError> {
        let target = with_query(
            service_path(name, Some("logs")),
            &[
                ("follow", query.follow.then(|| "true".to_owned())),
                ("tail", query.tail.map(|n| n.to_string())),
                ("since", query.since.map(|t| t.to_string())),
                ("previous", query.previous.then(|| "true".to_owned())),
            ],
        );
        Ok(Box::pin(self.stream(target).await?))
    }

    /// Events, oldest first: `GET /v1/events`. With `follow`, the stream runs until it is dropped
    /// (which closes the connection) or the server goes away.
    pub async fn events(&self, query: &EventsQuery) -> Result<EventStream, ApiError> {
        let target = with_query(
            "/v1/events".to_owned(),
            &[
                ("follow", query.follow.then(|| "true".to_owned())),
                ("service", query.service.clone()),
                ("sinceRevision", query.since_revision.map(|n| n.to_string())),
                ("limit", query.limit.map(|n| n.to_string())),
            ],
        );
        Ok(Box::pin(self.stream(target).await?))
    }

    /// The nodes: `GET /v1/nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>, ApiError> {
        self.call(Method::GET, "/v1/nodes".to_owned(), None::<&()>)
            .await
    }

    /// Starts a transient service: `POST /v1/run`.
    pub async fn run(&self, request: &RunRequest) -> Result<ActionResponse, ApiError> {
        self.call(Method::POST, "/v1/run".to_owned(), Some(request))
            .await
    }

    /// Runs a command on the host: `POST /v1/exec`, answered by its output as it comes, then
    /// an item with its exit.
    pub async fn exec(&self, request: &ExecRequest) -> Result<ExecStream, ApiError> {
        let body = serde_json::to_vec(request).map_err(|error| {
            ApiError::Invalid(format!("cannot encode the body of POST /v1/exec: {error}"))
        })?;
        Ok(Box::pin(
            self.stream_with(Method::POST, "/v1/exec".to_owned(), Some(body))
                .await?,
        ))
    }

    /// One request with an optional JSON body, answered by one JSON document.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        target: String,
        body: Option<&impl Serialize>,
    ) -> Result<T, ApiError> {
        let request = format!("{method} {target}");
        let body = match body {
            Some(body) => Some(serde_json::to_vec(body).map_err(|error| {
                ApiError::Invalid(format!("cannot encode the body of {request}: {error}"))
            })?),
            None => None,
        };
        let mut reply = self.send(method, &target, body).await?;
        let bytes = reply.read_all().await?;
        check_status(reply.response.status(), &bytes)?;
        serde_json::from_slice(&bytes).map_err(|source| ApiError::Decode { request, source })
    }

    /// A GET answered by an NDJSON stream of `T`.
    async fn stream<T: DeserializeOwned + Send + 'static>(
        &self,
        target: String,
    ) -> Result<impl Stream<Item = Result<T, ApiError>> + Send + 'static, ApiError> {
        self.stream_with(Method::GET, target, None).await
    }

    /// A request answered by an NDJSON stream of `T`.
    async fn stream_with<T: DeserializeOwned + Send + 'static>(
        &self,
        method: Method,
        target: String,
        body: Option<Vec<u8>>,
    ) -> Result<impl Stream<Item = Result<T, ApiError>> + Send + 'static, ApiError> {
        let mut reply = self.send(method.clone(), &target, body).await?;
        let status = reply.response.status();
        if !status.is_success() {
            let body = reply.read_all().await?;
            check_status(status, &body)?;
        }
        let lines = Lines {
            reply,
            buffer: Vec::new(),
            request: format!("{method} {target}"),
        };
        Ok(stream::unfold(Some(lines), |lines| async move {
            let mut lines = lines?;
            let item = lines.next_item().await?;
            let more = item.is_ok().then_some(lines);
            Some((item, more))
        }))
    }

    async fn send(
        &self,
        method: Method,
        target: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, ApiError> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(target)
            .header(header::HOST, "localhost");
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|error| {
                ApiError::Invalid(format!(
                    "cannot build the request {method} {target}: {error}"
                ))
            })?;
        self.transport.send(request).await
    }
}

/// How requests reach the server. The one place that knows about sockets; mutual TLS goes here.
#[derive(Debug, Clone)]
enum Transport {
    /// The local unix socket.
    Unix(PathBuf),
}

impl Transport {
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Reply, ApiError> {
        match self {
            Self::Unix(path) => {
                let stream =
                    UnixStream::connect(path)
                        .await
                        .map_err(|source| ApiError::Connect {
                            path: path.clone(),
                            source,
                        })?;
                exchange(TokioIo::new(stream), request, path).await
            }
        }
    }
}

/// Sends `request` over a fresh HTTP/1.1 connection on `io`.
async fn exchange<I>(io: I, request: Request<Full<Bytes>>, path: &Path) -> Result<Reply, ApiError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let io_error = |error: hyper::Error| ApiError::Io {
        path: path.to_owned(),
        source: io::Error::other(error),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(io_error)?;
    let connection = AbortOnDrop(tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "api client connection ended with an error");
        }
    }));
    let response = sender.send_request(request).await.map_err(io_error)?;
    Ok(Reply {
        response,
        path: path.to_owned(),
        _connection: connection,
    })
}

/// A response, and the connection it arrives on: dropping the reply closes the connection.
struct Reply {
    response: Response<Incoming>,
    path: PathBuf,
    _connection: AbortOnDrop,
}

impl Reply {
    async fn next_data(&mut self) -> Option<Result<Bytes, ApiError>> {
        loop {
            match self.response.body_mut().frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Err(error) => {
                    return Some(Err(ApiError::Io {
                        path: self.path.clone(),
                        source: io::Error::other(error),
                    }));
                }
            }
        }
    }

    async fn read_all(&mut self) -> Result<Vec<u8>, ApiError> {
        let mut body = Vec::new();
        while let Some(data) = self.next_data().await {
            body.extend_from_slice(&data?);
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
struct Lines {
    reply: Reply,
    buffer: Vec<u8>,
    request: String,
}

impl Lines {
    /// The next item; `None` at the end of the stream. An error ends the stream.
    async fn next_item<T: DeserializeOwned>(&mut self) -> Option<Result<T, ApiError>> {
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

/// `Ok` for a success status; otherwise the server's error message as [`ApiError::Status`].
fn check_status(status: StatusCode, body: &[u8]) -> Result<(), ApiError> {
    if status.is_success() {
        return Ok(());
    }
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => body.error,
        Err(_) => match String::from_utf8_lossy(body).trim() {
            "" => format!("the server answered {status}"),
            text => text.to_owned(),
        },
    };
    Err(ApiError::Status {
        code: status.as_u16(),
        message,
    })
}

/// `/v1/services/{name}` or `/v1/services/{name}/{sub}`.
fn service_path(name: &str, sub: Option<&str>) -> String {
    let mut path = format!("/v1/services/{}", encode(name));
    if let Some(sub) = sub {
        path.push('/');
        path.push_str(sub);
    }
    path
}

/// Appends the present `pairs` to `path` as a query string.
fn with_query(mut path: String, pairs: &[(&str, Option<String>)]) -> String {
    let mut separator = '?';
    for (key, value) in pairs {
        if let Some(value) = value {
            path.push(separator);
            path.push_str(key);
            path.push('=');
            path.push_str(&encode(value));
            separator = '&';
        }
    }
    path
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_encoded_and_skip_absent_values() {
        let target = with_query(
            service_path("a b/c", Some("logs")),
            &[
                ("follow", Some("true".to_owned())),
                ("tail", None),
                ("since", Some("2024-01-01T00:00:00+01:00".to_owned())),
            ],
        );
        assert_eq!(
            target,
            "/v1/services/a%20b%2Fc/logs?follow=true&since=2024-01-01T00%3A00%3A00%2B01%3A00"
        );
    }

    #[test]
    fn error_status_keeps_the_server_message_or_says_what_came() {
        let error = check_status(StatusCode::CONFLICT, br#"{"error":"line 1\nline 2"}"#);
        let Err(ApiError::Status { code, message }) = error else {
            panic!("{error:?}");
        };
        assert_eq!((code, &*message), (409, "line 1\nline 2"));
        let error = check_status(StatusCode::BAD_GATEWAY, b"");
        let Err(ApiError::Status { code, message }) = error else {
            panic!("{error:?}");
        };
        assert_eq!(
            (code, &*message),
            (502, "the server answered 502 Bad Gateway")
        );
        assert!(check_status(StatusCode::OK, b"").is_ok());
    }
}
