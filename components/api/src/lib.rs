//! The HTTP API of cloudlet: its JSON contract ([`dto`]), the servers ([`router`], [`serve_unix`],
//! [`UnixServer`] on the local unix socket, [`TlsServer`] on TCP with mutual TLS), the typed
//! client ([`Client`]) that `cloudlet ctl` and the agents use, and the admin config file
//! ([`AdminConfig`]) that points `ctl` at a remote server.
//!
//! This crate is a translator. It reaches the core only through the [`Backend`] trait, which
//! `cmd/cloudlet` implements; it parses requests into DTOs, calls the backend, and maps the
//! backend's [`ApiError`] to an HTTP status. It must never hold business logic, and no other
//! component may know about HTTP or JSON (besides `cmd/`).
//!
//! Routes, all under `/v1`: `POST /apply`; `GET /services`; `GET|DELETE /services/{name}`;
//! `POST /services/{name}/start|stop|restart`; `GET /services/{name}/logs` and `GET /events`
//! (NDJSON streams); `POST /run` (a transient service); `POST /exec` (NDJSON stream of the
//! command's output); `GET /healthz`. Errors are `{"error": "..."}` with the status of the error.

#![warn(missing_docs)]

mod authz;
mod backend;
mod client;
mod config;
pub mod dto;
mod error;
pub mod heartbeat;
pub mod limits;
mod server;
mod tls;
mod transport;
mod unix;

pub use authz::authorize;
pub use backend::{Backend, Caller, EventStream, ExecStream, LogStream, Peer, Socket};
pub use client::{Client, MAX_RESPONSE_BODY, MAX_STREAM_LINE, RESPONSE_TIMEOUT};
pub use config::{ADMIN_CONFIG_API_VERSION, ADMIN_CONFIG_KIND, AdminConfig};
pub use error::ApiError;
pub use limits::Limits;
pub use server::{NDJSON, router};
pub use tls::{TlsConfigSource, TlsServer};
pub use unix::{UnixServer, serve_unix};
