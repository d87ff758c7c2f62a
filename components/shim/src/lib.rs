//! The shim: the per-service keeper process ([`process`]), how it starts a run's process in the
//! service's cgroup (`spawn`), what its pid file proves ([`pidfile`]) and its protocol with the
//! server ([`proto`]).
//!
//! It is built twice: as this library (the server speaks [`proto`]; `cloudlet shim` runs
//! [`process::run`] as the fallback) and as the small `cloudlet-shim` program that the `cloudlet`
//! binary embeds and writes out to its data dir, so that each shim maps a few hundred KiB of
//! program instead of the server's megabytes (`make bench` measures it against runsv). This crate
//! never depends on an async runtime or on anything the server alone needs: every dependency is
//! paid by every shim.
#![warn(missing_docs)]

mod error;
pub mod pidfile;
pub mod process;
pub mod proto;
mod spawn;

pub use error::ShimError;

/// The shim's command line, run: `--name N --run-dir D --log-dir L`. Exit codes: 0 when told to
/// exit, 1 on failure (one line on stderr says why), 2 bad usage. Both `cloudlet-shim` and
/// `cloudlet shim` are this.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    match process::ShimArgs::parse(args) {
        Ok(shim) => match process::run(shim) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Err(usage) => {
            eprintln!("error: {usage}");
            std::process::ExitCode::from(2)
        }
    }
}
