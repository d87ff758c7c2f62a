//! `Backend`: the seam between the HTTP API and the core.
//!
//! `cmd/cloudlet` implements it by wiring the store, the supervisor and the logs; tests implement
//! it with a small fake. The API calls it and translates; it never looks inside the answers beyond
//! encoding them, and it never implements any of the operations itself.

use std::future::Future;
use std::pin::Pin;

use futures_util::Stream;

use crate::ApiError;
use crate::dto::{
    Action, ActionResponse, ApplyRequest, ApplyResponse, Event, EventsQuery, ExecOutput,
    ExecRequest, LogLine, LogsQuery, NodeStatus, RunRequest, ServiceDetail, ServiceStatus,
};

/// A stream of log lines. A follow stream runs until it is dropped, which happens when the client
/// goes away; an error item ends the stream.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogLine, ApiError>> + Send>>;

/// A stream of events. A follow stream runs until it is dropped, which happens when the client goes
/// away; an error item ends the stream.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, ApiError>> + Send>>;

/// Output of a command run with `exec`, ending with an item that carries the exit.
pub type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecOutput, ApiError>> + Send>>;

/// Who is calling: the peer of the unix socket (from `SO_PEERCRED`), and which socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The calling process, when the kernel said.
    pub pid: Option<u32>,
    /// Its user id.
    pub uid: Option<u32>,
    /// Which socket the call came in on.
    pub socket: Socket,
}

/// The sockets the API is served on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// `DIR/cloudlet.sock`, the operator's.
    Api,
    /// `DIR/executor.sock`, given to services with `spec.executor: true`.
    Executor,
}

/// The core, as the API sees it. Errors use the server-side variants of [`ApiError`]
/// (`NotFound`, `Invalid`, `Conflict`, `Unavailable`, `Internal`); each becomes one HTTP status.
pub trait Backend: Send + Sync + 'static {
    /// Validate and store the manifests in `request`, all or nothing.
    fn apply(
        &self,
        request: ApplyRequest,
    ) -> impl Future<Output = Result<ApplyResponse, ApiError>> + Send;

    /// The status of every service.
    fn list_services(&self) -> impl Future<Output = Result<Vec<ServiceStatus>, ApiError>> + Send;

    /// Everything about one service.
    fn describe_service(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<ServiceDetail, ApiError>> + Send;

    /// Stop and forget one service.
    fn delete_service(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<ActionResponse, ApiError>> + Send;

    /// Start, stop or restart one service.
    fn service_action(
        &self,
        name: &str,
        action: Action,
    ) -> impl Future<Output = Result<ActionResponse, ApiError>> + Send;

    /// One service's log lines. Errors that are known up front (no such service) are returned
    /// here, so they get their status; later ones are stream items.
    fn logs(
        &self,
        name: &str,
        query: LogsQuery,
    ) -> impl Future<Output = Result<LogStream, ApiError>> + Send;

    /// Start a transient service for `caller`.
    fn run(
        &self,
        caller: Caller,
        request: RunRequest,
    ) -> impl Future<Output = Result<ActionResponse, ApiError>> + Send;

    /// Run a command on the host to completion for `caller`.
    fn exec(
        &self,
        caller: Caller,
        request: ExecRequest,
    ) -> impl Future<Output = Result<ExecStream, ApiError>> + Send;

    /// The nodes (this node, until the cluster arrives).
    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeStatus>, ApiError>> + Send;

    /// Events, oldest first.
    fn events(
        &self,
        query: EventsQuery,
    ) -> impl Future<Output = Result<EventStream, ApiError>> + Send;
}
