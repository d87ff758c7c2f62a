//! The server's side of the shim: its client ([`client`]) and the user lookup it needs
//! ([`identity`]). The shim itself (process, spawn, protocol) is the `cloudlet-shim` crate,
//! re-exported here as [`process`] and [`proto`]; where its program file comes from is
//! `cloudlet_footprint::programs`.

pub mod client;
pub mod identity;

pub use cloudlet_shim::{main, pidfile, process, proto};
