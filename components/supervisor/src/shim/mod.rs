//! The server's side of the shim: its client ([`client`]), the user lookup it needs
//! ([`identity`]) and where its program comes from ([`install`]). The shim itself (process, spawn, protocol) is the `cloudlet-shim` crate,
//! re-exported here as [`process`] and [`proto`].

pub mod client;
pub mod identity;
pub mod install;

pub use cloudlet_shim::{main, pidfile, process, proto};
