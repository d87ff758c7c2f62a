//! The node monitor: every few seconds it reads the host's capacity, usage and pressure and each
//! service's cgroup counters, keeps the latest [`NodeSnapshot`] for `ctl get nodes` and for
//! placement (apply refuses what does not fit allocatable), and turns changes into events:
//! a pressure condition that begins or ends, an OOM kill, a fork refused by `pids.max`.
//!
//! It must never stop, throttle or restart anything: pressure is a warning, never an eviction.
//! Capacity is protected earlier, by refusing requests that do not fit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use cloudlet_host::{Capacity, Condition, HostPaths, Resources, Thresholds, Usage};
use jiff::Timestamp;

/// What the monitor needs to know.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// What the node keeps for the system (never given to services).
    pub reserve: Resources,
    /// When pressure becomes a condition.
    pub thresholds: Thresholds,
    /// Disks to watch besides the data dir.
    pub disk_paths: Vec<PathBuf>,
    /// How often to look.
    pub interval: Duration,
}

/// A condition with the time its status last changed.
#[derive(Debug, Clone)]
pub struct TimedCondition {
    /// The condition.
    pub condition: Condition,
    /// Since when it has had its status.
    pub since: Timestamp,
}

/// The node as last seen.
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    /// When it was read.
    pub at: Timestamp,
    /// Total resources.
    pub capacity: Capacity,
    /// Capacity less the reserve: what services may request.
    pub allocatable: Resources,
    /// Usage now.
    pub usage: Usage,
    /// Pressure conditions, every kind always present.
    pub conditions: Vec<TimedCondition>,
}

/// The latest snapshot, shared.
pub type SharedSnapshot = Arc<RwLock<Option<NodeSnapshot>>>;

/// Reads the host once: capacity, allocatable, usage, conditions (all with `since` = now).
pub fn read_node(
    data_dir: &std::path::Path,
    options: &MonitorOptions,
) -> Result<NodeSnapshot, cloudlet_host::HostError> {
    let paths = HostPaths::default();
    let mut disks = vec![data_dir.to_owned()];
    disks.extend(options.disk_paths.iter().cloned());
    let capacity = cloudlet_host::capacity(&paths, &disks)?;
    let usage = cloudlet_host::usage(&paths, &disks)?;
    let now = Timestamp::now();
    let conditions = cloudlet_host::conditions(&capacity, &usage, &options.thresholds)
        .into_iter()
        .map(|condition| TimedCondition {
            condition,
            since: now,
        })
        .collect();
    Ok(NodeSnapshot {
        at: now,
        allocatable: capacity.resources().saturating_sub(options.reserve),
        capacity,
        usage,
        conditions,
    })
}

/// Carries the `since` of conditions whose status did not change from `old` into `new`, and
/// returns the conditions that changed.
pub fn carry_over(old: &NodeSnapshot, new: &mut NodeSnapshot) -> Vec<Condition> {
    let mut changed = Vec::new();
    for c in &mut new.conditions {
        match old
            .conditions
            .iter()
            .find(|o| o.condition.kind == c.condition.kind)
        {
            Some(o)
                if o.condition.status == c.condition.status
                    && o.condition.severity == c.condition.severity =>
            {
                c.since = o.since;
            }
            _ => changed.push(c.condition.clone()),
        }
    }
    changed
}

/// Counters of one service's cgroup, to notice what grew.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupCounters {
    /// `memory.events` oom_kill.
    pub oom_kills: u64,
    /// `pids.events` max.
    pub pids_max_hits: u64,
}

/// What grew between two readings of a service's counters, as (reason, message) events.
pub fn counter_events(
    name: &str,
    before: CgroupCounters,
    now: CgroupCounters,
    pids_max: Option<u64>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if now.oom_kills > before.oom_kills {
        out.push((
            "OOMKill",
            format!(
                "the kernel's OOM killer ended {} process(es) of {name} (memory.max)",
                now.oom_kills - before.oom_kills
            ),
        ));
    }
    if now.pids_max_hits > before.pids_max_hits {
        let limit = pids_max.map_or_else(|| "its limit".to_owned(), |m| m.to_string());
        out.push((
            "PidsLimit",
            format!(
                "pids.max ({limit}) refused {} fork(s) of {name}",
                now.pids_max_hits - before.pids_max_hits
            ),
        ));
    }
    out
}

/// Last readings of each service's counters.
pub type CounterBook = HashMap<String, CgroupCounters>;

/// Shares a snapshot.
pub fn store(shared: &SharedSnapshot, snapshot: NodeSnapshot) {
    *shared.write().unwrap_or_else(PoisonError::into_inner) = Some(snapshot);
}

/// The latest snapshot.
pub fn latest(shared: &SharedSnapshot) -> Option<NodeSnapshot> {
    shared
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_that_grow_become_events() {
        let before = CgroupCounters {
            oom_kills: 1,
            pids_max_hits: 0,
        };
        let now = CgroupCounters {
            oom_kills: 2,
            pids_max_hits: 5,
        };
        let ev = counter_events("web", before, now, Some(64));
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].0, "OOMKill");
        assert!(
            ev[1].1.contains("pids.max (64) refused 5 fork(s) of web"),
            "{ev:?}"
        );
        assert!(counter_events("web", now, now, None).is_empty());
    }
}
