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
        let Heartbeat {
            node: status,
            services,
            delta,
            seq,
        } = heartbeat;
        // A known node is updated in place: this runs for every heartbeat of every node.
        let Some(live) = self.live.get_mut(node) else {
            let mut held = Vec::new();
            let current = heartbeat::apply(&mut held, None, services, delta) == Applied::Current;
            self.live.insert(
                node.to_owned(),
                Live {
                    last: Instant::now(),
                    at: jiff::Timestamp::now(),
                    status,
                    services: held,
                    seq: current.then_some(seq),
                },
            );
            return Beat {
                replan: true,
                deltas: current,
            };
        };
        let replan =
            live.status.allocatable != status.allocatable || live.last.elapsed() > self.lost_after;
        let current =
            heartbeat::apply(&mut live.services, live.seq, services, delta) == Applied::Current;
        live.last = Instant::now();
        live.at = jiff::Timestamp::now();
        live.status = status;
        if current {
            live.seq = Some(seq);
        }
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

#[cfg(test)]
mod tests {
    use cloudlet_api::dto::ServicesDelta;

    use super::*;

    fn status(cpu: u64) -> NodeStatus {
        let r = serde_json::json!({"cpuMillis": cpu, "memoryBytes": 0, "pids": 0});
        serde_json::from_value(serde_json::json!({
            "name": "n1", "capacity": r, "reserve": r, "allocatable": r, "requested": r,
            "memoryAvailableBytes": 1, "pidsInUse": 1, "disks": [], "conditions": [],
            "limits": "", "observedAt": "2026-12-07T00:00:00Z", "roles": [], "labels": {},
            "state": "", "cordoned": false, "draining": false, "services": 0
        }))
        .unwrap()
    }

    fn svc(name: &str, restarts: u64) -> ServiceStatus {
        serde_json::from_value(serde_json::json!({
            "name": name, "node": "n1", "state": "running", "ready": true,
            "restarts": restarts, "run": 1, "since": "2026-12-07T00:00:00Z", "waitingFor": [],
            "labels": {}, "desired": "running", "droppedLogLines": 0
        }))
        .unwrap()
    }

    fn delta(seq: u64, base: u64, changed: Vec<ServiceStatus>, cpu: u64) -> Heartbeat {
        Heartbeat {
            node: status(cpu),
            services: None,
            delta: Some(ServicesDelta {
                base,
                changed,
                removed: Vec::new(),
            }),
            seq,
        }
    }

    fn restarts(r: &Registry) -> Vec<u64> {
        r.get("n1")
            .unwrap()
            .services
            .iter()
            .map(|s| s.restarts)
            .collect()
    }

    #[test]
    fn deltas_build_on_the_held_heartbeat_and_a_wrong_base_asks_for_everything() {
        let mut r = Registry::new(Duration::from_secs(40));
        // A delta from a node the server never heard from (it restarted): status kept, no
        // services, and the node must send everything.
        let first = r.beat("n1", delta(7, 6, vec![svc("a", 1)], 1000));
        assert_eq!((first.replan, first.deltas), (true, false));
        assert!(r.get("n1").unwrap().services.is_empty());

        let full = Heartbeat {
            node: status(1000),
            services: Some(vec![svc("a", 0)]),
            delta: None,
            seq: 8,
        };
        let b = r.beat("n1", full);
        assert_eq!((b.replan, b.deltas), (false, true));
        assert_eq!(restarts(&r), [0]);

        let b = r.beat("n1", delta(9, 8, vec![svc("a", 2)], 1000));
        assert_eq!((b.replan, b.deltas), (false, true));
        assert_eq!(restarts(&r), [2]);

        // On a base the server does not hold: nothing applied, the next must be full.
        let b = r.beat("n1", delta(11, 10, vec![svc("a", 5)], 1000));
        assert!(!b.deltas);
        assert_eq!(restarts(&r), [2]);
        assert_eq!(r.get("n1").unwrap().seq, Some(9));

        // A changed allocatable asks placement to look again.
        assert!(r.beat("n1", delta(12, 9, Vec::new(), 2000)).replan);
    }
}
