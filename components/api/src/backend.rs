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
    Action, ActionResponse, ApplyRequest, ApplyResponse, Event, EventsQuery, LogLine, LogsQuery,
    ServiceDetail, ServiceStatus,
};

/// A stream of log lines. A follow stream runs until it is dropped, which happens when the client
/// goes away; an error item ends the stream.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogLine, ApiError>> + Send>>;

/// A stream of events. A follow stream runs until it is dropped, which happens when the client goes
/// away; an error item ends the stream.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, ApiError>> + Send>>;

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

    /// Events, oldest first.
    fn events(
        &self,
        query: EventsQuery,
    ) -> impl Future<Output = Result<EventStream, ApiError>> + Send;
}
