//! `netbench`: cloudlet's Open vSwitch code against the OVS tools, side by side in one run
//! (`make bench`): OVSDB transaction latency (cloudlet's client against `ovsdb-client transact`
//! and `ovs-vsctl`, a process a call), monitor-notification latency (cloudlet's monitor against
//! `ovsdb-client monitor`), and applying a 1,000-rule firewall policy (first apply, re-apply
//! unchanged, re-apply with one rule changed) against `ovs-ofctl` given the whole flow set.
//! Results are ratios against cloudlet; nothing is asserted about time.
//!
//! This file owns the command line, the order of the runs, the cleanup on exit, error or signal,
//! and the report. Everything runs against an `ovsdb-server` and `ovs-vswitchd` of the bench's
//! own, in a network namespace and temp dir it makes ([`lab`]); it must never touch the host's
//! namespace or Open vSwitch, and must leave nothing behind, even on error or Ctrl-C.

#[path = "netbench/firewall.rs"]
mod firewall;
#[path = "netbench/lab.rs"]
mod lab;
#[path = "netbench/ovsdb.rs"]
mod ovsdb;
#[path = "netbench/report.rs"]
mod report;

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use cloudlet_tests::benchargs::count;
use tokio::signal::unix::{SignalKind, signal};

use crate::lab::Lab;
use crate::report::{ms, ratio, table};

/// Writes one line to stderr, prefixed `netbench: `; a write error is ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), "netbench: {}", format_args!($($arg)*));
    }};
}

/// netbench: cloudlet's OVSDB client and firewall against the Open vSwitch tools, side by side
///
/// OVSDB transaction latency (cloudlet's client against `ovsdb-client transact` and `ovs-vsctl`, a
/// process a call), monitor-notification latency (cloudlet's monitor against `ovsdb-client
/// monitor`), and a firewall policy applied, re-applied unchanged and re-applied with one rule
/// changed (cloudlet against `ovs-ofctl` given the whole flow set). Results are ratios against
/// cloudlet; nothing is asserted about time.
#[derive(Debug, PartialEq, Eq, Parser)]
#[command(
    name = "netbench",
    max_term_width = 100,
    after_help = "Needs root, iproute2 and openvswitch-switch. ovsdb-server and ovs-vswitchd \
    (bridge br0 on the userspace datapath) run in a network namespace and temp dir of the \
    bench's own, removed at the end, on error and on SIGINT/SIGTERM/SIGHUP.\n\n\
    Exit code 0 when measured, 1 when it could not measure, 2 on bad usage."
)]
struct Args {
    /// Transactions per side.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = count)]
    calls: usize,
    /// Monitored changes per side.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = count)]
    changes: usize,
    /// Firewall rules, at most 10000.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = rules)]
    rules: usize,
    /// Re-applies per kind.
    #[arg(long, value_name = "N", default_value_t = 15, value_parser = count)]
    rounds: usize,
    /// First applies per side.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = count)]
    firsts: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        say!("needs root (a network namespace, Open vSwitch's daemons)");
        return ExitCode::FAILURE;
    }
    if let Err(error) = clean_up_on_signals() {
        say!("{error}");
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    match bench(&args) {
        Ok(text) => {
            println!("{text}");
            say!(
                "done in {:.1?}; everything it started is gone",
                started.elapsed()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            say!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Makes the lab, runs everything, and removes the lab whatever happened; the report.
fn bench(args: &Args) -> Result<String, String> {
    let mut lab = Lab::start()?;
    say!(
        "ovsdb-server up in namespace {} ({})",
        lab.netns(),
        lab.db()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    let mut out = header(args)?;

    say!("transactions: {} per side, interleaved", args.calls);
    let lines = runtime.block_on(ovsdb::transact(&lab, args.calls))?;
    out.push_str(&table(
        &format!(
            "OVSDB transact: set external_ids:bench=<i> on the root row ({} unmeasured first)",
            ovsdb::WARMUP
        ),
        &lines,
        0,
    ));

    say!("monitor notifications: {} per side", args.changes);
    let lines = runtime.block_on(ovsdb::monitor(&lab, args.changes))?;
    out.push('\n');
    out.push_str(&table(
        "OVSDB monitor: a change sent by cloudlet's client, until the monitor delivers it",
        &lines,
        0,
    ));

    // ovs-vswitchd only now: it monitors the root row, and would have had every change above.
    lab.start_vswitchd()?;
    say!(
        "ovs-vswitchd up, br0 on the netdev datapath; firewall of {} rules",
        args.rules
    );
    let fw = runtime.block_on(firewall::bench(&lab, args.rules, args.firsts, args.rounds))?;
    out.push('\n');
    out.push_str(&firewall_report(&fw));
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(lab);
    Ok(out)
}

/// What ran where.
fn header(args: &Args) -> Result<String, String> {
    let version = lab::run("ovs-vsctl", &["--version"])?;
    let version = version.lines().next().unwrap_or("ovs-vsctl ?");
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(format!(
        "netbench: {version}; {cpus} CPUs; Linux {kernel}\n\
         {} transactions and {} monitored changes per side; firewall: {} rules, {} first \
         applies, {} rounds\n\n",
        args.calls, args.changes, args.rules, args.firsts, args.rounds
    ))
}

/// The firewall's tables and ratios.
fn firewall_report(fw: &firewall::Firewall) -> String {
    let mut out = format!(
        "Firewall: {} rules (stateful, default deny) = {} flows on br0 (netdev datapath); \
         compile alone: p50 {}\n",
        fw.rules,
        fw.flows,
        ms(fw.compile.p50())
    );
    out.push_str(&table(
        "  first apply, onto a bridge without the firewall",
        &fw.first,
        0,
    ));
    out.push_str(&table(
        "  re-apply (each run starts from what the one before left)",
        &fw.again,
        0,
    ));
    let changed = fw.again.first().map(|l| l.samples.p50());
    let peer = |i: usize| fw.again.get(i).map(|l| l.samples.p50());
    if let (Some(ours), Some(replace), Some(reinstall)) = (changed, peer(2), peer(3))
        && !ours.is_zero()
    {
        let _ = writeln!(
            out,
            "\none rule changed, p50: replace-flows takes {:.2}x and a full reinstall {:.2}x \
             cloudlet's time",
            ratio(replace, ours),
            ratio(reinstall, ours)
        );
    }
    let [compile, dump, diff, bundle] = fw.parts.each_ref().map(|s| ms(s.p50()));
    let _ = writeln!(
        out,
        "cloudlet's one rule changed, p50 by part: compile {compile}, dump-flows (process and \
         parse) {dump}, diff {diff}, bundle (process and commit) {bundle}"
    );
    out.push_str(
        "(replace-flows diffs too, inside ovs-ofctl: it sends only the difference, but is given \
         and parses the whole flow set; the full reinstall sends every flow)\n",
    );
    out
}

/// Takes SIGINT, SIGTERM and SIGHUP on a thread of its own that then kills every process the
/// bench started, deletes the namespace and the temp dir, and exits 130. Returns once the
/// handlers are in place.
fn clean_up_on_signals() -> Result<(), String> {
    let (ready, installed) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready.send(Err(format!("the signal thread's runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut streams = Vec::new();
                for kind in [
                    SignalKind::interrupt(),
                    SignalKind::terminate(),
                    SignalKind::hangup(),
                ] {
                    match signal(kind) {
                        Ok(stream) => streams.push(stream),
                        Err(e) => {
                            let _ = ready.send(Err(format!("listening for signals: {e}")));
                            return;
                        }
                    }
                }
                let [int, term, hup] = &mut streams[..] else {
                    return;
                };
                let _ = ready.send(Ok(()));
                let name = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                    _ = hup.recv() => "SIGHUP",
                };
                say!("{name}: stopping the daemons, deleting the namespace and exiting");
                lab::abandon();
                exit_now(130)
            });
        })
        .map_err(|e| format!("starting the signal thread: {e}"))?;
    installed
        .recv()
        .map_err(|_| "the signal thread ended".to_owned())?
}

/// Ends the bench at once from the signal thread.
#[expect(
    clippy::exit,
    reason = "the signal thread has no main to return to, and main may be blocked in a wait"
)]
fn exit_now(code: i32) -> ! {
    std::process::exit(code)
}

/// `--rules`: a count of at most 10000.
fn rules(text: &str) -> Result<usize, String> {
    match count(text)? {
        n if n <= 10_000 => Ok(n),
        n => Err(format!("{n} is more than 10000")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;
    use clap::error::ErrorKind;

    use super::*;

    #[test]
    fn command_line() {
        Args::command().debug_assert();
        let args = Args::try_parse_from("netbench --calls 50 --changes 40 --rules 20".split(' '));
        assert_eq!(
            args.unwrap(),
            Args {
                calls: 50,
                changes: 40,
                rules: 20,
                rounds: 15,
                firsts: 5
            }
        );
        let defaults = Args::try_parse_from(["netbench"]).unwrap();
        assert_eq!(
            (defaults.calls, defaults.changes, defaults.rules),
            (500, 500, 1000)
        );
        let most = Args::try_parse_from("netbench --rules 10000".split(' ')).unwrap();
        assert_eq!(most.rules, 10_000);

        let help = Args::try_parse_from(["netbench", "--help"]).unwrap_err();
        assert_eq!((help.kind(), help.exit_code()), (ErrorKind::DisplayHelp, 0));
        for (argv, kind, says) in [
            ("--calls 0", ErrorKind::ValueValidation, "positive"),
            ("--rules 0", ErrorKind::ValueValidation, "positive"),
            (
                "--rules 10001",
                ErrorKind::ValueValidation,
                "more than 10000",
            ),
            ("--rounds", ErrorKind::InvalidValue, "a value is required"),
            ("--x 1", ErrorKind::UnknownArgument, "--x"),
        ] {
            let error = Args::try_parse_from(format!("netbench {argv}").split(' ')).unwrap_err();
            assert_eq!((error.kind(), error.exit_code()), (kind, 2), "{argv}");
            assert!(error.to_string().contains(says), "{argv}: {error}");
        }
    }

    /// The policy has the rules asked for, one flow each plus the pipeline's, and the changed
    /// version differs in exactly one flow.
    #[test]
    fn the_changed_policy_differs_in_one_rule() {
        let v1 = firewall::policy(1000, false).unwrap();
        let v2 = firewall::policy(1000, true).unwrap();
        assert_eq!(v1.rules().len(), 1000);
        let differ: Vec<_> = v1
            .rules()
            .iter()
            .zip(v2.rules())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(differ.len(), 1);
        assert_eq!(differ[0].0.name, "port-500");
        assert_eq!(v1.rules().iter().filter(|r| r.cidr.is_some()).count(), 334);
        assert!(firewall::policy(60_000, false).is_err());
    }
}
