//! `Client`: the typed client of the API, as `cloudlet ctl` and the agents use it.
//!
//! Each method is one request; errors the server sends come back as [`ApiError::Status`] with the
//! server's message intact. The transport is one seam (`Transport`, in `transport.rs`): the local
//! unix socket, one connection per request, or `https://` with mutual TLS, which keeps one idle
//! connection for the next request (a streaming answer gets a connection of its own). Every request has a
//! deadline ([`RESPONSE_TIMEOUT`], until the whole answer, or the head of a streaming one), an
//! answer read whole is at most [`MAX_RESPONSE_BODY`] and a streamed line [`MAX_STREAM_LINE`]:
//! a server (or an agent, for the server's calls to it) that stalls or talks forever costs a
//! deadline, never a stuck task or unbounded memory. This module never
//! interprets what it receives beyond decoding it, and never chooses whom to trust: the rustls
//! config it is given does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use bytes::Bytes;
use futures_util::{Stream, stream};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_rustls::TlsConnector;

use crate::dto::{
    Action, ActionResponse, ApplyRequest, ApplyResponse, Assignments, CaRotateRequest,
    CertificateResponse, CloudpodsCredentials, ClusterApplied, ClusterDiff, ClusterRequest,
    ErrorBody, Event, EventsQuery, ExecRequest, Heartbeat, HeartbeatResponse, JoinRequest,
    LogsQuery, NetworkStatus, NodeAction, NodeStatus, RenewRequest, RevisionInfo, RollbackRequest,
    RolloutAction, RolloutInfo, RolloutRequest, RunRequest, ServiceDetail, ServiceStatus,
    ServicesQuery, TokenCreated, TokenInfo, TokenRequest,
};
use crate::transport::{Call, Lines, Transport};
use crate::{ApiError, EventStream, ExecStream, LogStream};

/// How long a request may take, by default, from connecting to its whole answer (to the head of
/// a streaming answer): longer than the server's own deadline for a request
/// ([`crate::limits::REQUEST_TIMEOUT`]), so that a slow server's 408 arrives first. Callers that
/// need an answer sooner (an agent's beat, a fan-out to agents) bound their calls themselves, or
/// set [`Client::with_timeout`].
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(70);

/// The largest answer read whole: a few thousand services' status is a few MiB. A larger one is
/// an error, not a reason to hold more memory.
pub const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

/// The longest line of a streaming answer: an exec chunk is at most 16 KiB of output (escaped,
/// some 100 KiB), a log line far less.
pub const MAX_STREAM_LINE: usize = 1024 * 1024;

/// A client of one cloudlet server. Cheap to clone: clones share the transport, and with it the
/// idle connection of an `https://` client.
#[derive(Debug, Clone)]
pub struct Client {
    transport: Arc<Transport>,
    /// [`RESPONSE_TIMEOUT`], or what [`Client::with_timeout`] set.
    timeout: Duration,
}

impl Client {
    /// A client of the server listening on the unix socket `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self {
            transport: Arc::new(Transport::Unix(path.into())),
            timeout: RESPONSE_TIMEOUT,
        }
    }

    /// The same client (sharing its connection), with `timeout` instead of [`RESPONSE_TIMEOUT`]
    /// for each request.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            transport: Arc::clone(&self.transport),
            timeout,
        }
    }

    /// A client of the server at `url` (`https://HOST:PORT`; HOST a DNS name, an IPv4 address
    /// or a bracketed IPv6 address; the port defaults to 443), over TLS with `config`: the roots
    /// it trusts the server by and the certificate it presents, if any. The server's certificate
    /// must name HOST. Nothing is connected yet.
    pub fn https(url: &str, config: Arc<ClientConfig>) -> Result<Self, ApiError> {
        let (authority, server_name) = parse_https_url(url).map_err(|why| {
            ApiError::Invalid(format!(
                "invalid server URL {url:?}: {why} (expected https://HOST:PORT)"
            ))
        })?;
        Ok(Self {
            transport: Arc::new(Transport::https(
                authority,
                server_name,
                TlsConnector::from(config),
            )),
            timeout: RESPONSE_TIMEOUT,
        })
    }

    /// A client of the server at `url` (as [`Client::https`]) whose certificate must name
    /// `name` rather than the URL's host: a cloudlet server reaches an agent at the address the
    /// agent gave and checks that the certificate is the node's, whose name only the cluster's
    /// CA puts in it.
    pub fn https_named(url: &str, name: &str, config: Arc<ClientConfig>) -> Result<Self, ApiError> {
        let server_name = ServerName::try_from(name.to_owned()).map_err(|_| {
            ApiError::Invalid(format!(
                "{name:?} cannot name a TLS server (not a DNS name or an IP address)"
            ))
        })?;
        let mut client = Self::https(url, config)?;
        // Just made: the transport is this client's alone.
        match Arc::get_mut(&mut client.transport) {
            Some(Transport::Https(https)) => https.expect_name(server_name),
            _ => {
                return Err(ApiError::Internal(format!(
                    "a client of {url} could not be bound to the name {name}"
                )));
            }
        }
        Ok(client)
    }

    /// Where the server is, for messages: its socket path or its `https://` URL.
    pub fn endpoint(&self) -> String {
        self.transport.describe()
    }

    /// Checks that the server answers.
    pub async fn healthz(&self) -> Result<(), ApiError> {
        let call = Call::new(Method::GET, "/v1/healthz".to_owned(), None);
        let (status, body) = self.fetch(&call).await?;
        check_status(status, &body)
    }

    /// Applies manifest files: `POST /v1/apply`.
    pub async fn apply(&self, request: &ApplyRequest) -> Result<ApplyResponse, ApiError> {
        self.call(Method::POST, "/v1/apply".to_owned(), Some(request))
            .await
    }

    /// The status of every service (of one node): `GET /v1/services`.
    pub async fn list_services(
        &self,
        query: &ServicesQuery,
    ) -> Result<Vec<ServiceStatus>, ApiError> {
        let target = with_query("/v1/services".to_owned(), &[("node", query.node.clone())]);
        self.call(Method::GET, target, None::<&()>).await
    }

    /// Everything about one service (its copy on `node`): `GET /v1/services/{name}`.
    pub async fn describe_service(
        &self,
        name: &str,
        node: Option<&str>,
    ) -> Result<ServiceDetail, ApiError> {
        let target = with_query(
            service_path(name, None),
            &[("node", node.map(str::to_owned))],
        );
        self.call(Method::GET, target, None::<&()>).await
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
        node: Option<&str>,
    ) -> Result<ActionResponse, ApiError> {
        let target = with_query(
            service_path(name, Some(action.as_str())),
            &[("node", node.map(str::to_owned))],
        );
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
                ("node", query.node.clone()),
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

    /// The network of one node, or of every node: `GET /v1/network`.
    pub async fn network(&self, node: Option<&str>) -> Result<Vec<NetworkStatus>, ApiError> {
        let target = with_query(
            "/v1/network".to_owned(),
            &[("node", node.map(str::to_owned))],
        );
        self.call(Method::GET, target, None::<&()>).await
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
            self.stream_with(Method::POST, "/v1/exec".to_owned(), Some(body.into()))
                .await?,
        ))
    }

    /// The CA certificates the cluster trusts (PEM): `GET /v1/cacerts`.
    pub async fn cacerts(&self) -> Result<String, ApiError> {
        let call = Call::new(Method::GET, "/v1/cacerts".to_owned(), None);
        let (status, body) = self.fetch(&call).await?;
        check_status(status, &body)?;
        String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::Invalid("GET /v1/cacerts: the answer is not text".into()))
    }

    /// Trades a join token and a CSR for a node certificate: `POST /v1/join`.
    pub async fn join(&self, request: &JoinRequest) -> Result<CertificateResponse, ApiError> {
        self.call(Method::POST, "/v1/join".to_owned(), Some(request))
            .await
    }

    /// Renews a node's certificate: `POST /v1/nodes/{name}/renew`.
    pub async fn renew(
        &self,
        node: &str,
        request: &RenewRequest,
    ) -> Result<CertificateResponse, ApiError> {
        self.call(Method::POST, node_path(node, "renew"), Some(request))
            .await
    }

    /// Reports that a node is alive: `POST /v1/nodes/{name}/heartbeat`.
    pub async fn heartbeat(
        &self,
        node: &str,
        heartbeat: &Heartbeat,
    ) -> Result<HeartbeatResponse, ApiError> {
        self.call(Method::POST, node_path(node, "heartbeat"), Some(heartbeat))
            .await
    }

    /// What a node should run: `GET /v1/nodes/{name}/assignments`.
    pub async fn assignments(&self, node: &str) -> Result<Assignments, ApiError> {
        self.call(Method::GET, node_path(node, "assignments"), None::<&()>)
            .await
    }

    /// Hands a node's events to the server: `POST /v1/nodes/{name}/events`.
    pub async fn push_events(&self, node: &str, events: &[Event]) -> Result<(), ApiError> {
        let _: serde_json::Value = self
            .call(Method::POST, node_path(node, "events"), Some(&events))
            .await?;
        Ok(())
    }

    /// Makes a join token: `POST /v1/tokens`.
    pub async fn create_token(&self, request: &TokenRequest) -> Result<TokenCreated, ApiError> {
        self.call(Method::POST, "/v1/tokens".to_owned(), Some(request))
            .await
    }

    /// The join tokens: `GET /v1/tokens`.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ApiError> {
        self.call(Method::GET, "/v1/tokens".to_owned(), None::<&()>)
            .await
    }

    /// Revokes a join token: `DELETE /v1/tokens/{id}`.
    pub async fn revoke_token(&self, id: &str) -> Result<ActionResponse, ApiError> {
        let target = format!("/v1/tokens/{}", encode(id));
        self.call(Method::DELETE, target, None::<&()>).await
    }

    /// Cordons, uncordons, drains or labels a node: `POST /v1/nodes/{name}/action`.
    pub async fn node_action(
        &self,
        node: &str,
        action: &NodeAction,
    ) -> Result<ActionResponse, ApiError> {
        self.call(Method::POST, node_path(node, "action"), Some(action))
            .await
    }

    /// Starts (or, with `finish`, ends) a rotation of the cluster's CA: `POST /v1/ca/rotate`.
    pub async fn rotate_ca(&self, request: &CaRotateRequest) -> Result<ActionResponse, ApiError> {
        self.call(Method::POST, "/v1/ca/rotate".to_owned(), Some(request))
            .await
    }

    /// Applies a cluster YAML: `POST /v1/cluster`.
    pub async fn apply_cluster(
        &self,
        request: &ClusterRequest,
    ) -> Result<ClusterApplied, ApiError> {
        self.call(Method::POST, "/v1/cluster".to_owned(), Some(request))
            .await
    }

    /// What a cluster YAML would change: `POST /v1/cluster/diff`.
    pub async fn diff_cluster(&self, request: &ClusterRequest) -> Result<ClusterDiff, ApiError> {
        self.call(Method::POST, "/v1/cluster/diff".to_owned(), Some(request))
            .await
    }

    /// The revisions: `GET /v1/cluster/revisions`.
    pub async fn cluster_history(&self) -> Result<Vec<RevisionInfo>, ApiError> {
        self.call(Method::GET, "/v1/cluster/revisions".to_owned(), None::<&()>)
            .await
    }

    /// The current cluster YAML: `GET /v1/cluster`.
    pub async fn export_cluster(&self) -> Result<String, ApiError> {
        let call = Call::new(Method::GET, "/v1/cluster".to_owned(), None);
        let (status, body) = self.fetch(&call).await?;
        check_status(status, &body)?;
        String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::Invalid("GET /v1/cluster: the answer is not text".into()))
    }

    /// The Cloudpods administrator: `GET /v1/cloudpods/credentials`.
    pub async fn cloudpods_credentials(&self) -> Result<CloudpodsCredentials, ApiError> {
        self.call(
            Method::GET,
            "/v1/cloudpods/credentials".to_owned(),
            None::<&()>,
        )
        .await
    }

    /// Applies an earlier revision again: `POST /v1/cluster/rollback`.
    pub async fn rollback_cluster(
        &self,
        request: &RollbackRequest,
    ) -> Result<ClusterApplied, ApiError> {
        self.call(
            Method::POST,
            "/v1/cluster/rollback".to_owned(),
            Some(request),
        )
        .await
    }

    /// The current rollout of a service: `GET /v1/rollouts/{name}`.
    pub async fn rollout(&self, name: &str) -> Result<RolloutInfo, ApiError> {
        let target = format!("/v1/rollouts/{}", encode(name));
        self.call(Method::GET, target, None::<&()>).await
    }

    /// Every kept rollout of a service: `GET /v1/rollouts/{name}/history`.
    pub async fn rollout_history(&self, name: &str) -> Result<Vec<RolloutInfo>, ApiError> {
        let target = format!("/v1/rollouts/{}/history", encode(name));
        self.call(Method::GET, target, None::<&()>).await
    }

    /// Pauses, resumes or undoes a rollout: `POST /v1/rollouts/{name}/{pause|resume|undo}`.
    pub async fn rollout_action(
        &self,
        name: &str,
        action: RolloutAction,
        request: &RolloutRequest,
    ) -> Result<RolloutInfo, ApiError> {
        let verb = match action {
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Undo => "undo",
        };
        let target = format!("/v1/rollouts/{}/{verb}", encode(name));
        self.call(Method::POST, target, Some(request)).await
    }

    /// Forgets a node: `DELETE /v1/nodes/{name}`.
    pub async fn delete_node(&self, node: &str) -> Result<ActionResponse, ApiError> {
        let target = format!("/v1/nodes/{}", encode(node));
        self.call(Method::DELETE, target, None::<&()>).await
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
            Some(body) => Some(
                serde_json::to_vec(body)
                    .map_err(|error| {
                        ApiError::Invalid(format!("cannot encode the body of {request}: {error}"))
                    })?
                    .into(),
            ),
            None => None,
        };
        let (status, bytes) = self.fetch(&Call::new(method, target, body)).await?;
        check_status(status, &bytes)?;
        serde_json::from_slice(&bytes).map_err(|source| ApiError::Decode { request, source })
    }

    /// A GET answered by an NDJSON stream of `T`.
    async fn stream<T: DeserializeOwned + Send + 'static>(
        &self,
        target: String,
    ) -> Result<impl Stream<Item = Result<T, ApiError>> + Send + 'static, ApiError> {
        self.stream_with(Method::GET, target, None).await
    }

    /// A request answered by an NDJSON stream of `T`, on a connection of its own.
    async fn stream_with<T: DeserializeOwned + Send + 'static>(
        &self,
        method: Method,
        target: String,
        body: Option<Bytes>,
    ) -> Result<impl Stream<Item = Result<T, ApiError>> + Send + 'static, ApiError> {
        let call = Call::new(method, target, body);
        let opened = async {
            let mut reply = self.transport.open(&call).await?;
            let status = reply.status();
            if !status.is_success() {
                let body = reply.read_all().await?;
                check_status(status, &body)?;
            }
            Ok(reply)
        };
        let reply = tokio::time::timeout(self.timeout, opened)
            .await
            .map_err(|_| self.transport.endpoint().timed_out(&call, self.timeout))??;
        let lines = Lines::new(reply, call.to_string());
        Ok(stream::unfold(Some(lines), |lines| async move {
            let mut lines = lines?;
            let item = lines.next_item().await?;
            let more = item.is_ok().then_some(lines);
            Some((item, more))
        }))
    }
}

impl Client {
    /// Sends `call` and reads its whole answer, within the client's deadline.
    async fn fetch(&self, call: &Call) -> Result<(StatusCode, Vec<u8>), ApiError> {
        tokio::time::timeout(self.timeout, self.transport.fetch(call))
            .await
            .map_err(|_| self.transport.endpoint().timed_out(call, self.timeout))?
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

/// The authority (`host:port`, IPv6 in brackets) and the server name of an `https://` URL, or
/// what is wrong with it.
pub(crate) fn parse_https_url(url: &str) -> Result<(String, ServerName<'static>), String> {
    let invalid = |why: &str| why.to_owned();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("no scheme"))?;
    if !scheme.eq_ignore_ascii_case("https") {
        return Err(invalid(&format!(
            "the scheme is {scheme:?}; only https is supported"
        )));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(invalid("only a host and a port may follow https://"));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("no ] after the IPv6 address"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| invalid("only :PORT may follow the IPv6 address"))?,
                    ),
                ),
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            Some(_) => return Err(invalid("an IPv6 address must be in brackets")),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    let port = match port {
        None => 443,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| invalid(&format!("port {port:?} is not a number from 1 to 65535")))?,
    };
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|_| invalid(&format!("{host:?} is not a DNS name or an IP address")))?;
    let authority = match server_name {
        ServerName::IpAddress(rustls::pki_types::IpAddr::V6(_)) => format!("[{host}]:{port}"),
        _ => format!("{host}:{port}"),
    };
    Ok((authority, server_name))
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

fn node_path(node: &str, sub: &str) -> String {
    format!("/v1/nodes/{}/{sub}", encode(node))
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
