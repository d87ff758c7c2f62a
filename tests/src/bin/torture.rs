//! `torture`: cloudlet under abuse, counted. Three phases, each against real `cloudlet`
//! processes in temp dirs of its own:
//!
//! - **kills**: a one-node server SIGKILLed `--kills` times while `ctl apply` and `ctl restart`
//!   are in flight; then no automatic restart of a service, no changed pid the operator did not
//!   ask for, no zombie, and every acknowledged apply in the store.
//! - **hostile**: a server and `--agents` real agents (each in a network namespace of its own);
//!   `--requests` malformed or hostile requests, half over TLS from an operator's namespace and
//!   half over `cloudlet.sock`; the server must answer `healthz` throughout, never panic, and
//!   the agents' heartbeats must keep arriving.
//! - **idle**: the same cluster holds `--idle` anonymous TLS connections open and silent; the
//!   heartbeats must keep arriving and no node may be declared lost.
//!
//! It prints one table of counts (or JSON with `-o json`) and exits non-zero when a count that
//! must be zero is not. It owns the processes, namespaces and temp dirs it makes, and removes
//! them on exit; it never touches anything else.

#[path = "torture/heartbeats.rs"]
mod heartbeats;
#[path = "torture/hostile.rs"]
mod hostile;
#[path = "torture/idle.rs"]
mod idle;
#[path = "torture/kills.rs"]
mod kills;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use cloudlet_tests::fleet::Fleet;

/// Abuses real cloudlet processes and counts what went wrong (every "must be 0" row).
#[derive(Debug, Parser)]
#[command(
    name = "torture",
    after_help = "Examples:\n  \
        torture                                   # the full run (make torture), ~30 minutes\n  \
        torture --kills 10 --requests 1000 --idle 300 --hold 15s   # the CI pass\n  \
        torture --only hostile -o json\n\n\
        Needs root (network namespaces), and cargo build --workspace --bins first."
)]
struct Args {
    /// How many times the server is SIGKILLed during applies and restarts.
    #[arg(long, default_value = "100", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    kills: u64,
    /// How many malformed or hostile API requests are sent (half over TLS, half over the socket).
    #[arg(long, default_value = "10000", value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    requests: u64,
    /// How many idle anonymous TLS connections are held open.
    #[arg(long, default_value = "2000", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    idle: u64,
    /// How long the idle connections are held.
    #[arg(long, default_value = "45s", value_parser = humantime_secs)]
    hold: Duration,
    /// How many real agents heartbeat during the hostile and idle phases.
    #[arg(long, default_value = "2", value_parser = clap::value_parser!(u64).range(1..=8))]
    agents: u64,
    /// Run only these phases (kills, hostile, idle); all by default.
    #[arg(long)]
    only: Vec<Phase>,
    /// Output: a table, or JSON.
    #[arg(short = 'o', long, default_value = "table")]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    Kills,
    Hostile,
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

/// `45s`, `2m`: whole seconds or minutes, at most an hour.
fn humantime_secs(text: &str) -> Result<Duration, String> {
    let (n, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 45s or 2m"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n.saturating_mul(60),
        _ => return Err(format!("{text:?}: the unit is s or m")),
    };
    if secs == 0 || secs > 3600 {
        return Err(format!("{text:?}: from 1s to 60m"));
    }
    Ok(Duration::from_secs(secs))
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    phase: &'static str,
    what: String,
    value: String,
    /// Must this be zero?
    must_be_zero: bool,
    ok: bool,
}

/// The rows a phase adds.
#[derive(Debug, Default)]
pub struct Rows(Vec<Row>);

impl Rows {
    /// A count to show.
    pub fn info(&mut self, phase: &'static str, what: &str, value: impl ToString) {
        self.0.push(Row {
            phase,
            what: what.to_owned(),
            value: value.to_string(),
            must_be_zero: false,
            ok: true,
        });
    }

    /// A count that must be zero.
    pub fn zero(&mut self, phase: &'static str, what: &str, value: u64) {
        self.0.push(Row {
            phase,
            what: what.to_owned(),
            value: value.to_string(),
            must_be_zero: true,
            ok: value == 0,
        });
    }

    /// A condition that must hold, shown with `value`.
    pub fn check(&mut self, phase: &'static str, what: &str, value: impl ToString, ok: bool) {
        self.0.push(Row {
            phase,
            what: what.to_owned(),
            value: value.to_string(),
            must_be_zero: false,
            ok,
        });
    }
}

/// Set when SIGINT or SIGTERM arrives: every phase stops early, and everything it made is
/// still removed on the way out (the counts so far are printed, and the run fails).
static STOP: AtomicBool = AtomicBool::new(false);

/// Whether the run was asked to stop.
pub fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Blocks SIGINT and SIGTERM in every thread (threads inherit the mask) and turns them into
/// [`STOP`] on a thread of their own.
fn stop_on_signals() -> nix::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()?;
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("torture: {sig}: stopping, cleaning up");
            STOP.store(true, Ordering::Relaxed);
        }
    });
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = stop_on_signals() {
        eprintln!("torture: cannot take over SIGINT/SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    if !cloudlet_tests::netns::netns_available() {
        eprintln!("torture: needs root and iproute2 (network namespaces for the agents)");
        return ExitCode::FAILURE;
    }
    raise_fd_limit();
    let wants = |p: Phase| args.only.is_empty() || args.only.contains(&p);
    let mut rows = Rows::default();
    if wants(Phase::Kills) {
        eprintln!("==> kills: {} SIGKILLs of the server", args.kills);
        kills::run(args.kills, &mut rows);
    }
    if wants(Phase::Hostile) || wants(Phase::Idle) {
        let mut fleet = cluster(args.agents);
        let server_pid = fleet.process("s").id();
        if wants(Phase::Hostile) {
            eprintln!("==> hostile: {} requests", args.requests);
            hostile::run(&fleet, args.requests, server_pid, &mut rows);
        }
        if wants(Phase::Idle) {
            eprintln!("==> idle: {} connections held {:?}", args.idle, args.hold);
            idle::run(&fleet, args.idle, args.hold, &mut rows);
        }
        fleet.kill("s");
    }
    print(&rows, args.output);
    if rows.0.iter().all(|r| r.ok) && !stopping() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A server and `agents` joined agents, each in a namespace of its own.
fn cluster(agents: u64) -> Fleet {
    let mut fleet = Fleet::new("torture");
    fleet.start_server("s", &[]);
    // Hostile and idle clients come from a namespace of their own: a limit per client address
    // may refuse them without touching the operator's `ctl` (namespace `client`).
    fleet.add_node("attacker");
    let token = fleet.token(&["--ttl", "1h"]);
    for i in 1..=agents {
        fleet.join(&format!("n{i}"), &token, &[]);
    }
    fleet
}

/// Room for the idle connections (the client's side of them).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        eprintln!("torture: cannot raise the fd limit to {hard}: {e}");
    }
}

fn print(rows: &Rows, output: Output) {
    match output {
        Output::Json => match serde_json::to_string_pretty(
            &rows
                .0
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "phase": r.phase, "what": r.what.trim(), "value": r.value,
                        "mustBeZero": r.must_be_zero, "ok": r.ok,
                    })
                })
                .collect::<Vec<_>>(),
        ) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("torture: encode the rows: {e}"),
        },
        Output::Table => {
            let width = rows.0.iter().map(|r| r.what.len()).max().unwrap_or(4);
            println!("{:<8} {:<width$} {:>12}  RESULT", "PHASE", "WHAT", "COUNT");
            for r in &rows.0 {
                let result = match (r.ok, r.must_be_zero) {
                    (true, true) => "ok (must be 0)",
                    (true, false) => "ok",
                    (false, _) => "FAILED",
                };
                println!(
                    "{:<8} {:<width$} {:>12}  {result}",
                    r.phase, r.what, r.value
                );
            }
        }
    }
}
