//! Which nodes are alive: the last heartbeat of every node, kept in memory only.
//!
//! A node is `Ready` while its heartbeats arrive within `nodeLostAfter`, `Lost` after that. A node
//! not heard from since this server started gets the same grace from the server's start, so a
//! server restart never makes every node look lost at once. This module only records and answers;
//! it never writes the store and never acts on a node.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cloudlet_api::dto::{Heartbeat, NodeStatus, ServiceStatus};
use cloudlet_api::heartbeat::{self, Applied};
use cloudlet_placement::{Health, Resources};

/// The last heartbeat of one node.
#[derive(Debug, Clone)]
pub struct Live {
    /// When it arrived (monotonic).
    pub last: Instant,
    /// When it arrived (wall clock, for display).
    pub at: jiff::Timestamp,
    /// The node's resources and conditions.
    pub status: NodeStatus,
    /// Its services, as its supervisor saw them.
    pub services: Vec<ServiceStatus>,
    /// The heartbeat `services` are as of (`None`: none a delta can build on).
    pub seq: Option<u64>,
}

/// What recording a heartbeat did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// Placement should look again.
    pub replan: bool,
    /// The server holds the node's services as of this heartbeat: the next may be a delta.
    pub deltas: bool,
}

/// Heartbeats of every node.
#[derive(Debug)]
pub struct Registry {
    live: HashMap<String, Live>,
    health: HashMap<String, Health>,
    started: Instant,
    lost_after: Duration,
}

impl Registry {
    /// An empty registry; nodes get `lost_after` of grace from now.
    pub fn new(lost_after: Duration) -> Registry {
        Registry {
            live: HashMap::new(),
            health: HashMap::new(),
            started: Instant::now(),
            lost_after,
        }
    }

    /// Records a heartbeat (full or a delta on the one the server holds). Returns whether
    /// placement should look again (the node was not ready before, or its allocatable changed)
    /// and whether the server now holds the node's services as of this heartbeat (else the node
    /// must send them all next time).
    pub fn beat(&mut self, node: &str, heartbeat: Heartbeat) -> Beat {
        let old = self.live.remove(node);
        let replan = old.as_ref().is_none_or(|old| {
            old.status.allocatable != heartbeat.node.allocatable
                || old.last.elapsed() > self.lost_after
        });
        let (mut services, held_seq) = old.map_or((Vec::new(), None), |o| (o.services, o.seq));
        let applied =
            heartbeat::apply(&mut services, held_seq, heartbeat.services, heartbeat.delta);
        let current = applied == Applied::Current;
        self.live.insert(
            node.to_owned(),
            Live {
                last: Instant::now(),
                at: jiff::Timestamp::now(),
                status: heartbeat.node,
                services,
                seq: match current {
                    true => Some(heartbeat.seq),
                    false => held_seq,
                },
            },
        );
        Beat {
            replan,
            deltas: current,
        }
    }

    /// The last heartbeat of `node`.
    pub fn get(&self, node: &str) -> Option<&Live> {
        self.live.get(node)
    }

    /// Every node heard from since this server started.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.live.keys().map(String::as_str)
    }

    /// Whether `node` is heard from.
    pub fn health(&self, node: &str) -> Health {
        let last = self.live.get(node).map_or(self.started, |l| l.last);
        if last.elapsed() <= self.lost_after {
            Health::Ready
        } else {
            Health::Lost
        }
    }

    /// `Ready`, `Lost`, or `Unknown` (not heard from since the server started), for display.
    pub fn state(&self, node: &str) -> &'static str {
        match (self.live.contains_key(node), self.health(node)) {
            (false, _) => "Unknown",
            (true, Health::Ready) => "Ready",
            (true, Health::Lost) => "Lost",
        }
    }

    /// What `node` may give to services, from its last heartbeat (nothing before the first).
    pub fn allocatable(&self, node: &str) -> Resources {
        self.live.get(node).map_or(Resources::ZERO, |l| {
            Resources::new(
                l.status.allocatable.cpu_millis,
                l.status.allocatable.memory_bytes,
            )
        })
    }

    /// The nodes among `nodes` whose health changed since the last call: (node, before, now);
    /// `before` is `None` the first time a node is looked at.
    pub fn flips<'a>(
        &mut self,
        nodes: impl Iterator<Item = &'a str>,
    ) -> Vec<(String, Option<Health>, Health)> {
        let mut out = Vec::new();
        for node in nodes {
            let now = self.health(node);
            let before = self.health.insert(node.to_owned(), now);
            if before != Some(now) {
                out.push((node.to_owned(), before, now));
            }
        }
        out
    }

    /// Forgets a node.
    pub fn remove(&mut self, node: &str) {
        self.live.remove(node);
        self.health.remove(node);
    }
}
