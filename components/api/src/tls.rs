//! `TlsServer`: the API on a TCP address with mutual TLS (rustls, TLS 1.3), for agents and for
//! operators on other machines.
//!
//! Each accepted connection takes the server config current at that moment (so a CA rotation can
//! swap it; a renewed certificate already hot-swaps through the config's resolver), completes its
//! handshake within a bound, and carries the identity of the verified client certificate to the
//! handlers as [`Caller::peer`] (`None` for a client without a certificate, which the config
//! lets in only when anonymous joining is allowed). The routes are those of the unix socket.
//!
//! This module never verifies a certificate itself (the config's verifier does, in the
//! handshake) and never decides what a caller may do: that is for the handlers and the backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use cloudlet_pki::Identity;
use jiff::Timestamp;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::limits::{Admission, Limits, Ticket};
use crate::server::{Accept, Deadlines, accept_until, app, serve_http1};
use crate::{ApiError, Backend, Caller, Peer, Socket};

/// Gives the server config for a new connection. It is called once for each accepted
/// connection, so what it returns may change between connections (a CA rotation); the
/// connections already established keep theirs.
pub type TlsConfigSource = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

/// The API's TCP listener, bound and not yet serving. Binding first lets the caller fail early
/// and learn the address (port 0 picks one).
#[derive(Debug)]
pub struct TlsServer {
    listener: TcpListener,
    addr: SocketAddr,
    limits: Limits,
}

impl TlsServer {
    /// Binds `addr` (the OS picks the port if it is 0).
    pub async fn bind(addr: SocketAddr) -> Result<TlsServer, ApiError> {
        let listen_error = |source| ApiError::ListenTcp { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        tracing::info!(%addr, "api listening with mutual tls");
        Ok(TlsServer {
            listener,
            addr,
            limits: Limits::default(),
        })
    }

    /// Serves under `limits` instead of the defaults (tests shorten the deadlines).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The address it listens on, with the port the OS picked.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves HTTP/1.1 over TLS until `shutdown` completes, with `config()` for each connection.
    ///
    /// A connection over one of the [`Limits`] is closed at once, before its handshake; the
    /// connections already served go on. A failed or too slow handshake only ends that
    /// connection (logged at debug with the peer's address). So does a request head not complete
    /// within its deadline, or a request not answered within its own. A connection whose client certificate expires is closed then (after the request
    /// in flight); the next one fails its handshake. At shutdown it stops accepting; in-flight
    /// requests get a few seconds to finish, and follow streams end at once with a final error
    /// line.
    pub async fn serve<B: Backend>(
        self,
        backend: Arc<B>,
        config: TlsConfigSource,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ApiError> {
        let (stop, stopping) = watch::channel(false);
        let app = app(backend, stopping.clone());
        let addr = self.addr;
        let admission = Arc::new(Admission::new(&self.limits));
        accept_until(
            self,
            shutdown,
            stop,
            |(tcp, remote): (TcpStream, SocketAddr)| {
                let ticket = admission.admit(remote.ip());
                // Per connection: a CA rotation changes what the next handshakes trust.
                let acceptor = ticket.is_ok().then(|| TlsAcceptor::from(config()));
                let app = app.clone();
                let stopping = stopping.clone();
                let admission = Arc::clone(&admission);
                async move {
                    // Over a limit: dropping the stream closes it before any handshake.
                    let (Ok(ticket), Some(acceptor)) = (ticket, acceptor) else {
                        return;
                    };
                    connection(tcp, remote, acceptor, app, &admission, ticket, stopping).await;
                }
            },
        )
        .await;
        tracing::info!(%addr, "api tls listener stopped");
        Ok(())
    }
}

impl Accept for TlsServer {
    type Conn = (TcpStream, SocketAddr);

    fn accept(&self) -> impl Future<Output = std::io::Result<(TcpStream, SocketAddr)>> + Send {
        self.listener.accept()
    }
}

/// One connection: the handshake, then HTTP/1.1 as the certificate's holder until the client
/// leaves, a deadline passes, the server stops or the certificate expires. `ticket` is its place
/// among the listener's connections, given back when it ends.
async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    admission: &Admission,
    mut ticket: Ticket,
    mut stopping: watch::Receiver<bool>,
) {
    // Requests and answers are small and interactive: do not wait to fill segments.
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%remote, %error, "cannot set TCP_NODELAY");
    }
    let limits = admission.limits();
    let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
    let tls = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%remote, %error, "api tls handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "api tls handshake timed out");
                return;
            }
        },
        () = ticket.evicted() => {
            tracing::debug!(%remote, "api tls handshake stalled; closed for a newer connection");
            return;
        }
        () = stopped(&mut stopping) => return,
    };
    let peer = match peer(&tls) {
        Ok(peer) => peer,
        Err(error) => {
            // Verified by our CA yet without a cloudlet identity: nothing to serve it as.
            tracing::warn!(%remote, %error, "api tls client certificate has no cloudlet identity");
            return;
        }
    };
    let expiry = peer.as_ref().map(|peer| peer.not_after);
    // A verified client leaves the unverified share and may idle longer between requests.
    let header = if peer.is_some() {
        ticket.verified();
        limits.verified_idle_timeout
    } else {
        if admission.anonymous(&mut ticket).is_err() {
            return;
        }
        limits.header_timeout
    };
    let deadlines = Deadlines {
        header,
        request: limits.request_timeout,
    };
    let who = Caller {
        pid: None,
        uid: None,
        socket: Socket::Tls,
        peer,
    };
    // This connection's own stop: the server's, or the end of the certificate's validity.
    let (close, closing) = watch::channel(false);
    let serving = serve_http1(tls, app, who, deadlines, closing);
    tokio::pin!(serving);
    tokio::select! {
        () = &mut serving => {}
        () = stopped(&mut stopping) => {
            close.send_replace(true);
            serving.await;
        }
        () = expired(expiry) => {
            tracing::debug!(%remote, "api tls client certificate expired; closing its connection");
            close.send_replace(true);
            serving.await;
        }
    }
}

/// The holder of the connection's verified client certificate; `None` without one.
fn peer(tls: &TlsStream<TcpStream>) -> Result<Option<Peer>, cloudlet_pki::PkiError> {
    let Some(der) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        return Ok(None);
    };
    let identity = Identity::from_der(der)?;
    Ok(Some(Peer {
        role: identity.role,
        name: identity.name,
        not_after: identity.not_after,
        serial: identity.serial,
    }))
}

/// Completes when the server starts stopping.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens when the server has stopped.
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

/// Completes at `not_after` (at once if it has passed); never without one.
async fn expired(not_after: Option<Timestamp>) {
    let Some(not_after) = not_after else {
        return std::future::pending().await;
    };
    let left = Duration::try_from(Timestamp::now().duration_until(not_after)).unwrap_or_default();
    tokio::time::sleep(left).await;
}
