//! `cloudlet-shim`: the per-service keeper, as the small program the `cloudlet` binary embeds.
//! The server runs it as `cloudlet-shim shim --name N --run-dir D --log-dir L` (the same arguments
//! as `cloudlet shim`, so that every tool that tells a shim by its second argument sees one).
//!
//! Exit codes: 0 when told to exit, 1 on failure (one line on stderr says why), 2 bad usage.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "shim") {
        args.next();
    }
    cloudlet_shim::main(args)
}
