//! The API end to end over a real unix socket: every route through the real `Client`, error
//! statuses, socket handling (mode, stale and live sockets, shutdown) and follow streams.
//!
//! The core behind the server is a small fake `Backend` (the real core is tested end to end
//! elsewhere); everything between it and the client is real. These tests never touch anything
//! outside their own temporary directories.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests; the workspace lints aim at library code"
)]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudlet_api::dto::{
    Action, ActionResponse, ApplyAction, ApplyFile, ApplyItem, ApplyRequest, ApplyResponse,
    DesiredState, Event, EventsQuery, ExecOutput, ExecRequest, ExitInfo, LogLine, LogsQuery,
    NodeQuery, NodeStatus, RunRequest, ServiceDetail, ServiceState, ServiceStatus, ServicesQuery,
};
use cloudlet_api::{
    ApiError, Backend, Caller, Client, EventStream, ExecStream, LogStream, UnixServer,
};
use futures_util::{Stream, StreamExt, stream};
use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A multi-line validation report, as the spec crate writes them.
const INVALID_MANIFEST: &str = "web.yaml: spec.command: must not be empty\n\
                                web.yaml: spec.restart.backoff: \"1x\" is not a duration";

/// Bounds every wait on an event, so a broken test fails instead of hanging. Never a delay.
const PATIENCE: Duration = Duration::from_secs(10);

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn status(name: &str) -> ServiceStatus {
    ServiceStatus {
        name: name.to_owned(),
        node: "node-1".to_owned(),
        state: ServiceState::Running,
        ready: true,
        pid: Some(4242),
        restarts: 2,
        run: 3,
        last_exit: Some(ExitInfo {
            code: None,
            signal: Some("SIGKILL".to_owned()),
            reason: "Signaled".to_owned(),
            at: ts("2024-05-01T09:59:00Z"),
        }),
        since: ts("2024-05-01T10:00:00.123456789Z"),
        waiting_for: vec![],
        message: None,
        labels: BTreeMap::from([("tier".to_owned(), "edge".to_owned())]),
        desired: DesiredState::Running,
        next_restart_at: None,
        dropped_log_lines: 0,
        owner: None,
        group: None,
        limits: None,
        spec_digest: None,
    }
}

fn event(revision: u64, service: Option<&str>) -> Event {
    Event {
        revision,
        time: ts("2024-05-01T10:00:01Z"),
        service: service.map(str::to_owned),
        node: "node-1".to_owned(),
        reason: "Exited".to_owned(),
        message: "exited with code 1".to_owned(),
        exit: Some(ExitInfo {
            code: Some(1),
            signal: None,
            reason: "Error".to_owned(),
            at: ts("2024-05-01T10:00:01Z"),
        }),
    }
}

fn log_line(run: u64, text: &str) -> LogLine {
    LogLine {
        ts: ts("2024-05-01T10:00:02Z"),
        stream: "stdout".to_owned(),
        run,
        partial: false,
        text: text.to_owned(),
    }
}

/// The error the fake core gives for a service name, if any.
fn failure(name: &str) -> Option<ApiError> {
    let message = format!("service {name:?}: {name}");
    match name {
        "missing" => Some(ApiError::NotFound(message)),
        "invalid" => Some(ApiError::Invalid(INVALID_MANIFEST.to_owned())),
        "conflict" => Some(ApiError::Conflict(message)),
        "unavailable" => Some(ApiError::Unavailable(message)),
        "internal" => Some(ApiError::Internal(message)),
        _ => None,
    }
}

fn check(name: &str) -> Result<(), ApiError> {
    failure(name).map_or(Ok(()), Err)
}

/// Sends `()` when dropped: proves that a stream was dropped.
struct DropGuard(Option<oneshot::Sender<()>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(());
        }
    }
}

/// A stream fed by the test through `items`; `dropped` fires when the stream is dropped.
fn fed_stream<T: Send + 'static>(
    items: mpsc::UnboundedReceiver<Result<T, ApiError>>,
    dropped: oneshot::Sender<()>,
) -> impl Stream<Item = Result<T, ApiError>> + Send {
    stream::unfold(
        (items, DropGuard(Some(dropped))),
        |(mut items, guard)| async move {
            let item = items.recv().await?;
            Some((item, (items, guard)))
        },
    )
}

/// The fake core: canned answers, error by service name, and it records the queries it gets.
/// A stream put into `next_logs`/`next_events` is handed out by the next call instead.
#[derive(Default)]
struct Fake {
    logs_calls: Mutex<Vec<(String, LogsQuery)>>,
    events_calls: Mutex<Vec<EventsQuery>>,
    next_logs: Mutex<Option<LogStream>>,
    next_events: Mutex<Option<EventStream>>,
}

impl Backend for Fake {
    async fn apply(&self, request: ApplyRequest) -> Result<ApplyResponse, ApiError> {
        if request.files.iter().any(|f| f.content.contains("bad")) {
            return Err(ApiError::Invalid(INVALID_MANIFEST.to_owned()));
        }
        let items = request
            .files
            .into_iter()
            .map(|file| ApplyItem {
                name: file.name.trim_end_matches(".yaml").to_owned(),
                file: file.name,
                action: ApplyAction::Created,
                held: None,
            })
            .collect();
        Ok(ApplyResponse { items })
    }

    async fn list_services(&self, _query: ServicesQuery) -> Result<Vec<ServiceStatus>, ApiError> {
        Ok(vec![status("db"), status("web")])
    }

    async fn describe_service(
        &self,
        name: &str,
        _node: NodeQuery,
    ) -> Result<ServiceDetail, ApiError> {
        check(name)?;
        Ok(ServiceDetail {
            usage: None,
            status: status(name),
            manifest: serde_json::json!({ "name": name, "command": ["/bin/true"] }),
            events: vec![event(7, Some(name))],
            log_dir: format!("/data/logs/{name}"),
        })
    }

    async fn delete_service(&self, name: &str) -> Result<ActionResponse, ApiError> {
        check(name)?;
        Ok(ActionResponse {
            name: name.to_owned(),
            message: format!("{name} deleted"),
        })
    }

    async fn service_action(
        &self,
        name: &str,
        action: Action,
        _node: NodeQuery,
    ) -> Result<ActionResponse, ApiError> {
        check(name)?;
        Ok(ActionResponse {
            name: name.to_owned(),
            message: format!("{name} {action}"),
        })
    }

    async fn logs(&self, name: &str, query: LogsQuery) -> Result<LogStream, ApiError> {
        check(name)?;
        self.logs_calls
            .lock()
            .unwrap()
            .push((name.to_owned(), query));
        if let Some(prepared) = self.next_logs.lock().unwrap().take() {
            return Ok(prepared);
        }
        let lines = vec![Ok(log_line(1, "hello")), Ok(log_line(1, "world"))];
        Ok(Box::pin(stream::iter(lines)))
    }

    async fn events(&self, query: EventsQuery) -> Result<EventStream, ApiError> {
        self.events_calls.lock().unwrap().push(query);
        if let Some(prepared) = self.next_events.lock().unwrap().take() {
            return Ok(prepared);
        }
        let events = vec![Ok(event(1, None)), Ok(event(2, Some("web")))];
        Ok(Box::pin(stream::iter(events)))
    }

    async fn run(&self, caller: Caller, request: RunRequest) -> Result<ActionResponse, ApiError> {
        // Echo who asked, so the test can check the peer credentials arrived.
        Ok(ActionResponse {
            name: request.name,
            message: format!(
                "pid={:?} uid={:?} socket={:?}",
                caller.pid, caller.uid, caller.socket
            ),
        })
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>, ApiError> {
        Ok(Vec::new())
    }

    async fn exec(&self, _caller: Caller, request: ExecRequest) -> Result<ExecStream, ApiError> {
        let out = |stream: &str, data: &str| ExecOutput {
            stream: Some(stream.to_owned()),
            data: Some(data.to_owned()),
            exit_code: None,
            signal: None,
            timed_out: None,
        };
        let items = vec![
            Ok(out("stdout", &request.command.join(" "))),
            Ok(out("stderr", "warning\n")),
            Ok(ExecOutput {
                stream: None,
                data: None,
                exit_code: Some(3),
                signal: None,
                timed_out: Some(false),
            }),
        ];
        Ok(Box::pin(stream::iter(items)))
    }
}

/// A server on a socket in its own temporary directory.
struct Server {
    dir: tempfile::TempDir,
    path: PathBuf,
    fake: Arc<Fake>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ApiError>>,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloudlet.sock");
        Self::start_at(dir, path).await
    }

    async fn start_at(dir: tempfile::TempDir, path: PathBuf) -> Self {
        let fake = Arc::new(Fake::default());
        let bound = UnixServer::bind(&path).await.unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(bound.serve(Arc::clone(&fake), async {
            let _ = stopped.await;
        }));
        Self {
            dir,
            path,
            fake,
            stop: Some(stop),
            task,
        }
    }

    fn client(&self) -> Client {
        Client::unix(&self.path)
    }

    /// Shuts the server down and waits until `serve` has returned.
    async fn stop(mut self) -> tempfile::TempDir {
        self.stop.take().unwrap().send(()).unwrap();
        let served = tokio::time::timeout(PATIENCE, self.task).await.unwrap();
        served.unwrap().unwrap();
        self.dir
    }
}

/// One raw HTTP/1.1 exchange, for what the typed client cannot send.
async fn raw(path: &Path, request: &str) -> String {
    let mut stream = tokio::net::UnixStream::connect(path).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

async fn next<T>(items: &mut (impl Stream<Item = T> + Unpin)) -> Option<T> {
    tokio::time::timeout(PATIENCE, items.next()).await.unwrap()
}

#[tokio::test]
async fn every_route_round_trips_through_the_client() {
    let server = Server::start().await;
    let client = server.client();

    client.healthz().await.unwrap();

    let request = ApplyRequest {
        files: vec![
            ApplyFile {
                name: "web.yaml".to_owned(),
                content: "name: web\n".to_owned(),
            },
            ApplyFile {
                name: "db.yaml".to_owned(),
                content: "name: db\n".to_owned(),
            },
        ],
        retry: false,
    };
    let applied = client.apply(&request).await.unwrap();
    let names: Vec<_> = applied.items.iter().map(|i| (&*i.name, &*i.file)).collect();
    assert_eq!(names, [("web", "web.yaml"), ("db", "db.yaml")]);
    assert!(
        applied
            .items
            .iter()
            .all(|i| i.action == ApplyAction::Created)
    );

    assert_eq!(
        client
            .list_services(&ServicesQuery::default())
            .await
            .unwrap(),
        [status("db"), status("web")]
    );

    let detail = client.describe_service("web", None).await.unwrap();
    assert_eq!(
        detail,
        server
            .fake
            .describe_service("web", NodeQuery::default())
            .await
            .unwrap()
    );

    let deleted = client.delete_service("web").await.unwrap();
    assert_eq!(deleted.message, "web deleted");
    for action in [Action::Start, Action::Stop, Action::Restart] {
        let done = client.service_action("web", action, None).await.unwrap();
        assert_eq!(done.name, "web");
        assert_eq!(done.message, format!("web {action}"));
    }

    let query = LogsQuery {
        follow: false,
        tail: Some(20),
        since: Some(ts("2024-05-01T10:00:00.5+02:00")),
        previous: true,
        node: Some("n1".into()),
    };
    let lines: Vec<_> = client.logs("web", &query).await.unwrap().collect().await;
    let lines: Vec<_> = lines.into_iter().map(Result::unwrap).collect();
    assert_eq!(lines, [log_line(1, "hello"), log_line(1, "world")]);
    let recorded = server.fake.logs_calls.lock().unwrap().clone();
    assert_eq!(recorded, [("web".to_owned(), query)]);

    let query = EventsQuery {
        follow: false,
        service: Some("web & db".to_owned()),
        since_revision: Some(41),
        limit: Some(5),
    };
    let events: Vec<_> = client.events(&query).await.unwrap().collect().await;
    let events: Vec<_> = events.into_iter().map(Result::unwrap).collect();
    assert_eq!(events, [event(1, None), event(2, Some("web"))]);
    assert_eq!(*server.fake.events_calls.lock().unwrap(), [query]);

    server.stop().await;
}

#[tokio::test]
async fn backend_errors_reach_the_client_with_their_status_and_message() {
    let server = Server::start().await;
    let client = server.client();
    let cases = [
        ("missing", 404),
        ("invalid", 400),
        ("conflict", 409),
        ("unavailable", 503),
        ("internal", 500),
    ];
    for (name, code) in cases {
        let expected = failure(name).unwrap().to_string();
        let results = [
            client.describe_service(name, None).await.map(drop),
            client.delete_service(name).await.map(drop),
            client
                .service_action(name, Action::Restart, None)
                .await
                .map(drop),
            client.logs(name, &LogsQuery::default()).await.map(drop),
        ];
        for result in results {
            match result {
                Err(ApiError::Status { code: got, message }) => {
                    assert_eq!((got, &*message), (code, &*expected), "{name}");
                }
                other => panic!("{name}: expected a {code} status error, got {other:?}"),
            }
        }
    }

    let bad = ApplyRequest {
        files: vec![ApplyFile {
            name: "web.yaml".to_owned(),
            content: "bad".to_owned(),
        }],
        retry: false,
    };
    match client.apply(&bad).await {
        Err(error @ ApiError::Status { code: 400, .. }) => {
            assert_eq!(error.to_string(), INVALID_MANIFEST);
        }
        other => panic!("expected a 400 with the validation report, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_routes_and_bad_requests_get_json_errors() {
    let server = Server::start().await;

    let response = raw(
        &server.path,
        "GET /v2/services HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 404 "), "{response}");
    assert!(response.contains("application/json"), "{response}");
    assert!(
        response.ends_with(r#"{"error":"no such endpoint: GET /v2/services"}"#),
        "{response}"
    );

    let response = raw(
        &server.path,
        "PUT /v1/services HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 405 "), "{response}");
    assert!(
        response.ends_with(r#"{"error":"method PUT is not allowed on /v1/services"}"#),
        "{response}"
    );

    let body = r#"{"files": 3}"#;
    let response = raw(
        &server.path,
        &format!(
            "POST /v1/apply HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 422 "), "{response}");
    assert!(response.contains(r#"{"error":"#), "{response}");

    let response = raw(
        &server.path,
        "GET /v1/events?tail=x&limit=many HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    assert!(response.contains(r#"{"error":"#), "{response}");
}

#[tokio::test]
async fn streams_are_ndjson_and_a_bare_follow_flag_means_true() {
    let server = Server::start().await;
    let response = raw(
        &server.path,
        "GET /v1/events?follow&sinceRevision=7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(
        response.contains("content-type: application/x-ndjson"),
        "{response}"
    );
    let expected = EventsQuery {
        follow: true,
        since_revision: Some(7),
        ..EventsQuery::default()
    };
    assert_eq!(*server.fake.events_calls.lock().unwrap(), [expected]);

    let response = raw(
        &server.path,
        "GET /v1/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(response.ends_with("\r\n\r\nok"), "{response}");
}

#[tokio::test]
async fn socket_is_private_and_removed_on_shutdown() {
    let server = Server::start().await;
    let metadata = std::fs::symlink_metadata(&server.path).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    // The private directory the socket was bound in is gone.
    let entries: Vec<_> = std::fs::read_dir(server.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["cloudlet.sock"]);

    let path = server.path.clone();
    let dir = server.stop().await;
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloudlet.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a closed listener leaves its file behind");

    let error = Client::unix(&path).healthz().await.unwrap_err();
    let data_dir = dir.path().display();
    assert_eq!(
        error.to_string(),
        format!(
            "cannot reach the cloudlet server at {}: connection refused \
             (is 'cloudlet server --data-dir {data_dir}' running?)",
            path.display()
        )
    );

    let server = Server::start_at(dir, path).await;
    server.client().healthz().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_live_socket_is_refused_and_left_working() {
    let server = Server::start().await;
    let error = UnixServer::bind(&server.path).await.unwrap_err();
    assert!(matches!(error, ApiError::SocketInUse { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!("another server is listening on {}", server.path.display())
    );
    server.client().healthz().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloudlet.sock");
    std::fs::write(&path, "not a socket").unwrap();
    let error = UnixServer::bind(&path).await.unwrap_err();
    assert!(matches!(error, ApiError::NotASocket { .. }), "{error:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}

// On the multi-threaded runtime the server really runs in parallel, as in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_stream_delivers_items_as_produced_and_stops_when_the_client_drops_it() {
    let server = Server::start().await;
    let (feed, items) = mpsc::unbounded_channel();
    let (dropped, backend_dropped) = oneshot::channel();
    *server.fake.next_logs.lock().unwrap() = Some(Box::pin(fed_stream(items, dropped)));

    let query = LogsQuery {
        follow: true,
        ..LogsQuery::default()
    };
    let mut lines = server.client().logs("web", &query).await.unwrap();
    for n in 1..=3 {
        let line = log_line(n, &format!("line {n}"));
        feed.send(Ok(line.clone())).unwrap();
        assert_eq!(next(&mut lines).await.unwrap().unwrap(), line);
    }

    drop(lines);
    tokio::time::timeout(PATIENCE, backend_dropped)
        .await
        .expect("the backend's stream is dropped when the client goes away")
        .unwrap();
    assert!(feed.is_closed());
    server.stop().await;
}

#[tokio::test]
async fn an_error_mid_stream_ends_the_stream_as_an_error() {
    let server = Server::start().await;
    let (feed, items) = mpsc::unbounded_channel();
    let (dropped, backend_dropped) = oneshot::channel();
    *server.fake.next_events.lock().unwrap() = Some(Box::pin(fed_stream(items, dropped)));

    let mut events = server
        .client()
        .events(&EventsQuery::default())
        .await
        .unwrap();
    feed.send(Ok(event(1, Some("web")))).unwrap();
    assert_eq!(
        next(&mut events).await.unwrap().unwrap(),
        event(1, Some("web"))
    );
    feed.send(Err(ApiError::Unavailable("store disk full".to_owned())))
        .unwrap();
    match next(&mut events).await {
        Some(Err(ApiError::Status { code: 500, message })) => {
            assert_eq!(message, "store disk full");
        }
        other => panic!("expected the stream's error, got {other:?}"),
    }
    assert!(next(&mut events).await.is_none());
    tokio::time::timeout(PATIENCE, backend_dropped)
        .await
        .unwrap()
        .unwrap();
    server.stop().await;
}

// On the multi-threaded runtime the server really runs in parallel, as in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_follow_streams_and_removes_the_socket() {
    let server = Server::start().await;
    let (feed, items) = mpsc::unbounded_channel::<Result<Event, ApiError>>();
    let (dropped, backend_dropped) = oneshot::channel();
    *server.fake.next_events.lock().unwrap() = Some(Box::pin(fed_stream(items, dropped)));
    let query = EventsQuery {
        follow: true,
        ..EventsQuery::default()
    };
    let mut events = server.client().events(&query).await.unwrap();
    let path = server.path.clone();
    let client = server.client();

    server.stop().await;

    match next(&mut events).await {
        Some(Err(ApiError::Status { code: 500, message })) => {
            assert_eq!(message, "the cloudlet server is shutting down");
        }
        other => panic!("expected the shutdown error, got {other:?}"),
    }
    assert!(next(&mut events).await.is_none());
    tokio::time::timeout(PATIENCE, backend_dropped)
        .await
        .unwrap()
        .unwrap();
    assert!(feed.is_closed());
    assert!(!path.exists());
    let error = client.healthz().await.unwrap_err();
    assert!(matches!(error, ApiError::Connect { .. }), "{error:?}");
}

#[tokio::test]
async fn run_sees_the_callers_pid_and_exec_streams_output_then_the_exit() {
    let server = Server::start().await;
    let client = server.client();
    let request = RunRequest {
        name: "vm-1".into(),
        group: Some("vms".into()),
        command: vec!["qemu".into()],
        env: Default::default(),
        working_dir: None,
        memory: Some("2Gi".into()),
        cpu: Some("2".into()),
        pids: None,
        restart: None,
    };
    let answer = client.run(&request).await.unwrap();
    assert_eq!(answer.name, "vm-1");
    let me = format!("pid=Some({})", std::process::id());
    assert!(answer.message.contains(&me), "{}", answer.message);
    assert!(answer.message.contains("uid=Some(0)") || answer.message.contains("uid=Some("));

    let exec = ExecRequest {
        command: vec!["echo".into(), "hi".into()],
        env: Default::default(),
        working_dir: None,
        timeout_ms: Some(1000),
        node: None,
    };
    let items: Vec<ExecOutput> = client
        .exec(&exec)
        .await
        .unwrap()
        .map(|i| i.unwrap())
        .collect()
        .await;
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].data.as_deref(), Some("echo hi"));
    assert_eq!(items[2].exit_code, Some(3));
}

/// One raw HTTP/1.1 exchange on a connection made by a thread running as `uid` (per-thread
/// credentials: the kernel records them at `connect`, as `SO_PEERCRED` then reports).
async fn raw_as(uid: u32, path: &Path, request: &str) -> String {
    let path = path.to_owned();
    let connected = std::thread::spawn(move || {
        let uid = rustix::process::Uid::from_raw(uid);
        // Keeps saved uid 0: only this thread changes, and it ends here.
        rustix::thread::set_thread_res_uid(uid, uid, None).unwrap();
        std::os::unix::net::UnixStream::connect(path).unwrap()
    })
    .join()
    .unwrap();
    connected.set_nonblocking(true).unwrap();
    let mut stream = tokio::net::UnixStream::from_std(connected).unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn the_api_socket_refuses_a_peer_that_is_not_root_even_if_its_mode_lets_it_in() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test switches one thread to another user: run it as root"
    );
    let server = Server::start().await;
    // An accident: the socket and its directory left open to everyone.
    std::fs::set_permissions(server.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&server.path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let request = "GET /v1/services HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    let nobody = raw_as(65_534, &server.path, request).await;
    assert!(nobody.starts_with("HTTP/1.1 403"), "{nobody}");
    assert!(
        nobody.contains("uid 65534 may not use the cloudlet API socket"),
        "{nobody}"
    );
    let root = raw(&server.path, request).await;
    assert!(root.starts_with("HTTP/1.1 200"), "{root}");
    server.stop().await;
}
