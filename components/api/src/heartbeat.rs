//! Heartbeats as deltas: what a node sends ([`Sender`]) and how the server applies a delta to the
//! services it holds ([`apply`]).
//!
//! A node numbers its heartbeats. The first, and any after a failure or an answer without
//! `deltas`, carries every service; after an answer with `deltas` the next carries only the
//! services that differ from the ones that acknowledged heartbeat carried, and the names of those
//! gone. The server applies a delta only on top of exactly that heartbeat (its `base`); anything
//! else (it restarted, an answer was lost) is answered without `deltas`, and the node sends
//! everything again. So a lost or reordered message costs one full heartbeat, never a wrong view.
//!
//! Pure encoding of the protocol: no I/O, no policy.

use std::collections::BTreeMap;

use crate::dto::{Heartbeat, HeartbeatResponse, NodeStatus, ServiceStatus, ServicesDelta};

/// A node's side: remembers what the server acknowledged.
#[derive(Debug, Default)]
pub struct Sender {
    seq: u64,
    /// The last heartbeat sent: its number and services.
    sent: Option<(u64, BTreeMap<String, ServiceStatus>)>,
    /// The last one the server acknowledged with `deltas`.
    acked: Option<(u64, BTreeMap<String, ServiceStatus>)>,
}

impl Sender {
    /// A sender whose first heartbeat is full.
    pub fn new() -> Sender {
        Sender::default()
    }

    /// The next heartbeat: a delta on the acknowledged one, or full.
    pub fn next(&mut self, node: NodeStatus, services: Vec<ServiceStatus>) -> Heartbeat {
        self.seq = self.seq.saturating_add(1);
        let now: BTreeMap<String, ServiceStatus> =
            services.into_iter().map(|s| (s.name.clone(), s)).collect();
        let heartbeat = match &self.acked {
            Some((base, acked)) => Heartbeat {
                node,
                services: None,
                delta: Some(ServicesDelta {
                    base: *base,
                    changed: now
                        .values()
                        .filter(|s| acked.get(&s.name) != Some(*s))
                        .cloned()
                        .collect(),
                    removed: acked
                        .keys()
                        .filter(|name| !now.contains_key(*name))
                        .cloned()
                        .collect(),
                }),
                seq: self.seq,
            },
            None => Heartbeat {
                node,
                services: Some(now.values().cloned().collect()),
                delta: None,
                seq: self.seq,
            },
        };
        self.sent = Some((self.seq, now));
        heartbeat
    }

    /// The server answered the last heartbeat.
    pub fn answered(&mut self, response: &HeartbeatResponse) {
        self.acked = match response.deltas {
            true => self.sent.take(),
            false => None,
        };
    }

    /// The last heartbeat got no answer: the server may or may not hold it, so the next is full.
    pub fn failed(&mut self) {
        self.sent = None;
        self.acked = None;
    }
}

/// The most services a delta may leave the server holding for one node (a full heartbeat is
/// bounded by the request body limit; deltas must not grow past what one could carry).
pub const MAX_SERVICES: usize = 10_000;

/// What the server did with a heartbeat's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// `held` now matches the node's as of this heartbeat.
    Current,
    /// A delta on another base (or none at all): `held` is unchanged and the node must send
    /// everything.
    NeedFull,
}

/// Applies a heartbeat's services to `held`, the services the server holds of the node as of
/// heartbeat `held_seq` (`None`: as of no heartbeat it can build on).
pub fn apply(
    held: &mut Vec<ServiceStatus>,
    held_seq: Option<u64>,
    services: Option<Vec<ServiceStatus>>,
    delta: Option<ServicesDelta>,
) -> Applied {
    match (services, delta) {
        (Some(all), _) => {
            *held = all;
            Applied::Current
        }
        (None, Some(delta))
            if held_seq == Some(delta.base)
                && held.len().saturating_add(delta.changed.len()) <= MAX_SERVICES =>
        {
            let removed: std::collections::HashSet<&str> =
                delta.removed.iter().map(String::as_str).collect();
            held.retain(|s| !removed.contains(s.name.as_str()));
            for s in delta.changed {
                match held.iter_mut().find(|h| h.name == s.name) {
                    Some(h) => *h = s,
                    None => held.push(s),
                }
            }
            Applied::Current
        }
        _ => Applied::NeedFull,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dto::{DesiredState, ServiceState};

    fn node() -> NodeStatus {
        let r = serde_json::json!({"cpuMillis": 0, "memoryBytes": 0, "pids": 0});
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
            "name": name, "node": "n1", "state": ServiceState::Running, "ready": true,
            "restarts": restarts, "run": 1, "since": "2026-12-07T00:00:00Z", "waitingFor": [],
            "labels": {}, "desired": DesiredState::Running, "droppedLogLines": 0
        }))
        .unwrap()
    }

    /// The server's side, as the cluster's registry keeps it.
    #[derive(Default)]
    struct Server {
        held: Vec<ServiceStatus>,
        seq: Option<u64>,
    }

    impl Server {
        fn receive(&mut self, hb: Heartbeat) -> HeartbeatResponse {
            let applied = apply(&mut self.held, self.seq, hb.services, hb.delta);
            if applied == Applied::Current {
                self.seq = Some(hb.seq);
            }
            HeartbeatResponse {
                assignments_revision: 0,
                ca_hash: String::new(),
                deltas: applied == Applied::Current,
            }
        }

        fn names(&self) -> Vec<(String, u64)> {
            let mut v: Vec<_> = self
                .held
                .iter()
                .map(|s| (s.name.clone(), s.restarts))
                .collect();
            v.sort();
            v
        }
    }

    #[test]
    fn full_first_then_only_what_changed() {
        let (mut tx, mut rx) = (Sender::new(), Server::default());
        let first = tx.next(node(), vec![svc("a", 0), svc("b", 0)]);
        assert!(first.delta.is_none());
        assert_eq!(first.services.as_ref().map(Vec::len), Some(2));
        tx.answered(&rx.receive(first));

        let steady = tx.next(node(), vec![svc("a", 0), svc("b", 0)]);
        let delta = steady.delta.clone().unwrap();
        assert!(steady.services.is_none());
        assert!(delta.changed.is_empty() && delta.removed.is_empty());
        assert!(
            serde_json::to_string(&steady).unwrap().len() < 600,
            "{steady:?}"
        );
        tx.answered(&rx.receive(steady));

        let moved = tx.next(node(), vec![svc("a", 1), svc("c", 0)]);
        let delta = moved.delta.clone().unwrap();
        assert_eq!(
            delta
                .changed
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert_eq!(delta.removed, ["b"]);
        tx.answered(&rx.receive(moved));
        assert_eq!(rx.names(), [("a".to_owned(), 1), ("c".to_owned(), 0)]);
    }

    #[test]
    fn a_lost_answer_or_a_restarted_server_costs_one_full_heartbeat() {
        let (mut tx, mut rx) = (Sender::new(), Server::default());
        let first = tx_next(&mut tx, &[("a", 0)]);
        tx.answered(&rx.receive(first));

        // The server applies a beat whose answer is lost: the node cannot know.
        let _lost = rx.receive(tx_next(&mut tx, &[("a", 1)]));
        tx.failed();
        let next = tx_next(&mut tx, &[("a", 1)]);
        assert!(next.services.is_some(), "after a failure the next is full");
        tx.answered(&rx.receive(next));

        // The server restarts: a delta on a base it does not hold is refused, nothing changes,
        // and the node sends everything next.
        let mut restarted = Server::default();
        let delta = tx_next(&mut tx, &[("a", 2)]);
        assert!(delta.delta.is_some());
        let answer = restarted.receive(delta);
        assert!(!answer.deltas);
        assert!(restarted.held.is_empty());
        tx.answered(&answer);
        let full = tx_next(&mut tx, &[("a", 2)]);
        assert!(full.services.is_some());
        assert!(restarted.receive(full).deltas);
        assert_eq!(restarted.names(), [("a".to_owned(), 2)]);
    }

    #[test]
    fn a_delta_on_an_older_base_is_refused() {
        let mut held = vec![svc("a", 3)];
        let delta = ServicesDelta {
            base: 4,
            changed: vec![svc("a", 9)],
            removed: Vec::new(),
        };
        assert_eq!(
            apply(&mut held, Some(5), None, Some(delta)),
            Applied::NeedFull
        );
        assert_eq!(held[0].restarts, 3);
        assert_eq!(
            apply(&mut held, Some(5), None, None),
            Applied::NeedFull,
            "neither part"
        );
    }

    #[test]
    fn deltas_cannot_grow_a_node_past_the_bound() {
        let mut held: Vec<ServiceStatus> = (0..MAX_SERVICES)
            .map(|i| svc(&format!("s{i}"), 0))
            .collect();
        let delta = ServicesDelta {
            base: 1,
            changed: vec![svc("one-more", 0)],
            removed: Vec::new(),
        };
        assert_eq!(
            apply(&mut held, Some(1), None, Some(delta)),
            Applied::NeedFull
        );
        assert_eq!(held.len(), MAX_SERVICES);
    }

    #[test]
    fn an_older_agents_heartbeat_still_parses() {
        let old = serde_json::json!({ "node": node(), "services": [svc("a", 0)] });
        let hb: Heartbeat = serde_json::from_value(old).unwrap();
        assert_eq!((hb.seq, hb.services.map(|s| s.len())), (0, Some(1)));
        let old_answer: HeartbeatResponse =
            serde_json::from_str(r#"{"assignmentsRevision": 3, "caHash": "x"}"#).unwrap();
        assert!(!old_answer.deltas, "an older server: always full");
    }

    fn tx_next(tx: &mut Sender, services: &[(&str, u64)]) -> Heartbeat {
        tx.next(node(), services.iter().map(|(n, r)| svc(n, *r)).collect())
    }
}
