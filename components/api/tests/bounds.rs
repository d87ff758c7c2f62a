//! The TLS listener under attack, over real TLS on loopback: idle and trickling anonymous
//! connections are cut by their deadlines or closed at once past their share, while a node with
//! a certificate keeps getting its heartbeats answered.
//!
//! The anonymous connections come from many loopback source addresses (127.0.1.x; all of
//! 127.0.0.0/8 reaches the host on Linux), so the per-address cap alone does not save the node.
//! The test process raises its soft `RLIMIT_NOFILE` to the hard limit: it holds both ends of
//! every connection. The core behind the server is a small fake `Backend`; the deadlines are
//! shortened through `TlsServer::with_limits`. These tests never write outside their own
//! temporary state (they write nothing).
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests; the workspace lints aim at library code"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cloudlet_api::dto::{
    Action, ActionResponse, ApplyRequest, ApplyResponse, EventsQuery, ExecRequest, Heartbeat,
    HeartbeatResponse, LogsQuery, NodeQuery, NodeStatus, RunRequest, ServiceDetail, ServiceStatus,
    ServicesQuery,
};
use cloudlet_api::{
    ApiError, Backend, Caller, Client, EventStream, ExecStream, Limits, LogStream, TlsConfigSource,
    TlsServer,
};
use cloudlet_pki::{
    Ca, CertSpec, ReloadingResolver, Role, client_config, server_config,
    verified_client_config_without_cert,
};
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Bounds every wait on an event, so a broken test fails instead of hanging. Never a delay.
const PATIENCE: Duration = Duration::from_secs(30);

/// The shortened deadlines the server runs under here.
const HEADER: Duration = Duration::from_secs(3);
const REQUEST: Duration = Duration::from_secs(3);

fn not_here() -> ApiError {
    ApiError::NotFound("not in this fake".to_owned())
}

/// The fake core: answers heartbeats; the rest is not needed here.
struct Fake;

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

    async fn run(&self, _caller: Caller, _request: RunRequest) -> Result<ActionResponse, ApiError> {
        Err(not_here())
    }

    async fn exec(&self, _caller: Caller, _request: ExecRequest) -> Result<ExecStream, ApiError> {
        Err(not_here())
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>, ApiError> {
        Ok(Vec::new())
    }

    async fn events(&self, _query: EventsQuery) -> Result<EventStream, ApiError> {
        Err(not_here())
    }

    async fn heartbeat(
        &self,
        _node: &str,
        _heartbeat: Heartbeat,
    ) -> Result<HeartbeatResponse, ApiError> {
        Ok(HeartbeatResponse {
            assignments_revision: 1,
            ca_hash: String::new(),
            deltas: false,
        })
    }
}

fn heartbeat() -> Heartbeat {
    let r = serde_json::json!({"cpuMillis": 0, "memoryBytes": 0, "pids": 0});
    let node = serde_json::from_value(serde_json::json!({
        "name": "n1", "capacity": r, "reserve": r, "allocatable": r, "requested": r,
        "memoryAvailableBytes": 1, "pidsInUse": 1, "disks": [], "conditions": [],
        "limits": "", "observedAt": "2026-12-07T00:00:00Z", "roles": [], "labels": {},
        "state": "", "cordoned": false, "draining": false, "services": 0
    }))
    .unwrap();
    Heartbeat {
        node,
        services: Some(Vec::new()),
        delta: None,
        seq: 0,
    }
}

/// The cluster's CA, a server certificate for 127.0.0.1, and client configs.
struct Pki {
    ca: Ca,
    server: Arc<ReloadingResolver>,
}

impl Pki {
    fn new() -> Self {
        let ca = Ca::create().unwrap();
        let spec = CertSpec::new(Role::Server, "server")
            .dns_name("localhost")
            .ip("127.0.0.1".parse().unwrap());
        let (cert, key) = ca.issue(&spec).unwrap();
        let server = Arc::new(ReloadingResolver::new(&cert, &key.to_pem()).unwrap());
        Self { ca, server }
    }

    fn roots(&self) -> Vec<CertificateDer<'static>> {
        vec![self.ca.cert_der().clone()]
    }

    fn node_config(&self) -> Arc<ClientConfig> {
        let (cert, key) = self.ca.issue(&CertSpec::new(Role::Node, "n1")).unwrap();
        let resolver = Arc::new(ReloadingResolver::new(&cert, &key.to_pem()).unwrap());
        Arc::new(client_config(&self.roots(), resolver).unwrap())
    }

    fn anonymous_config(&self) -> Arc<ClientConfig> {
        Arc::new(verified_client_config_without_cert(&self.roots()).unwrap())
    }
}

/// A `TlsServer` on 127.0.0.1 that lets anonymous clients in, with the shortened deadlines.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ApiError>>,
}

impl Server {
    async fn start(pki: &Pki) -> Self {
        let limits = Limits {
            handshake_timeout: HEADER,
            header_timeout: HEADER,
            request_timeout: REQUEST,
            ..Limits::default()
        };
        Self::start_with(pki, limits).await
    }

    async fn start_with(pki: &Pki, limits: Limits) -> Self {
        let config = Arc::new(server_config(&pki.roots(), Arc::clone(&pki.server), true).unwrap());
        let bound = TlsServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
            .with_limits(limits);
        let addr = bound.local_addr();
        let source: TlsConfigSource = Arc::new(move || Arc::clone(&config));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(bound.serve(Arc::new(Fake), source, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn client(&self, config: Arc<ClientConfig>) -> Client {
        Client::https(&format!("https://127.0.0.1:{}", self.addr.port()), config).unwrap()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let served = tokio::time::timeout(PATIENCE, self.task).await.unwrap();
        served.unwrap().unwrap();
    }
}

/// Raises the soft limit of open files to the hard one: each connection costs this process two.
fn raise_nofile() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).unwrap();
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn tcp_from(from: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    socket.connect(addr).await
}

/// A TLS connection without a client certificate from `from`; `None` if the server closed it
/// before the handshake completed.
async fn anonymous_tls(
    from: Ipv4Addr,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Option<TlsStream<TcpStream>> {
    let tcp = tcp_from(from, addr).await.ok()?;
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(config).connect(name, tcp).await.ok()
}

/// Waits until the server closes `stream` (EOF or an error), reading and discarding whatever
/// it sends; how long that took, and what it sent.
async fn closed_after(stream: &mut TlsStream<TcpStream>) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (started.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept an idle connection open for {PATIENCE:?}"),
        }
    }
}

/// How one flood connection went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Closed before or right after its handshake, within this long.
    ClosedEarly(Duration),
    /// Held idle from its handshake on, then cut after this long.
    CutAfter(Duration),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_its_heartbeats_while_2000_anonymous_connections_sit_idle() {
    const FLOOD: usize = 2000;
    const ADDRESSES: usize = 100;
    let nofile = raise_nofile();
    assert!(
        nofile >= 2 * FLOOD as u64 + 256,
        "RLIMIT_NOFILE {nofile} is too low for this test"
    );
    // The default limits: the real header deadline, so that the flood is all open before the
    // first idle connection is cut.
    const IDLE_CUT: Duration = cloudlet_api::limits::HEADER_TIMEOUT;
    let pki = Pki::new();
    let server = Server::start_with(&pki, Limits::default()).await;
    let node = server.client(pki.node_config());
    tokio::time::timeout(PATIENCE, node.heartbeat("n1", &heartbeat()))
        .await
        .unwrap()
        .unwrap();

    // The node beats throughout, on its kept connection and, every other time, on a new one.
    let (stop_beating, mut stopped) = oneshot::channel::<()>();
    let beats = {
        let kept = node.clone();
        let config = pki.node_config();
        let fresh_url = format!("https://127.0.0.1:{}", server.addr.port());
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut count = 0u32;
            loop {
                let client = if count.is_multiple_of(2) {
                    kept.clone()
                } else {
                    Client::https(&fresh_url, Arc::clone(&config)).unwrap()
                };
                let started = Instant::now();
                let answer = tokio::time::timeout(PATIENCE, client.heartbeat("n1", &heartbeat()))
                    .await
                    .expect("a heartbeat got no answer");
                answer.expect("a heartbeat failed");
                slowest = slowest.max(started.elapsed());
                count += 1;
                tokio::select! {
                    _ = &mut stopped => return (count, slowest),
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        })
    };

    let anonymous = pki.anonymous_config();
    let flood_started = Instant::now();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(FLOOD);
    // How many flood connections are open as their client sees it, and a wake-up on each close.
    let open = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(Notify::new());
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..FLOOD {
        let from = Ipv4Addr::new(127, 0, 1, u8::try_from(1 + i % ADDRESSES).unwrap());
        let (addr, config, opened) = (server.addr, Arc::clone(&anonymous), opened_tx.clone());
        let (open, closed) = (Arc::clone(&open), Arc::clone(&closed));
        flood.spawn(async move {
            let tls = anonymous_tls(from, addr, config).await;
            if tls.is_some() {
                open.fetch_add(1, Ordering::SeqCst);
            }
            opened.send(()).await.unwrap();
            let Some(mut tls) = tls else {
                return Fate::ClosedEarly(Duration::ZERO);
            };
            // From the end of its handshake: how long the server let it sit.
            let (lived, sent) = closed_after(&mut tls).await;
            open.fetch_sub(1, Ordering::SeqCst);
            closed.notify_one();
            assert!(sent.is_empty(), "an idle connection was sent {sent:?}");
            if lived < IDLE_CUT / 2 {
                Fate::ClosedEarly(lived)
            } else {
                Fate::CutAfter(lived)
            }
        });
    }
    for _ in 0..FLOOD {
        tokio::time::timeout(PATIENCE, opened_rx.recv())
            .await
            .unwrap()
            .unwrap();
    }
    let flood_took = flood_started.elapsed();
    stop_beating.send(()).unwrap();
    let (beats_during, slowest_during) = beats.await.unwrap();
    // Those past the anonymous share are closed right after their handshake, long before the
    // first idle one is cut.
    let share = cloudlet_api::limits::MAX_ANONYMOUS;
    let settled = tokio::time::timeout(IDLE_CUT / 2, async {
        while open.load(Ordering::SeqCst) > share {
            closed.notified().await;
        }
    })
    .await;
    let held_at_once = open.load(Ordering::SeqCst);
    assert!(
        settled.is_ok(),
        "{held_at_once} anonymous connections still open, past the share of {share}"
    );

    // Every flood connection has done its handshake (or was refused); the admitted ones sit
    // idle now. The node beats on its kept connection and on new ones: promptly.
    let fresh = server.client(pki.node_config());
    let mut slowest_idle = Duration::ZERO;
    for i in 0..10 {
        let client = if i % 2 == 0 { &node } else { &fresh };
        let started = Instant::now();
        tokio::time::timeout(PATIENCE, client.heartbeat("n1", &heartbeat()))
            .await
            .unwrap()
            .unwrap();
        slowest_idle = slowest_idle.max(started.elapsed());
    }
    let beat_while_idle = flood_started.elapsed();
    let held_after_beats = open.load(Ordering::SeqCst);

    let fates: Vec<Fate> = tokio::time::timeout(PATIENCE, flood.join_all())
        .await
        .unwrap();
    let cut: Vec<Duration> = fates
        .iter()
        .filter_map(|f| match f {
            Fate::CutAfter(lived) => Some(*lived),
            Fate::ClosedEarly(_) => None,
        })
        .collect();
    let early = fates.len() - cut.len();
    let longest_cut = cut.iter().max().copied().unwrap_or_default();
    println!(
        "{FLOOD} anonymous connections from {ADDRESSES} addresses, all handshakes done in \
         {flood_took:?}: {} held idle ({held_at_once} at once once settled, {held_after_beats} after the beats) \
         and cut after at most {longest_cut:?}, {early} closed at once; {beats_during} heartbeats while they connected (slowest {slowest_during:?}), 10 \
         while they sat idle (slowest {slowest_idle:?}, done {beat_while_idle:?} after the \
         flood began; RLIMIT_NOFILE {nofile})",
        cut.len()
    );
    // The heartbeats were answered while the admitted idle ones were all still held.
    assert!(
        held_after_beats > 0 && held_after_beats == held_at_once,
        "{held_after_beats}"
    );
    assert!(!cut.is_empty(), "no anonymous connection was let in at all");
    // The idle ones were cut after the header deadline: not before, and not much after.
    for lived in &cut {
        assert!(
            *lived >= IDLE_CUT - Duration::from_millis(100),
            "cut after {lived:?}"
        );
        assert!(
            *lived < IDLE_CUT + Duration::from_secs(3),
            "cut after {lived:?}"
        );
    }
    // The node was answered throughout; promptly once the handshakes were done.
    assert!(beats_during >= 1, "no heartbeat while the flood connected");
    assert!(
        slowest_idle < Duration::from_secs(1),
        "a heartbeat took {slowest_idle:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_request_head_trickled_in_is_cut_at_the_header_deadline() {
    let pki = Pki::new();
    let server = Server::start(&pki).await;
    let mut tls = anonymous_tls(Ipv4Addr::LOCALHOST, server.addr, pki.anonymous_config())
        .await
        .unwrap();
    tls.write_all(b"GET /v1/healthz HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // One header byte every 200 ms: each arrives well within any per-read timeout.
    let cut = loop {
        if tls.write_all(b"x").await.is_err() || tls.flush().await.is_err() {
            break started.elapsed();
        }
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_millis(200), tls.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "still trickling after {PATIENCE:?}"
        );
    };
    println!("a trickled request head was cut after {cut:?}");
    assert!(cut < HEADER + Duration::from_secs(2), "cut after {cut:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_request_body_trickled_in_is_answered_408_at_the_request_deadline() {
    let pki = Pki::new();
    let server = Server::start(&pki).await;
    let mut tls = anonymous_tls(Ipv4Addr::LOCALHOST, server.addr, pki.anonymous_config())
        .await
        .unwrap();
    // `join` is open to anonymous clients, so the body is read (slowly).
    tls.write_all(
        b"POST /v1/join HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
          content-length: 100000\r\n\r\n{",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let cut = loop {
        if tls.write_all(b" ").await.is_err() || tls.flush().await.is_err() {
            break started.elapsed();
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(200), tls.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        assert!(
            started.elapsed() < PATIENCE,
            "still trickling after {PATIENCE:?}"
        );
    };
    let answer = String::from_utf8_lossy(&answer);
    println!("a trickled body was cut after {cut:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        cut >= REQUEST && cut < REQUEST + Duration::from_secs(2),
        "cut after {cut:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn one_address_gets_its_share_of_handshakes_and_a_node_still_connects() {
    let pki = Pki::new();
    let server = Server::start(&pki).await;
    let from = Ipv4Addr::new(127, 0, 2, 1);
    let share = cloudlet_api::limits::MAX_UNVERIFIED_PER_ADDRESS;
    // Connections that never start their handshake: the address's share is held, then the
    // next ones are closed at once.
    let mut held = Vec::new();
    for _ in 0..share {
        held.push(tcp_from(from, server.addr).await.unwrap());
    }
    let mut extra = tcp_from(from, server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(1), extra.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "a connection past the address's share stayed open: {read:?}"
    );
    // Another address, a node here, is not affected.
    let node = server.client(pki.node_config());
    tokio::time::timeout(PATIENCE, node.heartbeat("n1", &heartbeat()))
        .await
        .unwrap()
        .unwrap();
    drop(held);
    server.stop().await;
}

/// A "server" on a unix socket in a new temporary directory that reads each request head and
/// then does `answer` with the connection.
fn raw_unix_server<F, Fut>(answer: F) -> (tempfile::TempDir, Client)
where
    F: Fn(tokio::net::UnixStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            tokio::spawn(answer(stream));
        }
    });
    (dir, Client::unix(path))
}

#[tokio::test]
async fn a_server_that_never_answers_costs_the_client_its_deadline_only() {
    let (_dir, client) = raw_unix_server(|stream| async move {
        // Holds the connection open, silent, until the test ends.
        std::future::pending::<()>().await;
        drop(stream);
    });
    let deadline = Duration::from_millis(500);
    let started = Instant::now();
    let error = tokio::time::timeout(PATIENCE, client.with_timeout(deadline).nodes())
        .await
        .expect("the client waited for a silent server beyond its deadline")
        .unwrap_err();
    let took = started.elapsed();
    assert!(error.to_string().contains("no answer within"), "{error}");
    assert!(took >= deadline && took < deadline * 4, "{took:?}");
    // A streaming call waits for the head of its answer no longer either.
    let error = tokio::time::timeout(
        PATIENCE,
        client
            .with_timeout(deadline)
            .events(&EventsQuery::default()),
    )
    .await
    .expect("the client waited for a silent server beyond its deadline");
    assert!(error.is_err());
}

/// Sends a chunked 200 answer whose body never ends: `chunk` over and over.
async fn endless_answer(mut stream: tokio::net::UnixStream, content_type: &str, chunk: &[u8]) {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
    while stream.write_all(&framed).await.is_ok() {}
}

#[tokio::test]
async fn an_endless_answer_is_cut_at_the_body_cap() {
    let (_dir, client) = raw_unix_server(|stream| async move {
        endless_answer(stream, "application/json", &[b' '; 64 * 1024]).await;
    });
    let started = Instant::now();
    let error = tokio::time::timeout(PATIENCE, client.nodes())
        .await
        .expect("the client read an endless answer for as long as it came")
        .unwrap_err();
    println!(
        "an endless answer was cut after {:?}: {error}",
        started.elapsed()
    );
    assert!(error.to_string().contains("larger than"), "{error}");
}

#[tokio::test]
async fn an_endless_stream_line_is_cut_at_the_line_cap() {
    let (_dir, client) = raw_unix_server(|stream| async move {
        endless_answer(stream, "application/x-ndjson", &[b' '; 64 * 1024]).await;
    });
    let mut events = client.events(&EventsQuery::default()).await.unwrap();
    let item = tokio::time::timeout(PATIENCE, futures_util::StreamExt::next(&mut events))
        .await
        .expect("the client buffered an endless line for as long as it came")
        .unwrap();
    let error = item.unwrap_err();
    assert!(error.to_string().contains("longer than"), "{error}");
}

#[tokio::test]
async fn a_node_gets_in_while_stalled_handshakes_hold_every_place() {
    const PLACES: usize = 64;
    let pki = Pki::new();
    // A handshake deadline far off: only making way for new connections can let the node in.
    let limits = Limits {
        max_handshakes: PLACES,
        handshake_timeout: PATIENCE,
        ..Limits::default()
    };
    let server = Server::start_with(&pki, limits).await;
    // Connections that never start their handshake, from many addresses, hold every place.
    let mut stalled = Vec::new();
    for i in 0..PLACES {
        let from = Ipv4Addr::new(127, 0, 3, u8::try_from(1 + i).unwrap());
        stalled.push(tcp_from(from, server.addr).await.unwrap());
    }
    // Until they are stalled, not merely slow, they keep their places: a new one is closed.
    let mut early = tcp_from(Ipv4Addr::new(127, 0, 4, 1), server.addr)
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, early.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    // Ageing is what is awaited here.
    tokio::time::sleep(cloudlet_api::limits::STALLED_HANDSHAKE).await;
    let started = Instant::now();
    let node = server.client(pki.node_config());
    tokio::time::timeout(PATIENCE, node.heartbeat("n1", &heartbeat()))
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    println!("a node got in past {PLACES} stalled handshakes in {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The oldest stalled one made way.
    let read = tokio::time::timeout(PATIENCE, stalled[0].read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    server.stop().await;
}
