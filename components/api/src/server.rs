//! The HTTP side of the API: the routes (`router`), and serving HTTP/1.1 on one connection of any
//! listener under its deadlines (`serve_http1`, with `accept_until` the loop every listener runs).
//!
//! Handlers parse the request into DTOs, call the [`Backend`] and encode its answer; the status of
//! an error comes from [`ApiError::status_code`]. The router knows nothing about its listener, so
//! the same router can be served over mutual TLS. This module never decides anything about
//! services: it translates.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Json, Path as UrlPath, Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::dto::{
    Action, ActionResponse, ApplyRequest, ApplyResponse, Assignments, CaRotateRequest,
    CertificateResponse, CloudpodsCredentials, ClusterApplied, ClusterDiff, ClusterRequest,
    ErrorBody, Event, EventsQuery, ExecRequest, Heartbeat, HeartbeatResponse, JoinRequest,
    LogsQuery, NetworkStatus, NodeAction, NodeQuery, NodeStatus, RenewRequest, RevisionInfo,
    RollbackRequest, RolloutAction, RolloutInfo, RolloutRequest, RunRequest, ServiceDetail,
    ServiceStatus, ServicesQuery, TokenCreated, TokenInfo, TokenRequest,
};
use crate::limits::MAX_HEAD_BYTES;
use crate::{ApiError, Backend, Caller, Socket};

/// Content type of the streaming endpoints: one JSON document per line.
pub const NDJSON: &str = "application/x-ndjson";

/// How long in-flight requests get to finish after shutdown before their connections are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The API's routes over `backend`, independent of the listener.
pub fn router<B: Backend>(backend: Arc<B>) -> Router {
    Router::new()
        .route("/v1/healthz", get(healthz))
        .route("/v1/apply", post(apply::<B>))
        .route("/v1/services", get(list_services::<B>))
        .route(
            "/v1/services/{name}",
            get(describe_service::<B>).delete(delete_service::<B>),
        )
        .route(
            "/v1/services/{name}/start",
            action_route::<B>(Action::Start),
        )
        .route("/v1/services/{name}/stop", action_route::<B>(Action::Stop))
        .route(
            "/v1/services/{name}/restart",
            action_route::<B>(Action::Restart),
        )
        .route("/v1/services/{name}/logs", get(logs::<B>))
        .route("/v1/events", get(events::<B>))
        .route("/v1/run", post(run::<B>))
        .route("/v1/nodes", get(nodes::<B>))
        .route("/v1/network", get(network::<B>))
        .route("/v1/exec", post(exec::<B>))
        .route("/v1/cacerts", get(cacerts::<B>))
        .route("/v1/join", post(join::<B>))
        .route("/v1/tokens", get(list_tokens::<B>).post(create_token::<B>))
        .route("/v1/tokens/{id}", delete(revoke_token::<B>))
        .route("/v1/nodes/{name}", delete(delete_node::<B>))
        .route("/v1/nodes/{name}/heartbeat", post(heartbeat::<B>))
        .route("/v1/nodes/{name}/assignments", get(assignments::<B>))
        .route("/v1/nodes/{name}/events", post(push_events::<B>))
        .route("/v1/nodes/{name}/renew", post(renew::<B>))
        .route("/v1/nodes/{name}/action", post(node_action::<B>))
        .route("/v1/ca/rotate", post(rotate_ca::<B>))
        .route(
            "/v1/cluster",
            get(export_cluster::<B>).post(apply_cluster::<B>),
        )
        .route("/v1/cluster/diff", post(diff_cluster::<B>))
        .route("/v1/cloudpods/credentials", get(cloudpods_credentials::<B>))
        .route("/v1/cluster/revisions", get(cluster_history::<B>))
        .route("/v1/cluster/rollback", post(rollback_cluster::<B>))
        .route("/v1/rollouts/{name}", get(rollout::<B>))
        .route("/v1/rollouts/{name}/history", get(rollout_history::<B>))
        .route(
            "/v1/rollouts/{name}/pause",
            rollout_route::<B>(RolloutAction::Pause),
        )
        .route(
            "/v1/rollouts/{name}/resume",
            rollout_route::<B>(RolloutAction::Resume),
        )
        .route(
            "/v1/rollouts/{name}/undo",
            rollout_route::<B>(RolloutAction::Undo),
        )
        // Applies to the routes above: decided before any handler or body extraction runs.
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&backend),
            crate::authz::layer::<B>,
        ))
        .fallback(no_route)
        // Must come after the routes: it applies to those registered before it.
        .method_not_allowed_fallback(method_not_allowed)
        // Every body extractor stops reading past it (413).
        .layer(DefaultBodyLimit::max(crate::limits::MAX_REQUEST_BODY))
        .with_state(backend)
}

/// An error answer: a status and an [`ErrorBody`].
#[derive(Debug)]
pub(crate) struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        let status = error.status_code();
        if status.is_server_error() {
            tracing::warn!(%status, %error, "api request failed");
        }
        Self(status, error.to_string())
    }
}

impl From<JsonRejection> for Failure {
    fn from(rejection: JsonRejection) -> Self {
        Self(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for Failure {
    fn from(rejection: QueryRejection) -> Self {
        Self(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for Failure {
    fn from(rejection: PathRejection) -> Self {
        Self(rejection.status(), rejection.body_text())
    }
}

type Shared<B> = State<Arc<B>>;

async fn healthz() -> &'static str {
    "ok"
}

async fn apply<B: Backend>(
    State(backend): Shared<B>,
    request: Result<Json<ApplyRequest>, JsonRejection>,
) -> Result<Json<ApplyResponse>, Failure> {
    let Json(request) = request?;
    Ok(Json(backend.apply(request).await?))
}

async fn list_services<B: Backend>(
    State(backend): Shared<B>,
    who: Option<Extension<Caller>>,
    query: Result<Query<ServicesQuery>, QueryRejection>,
) -> Result<Json<Vec<ServiceStatus>>, Failure> {
    let Query(query) = query?;
    let who = caller(who);
    let mut services = backend.list_services(query).await?;
    if who.socket == Socket::Executor {
        // A service sees only the transient services it started.
        let me = backend.executor_caller(&who).await?;
        services.retain(|s| s.owner.as_deref() == Some(me.as_str()));
    }
    Ok(Json(services))
}

/// On the executor socket, a service may act only on the transient services it started.
async fn check_own<B: Backend>(backend: &B, who: &Caller, name: &str) -> Result<(), ApiError> {
    if who.socket != Socket::Executor {
        return Ok(());
    }
    let me = backend.executor_caller(who).await?;
    let services = backend.list_services(ServicesQuery::default()).await?;
    match services.iter().find(|s| s.name == name) {
        Some(s) if s.owner.as_deref() == Some(me.as_str()) => Ok(()),
        Some(_) => Err(ApiError::Forbidden(format!(
            "service {name} was not started by {me}: on the executor socket a service may stop \
             only the transient services it started"
        ))),
        None => Err(ApiError::NotFound(format!("service {name:?} not found"))),
    }
}

async fn describe_service<B: Backend>(
    State(backend): Shared<B>,
    name: Result<UrlPath<String>, PathRejection>,
    node: Result<Query<NodeQuery>, QueryRejection>,
) -> Result<Json<ServiceDetail>, Failure> {
    let UrlPath(name) = name?;
    let Query(node) = node?;
    Ok(Json(backend.describe_service(&name, node).await?))
}

async fn delete_service<B: Backend>(
    State(backend): Shared<B>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<ActionResponse>, Failure> {
    let UrlPath(name) = name?;
    Ok(Json(backend.delete_service(&name).await?))
}

fn action_route<B: Backend>(action: Action) -> MethodRouter<Arc<B>> {
    post(
        move |State(backend): Shared<B>,
              who: Option<Extension<Caller>>,
              name: Result<UrlPath<String>, PathRejection>,
              node: Result<Query<NodeQuery>, QueryRejection>| async move {
            let UrlPath(name) = name?;
            let Query(node) = node?;
            check_own(&*backend, &caller(who), &name).await?;
            Ok::<_, Failure>(Json(backend.service_action(&name, action, node).await?))
        },
    )
}

async fn logs<B: Backend>(
    State(backend): Shared<B>,
    shutdown: Option<Extension<Shutdown>>,
    name: Result<UrlPath<String>, PathRejection>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let UrlPath(name) = name?;
    let Query(query) = query?;
    let lines = backend.logs(&name, query).await?;
    Ok(ndjson(lines, shutdown.map(|Extension(s)| s)))
}

async fn events<B: Backend>(
    State(backend): Shared<B>,
    shutdown: Option<Extension<Shutdown>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let Query(query) = query?;
    let events = backend.events(query).await?;
    Ok(ndjson(events, shutdown.map(|Extension(s)| s)))
}

/// The caller of a request: put in by the listener per connection; a router served without it
/// (tests) sees an unknown caller on the API socket.
fn caller(ext: Option<Extension<Caller>>) -> Caller {
    ext.map_or(
        Caller {
            pid: None,
            uid: None,
            socket: Socket::Api,
            peer: None,
        },
        |Extension(c)| c,
    )
}

async fn nodes<B: Backend>(State(backend): Shared<B>) -> Result<Json<Vec<NodeStatus>>, Failure> {
    Ok(Json(backend.nodes().await?))
}

async fn network<B: Backend>(
    State(backend): Shared<B>,
    node: Result<Query<NodeQuery>, QueryRejection>,
) -> Result<Json<Vec<NetworkStatus>>, Failure> {
    let Query(node) = node?;
    Ok(Json(backend.network(node).await?))
}

async fn run<B: Backend>(
    State(backend): Shared<B>,
    who: Option<Extension<Caller>>,
    request: Result<Json<RunRequest>, JsonRejection>,
) -> Result<Json<ActionResponse>, Failure> {
    let Json(request) = request?;
    Ok(Json(backend.run(caller(who), request).await?))
}

async fn exec<B: Backend>(
    State(backend): Shared<B>,
    who: Option<Extension<Caller>>,
    shutdown: Option<Extension<Shutdown>>,
    request: Result<Json<ExecRequest>, JsonRejection>,
) -> Result<Response, Failure> {
    let Json(request) = request?;
    let output = backend.exec(caller(who), request).await?;
    Ok(ndjson(output, shutdown.map(|Extension(s)| s)))
}

async fn cacerts<B: Backend>(State(backend): Shared<B>) -> Result<Response, Failure> {
    let pem = backend.cacerts().await?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
}

async fn join<B: Backend>(
    State(backend): Shared<B>,
    request: Result<Json<JoinRequest>, JsonRejection>,
) -> Result<Json<CertificateResponse>, Failure> {
    let Json(request) = request?;
    Ok(Json(backend.join(request).await?))
}

async fn renew<B: Backend>(
    State(backend): Shared<B>,
    name: Result<UrlPath<String>, PathRejection>,
    request: Result<Json<RenewRequest>, JsonRejection>,
) -> Result<Json<CertificateResponse>, Failure> {
    let UrlPath(name) = name?;
    let Json(request) = request?;
    Ok(Json(backend.renew(&name, request).await?))
}

async fn heartbeat<B: Backend>(
    State(backend): Shared<B>,
    name: Result<UrlPath<String>, PathRejection>,
    request: Result<Json<Heartbeat>, JsonRejection>,
) -> Result<Json<HeartbeatResponse>, Failure> {
    let UrlPath(name) = name?;
    let Json(request) = request?;
    Ok(Json(backend.heartbeat(&name, request).await?))
}

async fn assignments<B: Backend>(
    State(backend): Shared<B>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<Assignments>, Failure> {
    let UrlPath(name) = name?;
    Ok(Json(backend.assignments(&name).await?))
}

async fn push_events<B: Backend>(
    State(backend): Shared<B>,
    name: Result<UrlPath<String>, PathRejection>,
    request: Result<Json<Vec<Event>>, JsonRejection>,
) -> Result<Json<serde_json::Value>, Failure> {
    let UrlPath(name) = name?;
    let Json(request) = request?;
    backend.push_events(&name, request).await?;
    Ok(Json(serde_json::json!({})))
}

async fn create_token<B: Backend>(
    State(backend): Shared<B>,
    who: Option<Extension<Caller>>,
    request: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<Json<TokenCreated>, Failure> {
    let Json(request) = request?;
    Ok(Json(backend.create_token(caller(who), request).await?))
}

async fn list_tokens<B: Backend>(
    State(backend): Shared<B>,
) -> Result<Json<Vec<TokenInfo>>, Failure> {
    Ok(Json(backend.list_tokens().await?))
}

async fn revoke_token<B: Backend>(
    State(backend): Shared<B>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<ActionResponse>, Failure> {
    let UrlPath(id) = id?;
    Ok(Json(backend.revoke_token(&id).await?))
}

async fn node_action<B: Backend>(
    State(backend): Shared<B>,
    name: Result<UrlPath<String>, PathRejection>,
    request: Result<Json<NodeAction>, JsonRejection>,
) -> Result<Json<ActionResponse>, Failure> {
    let UrlPath(name) = name?;
    let Json(request) = request?;
    Ok(Json(backend.node_action(&name, request).await?))
}

async fn rotate_ca<B: Backend>(
    State(backend): Shared<B>,
    request: Result<Json<CaRotateRequest>, JsonRejection>,
) -> Result<Json<ActionResponse>, Failure> {
    let Json(request) = request?;
    Ok(Json(backend.rotate_ca(request).await?))
}

async fn apply_cluster<B: Backend>(
    State(backend): Shared<B>,
    who: Option<Extension<Caller>>,
    request: Result<Json<ClusterRequest>, JsonRejection>,
) -> Result<Json<ClusterApplied>, Failure> {
    let Json(request) = request?;
    Ok(Json(backend.apply_cluster(caller(who), request).await?))
}

async fn diff_cluster<B: Backend>(
    State(backend): Shared<B>,
    request: Result<Json<ClusterRequest>, JsonRejection>,
) -> Result<Json<ClusterDiff>, Failure> {
    let Json(request) = request?;
    Ok(Json(backend.diff_cluster(request).await?))
}

async fn cluster_history<B: Backend>(
    State(backend): Shared<B>,
) -> Result<Json<Vec<RevisionInfo>>, Failure> {
    Ok(Json(backend.cluster_history().await?))
}

async fn export_cluster<B: Backend>(State(backend): Shared<B>) -> Result<Response, Failure> {
    let yaml = backend.export_cluster().await?;
    Ok(([(header::CONTENT_TYPE, "application/yaml")], yaml).into_response())
}

async fn cloudpods_credentials<B: Backend>(
    State(backend): Shared<B>,
) -> Result<Json<CloudpodsCredentials>, Failure> {
    Ok(Json(backend.cloudpods_credentials().await?))
}

async fn rollback_cluster<B: Backend>(
    State(backend): Shared<B>,
    who: Option<Extension<Caller>>,
    request: Result<Json<RollbackRequest>, JsonRejection>,
) -> Result<Json<ClusterApplied>, Failure> {
    let Json(request) = request?;
    Ok(Json(backend.rollback_cluster(caller(who), request).await?))
}

async fn rollout<B: Backend>(
    State(backend): Shared<B>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<RolloutInfo>, Failure> {
    let UrlPath(name) = name?;
    Ok(Json(backend.rollout(&name).await?))
}

async fn rollout_history<B: Backend>(
    State(backend): Shared<B>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<Vec<RolloutInfo>>, Failure> {
    let UrlPath(name) = name?;
    Ok(Json(backend.rollout_history(&name).await?))
}

/// `POST /v1/rollouts/{name}/<action>`.
fn rollout_route<B: Backend>(action: RolloutAction) -> MethodRouter<Arc<B>> {
    post(
        move |State(backend): Shared<B>,
              who: Option<Extension<Caller>>,
              name: Result<UrlPath<String>, PathRejection>,
              request: Result<Json<RolloutRequest>, JsonRejection>| async move {
            let UrlPath(name) = name?;
            let Json(request) = request?;
            let info = backend
                .rollout_action(caller(who), &name, action, request)
                .await?;
            Ok::<_, Failure>(Json(info))
        },
    )
}

async fn delete_node<B: Backend>(
    State(backend): Shared<B>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<ActionResponse>, Failure> {
    let UrlPath(name) = name?;
    Ok(Json(backend.delete_node(&name).await?))
}

async fn no_route(method: Method, uri: Uri) -> Failure {
    Failure(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Failure {
    Failure(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

/// Tells streaming responses that the listener is shutting down. Every listener puts one into
/// every request; a router served without it streams until the client goes away.
#[derive(Debug, Clone)]
struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    async fn wait(&mut self) {
        // An error means the sender is gone, which only happens when the server has stopped.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// A streaming answer: each item becomes one JSON line, sent as soon as the backend yields it.
/// An error item becomes a final `{"error": ...}` line and ends the stream, as does shutdown.
/// Dropping the response body (the client went away) drops `items`.
fn ndjson<T: Serialize + 'static>(
    items: Pin<Box<dyn Stream<Item = Result<T, ApiError>> + Send>>,
    shutdown: Option<Shutdown>,
) -> Response {
    let lines = stream::unfold(Some((items, shutdown)), |state| async move {
        let (mut items, mut shutdown) = state?;
        let next = match &mut shutdown {
            Some(shutdown) => tokio::select! {
                item = items.next() => item,
                () = shutdown.wait() => Some(Err(ApiError::Unavailable(
                    "the cloudlet server is shutting down".to_owned(),
                ))),
            },
            None => items.next().await,
        };
        match next? {
            Ok(item) => Some((
                Ok::<_, Infallible>(json_line(&item)),
                Some((items, shutdown)),
            )),
            Err(error) => {
                tracing::debug!(%error, "api stream ended with an error");
                let body = ErrorBody {
                    error: error.to_string(),
                };
                Some((Ok(json_line(&body)), None))
            }
        }
    });
    ([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(lines)).into_response()
}

fn json_line<T: Serialize>(value: &T) -> Bytes {
    let mut line = serde_json::to_vec(value).unwrap_or_else(|error| {
        // Our DTOs always serialize; should one ever not, the client still gets a parseable line.
        let body = ErrorBody {
            error: format!("cannot encode a stream item: {error}"),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    });
    line.push(b'\n');
    Bytes::from(line)
}

/// A listener [`accept_until`] drives: the Unix socket or the TLS port. Dropping it stops
/// accepting.
pub(crate) trait Accept {
    /// One accepted connection.
    type Conn: Send + 'static;

    /// The next connection.
    fn accept(&self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

/// The loop every listener runs: accepts until `shutdown`, runs `serve(connection)` as a task of
/// its own for each, backs off after an accept error (out of file descriptors and the like:
/// said, and not spun on), and reaps finished connections. Then it drops the listener, tells the
/// connections through `stop` and gives them a few seconds ([`drain`]).
pub(crate) async fn accept_until<L, F>(
    listener: L,
    shutdown: impl Future<Output = ()>,
    stop: watch::Sender<bool>,
    mut serve: impl FnMut(L::Conn) -> F,
) where
    L: Accept,
    F: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(connection) => {
                    connections.spawn(serve(connection));
                }
                Err(error) => {
                    tracing::warn!(%error, "api accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    tracing::warn!(%error, "api connection task failed");
                }
            }
        }
    }
    drop(listener);
    stop.send_replace(true);
    drain(connections).await;
}

/// Gives a stopped listener's connections a few seconds to finish their requests, then cuts
/// the rest.
async fn drain(mut connections: JoinSet<()>) {
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "api connections still busy at shutdown; cutting them"
        );
        connections.abort_all();
    }
}

/// The router with the listener's shutdown signal in every request (streams end on it).
pub(crate) fn app<B: Backend>(backend: Arc<B>, stopping: watch::Receiver<bool>) -> Router {
    router(backend).layer(Extension(Shutdown(stopping)))
}

/// The deadlines of one connection's requests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// For each request head, from when the server starts waiting for it (so also how long the
    /// connection may idle between requests).
    pub(crate) header: Duration,
    /// From a request's head to its answer's head.
    pub(crate) request: Duration,
}

/// Serves HTTP/1.1 on one connection of any listener, as `who`, until the client leaves, a
/// deadline passes, or the listener stops (then idle connections close at once and a request in
/// flight finishes first).
pub(crate) async fn serve_http1<I>(
    io: I,
    app: Router,
    who: Caller,
    deadlines: Deadlines,
    stopping: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The caller goes into each request's extensions (what `Extension<Caller>` reads); the router
    // is shared. `app.layer(Extension(who))` would rebuild every route per connection: ~18 KiB of
    // heap per agent with thousands connected (clusterbench).
    let service = hyper::service::service_fn(move |mut request: axum::http::Request<_>| {
        request.extensions_mut().insert(who.clone());
        // Router is always ready (axum documents poll_ready as such): call it straight away.
        let answer = tower_service::Service::call(&mut app.clone(), request);
        async move {
            // Reading the body is part of the call, so a trickled body ends here too.
            match tokio::time::timeout(deadlines.request, answer).await {
                Ok(answer) => answer,
                Err(_) => Ok::<_, Infallible>(too_slow(deadlines.request)),
            }
        }
    });
    let mut shutdown = Shutdown(stopping);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(deadlines.header)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.wait() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "api connection ended with an error");
    }
}

/// The answer to a request that did not finish within `deadline`; the connection closes after it
/// (the rest of its body, if any, is not read).
fn too_slow(deadline: Duration) -> Response {
    let mut answer = Failure(
        StatusCode::REQUEST_TIMEOUT,
        format!("the request did not complete within {deadline:?}"),
    )
    .into_response();
    answer.headers_mut().insert(
        header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    answer
}
