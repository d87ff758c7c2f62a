//! `clusterbench`: one `cloudlet server` and N simulated agents (real joins, real mutual TLS)
//! heartbeating every 2 s; reports the server's CPU and memory against the cluster issue's
//! targets (under 25% of one core and under 150 MB with 300 agents) and k3s' documented
//! footprint, and what the agents saw (join time, heartbeat latency, failures).
//!
//! This file owns the command line, the order of the run (server, idle baseline, joins, warmup,
//! measurement) and the cleanup on exit, error or signal. It must never touch a process, file or
//! cgroup but those of the server it started in its own temp dir, and must leave nothing behind.

#[path = "clusterbench/agents.rs"]
mod agents;
#[path = "clusterbench/report.rs"]
mod report;
#[path = "clusterbench/server.rs"]
mod server;
#[path = "clusterbench/usage.rs"]
mod usage;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cloudlet_api::Client;
use cloudlet_api::dto::EventsQuery;
use cloudlet_tests::benchargs::{beside, count};
use futures_util::StreamExt as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::agents::Tally;
use crate::report::Report;
use crate::server::Server;

/// How often the server's CPU and memory are read in a window.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long the server may take to answer over mutual TLS after its start.
const STARTUP: Duration = Duration::from_secs(30);
/// The pause between the server's first answer and the idle baseline: its start-up is done.
const SETTLE: Duration = Duration::from_secs(2);

/// Writes one line to stderr, prefixed `clusterbench: `; a write error is ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), "clusterbench: {}", format_args!($($arg)*));
    }};
}

/// clusterbench: one cloudlet server with N simulated agents heartbeating over mutual TLS
///
/// The agents join with real CSRs and then heartbeat at the interval; the bench measures the
/// server idle, then under the agents, and reports its CPU and memory against the cluster targets
/// (under 25% of one core and under 150 MB with 300 agents) and k3s' documented footprint, with
/// what the agents saw (join time, heartbeat latency, failures).
#[derive(Debug, Parser)]
#[command(
    name = "clusterbench",
    max_term_width = 100,
    after_help = "Durations are like 500ms, 2s, 1m. The server runs in a temp dir and cgroup of \
    the bench's own, stopped and removed at the end, on error and on SIGINT/SIGTERM/SIGHUP.\n\n\
    Exit code 0 when measured (targets met or not), 1 when it could not measure, 2 on bad usage."
)]
struct Args {
    /// The cloudlet binary (by default the one next to clusterbench).
    #[arg(long, value_name = "PATH", default_value_os_t = beside("cloudlet"))]
    cloudlet: PathBuf,
    /// Simulated agents.
    #[arg(long, value_name = "N", default_value_t = 300, value_parser = count)]
    agents: usize,
    /// Their heartbeat interval.
    #[arg(long, value_name = "D", default_value = "2s", value_parser = positive)]
    interval: Duration,
    /// How long the server is measured under the agents.
    #[arg(long, value_name = "D", default_value = "60s", value_parser = positive)]
    measure: Duration,
    /// The wait between the last join and the measurement.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = duration)]
    warmup: Duration,
    /// How long the idle server is measured before any join (0: not at all).
    #[arg(long, value_name = "D", default_value = "10s", value_parser = duration)]
    baseline: Duration,
    /// Joins at once.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = count)]
    parallel: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.cloudlet.exists() {
        say!(
            "{} not found (scripts/bench.sh builds it)",
            args.cloudlet.display()
        );
        return ExitCode::FAILURE;
    }
    match bench(&args) {
        Ok(report) => {
            println!("{}", report::render(&report));
            ExitCode::SUCCESS
        }
        Err(error) => {
            say!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the server in a fresh temp dir, measures, and stops and removes everything whatever
/// happened.
fn bench(args: &Args) -> Result<Report, String> {
    let dir = tempfile::Builder::new()
        .prefix("cl-clusterbench-")
        .tempdir()
        .map_err(|e| format!("creating a temp dir: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    // The server keeps the limits the bench was started with; only the agents' side is raised.
    let mut server = Server::start(&args.cloudlet, dir.path())?;
    raise_open_files_limit();
    let outcome = runtime.block_on(async {
        let mut signals = Vec::new();
        for kind in [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
        ] {
            signals.push(signal(kind).map_err(|e| format!("listening for signals: {e}"))?);
        }
        let [int, term, hup] = &mut signals[..] else {
            return Err("listening for signals".to_owned());
        };
        tokio::select! {
            measured = measure(&mut server, args) => measured,
            _ = int.recv() => Err("SIGINT: stopping the server and cleaning up".to_owned()),
            _ = term.recv() => Err("SIGTERM: stopping the server and cleaning up".to_owned()),
            _ = hup.recv() => Err("SIGHUP: stopping the server and cleaning up".to_owned()),
        }
    });
    // The agents' tasks end with the runtime, before the server goes.
    runtime.shutdown_timeout(Duration::from_secs(2));
    if outcome.is_err() {
        let tail = server.log_tail(20);
        if !tail.is_empty() {
            say!("the server's log ends with:\n{tail}");
        }
    }
    let stopped = server.stop();
    let mut report = outcome?;
    report.stopped = Some(stopped?);
    drop(dir);
    Ok(report)
}

/// The run itself: the server ready and idle, the joins, the warmup, the window.
async fn measure(server: &mut Server, args: &Args) -> Result<Report, String> {
    let started = Instant::now();
    let (admin, url) = server.ready(STARTUP).await?;
    let startup = started.elapsed();
    let token = server.token().await?;
    say!("server up at {url} in {startup:.2?}; token made");
    let idle = match args.baseline.is_zero() {
        true => None,
        false => {
            tokio::time::sleep(SETTLE).await;
            say!("measuring the idle server for {:?}", args.baseline);
            Some(usage::watch(server.pid(), args.baseline, SAMPLE_EVERY).await?)
        }
    };

    say!("joining {} agents, {} at once", args.agents, args.parallel);
    let joined = agents::join_all(&url, &token, args.agents, args.parallel).await?;
    say!(
        "joined in {:.2?} ({} refused with 409 and retried)",
        joined.took,
        joined.refused
    );
    let tally = Arc::new(Tally::default());
    let beats = agents::start_beats(joined.agents, args.interval, &tally);
    tokio::time::sleep(args.warmup).await;
    server.check_running()?;
    let warm = tally.take();

    say!("measuring the server for {:?}", args.measure);
    let me = i32::try_from(std::process::id()).map_err(|e| format!("own pid: {e}"))?;
    let store_before = server.store_state()?;
    let window_start = jiff::Timestamp::now();
    let clients_before = usage::cpu(me)?;
    let loaded = usage::watch(server.pid(), args.measure, SAMPLE_EVERY).await?;
    let clients_after = usage::cpu(me)?;
    let counts = tally.take();
    let window_end = jiff::Timestamp::now();
    let store_after = server.store_state()?;
    drop(beats);

    let events = events_between(&admin, window_start, window_end).await?;
    let nodes = admin
        .nodes()
        .await
        .map_err(|e| format!("GET /v1/nodes: {e}"))?;
    let ready = nodes
        .iter()
        .filter(|n| n.name.starts_with("sim-") && n.state == "Ready")
        .count();
    let hz = usage::clock_ticks()?;
    let clients_ticks = clients_after.ticks.saturating_sub(clients_before.ticks);
    Ok(Report {
        agents: args.agents,
        interval: args.interval,
        warmup: args.warmup,
        startup,
        idle,
        loaded,
        clients_cpu: Duration::from_secs_f64(clients_ticks as f64 / hz as f64),
        joins_took: joined.took,
        joins_each: joined.each,
        parallel: args.parallel,
        joins_refused: joined.refused,
        heartbeat_bytes: agents::heartbeat_sizes(),
        warm,
        counts,
        store: (store_before != store_after, store_before.1, store_after.1),
        events,
        nodes_ready: (ready, nodes.len()),
        server_nofile: usage::open_files_limit(server.pid()),
        stopped: None,
    })
}

/// The (node, reason) of the events the server recorded between `from` and `to`.
async fn events_between(
    admin: &Client,
    from: jiff::Timestamp,
    to: jiff::Timestamp,
) -> Result<Vec<(String, String)>, String> {
    let query = EventsQuery {
        limit: Some(5000),
        ..EventsQuery::default()
    };
    let mut stream = admin
        .events(&query)
        .await
        .map_err(|e| format!("GET /v1/events: {e}"))?;
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        let event = event.map_err(|e| format!("GET /v1/events: {e}"))?;
        if (from..=to).contains(&event.time) {
            events.push((event.node, event.reason));
        }
    }
    Ok(events)
}

/// Raises this process's soft limit on open files to its hard limit: one connection per agent.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                say!("cannot raise the open-files limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => say!("cannot read the open-files limit: {e}"),
    }
}

/// A [`duration`] of more than 0: `--interval`, `--measure`.
fn positive(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        d if d.is_zero() => Err("must be more than 0".to_owned()),
        d => Ok(d),
    }
}

/// `500ms`, `2s`, `1m`, or a bare number of seconds.
fn duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 2s or 1m"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;
    use clap::error::ErrorKind;

    use super::*;

    #[test]
    fn command_line() {
        Args::command().debug_assert();
        let args = Args::try_parse_from(["clusterbench"]).unwrap();
        assert_eq!(args.cloudlet, beside("cloudlet"));
        assert_eq!((args.agents, args.parallel), (300, 16));
        assert_eq!(args.interval, Duration::from_secs(2));
        assert_eq!(args.measure, Duration::from_secs(60));
        assert_eq!(args.baseline, Duration::from_secs(10));

        let args = Args::try_parse_from(
            "clusterbench --agents 50 --interval 500ms --measure 1m --baseline 0 --cloudlet /x/c"
                .split(' '),
        )
        .unwrap();
        assert_eq!(args.agents, 50);
        assert_eq!(args.interval, Duration::from_millis(500));
        assert_eq!(args.measure, Duration::from_secs(60));
        assert_eq!(args.warmup, Duration::from_secs(10));
        assert!(args.baseline.is_zero());
        assert_eq!(args.cloudlet, PathBuf::from("/x/c"));

        let help = Args::try_parse_from(["clusterbench", "--help"]).unwrap_err();
        assert_eq!((help.kind(), help.exit_code()), (ErrorKind::DisplayHelp, 0));
        for (argv, kind, says) in [
            ("--agents 0", ErrorKind::ValueValidation, "positive"),
            ("--parallel x", ErrorKind::ValueValidation, "positive"),
            ("--interval 0s", ErrorKind::ValueValidation, "more than 0"),
            ("--measure 2h", ErrorKind::ValueValidation, "unknown unit"),
            ("--warmup", ErrorKind::InvalidValue, "a value is required"),
            ("--nope 1", ErrorKind::UnknownArgument, "--nope"),
        ] {
            let error =
                Args::try_parse_from(format!("clusterbench {argv}").split(' ')).unwrap_err();
            assert_eq!((error.kind(), error.exit_code()), (kind, 2), "{argv}");
            assert!(error.to_string().contains(says), "{argv}: {error}");
        }
    }

    /// The whole bench, small: a real server, three real agents. Needs `target/<profile>/cloudlet`
    /// (`cargo build --workspace --bins`, as scripts/test.sh does) or `CLOUDLET_BIN`.
    #[test]
    fn a_short_run_measures_every_agent_and_stops_the_server_cleanly() {
        let args = Args {
            cloudlet: cloudlet_tests::cloudlet_bin(),
            agents: 3,
            interval: Duration::from_millis(200),
            measure: Duration::from_secs(1),
            warmup: Duration::from_millis(500),
            baseline: Duration::ZERO,
            parallel: 2,
        };
        let report = bench(&args).unwrap();
        assert_eq!(report.counts.failed, 0, "{:?}", report.counts.errors);
        // 3 agents, 5 beats a second each, for a second (ticks may run a little late).
        assert!(report.counts.ok >= 9, "{} heartbeats", report.counts.ok);
        assert_eq!(report.warm.assignments_ok, 3);
        assert_eq!(report.nodes_ready, (3, 4));
        assert_eq!(report.joins_each.len(), 3);
        assert!(report.loaded.memory.rss > 0 && report.loaded.files > 3);
        // SIGTERM sufficed, and the cgroup subtree was removed (or stop() had failed the run).
        let (_, killed) = report.stopped.unwrap();
        assert!(!killed);
        let rendered = report::render(&report);
        assert!(rendered.contains("target < 25%"), "{rendered}");
    }
}
