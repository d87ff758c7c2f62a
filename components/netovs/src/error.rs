//! `NetovsError`: what talking to Open vSwitch can fail at. Messages name the socket, bridge,
//! table or field concerned, complete for the operator.

use std::path::PathBuf;

/// Errors of the OVS client and the firewall.
#[derive(Debug, thiserror::Error)]
pub enum NetovsError {
    /// The database could not be reached.
    #[error("cannot reach the OVS database at {}: {source}", .path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The connection failed or closed while a request was in flight.
    #[error("the OVS database connection failed: {0}")]
    Connection(String),
    /// The server answered with an error (a JSON-RPC error, or an operation's error).
    #[error("OVSDB {method}: {error}{}", .details.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Server {
        /// The method or operation.
        method: String,
        /// The error's name (e.g. `constraint violation`).
        error: String,
        /// Its details.
        details: Option<String>,
    },
    /// A message could not be encoded or decoded.
    #[error("OVSDB protocol: {0}")]
    Protocol(String),
    /// A request did not get an answer in time.
    #[error("OVSDB {method}: no answer within {seconds} s")]
    Timeout {
        /// The method.
        method: String,
        /// The timeout.
        seconds: u64,
    },
    /// A firewall policy is wrong; the message names the rule and field.
    #[error("{0}")]
    Invalid(String),
    /// `ovs-ofctl` failed.
    #[error("ovs-ofctl {args}: {message}")]
    Ofctl {
        /// Its arguments.
        args: String,
        /// What it printed, or why it could not run.
        message: String,
    },
    /// An OVSDB endpoint is not `unix:PATH` or `tcp:HOST:PORT`.
    #[error("not an OVSDB endpoint (want unix:PATH or tcp:HOST:PORT): {0:?}")]
    Endpoint(String),
    /// A row the request needs is not in the database.
    #[error("{table} {name:?} does not exist")]
    NotFound {
        /// Its table.
        table: String,
        /// The name it was looked up by.
        name: String,
    },
    /// A line is not an OpenFlow flow this crate can read.
    #[error("cannot read the flow {text:?}: {reason}")]
    Flow {
        /// The line.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `ip` (iproute2) failed.
    #[error("ip {args}: {message}")]
    Ip {
        /// Its arguments.
        args: String,
        /// What it printed, or why it could not run.
        message: String,
    },
}
