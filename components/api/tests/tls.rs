//! The API over real mutual TLS on 127.0.0.1: who the handlers see as the caller (an admin, or
//! nobody where anonymous joining is allowed), which clients the handshake refuses while the
//! listener keeps serving, a server certificate renewed under open connections, the client's one
//! reused connection, and the admin config file.
//!
//! The core behind the server is a small fake `Backend`; the TLS, HTTP and certificates are real.
//! Accepted connections are counted where the server asks for its config, which it does once per
//! accepted connection. These tests never write outside their own temporary directories.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests; the workspace lints aim at library code"
)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cloudlet_api::dto::{
    Action, ActionResponse, ApplyRequest, ApplyResponse, Event, EventsQuery, ExecRequest,
    LogsQuery, NodeQuery, NodeStatus, RunRequest, ServiceDetail, ServiceStatus, ServicesQuery,
};
use cloudlet_api::{
    AdminConfig, ApiError, Backend, Caller, Client, EventStream, ExecStream, LogStream, Peer,
    Socket, TlsConfigSource, TlsServer,
};
use cloudlet_pki::{
    Ca, CertSpec, Identity, ReloadingResolver, Role, client_config, server_config,
    verified_client_config_without_cert,
};
use futures_util::{StreamExt, stream};
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use jiff::{SignedDuration, Timestamp};
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// Bounds every wait on an event, so a broken test fails instead of hanging. Never a delay.
const PATIENCE: Duration = Duration::from_secs(10);

fn not_here() -> ApiError {
    ApiError::NotFound("not in this fake".to_owned())
}

/// The fake core: `run` records who called and answers; `events` gives two events; the rest is
/// not needed here.
#[derive(Default)]
struct Fake {
    callers: Mutex<Vec<Caller>>,
}

impl Backend for Fake {
    async fn apply(&self, _request: ApplyRequest) -> Result<ApplyResponse, ApiError> {
        Err(not_here())
    }

    async fn list_services(&self, _query: ServicesQuery) -> Result<Vec<ServiceStatus>, ApiError> {
        Err(not_here())
    }

    async fn describe_service(
        &self,
        _name: &str,
        _node: NodeQuery,
    ) -> Result<ServiceDetail, ApiError> {
        Err(not_here())
    }

    async fn delete_service(&self, _name: &str) -> Result<ActionResponse, ApiError> {
        Err(not_here())
    }

    async fn service_action(
        &self,
        _name: &str,
        _action: Action,
        _node: NodeQuery,
    ) -> Result<ActionResponse, ApiError> {
        Err(not_here())
    }

    async fn logs(&self, _name: &str, _query: LogsQuery) -> Result<LogStream, ApiError> {
        Err(not_here())
    }

    async fn run(&self, caller: Caller, request: RunRequest) -> Result<ActionResponse, ApiError> {
        self.callers.lock().unwrap().push(caller);
        Ok(ActionResponse {
            name: request.name,
            message: "started".to_owned(),
        })
    }

    async fn exec(&self, _caller: Caller, _request: ExecRequest) -> Result<ExecStream, ApiError> {
        Err(not_here())
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>, ApiError> {
        Ok(Vec::new())
    }

    async fn events(&self, _query: EventsQuery) -> Result<EventStream, ApiError> {
        let event = |revision| Event {
            revision,
            time: Timestamp::now(),
            service: None,
            node: "node-1".to_owned(),
            reason: "Started".to_owned(),
            message: "started".to_owned(),
            exit: None,
        };
        Ok(Box::pin(stream::iter(vec![Ok(event(1)), Ok(event(2))])))
    }
}

fn run_request() -> RunRequest {
    RunRequest {
        name: "job".to_owned(),
        group: None,
        command: vec!["/bin/true".to_owned()],
        env: Default::default(),
        working_dir: None,
        memory: None,
        cpu: None,
        pids: None,
        restart: None,
    }
}

/// A cluster's certificates: the CA and the server's hot-swappable certificate.
struct Pki {
    ca: Ca,
    server: Arc<ReloadingResolver>,
}

impl Pki {
    fn new() -> Self {
        let ca = Ca::create().unwrap();
        let (cert, key) = ca.issue(&server_spec()).unwrap();
        let server = Arc::new(ReloadingResolver::new(&cert, &key.to_pem()).unwrap());
        Self { ca, server }
    }

    fn roots(&self) -> Vec<CertificateDer<'static>> {
        vec![self.ca.cert_der().clone()]
    }

    fn server_config(&self, anonymous: bool) -> Arc<rustls::ServerConfig> {
        Arc::new(server_config(&self.roots(), Arc::clone(&self.server), anonymous).unwrap())
    }

    /// A client config presenting a fresh certificate from `ca` for `spec`, trusting this CA.
    fn client_config(&self, ca: &Ca, spec: &CertSpec) -> Arc<ClientConfig> {
        let (cert, key) = ca.issue(spec).unwrap();
        let resolver = Arc::new(ReloadingResolver::new(&cert, &key.to_pem()).unwrap());
        Arc::new(client_config(&self.roots(), resolver).unwrap())
    }

    fn admin_config(&self) -> Arc<ClientConfig> {
        self.client_config(&self.ca, &CertSpec::new(Role::Admin, "alice"))
    }
}

fn server_spec() -> CertSpec {
    CertSpec::new(Role::Server, "server")
        .dns_name("localhost")
        .ip("127.0.0.1".parse().unwrap())
}

/// A `TlsServer` on 127.0.0.1 with a port of its own.
struct Server {
    addr: SocketAddr,
    fake: Arc<Fake>,
    /// How many connections it accepted: it asks for its config once for each.
    accepted: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ApiError>>,
}

impl Server {
    async fn start(config: Arc<rustls::ServerConfig>) -> Self {
        let bound = TlsServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = bound.local_addr();
        assert_ne!(addr.port(), 0);
        let fake = Arc::new(Fake::default());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let source: TlsConfigSource = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Arc::clone(&config)
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(bound.serve(Arc::clone(&fake), source, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            fake,
            accepted,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn client(&self, config: Arc<ClientConfig>) -> Client {
        Client::https(&self.url(), config).unwrap()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn callers(&self) -> Vec<Caller> {
        self.fake.callers.lock().unwrap().clone()
    }

    /// Shuts the server down and waits until `serve` has returned.
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let served = tokio::time::timeout(PATIENCE, self.task).await.unwrap();
        served.unwrap().unwrap();
    }
}

async fn within<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, work).await.unwrap()
}

/// A connection made by hand, to see the server's certificate: its HTTP sender, the serial of
/// the certificate the server presented, and the task that ends when the connection does.
async fn raw_connection(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> (
    SendRequest<Empty<Bytes>>,
    String,
    JoinHandle<hyper::Result<()>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = within(TlsConnector::from(config).connect(name, tcp))
        .await
        .unwrap();
    let serial = Identity::from_der(&tls.get_ref().1.peer_certificates().unwrap()[0])
        .unwrap()
        .serial;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    (sender, serial, tokio::spawn(connection))
}

/// `GET /v1/healthz` on a hand-made connection; its status.
async fn raw_healthz(sender: &mut SendRequest<Empty<Bytes>>) -> u16 {
    let request = hyper::Request::get("/v1/healthz")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn admin_certificate_reaches_the_api_and_handlers_see_its_holder() {
    let pki = Pki::new();
    let server = Server::start(pki.server_config(false)).await;
    let (cert, key) = pki.ca.issue(&CertSpec::new(Role::Admin, "alice")).unwrap();
    let identity = Identity::from_pem(&cert).unwrap();
    let resolver = Arc::new(ReloadingResolver::new(&cert, &key.to_pem()).unwrap());
    let client = server.client(Arc::new(client_config(&pki.roots(), resolver).unwrap()));

    within(client.healthz()).await.unwrap();
    let answer = within(client.run(&run_request())).await.unwrap();
    assert_eq!(answer.name, "job");
    assert_eq!(
        server.callers(),
        vec![Caller {
            pid: None,
            uid: None,
            socket: Socket::Tls,
            peer: Some(Peer {
                role: Role::Admin,
                name: "alice".to_owned(),
                not_after: identity.not_after,
                serial: identity.serial,
            }),
        }]
    );
    server.stop().await;
}

#[tokio::test]
async fn anonymous_client_gets_in_only_where_the_server_allows_it_and_is_nobody() {
    let pki = Pki::new();
    let anonymous = Arc::new(verified_client_config_without_cert(&pki.roots()).unwrap());

    // A server that does not allow anonymous clients refuses the handshake.
    let strict = Server::start(pki.server_config(false)).await;
    let error = within(strict.client(Arc::clone(&anonymous)).healthz())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ApiError::Lost { .. } | ApiError::Unreachable { .. }),
        "{error:?}"
    );

    // One that does lets it in as nobody: health is open to it; running a service needs a
    // certificate, which the caller without one is told, and the backend never hears of it.
    let open = Server::start(pki.server_config(true)).await;
    let client = open.client(anonymous);
    within(client.healthz()).await.unwrap();
    let error = within(client.run(&run_request())).await.unwrap_err();
    let ApiError::Status { code: 401, message } = &error else {
        panic!("{error:?}");
    };
    assert!(message.contains("client certificate"), "{message}");
    assert!(open.callers().is_empty());
}

#[tokio::test]
async fn client_certificate_from_another_ca_fails_and_the_listener_keeps_serving() {
    let pki = Pki::new();
    let other = Ca::create().unwrap();
    let server = Server::start(pki.server_config(true)).await;
    // A client that connects and never starts its handshake holds up nobody.
    let _silent = TcpStream::connect(server.addr).await.unwrap();

    let intruder = server.client(pki.client_config(&other, &CertSpec::new(Role::Admin, "eve")));
    let error = within(intruder.healthz()).await.unwrap_err();
    assert!(
        matches!(error, ApiError::Lost { .. } | ApiError::Unreachable { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&server.url()), "{message}");

    let admin = server.client(pki.admin_config());
    within(admin.run(&run_request())).await.unwrap();
    assert_eq!(server.callers().len(), 1);
    assert_eq!(server.accepted(), 3);
    server.stop().await;
}

#[tokio::test]
async fn expired_client_certificate_fails_and_the_listener_keeps_serving() {
    let pki = Pki::new();
    let server = Server::start(pki.server_config(true)).await;
    let expired = CertSpec::new(Role::Admin, "alice")
        .not_before(Timestamp::now() - SignedDuration::from_hours(2))
        .lifetime(Duration::from_secs(60));

    let client = server.client(pki.client_config(&pki.ca, &expired));
    let error = within(client.healthz()).await.unwrap_err();
    assert!(
        matches!(error, ApiError::Lost { .. } | ApiError::Unreachable { .. }),
        "{error:?}"
    );

    within(server.client(pki.admin_config()).healthz())
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn connection_closes_when_its_client_certificate_expires() {
    let pki = Pki::new();
    let server = Server::start(pki.server_config(false)).await;
    let short = CertSpec::new(Role::Admin, "alice").lifetime(Duration::from_secs(2));
    let (mut sender, _, connection) =
        raw_connection(server.addr, pki.client_config(&pki.ca, &short)).await;
    assert_eq!(raw_healthz(&mut sender).await, 200);
    // The server ends the connection at the certificate's end, without being asked.
    within(connection).await.unwrap().unwrap();
    assert!(sender.is_closed());
    server.stop().await;
}

#[tokio::test]
async fn renewed_server_certificate_serves_new_connections_while_old_ones_keep_working() {
    let pki = Pki::new();
    let server = Server::start(pki.server_config(false)).await;
    let (mut old, old_serial, _) = raw_connection(server.addr, pki.admin_config()).await;
    assert_eq!(raw_healthz(&mut old).await, 200);
    let client = server.client(pki.admin_config());
    within(client.healthz()).await.unwrap();
    assert_eq!(server.accepted(), 2);

    let (cert, key) = pki.ca.issue(&server_spec()).unwrap();
    let new_serial = Identity::from_pem(&cert).unwrap().serial;
    assert_ne!(new_serial, old_serial);
    pki.server.set(&cert, &key.to_pem()).unwrap();

    let (mut new, serial, _) = raw_connection(server.addr, pki.admin_config()).await;
    assert_eq!(serial, new_serial);
    assert_eq!(raw_healthz(&mut new).await, 200);
    // The connections made before the swap still serve: the hand-made one, and the client's
    // kept one, which it reuses without a new handshake.
    assert_eq!(raw_healthz(&mut old).await, 200);
    within(client.healthz()).await.unwrap();
    assert_eq!(server.accepted(), 3);
    server.stop().await;
}

#[tokio::test]
async fn client_reuses_one_connection_and_streams_on_their_own() {
    let pki = Pki::new();
    let server = Server::start(pki.server_config(false)).await;
    let client = server.client(pki.admin_config());

    within(client.healthz()).await.unwrap();
    within(client.run(&run_request())).await.unwrap();
    // A clone shares the connection.
    within(client.clone().nodes()).await.unwrap();
    assert_eq!(server.accepted(), 1);

    // A stream takes a connection of its own, and the kept one stays for the next call.
    let events: Vec<_> = within(client.events(&EventsQuery::default()))
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(Result::is_ok), "{events:?}");
    assert_eq!(server.accepted(), 2);
    within(client.healthz()).await.unwrap();
    assert_eq!(server.accepted(), 2);

    // A server that went away is no reason to fail the next call: it gets a new connection, and
    // a server that is gone for good is named in the error.
    let url = server.url();
    server.stop().await;
    let error = within(client.healthz()).await.unwrap_err();
    let ApiError::Unreachable { url: named, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(named, &url);
    assert!(error.to_string().contains(&url), "{error}");
}

#[tokio::test]
async fn https_urls_are_checked_before_anything_is_connected() {
    let config = Arc::new(verified_client_config_without_cert(&Pki::new().roots()).unwrap());
    for good in [
        "https://10.77.0.1:6443",
        "https://node-1.example:6443/",
        "https://[::1]:6443",
        "HTTPS://localhost",
    ] {
        assert!(Client::https(good, Arc::clone(&config)).is_ok(), "{good}");
    }
    assert_eq!(
        Client::https("https://localhost", Arc::clone(&config))
            .unwrap()
            .endpoint(),
        "https://localhost:443"
    );
    for (bad, why) in [
        ("http://10.77.0.1:6443", "only https"),
        ("10.77.0.1:6443", "no scheme"),
        ("https://10.77.0.1:0", "port"),
        ("https://10.77.0.1:http", "port"),
        ("https://10.77.0.1:6443/v1", "only a host and a port"),
        ("https://::1:6443", "brackets"),
        ("https://:6443", "no host"),
    ] {
        let error = Client::https(bad, Arc::clone(&config)).unwrap_err();
        let text = error.to_string();
        assert!(text.contains(bad) && text.contains(why), "{bad}: {text}");
    }
}

fn admin_config(pki: &Pki, server: &str) -> AdminConfig {
    let (cert, key) = pki.ca.issue(&CertSpec::new(Role::Admin, "alice")).unwrap();
    AdminConfig {
        server: server.to_owned(),
        ca: pki.ca.cert_pem().to_owned(),
        cert,
        key: key.to_pem(),
    }
}

#[tokio::test]
async fn admin_config_round_trips_with_mode_0600_and_reaches_the_server() {
    let pki = Pki::new();
    let server = Server::start(pki.server_config(false)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.conf");
    // An older file with a looser mode is replaced, not reused.
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let config = admin_config(&pki, &server.url());
    config.save(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("apiVersion: cloudlet/v1\nkind: Config\n"),
        "{text}"
    );
    assert!(!format!("{config:?}").contains(&config.key[40..80]));

    let loaded = AdminConfig::load(&path).unwrap();
    assert_eq!(loaded, config);
    within(loaded.client().unwrap().run(&run_request()))
        .await
        .unwrap();
    let peer = server.callers()[0].peer.clone().unwrap();
    assert_eq!((peer.role, peer.name.as_str()), (Role::Admin, "alice"));
    server.stop().await;
}

#[test]
fn admin_config_errors_name_the_file_and_the_field() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.conf");
    let good = admin_config(&pki, "https://10.77.0.1:6443");
    good.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let error_for = |text: &str| {
        std::fs::write(&path, text).unwrap();
        AdminConfig::load(&path).unwrap_err().to_string()
    };

    // Without `cert`.
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.starts_with("cert:")).unwrap();
    let end = start
        + 1
        + lines[start + 1..]
            .iter()
            .take_while(|l| l.starts_with(' '))
            .count();
    let without_cert = [&lines[..start], &lines[end..]].concat().join("\n");
    let error = error_for(&without_cert);
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("cert: is required"), "{error}");

    let error = error_for(&text.replace("kind: Config", "kind: Other"));
    assert!(error.contains("kind:"), "{error}");
    let error = error_for(&format!("{text}extra: 1\n"));
    assert!(error.contains("unknown field \"extra\""), "{error}");
    let error = error_for(&text.replace("https://10.77.0.1:6443", "http://10.77.0.1:6443"));
    assert!(error.contains("server:"), "{error}");
    // A key of another certificate.
    let other = admin_config(&pki, "https://10.77.0.1:6443");
    let mut mismatched = good.clone();
    mismatched.key = other.key;
    mismatched.save(&path).unwrap();
    let error = AdminConfig::load(&path).unwrap_err().to_string();
    assert!(error.contains("cert and key:"), "{error}");

    let missing = dir.path().join("nope.conf");
    let error = AdminConfig::load(&missing).unwrap_err().to_string();
    assert!(error.contains("nope.conf"), "{error}");
}
