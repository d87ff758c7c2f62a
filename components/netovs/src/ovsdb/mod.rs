//! An RFC 7047 OVSDB client: JSON-RPC over the database's unix (or TCP) socket.
//!
//! [`Client`] holds one connection that stays up: requests from many tasks share it (matched to
//! their answers by id, each with a timeout), the server's `echo` keepalives are answered, a
//! silent server is probed with our own `echo` and given up on, and a lost connection is
//! re-established with exponential backoff. [`Client::transact`] runs [`Operation`]s atomically;
//! [`Client::monitor`] streams changes, with a fresh snapshot after every reconnection so a
//! reconciler can resync. [`vswitch`] reads and builds changes to the `Open_vSwitch` database as
//! plain Rust types.
//!
//! Owns: the wire protocol (framing, JSON-RPC, value encodings) and the connection's lifecycle.
//! Must never: run `ovs-vsctl` or any other command, retry a request on the caller's behalf (it
//! cannot know whether a transaction that was in flight committed), or block on a slow monitor
//! consumer.

mod client;
mod datum;
mod framing;
mod monitor;
mod operation;
mod received;
mod rpc;
mod session;
pub mod vswitch;

pub use client::{Client, ClientOptions, ColumnSchema, DatabaseSchema, Endpoint, TableSchema};
pub use datum::{Atom, Datum, Row, Uuid};
pub use monitor::{Monitor, MonitorEvent, MonitorRequest, RowUpdate, SnapshotCause, TableUpdates};
pub use operation::{Condition, Function, Mutation, Mutator, OpResult, Operation, WaitUntil};
#[doc(hidden)]
pub use received::decode_received;
