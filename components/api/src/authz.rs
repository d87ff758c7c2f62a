//! Who may call what: the API's authorization, decided per request from the [`Caller`] the
//! listener attached and the route that matched.
//!
//! - `cloudlet.sock` (0600, root): every route, for a peer (`SO_PEERCRED`) whose uid is 0 or the
//!   server's own; anyone else (a socket file left readable by accident) is refused.
//! - `executor.sock` (0600, root), given to services: only what the executor is for — `run`,
//!   `exec`, listing services and stopping one (the handlers narrow both to the caller's own
//!   transient services) and health.
//! - Over mutual TLS: an admin or server certificate may call every route; a node certificate may
//!   only reach its own node's endpoints (heartbeat, assignments, events, renew) and read the CA
//!   bundle; a caller without a certificate may only join, read the CA bundle and ask for health.
//!   A certificate that expired while its connection stayed open is refused from then on; so is
//!   a revoked one (its node was deleted or joined again), on its next request.
//!
//! This module decides and nothing else: it never reads the store and never looks at bodies.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cloudlet_pki::Role;

use crate::{ApiError, Backend, Caller, Socket};

/// Routes anyone who reached the TLS listener may call.
const ANONYMOUS: &[(&str, &str)] = &[
    ("GET", "/v1/healthz"),
    ("GET", "/v1/cacerts"),
    ("POST", "/v1/join"),
];

/// Routes a node may call for itself (`{name}` must be its own name).
const OWN_NODE: &[(&str, &str)] = &[
    ("POST", "/v1/nodes/{name}/heartbeat"),
    ("GET", "/v1/nodes/{name}/assignments"),
    ("POST", "/v1/nodes/{name}/events"),
    ("POST", "/v1/nodes/{name}/renew"),
];

/// Routes a service may call on the executor socket.
const EXECUTOR: &[(&str, &str)] = &[
    ("GET", "/v1/healthz"),
    ("POST", "/v1/run"),
    ("POST", "/v1/exec"),
    ("GET", "/v1/services"),
    ("POST", "/v1/services/{name}/stop"),
];

/// Whether `caller` may call `method route` (`route` is the matched template, `node` the
/// `{name}` of a `/v1/nodes/{name}/...` route); `revoked` says whether a certificate serial was
/// revoked.
pub fn authorize(
    caller: &Caller,
    method: &Method,
    route: &str,
    node: Option<&str>,
    now: jiff::Timestamp,
    revoked: impl Fn(&str) -> bool,
) -> Result<(), ApiError> {
    let is = |list: &[(&str, &str)]| {
        list.iter()
            .any(|(m, r)| *m == method.as_str() && *r == route)
    };
    match caller.socket {
        Socket::Api => return local_operator(caller),
        Socket::Executor if is(EXECUTOR) => return Ok(()),
        Socket::Executor => {
            return Err(ApiError::Forbidden(format!(
                "{method} {route} is not served on the executor socket: it runs, execs, lists \
                 and stops its caller's transient services; use cloudlet.sock as root"
            )));
        }
        Socket::Tls => {}
    }
    if is(ANONYMOUS) {
        return Ok(());
    }
    let Some(peer) = &caller.peer else {
        return Err(ApiError::Unauthorized(format!(
            "{method} {route} needs a client certificate: use an admin.conf \
             (`cloudlet ctl --config FILE`) or join with a token"
        )));
    };
    if peer.not_after <= now {
        return Err(ApiError::Unauthorized(format!(
            "the client certificate of {} {} expired at {}: reconnect with a renewed one",
            peer.role.as_str(),
            peer.name,
            peer.not_after
        )));
    }
    if revoked(&peer.serial) {
        return Err(ApiError::Unauthorized(format!(
            "the certificate of {} {} (serial {}) was revoked: its node was deleted or joined \
             again; join with a token to get a new one",
            peer.role.as_str(),
            peer.name,
            peer.serial
        )));
    }
    match peer.role {
        Role::Admin | Role::Server => Ok(()),
        Role::Service => Err(ApiError::Forbidden(format!(
            "{} holds a cloud service's certificate: it may not call {method} {route}",
            peer.name
        ))),
        Role::Node if is(OWN_NODE) && node == Some(peer.name.as_str()) => Ok(()),
        Role::Node if is(OWN_NODE) => Err(ApiError::Forbidden(format!(
            "node {} may not read or write the data of node {}",
            peer.name,
            node.unwrap_or("?")
        ))),
        Role::Node => Err(ApiError::Forbidden(format!(
            "node {} may not call {method} {route}: a node certificate only reaches its own \
             heartbeat, assignments, events and renewal",
            peer.name
        ))),
    }
}

/// `cloudlet.sock`: root, or the user the server runs as (tests run it unprivileged).
fn local_operator(caller: &Caller) -> Result<(), ApiError> {
    let own = rustix::process::geteuid().as_raw();
    match caller.uid {
        Some(uid) if uid == 0 || uid == own => Ok(()),
        Some(uid) => Err(ApiError::Forbidden(format!(
            "uid {uid} may not use the cloudlet API socket: only root (or uid {own}, the \
             server's) may"
        ))),
        None => Err(ApiError::Forbidden(
            "the kernel did not say who is calling on the cloudlet API socket".to_owned(),
        )),
    }
}

/// The middleware: [`authorize`] on every routed request, before its handler runs.
pub(crate) async fn layer<B: Backend>(
    State(backend): State<Arc<B>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        // A router served without a listener (tests): nothing to decide on.
        return next.run(request).await;
    };
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |m| m.as_str().to_owned(),
    );
    let node = route
        .starts_with("/v1/nodes/{name}")
        .then(|| request.uri().path().split('/').nth(3))
        .flatten()
        .map(str::to_owned);
    match authorize(
        &caller,
        request.method(),
        &route,
        node.as_deref(),
        jiff::Timestamp::now(),
        |serial| backend.revoked(serial),
    ) {
        Ok(()) => next.run(request).await,
        Err(error) => crate::server::Failure::from(error).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Peer;

    fn tls(role: Option<Role>, name: &str, expires_in_s: i64) -> Caller {
        let now = jiff::Timestamp::now();
        Caller {
            pid: None,
            uid: None,
            socket: Socket::Tls,
            peer: role.map(|role| Peer {
                role,
                name: name.to_owned(),
                not_after: now + jiff::SignedDuration::from_secs(expires_in_s),
                serial: format!("{name}-serial"),
            }),
        }
    }

    fn check(caller: &Caller, method: Method, route: &str, node: Option<&str>) -> u16 {
        match authorize(caller, &method, route, node, jiff::Timestamp::now(), |s| {
            s == "revoked-serial"
        }) {
            Ok(()) => 200,
            Err(e) => e.status_code().as_u16(),
        }
    }

    #[test]
    fn the_authorization_matrix() {
        let admin = tls(Some(Role::Admin), "admin", 60);
        let server = tls(Some(Role::Server), "s1", 60);
        let n1 = tls(Some(Role::Node), "n1", 60);
        let service = tls(Some(Role::Service), "cloudpods", 60);
        let expired = tls(Some(Role::Admin), "admin", -1);
        let revoked = tls(Some(Role::Node), "revoked", 60);
        let anonymous = tls(None, "", 0);
        let local = Caller {
            pid: Some(1),
            uid: Some(0),
            socket: Socket::Api,
            peer: None,
        };
        let on_socket = |socket, uid| Caller {
            pid: Some(1),
            uid,
            socket,
            peer: None,
        };
        let stranger = on_socket(Socket::Api, Some(54_321));
        let unknown = on_socket(Socket::Api, None);
        let executor = on_socket(Socket::Executor, Some(0));
        let heartbeat = "/v1/nodes/{name}/heartbeat";
        let cases = [
            (&admin, Method::GET, "/v1/services", None, 200),
            (&admin, Method::POST, heartbeat, Some("n2"), 200),
            (&server, Method::POST, "/v1/exec", None, 200),
            (&local, Method::POST, "/v1/apply", None, 200),
            (&n1, Method::POST, heartbeat, Some("n1"), 200),
            (
                &n1,
                Method::GET,
                "/v1/nodes/{name}/assignments",
                Some("n1"),
                200,
            ),
            (&n1, Method::POST, heartbeat, Some("n2"), 403),
            (&service, Method::GET, "/v1/services", None, 403),
            (&service, Method::POST, heartbeat, Some("cloudpods"), 403),
            (
                &n1,
                Method::GET,
                "/v1/nodes/{name}/assignments",
                Some("n2"),
                403,
            ),
            (
                &n1,
                Method::POST,
                "/v1/nodes/{name}/events",
                Some("n2"),
                403,
            ),
            (&n1, Method::GET, "/v1/services", None, 403),
            (&n1, Method::POST, "/v1/apply", None, 403),
            (&n1, Method::POST, "/v1/tokens", None, 403),
            (&n1, Method::POST, "/v1/nodes/{name}/drain", Some("n1"), 403),
            (&n1, Method::GET, "/v1/cacerts", None, 200),
            (&anonymous, Method::POST, "/v1/join", None, 200),
            (&anonymous, Method::GET, "/v1/healthz", None, 200),
            (&anonymous, Method::GET, "/v1/services", None, 401),
            (&anonymous, Method::POST, heartbeat, Some("n1"), 401),
            (&expired, Method::GET, "/v1/services", None, 401),
            (&revoked, Method::POST, heartbeat, Some("revoked"), 401),
            (
                &revoked,
                Method::GET,
                "/v1/nodes/{name}/assignments",
                Some("revoked"),
                401,
            ),
            // A deleted node joins again over a connection that may still present the old
            // certificate.
            (&revoked, Method::POST, "/v1/join", None, 200),
            (&stranger, Method::GET, "/v1/services", None, 403),
            (&unknown, Method::GET, "/v1/healthz", None, 403),
            (&executor, Method::POST, "/v1/run", None, 200),
            (&executor, Method::POST, "/v1/exec", None, 200),
            (&executor, Method::GET, "/v1/services", None, 200),
            (
                &executor,
                Method::POST,
                "/v1/services/{name}/stop",
                None,
                200,
            ),
            (&executor, Method::GET, "/v1/healthz", None, 200),
            (&executor, Method::POST, "/v1/apply", None, 403),
            (&executor, Method::DELETE, "/v1/services/{name}", None, 403),
            (
                &executor,
                Method::POST,
                "/v1/services/{name}/start",
                None,
                403,
            ),
            (
                &executor,
                Method::POST,
                "/v1/services/{name}/restart",
                None,
                403,
            ),
            (
                &executor,
                Method::GET,
                "/v1/services/{name}/logs",
                None,
                403,
            ),
            (&executor, Method::GET, "/v1/services/{name}", None, 403),
            (&executor, Method::POST, "/v1/tokens", None, 403),
            (&executor, Method::POST, "/v1/cluster", None, 403),
        ];
        for (caller, method, route, node, want) in cases {
            let got = check(caller, method.clone(), route, node);
            assert_eq!(got, want, "{:?} {method} {route} {node:?}", caller.peer);
        }
    }
}
