//! `cloudlet`: the one binary. This file only parses the command line, picks the role and maps
//! errors to exit codes; each role lives in its own module and the logic in `components/`.
//!
//! Exit codes: 0 success, 1 failure (one line on stderr says why), 2 bad usage (clap's).

mod check;
mod cli;
mod ctl;
mod server;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // The shim stays small: no async runtime, no logging framework.
        Command::Shim(args) => {
            cloudlet_supervisor::shim::process::run(cloudlet_supervisor::shim::process::ShimArgs {
                name: args.name,
                run_dir: args.run_dir,
                log_dir: args.log_dir,
            })
            .map_err(anyhow::Error::from)
        }
        Command::Server(args) => server::run(args),
        Command::Ctl(args) => ctl::run(args),
        Command::CheckConfig(args) => check::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `ctl exec` hands the command's own exit code on, without a message.
            if let Some(ctl::ExitCode(code)) = e.downcast_ref::<ctl::ExitCode>() {
                return ExitCode::from(u8::try_from(*code).unwrap_or(1));
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
