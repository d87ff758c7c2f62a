//! `cloudlet`: the one binary. This file only parses the command line, picks the role and maps
//! errors to exit codes; each role lives in its own module and the logic in `components/`.
//!
//! Exit codes: 0 success, 1 failure (one line on stderr says why), 2 bad usage (clap's).

mod check;
mod cli;
mod cloudpods;
mod ctl;
mod embedded;
mod private;
mod server;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    // `cloudlet shim` (internal): the fallback where the data dir cannot hold the small
    // `cloudlet-shim` program (a noexec mount). Its three flags are read by hand, before clap
    // builds the command tree, and it runs no async runtime or logging framework.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "shim") {
        return cloudlet_supervisor::shim::main(args);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server::run(args),
        Command::Ctl(args) => ctl::run(args),
        Command::CheckConfig(args) => check::run(&args),
        Command::Agent(args) => server::run_agent(args),
        Command::Cloudpods(command) => cloudpods::run(command),
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
