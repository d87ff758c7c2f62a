//! The report of a clusterbench run: the server's CPU and memory idle and under the agents, the
//! ratios against the targets and k3s' documented footprint, what the agents saw, and
//! what the heartbeats made the server write.
//!
//! Pure presentation over measured numbers: it must never start, signal or read a process.

use std::fmt::Write as _;
use std::time::Duration;

use crate::agents::{Counts, percentile};
use crate::usage::{Memory, Window};

/// The targets for the server: the cluster issue's at up to 300 agents (< 25% of one core,
/// < 150 MB), the footprint issue's beyond, stated for 5,000 agents (< 50%, < 250 MiB).
fn targets(agents: usize) -> Targets {
    match agents <= 300 {
        true => Targets {
            cpu_pct: 25.0,
            memory_bytes: 150e6,
            memory_text: "150 MB",
            whose: "300 agents",
        },
        false => Targets {
            cpu_pct: 50.0,
            memory_bytes: 250.0 * 1024.0 * 1024.0,
            memory_text: "250 MiB",
            whose: "5,000 agents",
        },
    }
}

/// The server's targets at a number of agents.
#[derive(Debug, Clone, Copy)]
struct Targets {
    cpu_pct: f64,
    memory_bytes: f64,
    memory_text: &'static str,
    whose: &'static str,
}
/// What k3s documents for a server with its workload, and per agent (the figures).
const K3S_SERVER_BYTES: f64 = 1.6e9;
const K3S_AGENT_BYTES: f64 = 270e6;

/// How one row of the table shows a window.
type Cell = fn(&Window) -> String;

/// Everything a run measured.
#[derive(Debug)]
pub struct Report {
    /// Simulated agents.
    pub agents: usize,
    /// Their heartbeat interval.
    pub interval: Duration,
    /// The wait between the last join and the measurement.
    pub warmup: Duration,
    /// How long `cloudlet server` took until `GET /v1/nodes` answered over mutual TLS.
    pub startup: Duration,
    /// The server before any agent joined (its own node only), if measured.
    pub idle: Option<Window>,
    /// The server with every agent heartbeating.
    pub loaded: Window,
    /// The bench's own CPU time over the same window (the agents' side).
    pub clients_cpu: Duration,
    /// How long every join took, all of them.
    pub joins_took: Duration,
    /// What each join took.
    pub joins_each: Vec<Duration>,
    /// Joins at once.
    pub parallel: usize,
    /// Joins refused with 409 ("too many joins at once") and tried again.
    pub joins_refused: u32,
    /// The size of one heartbeat's JSON body.
    pub heartbeat_bytes: (usize, usize),
    /// What the agents saw during the warmup.
    pub warm: Counts,
    /// What the agents saw in the window.
    pub counts: Counts,
    /// Whether the store file's mtime or size changed during the window, and its sizes.
    pub store: (bool, u64, u64),
    /// The events the server recorded in the window: (node, reason).
    pub events: Vec<(String, String)>,
    /// Simulated nodes the server lists as Ready at the end, and all nodes it lists.
    pub nodes_ready: (usize, usize),
    /// The server's soft limit on open files.
    pub server_nofile: Option<String>,
    /// How the server stopped: how long SIGTERM took, and whether it needed SIGKILL.
    pub stopped: Option<(Duration, bool)>,
}

impl Report {
    /// Heartbeats the window should have seen.
    fn expected(&self) -> u128 {
        self.loaded.wall.as_millis() * self.agents as u128 / self.interval.as_millis().max(1)
    }
}

/// The whole report, ready to print.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let w = &r.loaded;
    let _ = writeln!(
        out,
        "clusterbench: one cloudlet server, {} simulated agents (real mutual TLS) heartbeating \
         every {:?}; measured {:.0} s after a {:?} warmup",
        r.agents,
        r.interval,
        w.wall.as_secs_f64(),
        r.warmup
    );
    let _ = writeln!(out, "{}\n", machine());

    let col = |window: Option<&Window>, f: Cell| window.map_or_else(|| "-".to_owned(), f);
    let idle = r.idle.as_ref();
    let rows: [(&str, Cell); 5] = [
        ("server CPU (% of one core)", |w| {
            format!("{:.2}%", w.cpu_pct())
        }),
        ("  busiest 5 s", |w| format!("{:.2}%", w.busiest)),
        ("server RSS", |w| mib(w.memory.rss)),
        ("server PSS", |w| mib(w.memory.pss)),
        ("threads / open fds", |w| {
            format!("{} / {}", w.threads, w.files)
        }),
    ];
    let _ = writeln!(
        out,
        "{:<28}{:>22}{:>16}",
        "",
        "idle (own node only)",
        format!("{} agents", r.agents)
    );
    for (name, f) in rows {
        let _ = writeln!(out, "{name:<28}{:>22}{:>16}", col(idle, f), f(w));
    }

    let cpu = w.cpu_pct();
    let rss = bytes(w.memory.rss);
    let t = targets(r.agents);
    let _ = writeln!(
        out,
        "\nserver CPU {cpu:.2}% of one core (target < {:.0}%, the target at {}: {}, {:.3}x)",
        t.cpu_pct,
        t.whose,
        verdict(cpu < t.cpu_pct),
        cpu / t.cpu_pct
    );
    let _ = writeln!(
        out,
        "server RSS {} / PSS {} (target < {}, the target at {}: {}, {:.2}x)",
        mib(w.memory.rss),
        mib(w.memory.pss),
        t.memory_text,
        t.whose,
        verdict(rss < t.memory_bytes),
        rss / t.memory_bytes
    );
    let _ = writeln!(
        out,
        "k3s (documented): 1.6 GB server + 270 MB/agent -> cloudlet server is {:.3}x of k3s' \
         server alone ({:.1} GB with {} k3s agents)",
        rss / K3S_SERVER_BYTES,
        (K3S_SERVER_BYTES + K3S_AGENT_BYTES * r.agents as f64) / 1e9,
        r.agents
    );
    if let Some(idle) = idle {
        let _ = writeln!(
            out,
            "per agent on the server ((loaded - idle) / {n}): {} RSS, {:.4}% of a core",
            per_agent(w.memory, idle.memory, r.agents),
            (cpu - idle.cpu_pct()) / r.agents.max(1) as f64,
            n = r.agents
        );
    }

    let _ = writeln!(out, "\nagents (this process, 2 tokio workers):");
    let _ = writeln!(
        out,
        "  joins: {} in {:.2} s, {} at once (each: p50 {}, p99 {}, max {}); {} refused with \
         409 \"too many joins at once\" and tried again",
        r.joins_each.len(),
        r.joins_took.as_secs_f64(),
        r.parallel,
        ms(percentile(&r.joins_each, 50)),
        ms(percentile(&r.joins_each, 99)),
        ms(r.joins_each.iter().max().copied()),
        r.joins_refused
    );
    let c = &r.counts;
    let _ = writeln!(
        out,
        "  heartbeats ({} B of JSON full, {} B as a delta) in the window: {} ok, {} failed \
         (expected ~{}); latency p50 {}, p99 {}, max {}",
        r.heartbeat_bytes.0,
        r.heartbeat_bytes.1,
        c.ok,
        c.failed,
        r.expected(),
        ms(percentile(&c.latencies, 50)),
        ms(percentile(&c.latencies, 99)),
        ms(c.latencies.iter().max().copied())
    );
    let _ = writeln!(
        out,
        "  warmup: {} ok, {} failed; assignments fetched: {} in the warmup (first beats), {} in \
         the window, {} failed",
        r.warm.ok,
        r.warm.failed,
        r.warm.assignments_ok,
        c.assignments_ok,
        r.warm.assignments_failed + c.assignments_failed
    );
    for (error, n) in r.warm.errors.iter().chain(&c.errors).take(5) {
        let _ = writeln!(out, "  failed {n}x: {error}");
    }
    let _ = writeln!(
        out,
        "  the clients used {:.2}% of a core",
        100.0 * r.clients_cpu.as_secs_f64() / w.wall.as_secs_f64().max(1e-9)
    );

    let _ = writeln!(
        out,
        "\nwhat the heartbeats did on the server, in the window:"
    );
    let (written, before, after) = r.store;
    let _ = writeln!(
        out,
        "  store.redb: {} ({} -> {} bytes)",
        match written {
            true => "written",
            false => "not written (same mtime and size)",
        },
        before,
        after
    );
    let _ = writeln!(
        out,
        "  events recorded: {}{}",
        r.events.len(),
        summarize(&r.events)
    );
    let flips = r
        .events
        .iter()
        .filter(|(_, reason)| reason == "NodeLost" || reason == "NodeReady")
        .count();
    let _ = writeln!(
        out,
        "  node health flips (NodeLost/NodeReady, each a placement round): {flips}; \
         assignments re-fetched (a changed revision): {}",
        c.assignments_ok + c.assignments_failed
    );
    let _ = writeln!(
        out,
        "  nodes Ready at the end: {} of {} simulated ({} listed); server open-files limit {}",
        r.nodes_ready.0,
        r.agents,
        r.nodes_ready.1,
        r.server_nofile.as_deref().unwrap_or("?")
    );
    if let Some((took, killed)) = r.stopped {
        let _ = writeln!(
            out,
            "  startup {:.2} s to the first mutual-TLS answer; stopped by SIGTERM in {}{}",
            r.startup.as_secs_f64(),
            ms(Some(took)),
            if killed { " (needed SIGKILL)" } else { "" }
        );
    }
    out
}

/// `" (reason xN on node, ...)"` for a list of events, or nothing.
fn summarize(events: &[(String, String)]) -> String {
    let mut by: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    for (node, reason) in events {
        *by.entry((reason.as_str(), node.as_str())).or_default() += 1;
    }
    if by.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = by
        .iter()
        .take(8)
        .map(|((reason, node), n)| format!("{reason} x{n} on {node}"))
        .collect();
    let more = match by.len() > 8 {
        true => ", ...",
        false => "",
    };
    format!(" ({}{more})", parts.join(", "))
}

fn per_agent(loaded: Memory, idle: Memory, agents: usize) -> String {
    let delta = loaded.rss.saturating_sub(idle.rss) as f64 / agents.max(1) as f64;
    format!("{delta:.0} KiB")
}

fn verdict(met: bool) -> &'static str {
    match met {
        true => "MET",
        false => "MISSED",
    }
}

fn bytes(kib: u64) -> f64 {
    kib as f64 * 1024.0
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0),
    )
}

/// The CPU model, the cores and the kernel, in one line.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "machine: {model}, {cores} cores (shared by the server and the agents), Linux {}",
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_targets_follow_the_scale() {
        assert!((targets(300).cpu_pct - 25.0).abs() < f64::EPSILON);
        assert!((targets(300).memory_bytes - 150e6).abs() < 1.0);
        let big = targets(5000);
        assert!((big.cpu_pct - 50.0).abs() < f64::EPSILON);
        assert_eq!((big.memory_text, big.whose), ("250 MiB", "5,000 agents"));
    }

    #[test]
    fn events_are_summarized_by_reason_and_node() {
        let events = vec![
            ("bench-server".to_owned(), "CPUPressure".to_owned()),
            ("bench-server".to_owned(), "CPUPressure".to_owned()),
            ("sim-0001".to_owned(), "NodeLost".to_owned()),
        ];
        assert_eq!(
            summarize(&events),
            " (CPUPressure x2 on bench-server, NodeLost x1 on sim-0001)"
        );
        assert_eq!(summarize(&[]), "");
    }
}
