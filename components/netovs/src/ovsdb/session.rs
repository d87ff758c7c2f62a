//! The task behind a [`Client`](super::Client): it owns the connection and everything that lives
//! on it.
//!
//! Owns: the socket (one at a time), request ids and the answers they wait for, answering the
//! server's `echo`, probing a silent server with ours, reconnecting with exponential backoff, and
//! re-establishing every monitor after a reconnection (each consumer then gets a snapshot).
//! Must never: wait on a consumer (monitors are fed with `try_send`), or resend a request: one in
//! flight when the connection drops fails with [`NetovsError::Connection`], and the caller
//! decides whether to retry.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::client::{ClientOptions, Endpoint};
use super::framing::Decoder;
use super::monitor::{Delivery, MonitorEvent, SnapshotCause, decode_table_updates};
use super::rpc::{self, Message};
use crate::NetovsError;

/// What a [`Client`](super::Client) or [`Monitor`](super::Monitor) asks of the task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send a request and pass on its answer.
    Call {
        method: &'static str,
        params: Value,
        reply: oneshot::Sender<Result<Value, NetovsError>>,
    },
    /// Create a monitor feeding `deliveries`; the answer is its id.
    Monitor {
        db: String,
        requests: Value,
        deliveries: mpsc::Sender<Delivery>,
        reply: oneshot::Sender<Result<u64, NetovsError>>,
    },
    /// The consumer of this lagged monitor has caught up: send it a snapshot.
    Resync(u64),
    /// The consumer is gone.
    Cancel(u64),
}

/// An open connection.
pub(crate) struct Link {
    reader: Box<dyn AsyncRead + Unpin + Send>,
    writer: Box<dyn AsyncWrite + Unpin + Send>,
    decoder: Decoder,
    chunk: Box<[u8]>,
}

/// Opens a connection to `endpoint`.
pub(crate) async fn connect(endpoint: &Endpoint) -> Result<Link, NetovsError> {
    let (reader, writer): (
        Box<dyn AsyncRead + Unpin + Send>,
        Box<dyn AsyncWrite + Unpin + Send>,
    ) = match endpoint {
        Endpoint::Unix(path) => {
            let stream =
                UnixStream::connect(path)
                    .await
                    .map_err(|source| NetovsError::Connect {
                        path: path.clone(),
                        source,
                    })?;
            let (reader, writer) = stream.into_split();
            (Box::new(reader), Box::new(writer))
        }
        Endpoint::Tcp(address) => {
            let connect_error = |source| NetovsError::Connect {
                path: endpoint.to_string().into(),
                source,
            };
            let stream = TcpStream::connect(address).await.map_err(connect_error)?;
            stream.set_nodelay(true).map_err(connect_error)?;
            let (reader, writer) = stream.into_split();
            (Box::new(reader), Box::new(writer))
        }
    };
    Ok(Link {
        reader,
        writer,
        decoder: Decoder::default(),
        chunk: vec![0; 64 * 1024].into_boxed_slice(),
    })
}

/// A request waiting for its answer.
enum Pending {
    Call {
        method: &'static str,
        reply: oneshot::Sender<Result<Value, NetovsError>>,
    },
    /// A `monitor` request; `reply` is the creator's, absent when re-establishing.
    Monitor {
        id: u64,
        cause: SnapshotCause,
        reply: Option<oneshot::Sender<Result<u64, NetovsError>>>,
    },
    /// Our `echo` probe or a `monitor_cancel`: only the arrival of an answer matters.
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MonitorState {
    /// Registered on the server; its updates are delivered.
    Live,
    /// A `monitor` request is (or, when disconnected, will be) on its way; updates are dropped
    /// until its snapshot arrives.
    Awaiting,
    /// The consumer fell behind: cancelled on the server until the consumer asks for a resync.
    Lagged,
}

struct MonitorEntry {
    db: String,
    requests: Value,
    deliveries: mpsc::Sender<Delivery>,
    state: MonitorState,
}

/// Why [`Session::serve`] returned.
enum Ended {
    /// Every handle was dropped.
    Shutdown,
    /// The connection failed, for this reason.
    Lost(String),
}

/// A failure that ends the connection.
type Step = Result<(), String>;

pub(crate) struct Session {
    endpoint: Endpoint,
    options: ClientOptions,
    commands: mpsc::UnboundedReceiver<Command>,
    next_request: u64,
    next_monitor: u64,
    pending: HashMap<u64, Pending>,
    monitors: HashMap<u64, MonitorEntry>,
}

impl Session {
    pub(crate) fn new(
        endpoint: Endpoint,
        options: ClientOptions,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        Self {
            endpoint,
            options,
            commands,
            next_request: 0,
            next_monitor: 0,
            pending: HashMap::new(),
            monitors: HashMap::new(),
        }
    }

    /// Serves `link`, then each new connection after the last failed, until every handle is gone.
    pub(crate) async fn run(mut self, mut link: Link) {
        let mut backoff = self.options.min_backoff;
        loop {
            let up_since = Instant::now();
            let reason = match self.serve(&mut link).await {
                Ended::Shutdown => return,
                Ended::Lost(reason) => reason,
            };
            warn!(endpoint = %self.endpoint, "OVSDB connection lost: {reason}; reconnecting");
            self.fail_pending(&reason);
            // A connection that lasted starts the backoff over; one that keeps failing at once
            // (a server that accepts and closes) does not.
            if up_since.elapsed() >= self.options.max_backoff {
                backoff = self.options.min_backoff;
            }
            link = match self.reconnect(&mut backoff, reason).await {
                Some(link) => link,
                None => return,
            };
            info!(endpoint = %self.endpoint, "OVSDB connection re-established");
        }
    }

    async fn serve(&mut self, link: &mut Link) -> Ended {
        if let Err(reason) = self.resume_monitors(link).await {
            return Ended::Lost(reason);
        }
        let interval = self.options.probe_interval;
        let mut heard = Instant::now();
        let mut probing = false;
        loop {
            let deadline = heard + if probing { interval * 2 } else { interval };
            let step = tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_command(command, link).await,
                    None => return Ended::Shutdown,
                },
                read = link.reader.read(&mut link.chunk) => match read {
                    Ok(0) => Err("the server closed the connection".to_owned()),
                    Ok(n) => {
                        heard = Instant::now();
                        probing = false;
                        link.decoder.push(&link.chunk[..n]);
                        self.handle_input(link).await
                    }
                    Err(e) => Err(format!("read failed: {e}")),
                },
                () = sleep_until(deadline) => {
                    if probing {
                        Err(format!("the server sent nothing for {:?}, not even an answer to echo", interval * 2))
                    } else {
                        probing = true;
                        self.send(link, "echo", json!([]), Pending::Ignored).await
                    }
                }
            };
            if let Err(reason) = step {
                return Ended::Lost(reason);
            }
        }
    }

    /// Waits out the backoff (refusing requests meanwhile) and connects, until it succeeds.
    /// `None` when every handle was dropped meanwhile.
    async fn reconnect(&mut self, backoff: &mut Duration, mut reason: String) -> Option<Link> {
        loop {
            let wake = Instant::now() + *backoff;
            *backoff = backoff.saturating_mul(2).min(self.options.max_backoff);
            loop {
                tokio::select! {
                    () = sleep_until(wake) => break,
                    command = self.commands.recv() => self.refuse(command?, &reason),
                }
            }
            match timeout(self.options.request_timeout, connect(&self.endpoint)).await {
                Ok(Ok(link)) => return Some(link),
                Ok(Err(e)) => reason = e.to_string(),
                Err(_) => {
                    reason = format!(
                        "connecting took longer than {:?}",
                        self.options.request_timeout
                    )
                }
            }
            debug!(endpoint = %self.endpoint, "OVSDB reconnection failed: {reason}");
        }
    }

    /// Fails what waited for an answer on the lost connection. Monitors stay, to be
    /// re-established, except those still waiting for their creation.
    fn fail_pending(&mut self, reason: &str) {
        let error = || NetovsError::Connection(format!("{}: {reason}", self.endpoint));
        for (_, pending) in std::mem::take(&mut self.pending) {
            match pending {
                Pending::Call { reply, .. } => {
                    let _ = reply.send(Err(error()));
                }
                Pending::Monitor {
                    id,
                    reply: Some(reply),
                    ..
                } => {
                    self.monitors.remove(&id);
                    let _ = reply.send(Err(error()));
                }
                Pending::Monitor { reply: None, .. } | Pending::Ignored => {}
            }
        }
    }

    /// Answers a command that arrives while there is no connection.
    fn refuse(&mut self, command: Command, reason: &str) {
        let error = || {
            NetovsError::Connection(format!(
                "{}: not connected ({reason}); reconnecting",
                self.endpoint
            ))
        };
        match command {
            Command::Call { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Command::Monitor { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Command::Resync(id) => {
                if let Some(entry) = self
                    .monitors
                    .get_mut(&id)
                    .filter(|e| e.state == MonitorState::Lagged)
                {
                    entry.state = MonitorState::Awaiting;
                }
            }
            Command::Cancel(id) => {
                self.monitors.remove(&id);
            }
        }
    }

    async fn handle_command(&mut self, command: Command, link: &mut Link) -> Step {
        match command {
            Command::Call {
                method,
                params,
                reply,
            } => {
                self.send(link, method, params, Pending::Call { method, reply })
                    .await
            }
            Command::Monitor {
                db,
                requests,
                deliveries,
                reply,
            } => {
                let id = self.next_monitor;
                self.next_monitor += 1;
                let entry = MonitorEntry {
                    db,
                    requests,
                    deliveries,
                    state: MonitorState::Awaiting,
                };
                self.monitors.insert(id, entry);
                self.send_monitor(link, id, SnapshotCause::Initial, Some(reply))
                    .await
            }
            Command::Resync(id) => match self.monitors.get(&id) {
                Some(entry) if entry.state == MonitorState::Lagged => {
                    self.send_monitor(link, id, SnapshotCause::Lagged, None)
                        .await
                }
                _ => Ok(()),
            },
            Command::Cancel(id) => self.forget_monitor(link, id).await,
        }
    }

    async fn handle_input(&mut self, link: &mut Link) -> Step {
        while let Some(value) = link.decoder.next_value().map_err(|e| e.to_string())? {
            match Message::parse(value).map_err(|e| e.to_string())? {
                Message::Request { id, method, params } => {
                    let answer = if method == "echo" {
                        Ok(&params)
                    } else {
                        warn!("OVSDB server sent an unknown request {method:?}");
                        Err("unknown method")
                    };
                    write(link, &rpc::response(&id, answer)).await?;
                }
                Message::Notification { method, params } if method == "update" => {
                    self.on_update(link, &params).await?;
                }
                Message::Notification { method, .. } => {
                    debug!("ignoring OVSDB notification {method:?}")
                }
                Message::Response { id, result } => self.on_response(link, &id, result).await?,
            }
        }
        Ok(())
    }

    async fn on_response(
        &mut self,
        link: &mut Link,
        id: &Value,
        result: Result<Value, Value>,
    ) -> Step {
        let Some(pending) = id.as_u64().and_then(|id| self.pending.remove(&id)) else {
            debug!("OVSDB answer to no request of ours: id {id}");
            return Ok(());
        };
        match pending {
            Pending::Call { method, reply } => {
                // The caller may have timed out and gone.
                let _ = reply.send(result.map_err(|e| rpc::server_error(method.to_owned(), &e)));
                Ok(())
            }
            Pending::Monitor { id, cause, reply } => {
                let rows = result
                    .map_err(|e| rpc::server_error("monitor".to_owned(), &e))
                    .and_then(|rows| decode_table_updates(&rows));
                match rows {
                    Ok(rows) => {
                        let Some(entry) = self.monitors.get_mut(&id) else {
                            return Ok(());
                        };
                        entry.state = MonitorState::Live;
                        self.deliver(link, id, MonitorEvent::Snapshot { cause, rows })
                            .await?;
                        match reply.map(|reply| reply.send(Ok(id))) {
                            Some(Err(_)) => self.forget_monitor(link, id).await,
                            _ => Ok(()),
                        }
                    }
                    Err(err) => {
                        self.monitors.remove(&id);
                        match reply {
                            Some(reply) => drop(reply.send(Err(err))),
                            None => warn!("cannot re-establish an OVSDB monitor, ending it: {err}"),
                        }
                        Ok(())
                    }
                }
            }
            Pending::Ignored => Ok(()),
        }
    }

    async fn on_update(&mut self, link: &mut Link, params: &Value) -> Step {
        let Some([monitor, updates]) = params.as_array().map(Vec::as_slice) else {
            return Err(format!("malformed update notification: {params}"));
        };
        let Some(id) = monitor.as_u64() else {
            return Ok(());
        };
        // Updates for a monitor being (re-)established belong to its previous registration.
        if self.monitors.get(&id).map(|e| e.state) != Some(MonitorState::Live) {
            return Ok(());
        }
        let updates = decode_table_updates(updates).map_err(|e| e.to_string())?;
        self.deliver(link, id, MonitorEvent::Update(updates)).await
    }

    /// Hands `event` to the monitor's consumer; if its channel is down to the last slot, puts
    /// the lag marker there instead and cancels the monitor until the consumer catches up.
    async fn deliver(&mut self, link: &mut Link, id: u64, event: MonitorEvent) -> Step {
        let Some(entry) = self.monitors.get_mut(&id) else {
            return Ok(());
        };
        let lagged = entry.deliveries.capacity() <= 1;
        let delivery = if lagged {
            warn!(
                "an OVSDB monitor consumer fell behind: it will get a fresh snapshot when it catches up"
            );
            entry.state = MonitorState::Lagged;
            Delivery::Lagged
        } else {
            Delivery::Event(event)
        };
        if entry.deliveries.try_send(delivery).is_err() {
            // Only this task sends and it never fills the last slot, so the consumer is gone.
            return self.forget_monitor(link, id).await;
        }
        if lagged {
            return self
                .send(link, "monitor_cancel", json!([id]), Pending::Ignored)
                .await;
        }
        Ok(())
    }

    /// Drops a monitor, cancelling it on the server if it is registered there.
    async fn forget_monitor(&mut self, link: &mut Link, id: u64) -> Step {
        match self.monitors.remove(&id) {
            Some(entry) if entry.state != MonitorState::Lagged => {
                self.send(link, "monitor_cancel", json!([id]), Pending::Ignored)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// After a reconnection: asks again for every monitor the consumer is not behind on.
    async fn resume_monitors(&mut self, link: &mut Link) -> Step {
        let ids: Vec<u64> = self
            .monitors
            .iter()
            .filter(|(_, e)| e.state != MonitorState::Lagged)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.send_monitor(link, id, SnapshotCause::Reconnected, None)
                .await?;
        }
        Ok(())
    }

    async fn send_monitor(
        &mut self,
        link: &mut Link,
        id: u64,
        cause: SnapshotCause,
        reply: Option<oneshot::Sender<Result<u64, NetovsError>>>,
    ) -> Step {
        let Some(entry) = self.monitors.get_mut(&id) else {
            return Ok(());
        };
        entry.state = MonitorState::Awaiting;
        let params = json!([entry.db, id, entry.requests]);
        self.send(
            link,
            "monitor",
            params,
            Pending::Monitor { id, cause, reply },
        )
        .await
    }

    async fn send(
        &mut self,
        link: &mut Link,
        method: &str,
        params: Value,
        pending: Pending,
    ) -> Step {
        let id = self.next_request;
        self.next_request += 1;
        self.pending.insert(id, pending);
        write(link, &rpc::request(id, method, &params)).await
    }
}

async fn write(link: &mut Link, message: &[u8]) -> Step {
    link.writer
        .write_all(message)
        .await
        .map_err(|e| format!("write failed: {e}"))
}

#[cfg(test)]
mod tests {
    //! What a real server cannot be made to send on demand, from a scripted peer on a unix
    //! socket.

    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixListener;

    use super::*;
    use crate::ovsdb::Client;

    const DEADLINE: Duration = Duration::from_secs(10);

    /// Reads from `stream` until one whole JSON value has arrived.
    async fn read_value(stream: &mut UnixStream, decoder: &mut Decoder) -> Value {
        let mut chunk = [0; 4096];
        loop {
            if let Some(value) = decoder.next_value().unwrap() {
                return value;
            }
            let n = timeout(DEADLINE, stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the client closed the connection");
            decoder.push(&chunk[..n]);
        }
    }

    #[tokio::test]
    async fn answers_the_servers_echo() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let _client = Client::connect(Endpoint::Unix(path), ClientOptions::default())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();

        // Split across writes, as a real peer's may be.
        server.write_all(br#"{"method":"echo","#).await.unwrap();
        server
            .write_all(br#""params":["x",1],"id":"echo"}"#)
            .await
            .unwrap();
        let reply = read_value(&mut server, &mut Decoder::default()).await;
        assert_eq!(
            reply,
            json!({"id": "echo", "result": ["x", 1], "error": null})
        );
    }
}
