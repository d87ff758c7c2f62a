//! The shim: the per-service keeper process ([`process`]), how it starts a run's process in the
//! service's cgroup (`spawn`), its protocol ([`proto`]) and the server's client of it
//! ([`client`]).

pub mod client;
pub mod process;
pub mod proto;
mod spawn;
