//! The shim: the per-service keeper process ([`process`]), its protocol ([`proto`]) and the
//! server's client of it ([`client`]).

pub mod client;
pub mod process;
pub mod proto;
