//! Watches the agents' heartbeats as the server sees them while a phase runs: the oldest
//! heartbeat age seen, how often a node was not Ready, and the `NodeLost` events. Reads through
//! `ctl` from the operator's namespace, as an operator would; never changes anything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cloudlet_tests::fleet::Fleet;

/// What the watch saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    /// Polls of the node list.
    pub polls: u64,
    /// Polls that failed (the server did not answer `ctl`).
    pub failed_polls: u64,
    /// The oldest heartbeat seen, over every agent and poll.
    pub max_age: Duration,
    /// (node, poll) pairs with the node not Ready.
    pub not_ready: u64,
}

/// Polls `ctl get nodes` every second until `stop`; the agents are the nodes other than `s`.
pub fn watch(fleet: &Fleet, stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) && !crate::stopping() {
        let started = Instant::now();
        let out = fleet.ctl(&["get", "nodes", "-o", "json"]);
        seen.polls += 1;
        let nodes = out
            .status
            .success()
            .then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
            .flatten();
        match nodes.as_ref().and_then(|v| v.as_array()) {
            None => seen.failed_polls += 1,
            Some(nodes) => {
                let now = jiff::Timestamp::now();
                for n in nodes.iter().filter(|n| n["name"] != "s") {
                    if n["state"] != "Ready" {
                        seen.not_ready += 1;
                    }
                    let age = n["lastHeartbeat"]
                        .as_str()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .and_then(|t| Duration::try_from(now.duration_since(t)).ok())
                        .unwrap_or(Duration::MAX);
                    seen.max_age = seen.max_age.max(age);
                }
            }
        }
        let spent = started.elapsed();
        if spent < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_secs(1) - spent);
        }
    }
    seen
}

/// How many `NodeLost` events the server has recorded.
pub fn nodes_lost(fleet: &Fleet) -> u64 {
    let out = fleet.ctl(&["events", "-o", "json"]);
    String::from_utf8_lossy(&out.stdout)
        .matches("\"NodeLost\"")
        .count() as u64
}
