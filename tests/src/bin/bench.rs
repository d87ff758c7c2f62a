//! `bench`: cloudlet against runit and supervisord, side by side in one run (`make bench`).
//!
//! Each supervisor in turn runs the same 30 services (`workload --notify SOCK sleep`) under a temp
//! dir of its own; the bench measures the restart latency (SIGKILL of a service until its
//! replacement sent its pid to SOCK) and the supervisor's own memory (PSS of its processes, the
//! services excluded), then prints a table and the ratios against the targets.
//!
//! This file owns the command line, the order of the runs, the cleanup on exit or signal and the
//! report. It must never touch a process or a file outside the temp dirs it created, and must leave
//! no process behind, even on error or Ctrl-C.

#[path = "bench/peers.rs"]
mod peers;
#[path = "bench/procs.rs"]
mod procs;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/restart.rs"]
mod restart;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use std::{fs, thread};

use clap::Parser;
use cloudlet_tests::benchargs::{beside, count};

use crate::peers::{Peer, Running, Services};
use crate::report::{Memory, Report};
use crate::restart::Notify;

/// How long the services may take to start, all of them.
const FIRST_START: Duration = Duration::from_secs(30);
/// The wait between the last first start and the first kill: longer than the 1 s after which
/// runsv and cloudlet (`resetAfter: 1s`) restart at once.
const SETTLE: Duration = Duration::from_millis(1200);

/// Writes one line to stderr, prefixed `bench: `; a write error is ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), "bench: {}", format_args!($($arg)*));
    }};
}

/// The temp dirs of supervisors under test, for the cleanup on a signal.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// bench: restart latency and memory of cloudlet, supervisord and runit, side by side
///
/// Each supervisor in turn runs the same services (`workload --notify SOCK sleep`) under a temp
/// dir of the bench's own; the bench kills them with SIGKILL round-robin, measures how long each
/// replacement takes to send its pid, reads the supervisor's own memory (PSS, the services
/// excluded), then prints a table and the ratios against the targets.
#[derive(Debug, Parser)]
#[command(
    name = "bench",
    max_term_width = 100,
    after_help = "Everything runs under temp dirs of the bench's own; every process started is \
    killed at the end, on error and on SIGINT/SIGTERM/SIGHUP.\n\n\
    Exit code 0 when the bench ran (targets missed or not), 1 when it could not measure, 2 on \
    bad usage."
)]
struct Args {
    /// The cloudlet binary (by default the one next to bench).
    #[arg(long, value_name = "PATH", default_value_os_t = beside("cloudlet"))]
    cloudlet: PathBuf,
    /// The workload binary, the service every supervisor runs (by default the one next to bench).
    #[arg(long, value_name = "PATH", default_value_os_t = beside("workload"))]
    workload: PathBuf,
    /// supervisord (by default from PATH).
    #[arg(long, value_name = "PATH", default_value = "supervisord")]
    supervisord: PathBuf,
    /// runit's runsvdir (by default from PATH).
    #[arg(long, value_name = "PATH", default_value = "runsvdir")]
    runsvdir: PathBuf,
    /// Services per supervisor.
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = count)]
    services: usize,
    /// SIGKILLs per supervisor, round-robin over the services.
    #[arg(long, value_name = "N", default_value_t = 60, value_parser = count)]
    kills: usize,
    /// Keep the machine busy while the services are killed: one spinning thread per CPU
    /// (`workload spin`), in a cgroup of its own beside the supervisor's.
    #[arg(long)]
    busy: bool,
    /// The target of the cloudlet/runit restart-latency ratio (the single-node issue's is 2;
    /// with 300 services or a busy machine the footprint issue asks for 1).
    #[arg(long, value_name = "RATIO", default_value_t = 2.0, value_parser = ratio)]
    restart_target: f64,
    /// Run only this supervisor (repeatable; by default all three).
    #[arg(long, value_name = "NAME", value_parser = ["runit", "supervisord", "cloudlet"])]
    only: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = clean_up_on_signals() {
        say!("{error}");
        return ExitCode::FAILURE;
    }
    for path in [&args.cloudlet, &args.workload] {
        if !path.exists() {
            say!("{} not found (scripts/bench.sh builds it)", path.display());
            return ExitCode::FAILURE;
        }
    }
    let peers = [
        Peer::Runit {
            runsvdir: args.runsvdir.clone(),
        },
        Peer::Supervisord {
            supervisord: args.supervisord.clone(),
        },
        Peer::Cloudlet {
            cloudlet: args.cloudlet.clone(),
        },
    ];
    println!("{}", report::machine());
    println!(
        "{} services per supervisor, {} SIGKILLs each ({:?} apart, round-robin){}\n",
        args.services,
        args.kills,
        restart::SPACING,
        match args.busy {
            true => ", the machine busy (a spinning thread per CPU in another cgroup)",
            false => "",
        }
    );
    let mut reports = Vec::new();
    let mut failed = false;
    for peer in peers
        .iter()
        .filter(|p| args.only.is_empty() || args.only.iter().any(|o| o == p.name()))
    {
        say!("{}: starting {} services", peer.name(), args.services);
        match bench(peer, &args) {
            Ok(report) => {
                say!(
                    "{}: {} restarts measured, {} failed",
                    peer.name(),
                    report.restarts.latencies.len(),
                    report.restarts.failures.len()
                );
                reports.push(report);
            }
            Err(error) => {
                say!("{}: {error}", peer.name());
                failed = true;
            }
        }
    }
    if !reports.is_empty() {
        println!("\n{}", report::table(&reports, args.restart_target));
    }
    match failed {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    }
}

/// Runs one supervisor in a fresh temp dir, then stops it and kills everything it started,
/// whatever happened.
fn bench(peer: &Peer, args: &Args) -> Result<Report, String> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("cl-bench-{}-", peer.name()))
        .tempdir()
        .map_err(|e| format!("creating a temp dir: {e}"))?;
    live(|dirs| dirs.push(dir.path().to_owned()));
    let mut running = None;
    let measured = measure(peer, dir.path(), args, &mut running);
    if let Err(error) = running.map_or(Ok(()), Running::stop) {
        say!("{}: {error} (killed)", peer.name());
    }
    let swept = procs::clean_up(dir.path());
    if let Ok(killed) = &swept {
        say!(
            "{}: stopped; the sweep killed {killed} process(es) left behind, nothing remains",
            peer.name()
        );
    }
    live(|dirs| dirs.retain(|d| d != dir.path()));
    if measured.is_ok() && swept.is_ok() {
        drop(dir);
    } else {
        say!(
            "keeping {} (logs, configuration) for inspection",
            dir.keep().display()
        );
    }
    let report = measured?;
    swept?;
    Ok(report)
}

/// Starts the supervisor, waits for every service, kills them round-robin and reads the memory.
fn measure(
    peer: &Peer,
    dir: &Path,
    args: &Args,
    running: &mut Option<Running>,
) -> Result<Report, String> {
    let notify = Notify::bind(&dir.join("notify.sock"))?;
    let command = vec![
        args.workload.display().to_string(),
        "--notify".to_owned(),
        notify.path().display().to_string(),
        "sleep".to_owned(),
    ];
    let services = Services {
        count: args.services,
        command: &command,
    };
    let supervisor = running.insert(peer.start(dir, &services)?);
    let first = notify.first_pids(args.services, FIRST_START)?;
    thread::sleep(SETTLE);
    let unasked_before_kills = notify.drain()?.len();
    let mut slots: Vec<Option<i32>> = first.into_iter().map(Some).collect();
    let hog = match args.busy {
        true => Some(procs::Hog::start(&args.workload, dir)?),
        false => None,
    };
    let load_before = report::load_average();
    let restarts = restart::kill_round_robin(&notify, &mut slots, args.kills)?;
    let load = (load_before, report::load_average());
    drop(hog);
    // Steady state: the last replacement is up; let the supervisor finish its bookkeeping.
    thread::sleep(Duration::from_secs(1));
    let memory = supervisor
        .own_processes(args.services)?
        .iter()
        .map(Memory::read)
        .collect::<Result<_, _>>()?;
    Ok(Report {
        name: peer.name(),
        restarts,
        unasked_before_kills,
        memory,
        load,
    })
}

/// A ratio target: a number above 0 and at most 1000.
fn ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1000.0 => Ok(r),
        _ => Err(format!("{text:?} is not a ratio in (0, 1000]")),
    }
}

/// Runs `f` on the list of live temp dirs.
fn live(f: impl FnOnce(&mut Vec<PathBuf>)) {
    f(&mut LIVE.lock().unwrap_or_else(PoisonError::into_inner));
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this (still the only) thread, so in every later one, and
/// takes them on a thread of their own that kills everything under the live temp dirs, removes
/// them and exits 130. Children are spawned with them unblocked (`procs::spawn`). Also makes the
/// bench the subreaper of what it starts, so that nothing it kills stays a zombie.
fn clean_up_on_signals() -> Result<(), String> {
    procs::become_subreaper()?;
    let set = procs::cleanup_set();
    set.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    thread::Builder::new()
        .name("cleanup".into())
        .spawn(move || {
            match set.wait() {
                Ok(signal) => say!("{signal}: killing every process started, then exiting"),
                Err(e) => say!("waiting for signals: {e}; cleaning up and exiting"),
            }
            live(|dirs| {
                for dir in dirs.iter() {
                    if let Err(error) = procs::clean_up(dir) {
                        say!("{error}");
                    }
                    let _ = fs::remove_dir_all(dir);
                }
            });
            exit_now(130)
        })
        .map(drop)
        .map_err(|e| format!("starting the signal thread: {e}"))
}

/// Ends the bench at once from the signal thread.
#[expect(
    clippy::exit,
    reason = "the signal thread has no main to return to, and main may be blocked in a wait"
)]
fn exit_now(code: i32) -> ! {
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;
    use clap::error::ErrorKind;

    use super::*;

    #[test]
    fn command_line() {
        Args::command().debug_assert();
        let args = Args::try_parse_from(["bench"]).unwrap();
        assert_eq!((args.services, args.kills), (30, 60));
        assert!(args.only.is_empty());
        assert_eq!(args.cloudlet, beside("cloudlet"));
        assert_eq!(args.workload, beside("workload"));
        assert_eq!(args.supervisord, Path::new("supervisord"));

        // As scripts/bench.sh calls it, and --only twice.
        let args = Args::try_parse_from(
            "bench --cloudlet /x/c --workload /x/w --supervisord /x/sd --runsvdir /x/runsvdir \
             --kills 40 --only cloudlet --only runit"
                .split_whitespace(),
        )
        .unwrap();
        assert_eq!((args.kills, args.services), (40, 30));
        assert_eq!(args.only, ["cloudlet", "runit"]);
        assert_eq!(args.runsvdir, Path::new("/x/runsvdir"));
        assert_eq!(args.cloudlet, Path::new("/x/c"));
        assert_eq!(args.workload, Path::new("/x/w"));
        assert_eq!(args.supervisord, Path::new("/x/sd"));
        assert!(!args.busy);
        assert!((args.restart_target - 2.0).abs() < f64::EPSILON);

        // The footprint runs: 300 services, or a busy machine, against runit's restart latency.
        let args = Args::try_parse_from(
            "bench --services 300 --busy --restart-target 1 --only runit".split_whitespace(),
        )
        .unwrap();
        assert_eq!(args.services, 300);
        assert!(args.busy);
        assert!((args.restart_target - 1.0).abs() < f64::EPSILON);

        let help = Args::try_parse_from(["bench", "--help"]).unwrap_err();
        assert_eq!((help.kind(), help.exit_code()), (ErrorKind::DisplayHelp, 0));
        for (argv, kind, says) in [
            ("--kills 0", ErrorKind::ValueValidation, "positive"),
            ("--services 0", ErrorKind::ValueValidation, "positive"),
            ("--kills x", ErrorKind::ValueValidation, "positive"),
            ("--only systemd", ErrorKind::InvalidValue, "possible values"),
            ("--kills", ErrorKind::InvalidValue, "a value is required"),
            ("--nope 1", ErrorKind::UnknownArgument, "--nope"),
            (
                "--restart-target 0",
                ErrorKind::ValueValidation,
                "not a ratio",
            ),
            (
                "--restart-target NaN",
                ErrorKind::ValueValidation,
                "not a ratio",
            ),
        ] {
            let error = Args::try_parse_from(format!("bench {argv}").split(' ')).unwrap_err();
            assert_eq!((error.kind(), error.exit_code()), (kind, 2), "{argv}");
            assert!(error.to_string().contains(says), "{argv}: {error}");
        }
    }
}
