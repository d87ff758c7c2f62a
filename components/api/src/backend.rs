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
    Action, ActionResponse, ApplyRequest, ApplyResponse, Assignments, CaRotateRequest,
    CertificateResponse, CloudpodsCredentials, ClusterApplied, ClusterDiff, ClusterRequest, Event,
    EventsQuery, ExecOutput, ExecRequest, Heartbeat, HeartbeatResponse, JoinRequest, LogLine,
    LogsQuery, NetworkStatus, NodeAction, NodeQuery, NodeStatus, RenewRequest, RevisionInfo,
    RollbackRequest, RolloutAction, RolloutInfo, RolloutRequest, RunRequest, ServiceDetail,
    ServiceStatus, ServicesQuery, TokenCreated, TokenInfo, TokenRequest,
};

/// A stream of log lines. A follow stream runs until it is dropped, which happens when the client
/// goes away; an error item ends the stream.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogLine, ApiError>> + Send>>;

/// A stream of events. A follow stream runs until it is dropped, which happens when the client goes
/// away; an error item ends the stream.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, ApiError>> + Send>>;

/// Output of a command run with `exec`, ending with an item that carries the exit.
pub type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecOutput, ApiError>> + Send>>;

/// Who is calling: the peer of a unix socket (from `SO_PEERCRED`) or of a mutual-TLS connection
/// (from its verified certificate), and which listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The calling process, when the kernel said (unix sockets only).
    pub pid: Option<u32>,
    /// Its user id (unix sockets only).
    pub uid: Option<u32>,
    /// Which listener the call came in on.
    pub socket: Socket,
    /// The verified client certificate's holder (TLS only); `None` on TLS is an anonymous caller,
    /// who may only join.
    pub peer: Option<Peer>,
}

/// The holder of a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// What the certificate lets it be.
    pub role: cloudlet_pki::Role,
    /// Its common name: the node's name for a node.
    pub name: String,
    /// When the certificate expires: a connection that outlives it is refused from then on.
    pub not_after: jiff::Timestamp,
    /// Its serial number, lowercase hex: what a revocation names.
    pub serial: String,
}

/// The listeners the API is served on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// `DIR/cloudlet.sock`, the operator's.
    Api,
    /// `DIR/executor.sock`, given to services with `spec.executor: true`.
    Executor,
    /// The mutual-TLS listener (`--listen`).
    Tls,
}

/// The core, as the API sees it. Errors use the server-side variants of [`ApiError`]
/// (`NotFound`, `Invalid`, `Conflict`, `Unavailable`, `Internal`); each becomes one HTTP status.
pub trait Backend: Send + Sync + 'static {
    /// Validate and store the manifests in `request`, all or nothing.
    fn apply(
        &self,
        request: ApplyRequest,
    ) -> impl Future<Output = Result<ApplyResponse, ApiError>> + Send;

    /// The status of every service (on one node, or on every node).
    fn list_services(
        &self,
        query: ServicesQuery,
    ) -> impl Future<Output = Result<Vec<ServiceStatus>, ApiError>> + Send;

    /// Everything about one service (its copy on `node`).
    fn describe_service(
        &self,
        name: &str,
        node: NodeQuery,
    ) -> impl Future<Output = Result<ServiceDetail, ApiError>> + Send;

    /// Stop and forget one service.
    fn delete_service(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<ActionResponse, ApiError>> + Send;

    /// Start, stop or restart one service (restart: only its copy on `node`, when given).
    fn service_action(
        &self,
        name: &str,
        action: Action,
        node: NodeQuery,
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

    /// The node's network (OVS bridges, firewall, drift repairs).
    fn network(
        &self,
        _node: NodeQuery,
    ) -> impl Future<Output = Result<Vec<NetworkStatus>, ApiError>> + Send {
        async {
            Err(ApiError::NotFound(
                "this node manages no network (start it with --network FILE)".to_owned(),
            ))
        }
    }

    /// Events, oldest first.
    fn events(
        &self,
        query: EventsQuery,
    ) -> impl Future<Output = Result<EventStream, ApiError>> + Send;

    // The cluster's endpoints: served by a server; an agent's API answers them with
    // `NotFound` (the defaults).

    /// Whether the certificate with `serial` was revoked (its node was deleted or joined again).
    /// Asked on every request over mutual TLS, so it answers from memory. An agent revokes
    /// nothing (the default).
    fn revoked(&self, serial: &str) -> bool {
        let _ = serial;
        false
    }

    /// The service calling on the executor socket: the one whose cgroup holds the calling
    /// process (never what the process says of itself). The default knows none (403).
    fn executor_caller(
        &self,
        _caller: &Caller,
    ) -> impl Future<Output = Result<String, ApiError>> + Send {
        async {
            Err(ApiError::Forbidden(
                "this server tells no executor callers apart".to_owned(),
            ))
        }
    }

    /// The CA certificates the cluster trusts (PEM), for an agent about to join.
    fn cacerts(&self) -> impl Future<Output = Result<String, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// A node with a join token asks for its certificate.
    fn join(
        &self,
        _request: JoinRequest,
    ) -> impl Future<Output = Result<CertificateResponse, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// A node renews its certificate.
    fn renew(
        &self,
        _node: &str,
        _request: RenewRequest,
    ) -> impl Future<Output = Result<CertificateResponse, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// A node is alive.
    fn heartbeat(
        &self,
        _node: &str,
        _heartbeat: Heartbeat,
    ) -> impl Future<Output = Result<HeartbeatResponse, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// What a node should run.
    fn assignments(
        &self,
        _node: &str,
    ) -> impl Future<Output = Result<Assignments, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// A node's events, recorded by the server.
    fn push_events(
        &self,
        _node: &str,
        _events: Vec<Event>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// Makes a join token.
    fn create_token(
        &self,
        _caller: Caller,
        _request: TokenRequest,
    ) -> impl Future<Output = Result<TokenCreated, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// The join tokens.
    fn list_tokens(&self) -> impl Future<Output = Result<Vec<TokenInfo>, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// Revokes a join token.
    fn revoke_token(
        &self,
        _id: &str,
    ) -> impl Future<Output = Result<ActionResponse, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// Cordon, uncordon, drain or label a node.
    fn node_action(
        &self,
        _node: &str,
        _action: NodeAction,
    ) -> impl Future<Output = Result<ActionResponse, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// Starts or finishes a rotation of the cluster's CA.
    fn rotate_ca(
        &self,
        _request: CaRotateRequest,
    ) -> impl Future<Output = Result<ActionResponse, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// Applies a cluster YAML as a new revision.
    fn apply_cluster(
        &self,
        _caller: Caller,
        _request: ClusterRequest,
    ) -> impl Future<Output = Result<ClusterApplied, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// What a cluster YAML would change.
    fn diff_cluster(
        &self,
        _request: ClusterRequest,
    ) -> impl Future<Output = Result<ClusterDiff, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// The revisions of the cluster YAML, oldest first.
    fn cluster_history(&self) -> impl Future<Output = Result<Vec<RevisionInfo>, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// The current cluster YAML, in canonical form.
    fn export_cluster(&self) -> impl Future<Output = Result<String, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// The Cloudpods administrator (keystone's `sysadmin`) of the current cluster.
    fn cloudpods_credentials(
        &self,
    ) -> impl Future<Output = Result<CloudpodsCredentials, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// Applies revision `to` again, as a new revision.
    fn rollback_cluster(
        &self,
        _caller: Caller,
        _request: RollbackRequest,
    ) -> impl Future<Output = Result<ClusterApplied, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// The current rollout of service `name`, with every node's place in it.
    fn rollout(&self, _name: &str) -> impl Future<Output = Result<RolloutInfo, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// Every kept rollout of service `name`, oldest first.
    fn rollout_history(
        &self,
        _name: &str,
    ) -> impl Future<Output = Result<Vec<RolloutInfo>, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// Pauses, resumes or undoes the rollout of service `name`.
    fn rollout_action(
        &self,
        _caller: Caller,
        _name: &str,
        _action: RolloutAction,
        _request: RolloutRequest,
    ) -> impl Future<Output = Result<RolloutInfo, ApiError>> + Send {
        async { Err(not_a_server()) }
    }

    /// Forgets a node (its assignments go; its services elsewhere are untouched).
    fn delete_node(
        &self,
        _node: &str,
    ) -> impl Future<Output = Result<ActionResponse, ApiError>> + Send {
        async { Err(not_a_server()) }
    }
}

fn not_a_server() -> ApiError {
    ApiError::NotFound(
        "this is a node's agent: cluster requests go to the cluster's server".to_owned(),
    )
}
