//! [`Client`]: the handle callers use, its [`Endpoint`] and [`ClientOptions`].
//!
//! Owns: the request-side API (one method per RFC 7047 method) and the per-request timeout.
//! Must never: touch the socket itself; that is the session task's, which every clone of a
//! `Client` shares.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::monitor::{Monitor, MonitorRequest};
use super::operation::{OpResult, Operation, decode_results};
use super::session::{self, Command, Session};
use crate::NetovsError;

/// Where an OVSDB server listens, in the `ovs-vsctl --db` syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:PATH`: a unix socket (the local `ovsdb-server`'s `db.sock`).
    Unix(PathBuf),
    /// `tcp:HOST:PORT`.
    Tcp(String),
}

impl FromStr for Endpoint {
    type Err = NetovsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || NetovsError::Endpoint(text.to_owned());
        if let Some(path) = text.strip_prefix("unix:") {
            return if path.is_empty() {
                Err(bad())
            } else {
                Ok(Self::Unix(path.into()))
            };
        }
        let address = text.strip_prefix("tcp:").ok_or_else(bad)?;
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Tcp(address.to_owned()))
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(address) => write!(f, "tcp:{address}"),
        }
    }
}

/// Timing and buffering of a [`Client`]. Durations are taken between a millisecond and a day,
/// the monitor buffer as at least 2.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long a request may wait for its answer.
    pub request_timeout: Duration,
    /// After this long without a message from the server, the client sends an `echo`; after
    /// twice this long, it gives the connection up and reconnects.
    pub probe_interval: Duration,
    /// The first wait before reconnecting; it doubles with each failed attempt...
    pub min_backoff: Duration,
    /// ...up to this.
    pub max_backoff: Duration,
    /// How many events a monitor holds for its consumer. A consumer that lets it
    /// fill up loses the updates and gets a [`SnapshotCause::Lagged`](super::SnapshotCause)
    /// snapshot instead.
    pub monitor_buffer: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            probe_interval: Duration::from_secs(5),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            monitor_buffer: 256,
        }
    }
}

impl ClientOptions {
    /// These options within the bounds the session relies on: waits from a millisecond to a
    /// day, and a monitor buffer with room for the lag marker.
    fn bounded(mut self) -> Self {
        let bound = |d: Duration| d.clamp(Duration::from_millis(1), Duration::from_secs(86_400));
        self.request_timeout = bound(self.request_timeout);
        self.probe_interval = bound(self.probe_interval);
        self.min_backoff = bound(self.min_backoff);
        self.max_backoff = bound(self.max_backoff).max(self.min_backoff);
        self.monitor_buffer = self.monitor_buffer.max(2);
        self
    }
}

/// A database's schema, as `get_schema` returns it (RFC 7047 section 3.2).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DatabaseSchema {
    /// The database's name.
    pub name: String,
    /// The schema's version (`x.y.z`).
    #[serde(default)]
    pub version: String,
    /// The tables, by name.
    pub tables: BTreeMap<String, TableSchema>,
}

/// A table's schema.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TableSchema {
    /// The columns, by name (without `_uuid` and `_version`, which every table has).
    pub columns: BTreeMap<String, ColumnSchema>,
    /// Whether rows live without being referenced (other rows are deleted when the last
    /// reference to them goes).
    #[serde(default, rename = "isRoot")]
    pub is_root: bool,
    /// The sets of columns whose values are unique among the rows.
    #[serde(default)]
    pub indexes: Vec<Vec<String>>,
}

/// A column's schema.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ColumnSchema {
    /// Its `<type>`, as the schema writes it.
    #[serde(rename = "type")]
    pub kind: Value,
    /// Whether it is not written to disk.
    #[serde(default)]
    pub ephemeral: bool,
}

/// A connection to an OVSDB server that stays up: requests from any number of tasks share it,
/// and when it drops it is re-established with exponential backoff, every monitor with it.
///
/// Cloning is cheap; the connection closes when the last clone is dropped. A request in flight
/// when the connection drops, or made while it is down, fails with
/// [`NetovsError::Connection`]: retry it (transactions are atomic, so a failed one did nothing
/// unless the drop came after the commit).
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    options: ClientOptions,
}

impl Client {
    /// Connects to `endpoint`; fails if the first attempt does (later ones are retried).
    /// Must be called within a tokio runtime, which then runs the connection's task.
    pub async fn connect(endpoint: Endpoint, options: ClientOptions) -> Result<Self, NetovsError> {
        let options = options.bounded();
        let link = session::connect(&endpoint).await?;
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(Session::new(endpoint, options.clone(), receiver).run(link));
        Ok(Self { commands, options })
    }

    /// The names of the server's databases.
    pub async fn list_dbs(&self) -> Result<Vec<String>, NetovsError> {
        let result = self.call("list_dbs", json!([])).await?;
        serde_json::from_value(result)
            .map_err(|e| NetovsError::Protocol(format!("list_dbs result: {e}")))
    }

    /// The schema of database `db`.
    pub async fn get_schema(&self, db: &str) -> Result<DatabaseSchema, NetovsError> {
        let result = self.call("get_schema", json!([db])).await?;
        serde_json::from_value(result)
            .map_err(|e| NetovsError::Protocol(format!("get_schema {db} result: {e}")))
    }

    /// Runs `ops` on database `db` as one atomic transaction and returns their results, in
    /// order. If an operation fails (or the commit does), nothing is changed and the error is
    /// a [`NetovsError::Server`] naming it (`transact op 2 (insert Port)`, `transact commit`).
    /// No operations: nothing is sent.
    pub async fn transact(
        &self,
        db: &str,
        ops: &[Operation],
    ) -> Result<Vec<OpResult>, NetovsError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let params = std::iter::once(json!(db))
            .chain(ops.iter().map(Operation::to_json))
            .collect();
        let result = self.call("transact", Value::Array(params)).await?;
        decode_results(ops, &result)
    }

    /// Monitors `requests` in database `db`. The returned [`Monitor`] first yields the current
    /// state as a snapshot, then every change; after a reconnection, a new snapshot.
    pub async fn monitor(
        &self,
        db: &str,
        requests: &[MonitorRequest],
    ) -> Result<Monitor, NetovsError> {
        let (deliveries, receiver) = mpsc::channel(self.options.monitor_buffer);
        let requests = MonitorRequest::to_json(requests);
        let db = db.to_owned();
        let id = self
            .ask("monitor", |reply| Command::Monitor {
                db,
                requests,
                deliveries,
                reply,
            })
            .await?;
        Ok(Monitor::new(id, receiver, self.commands.downgrade()))
    }

    /// Asks the server to echo; succeeds when it did.
    pub async fn echo(&self) -> Result<(), NetovsError> {
        let payload = json!(["cloudlet"]);
        let result = self.call("echo", payload.clone()).await?;
        if result == payload {
            Ok(())
        } else {
            Err(NetovsError::Protocol(format!(
                "echo returned {result} for {payload}"
            )))
        }
    }

    async fn call(&self, method: &'static str, params: Value) -> Result<Value, NetovsError> {
        self.ask(method, |reply| Command::Call {
            method,
            params,
            reply,
        })
        .await
    }

    /// Sends the command `make` builds around a reply channel, and waits for the reply.
    async fn ask<T>(
        &self,
        method: &str,
        make: impl FnOnce(oneshot::Sender<Result<T, NetovsError>>) -> Command,
    ) -> Result<T, NetovsError> {
        let stopped = || NetovsError::Connection("the connection's task has stopped".to_owned());
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).map_err(|_| stopped())?;
        match tokio::time::timeout(self.options.request_timeout, answer).await {
            Ok(answer) => answer.map_err(|_| stopped())?,
            Err(_) => {
                let limit = self.options.request_timeout;
                let seconds = limit.as_secs() + u64::from(limit.subsec_nanos() > 0);
                Err(NetovsError::Timeout {
                    method: method.to_owned(),
                    seconds,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_in_ovs_syntax() {
        let unix: Endpoint = "unix:/run/openvswitch/db.sock".parse().unwrap();
        assert_eq!(unix, Endpoint::Unix("/run/openvswitch/db.sock".into()));
        assert_eq!(unix.to_string(), "unix:/run/openvswitch/db.sock");
        let tcp: Endpoint = "tcp:127.0.0.1:6640".parse().unwrap();
        assert_eq!(tcp, Endpoint::Tcp("127.0.0.1:6640".into()));
        assert_eq!(tcp.to_string(), "tcp:127.0.0.1:6640");
        for bad in [
            "unix:",
            "tcp:host",
            "tcp::6640",
            "tcp:h:99999",
            "ssl:h:6640",
            "/run/db.sock",
        ] {
            assert!(
                matches!(bad.parse::<Endpoint>(), Err(NetovsError::Endpoint(_))),
                "{bad}"
            );
        }
    }
}
