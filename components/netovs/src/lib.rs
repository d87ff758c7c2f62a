//! Host networking through Open vSwitch, and never iptables: an RFC 7047 OVSDB client of our own
//! ([`ovsdb`]: JSON-RPC over the database's unix socket, transactions, monitors, echo keepalive,
//! reconnection) with typed helpers for the `Open_vSwitch` schema, and the node firewall as
//! OpenFlow rules ([`firewall`] compiles a policy into flows in a table range cloudlet owns;
//! [`ofctl`] diffs them against the bridge and applies the difference as one bundle).
//!
//! Written by hand because no maintained crate does this (see `../shared/design/crates.md`: the
//! `ovsdb` crates hang on `get_schema`, only select, or panic on the server's keepalive).
//!
//! This crate never runs or changes iptables or nftables, never touches flow tables outside the
//! range it owns, and never shells out to `ovs-vsctl` (the database is spoken to directly;
//! `ovs-ofctl` is the OpenFlow tool, as Cloudpods' sdnagent uses it).
#![warn(missing_docs)]

mod error;
pub mod firewall;
pub mod network;
pub mod ofctl;
pub mod ovsdb;
pub mod reconcile;
pub mod run;
pub mod uplink;

pub use error::NetovsError;
