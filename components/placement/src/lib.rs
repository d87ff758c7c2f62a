//! cloudlet-placement: decides which services run on which nodes of a cluster.
//!
//! [`place`] takes the services, the nodes and the current assignments, and returns a [`Plan`]:
//! the complete desired set of `(service, node)` assignments after this round, the services that
//! got fewer copies than they want (with a reason per node), and the copies that move.
//!
//! This crate owns that decision and nothing else. It must never:
//! - do I/O, block or spawn: it is a pure function of its inputs, so the same inputs (in any order)
//!   give the same plan, with ties broken by node name;
//! - evict: an existing assignment is never removed for lack of cpu or memory. Capacity is
//!   protected only here, when a new copy is placed: it must fit in what the node's allocatable
//!   has left after every assignment in the plan;
//! - move a service that is not marked `relocate`: its copy on a lost node stays assigned there
//!   and waits for the node, because a service that manages a host (VMs, its network) must never
//!   run twice. Only the operator moves it, with `ctl drain --force`.
//!
//! The rules, in the order a round applies them:
//! 1. Assignments of services that are not in `services` (deleted) and assignments to nodes that
//!    are not in `nodes` (removed from the cluster) are dropped. So is a copy on a node that no
//!    longer matches the service's node selector: the operator changed the node's labels.
//! 2. [`Rule::EveryNode`] keeps every other copy, even on a lost, cordoned or draining node:
//!    a drain moves replicas, not every-node services (as `kubectl drain` leaves DaemonSets).
//! 3. [`Rule::Replicas`] keeps every other copy except on a lost node when the service is
//!    `relocate`, and on a draining node when the service is `relocate` or the drain is forced;
//!    those leave and are recorded as [`Move`]s. With more copies than wanted (scaled down), it
//!    removes the extras: copies that leave anyway first, then those on lost, draining and
//!    cordoned nodes, then by node name, last first.
//! 4. Every kept copy counts against its node's allocatable, even if the node is now overcommitted.
//! 5. `EveryNode` services (by name) get a copy on every ready, uncordoned, matching node where
//!    the request fits; then `Replicas` services (by name) get the missing copies, at most one per
//!    node, on the ready, uncordoned, matching nodes where the request fits, most free memory first
//!    (then most free cpu, then name), so replicas spread.
//!
//! A request fits a node when, for cpu and memory each, it is zero or the node's used amount plus
//! the request is at most the node's allocatable.
//!
//! A service short of copies is reported as [`Unplaced`], with one [`Reason`] per node. A
//! `Replicas` service explains every node; an every-node service only the ready, uncordoned,
//! matching nodes where it does not fit, because a lost, cordoned or non-matching node is not a
//! shortfall of an every-node service (it runs wherever it can, including on nodes that join
//! later). For the same reason an every-node service is never reported when no node matches.
#![warn(missing_docs)]

mod reason;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use reason::{Mismatch, Move, MoveReason, Reason, ResourceKind, Unplaced};

/// What a node is for; a node may have both roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Runs the control services.
    Control,
    /// Runs VMs and their host services.
    Compute,
}

impl Role {
    /// The role as written in manifests: `control` or `compute`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Compute => "compute",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount of cpu and memory: a node's allocatable, or a service's request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// CPU in millicores (1000 = one core).
    pub cpu_milli: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl Resources {
    /// Nothing.
    pub const ZERO: Resources = Resources {
        cpu_milli: 0,
        memory_bytes: 0,
    };

    /// `cpu_milli` millicores and `memory_bytes` bytes.
    pub const fn new(cpu_milli: u64, memory_bytes: u64) -> Self {
        Resources {
            cpu_milli,
            memory_bytes,
        }
    }

    /// The sum, capped at `u64::MAX` per resource.
    #[must_use]
    pub const fn saturating_add(self, other: Resources) -> Self {
        Resources {
            cpu_milli: self.cpu_milli.saturating_add(other.cpu_milli),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    /// The difference, floored at zero per resource.
    #[must_use]
    pub const fn saturating_sub(self, other: Resources) -> Self {
        Resources {
            cpu_milli: self.cpu_milli.saturating_sub(other.cpu_milli),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
        }
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu {}, memory {}",
            ResourceKind::Cpu.format(self.cpu_milli),
            ResourceKind::Memory.format(self.memory_bytes)
        )
    }
}

/// Whether a node's agent is heard from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// Heartbeats arrive.
    Ready,
    /// Heartbeats stopped for longer than `nodeLostAfter`.
    Lost,
}

/// A drain started by `ctl drain`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Drain {
    /// Move every replica off the node, also those of services not marked `relocate`.
    pub force: bool,
}

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Unique in the cluster.
    pub name: String,
    /// Its roles (a node may have both).
    pub roles: BTreeSet<Role>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Whether it is heard from.
    pub health: Health,
    /// No new placements; existing ones stay.
    pub cordoned: bool,
    /// Set by `ctl drain`; implies cordoned.
    pub draining: Option<Drain>,
    /// Capacity minus the system reserve.
    pub allocatable: Resources,
}

impl Node {
    /// Whether the node takes no new placements: cordoned or draining.
    pub fn is_cordoned(&self) -> bool {
        self.cordoned || self.draining.is_some()
    }
}

/// Which nodes may run a service. A node matches when `roles` is empty or the node has any of
/// them, and the node has every label in `labels` with the same value. The default matches
/// every node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// Any of these roles (empty: any node).
    pub roles: BTreeSet<Role>,
    /// All of these labels.
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    /// Whether `node` matches.
    pub fn matches(&self, node: &Node) -> bool {
        self.mismatch(node).is_none()
    }

    /// The first way `node` fails to match (roles, then labels by key), `None` when it matches.
    pub fn mismatch(&self, node: &Node) -> Option<Mismatch> {
        if !self.roles.is_empty() && self.roles.is_disjoint(&node.roles) {
            return Some(Mismatch::Roles(self.roles.clone()));
        }
        self.labels.iter().find_map(|(key, wanted)| {
            let found = node.labels.get(key);
            (found != Some(wanted)).then(|| Mismatch::Label {
                key: key.clone(),
                wanted: wanted.clone(),
                found: found.cloned(),
            })
        })
    }
}

/// How many copies of a service run, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// One copy on every matching node, including nodes that join later.
    EveryNode,
    /// This many copies, on distinct nodes.
    Replicas(u32),
}

/// A service as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Unique in the cluster.
    pub name: String,
    /// How many copies, and where.
    pub rule: Rule,
    /// Which nodes may run it.
    pub selector: Selector,
    /// Start a replacement elsewhere when the node of a replica is lost or drained. Off for
    /// services that must never run twice.
    pub relocate: bool,
    /// What each copy reserves on its node.
    pub requests: Resources,
}

/// `(service name, node name)`: one copy of a service on a node.
pub type Assignment = (String, String);

/// The outcome of one placement round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The complete desired set of assignments after this round.
    pub assignments: BTreeSet<Assignment>,
    /// The services that got fewer copies than they want, by service name.
    pub unplaced: Vec<Unplaced>,
    /// The copies leaving a node this round, by service then node name.
    pub moves: Vec<Move>,
}

impl Plan {
    /// The assignments in the plan that are not in `current`: copies to start.
    pub fn added(&self, current: &BTreeSet<Assignment>) -> BTreeSet<Assignment> {
        self.assignments.difference(current).cloned().collect()
    }

    /// The assignments in `current` that are not in the plan: copies to stop.
    pub fn removed(&self, current: &BTreeSet<Assignment>) -> BTreeSet<Assignment> {
        current.difference(&self.assignments).cloned().collect()
    }
}

/// Inputs that cannot be planned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Two nodes have the same name.
    #[error("two nodes are named {name:?}")]
    DuplicateNode {
        /// The shared name.
        name: String,
    },
    /// Two services have the same name.
    #[error("two services are named {name:?}")]
    DuplicateService {
        /// The shared name.
        name: String,
    },
}

/// Plans one round: which services run on which nodes, given what is assigned now.
///
/// The order of `services` and `nodes` does not matter. Assignments in `current` of services
/// not in `services`, or to nodes not in `nodes`, are dropped. See the crate docs for the rules.
///
/// # Errors
/// Two nodes or two services with the same name.
pub fn place(
    services: &[Service],
    nodes: &[Node],
    current: &BTreeSet<Assignment>,
) -> Result<Plan, PlacementError> {
    let nodes =
        by_name(nodes, |n| &n.name).map_err(|name| PlacementError::DuplicateNode { name })?;
    let services =
        by_name(services, |s| &s.name).map_err(|name| PlacementError::DuplicateService { name })?;
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut existing: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (service, node) in current {
        existing.entry(service).or_default().push(node);
    }

    // Which existing copies stay is decided before any capacity is counted: keeping a copy
    // never depends on resources (no eviction).
    let mut hosts = Vec::with_capacity(services.len());
    let mut leaving = Vec::with_capacity(services.len());
    for service in &services {
        let names = existing
            .get(service.name.as_str())
            .map_or(&[][..], Vec::as_slice);
        let (kept, left) = keep(service, names, &nodes, &index);
        hosts.push(kept);
        leaving.push(left);
    }

    let mut round = Round {
        nodes: &nodes,
        used: vec![Resources::ZERO; nodes.len()],
    };
    for (service, kept) in services.iter().zip(&hosts) {
        for &i in kept {
            round.take(i, service.requests);
        }
    }

    let mut plan = Plan::default();
    for (i, service) in services.iter().enumerate() {
        if service.rule == Rule::EveryNode {
            plan.unplaced
                .extend(round.fill_every_node(service, &mut hosts[i]));
        }
    }
    for (i, service) in services.iter().enumerate() {
        if let Rule::Replicas(wanted) = service.rule {
            let added = round.fill_replicas(service, wanted, &mut hosts[i]);
            let mut targets = added.iter().map(|&n| nodes[n].name.clone());
            for (from, why) in std::mem::take(&mut leaving[i]) {
                plan.moves.push(Move {
                    service: service.name.clone(),
                    from: from.to_owned(),
                    to: targets.next(),
                    why,
                });
            }
            plan.unplaced
                .extend(round.explain_replicas(service, wanted, &hosts[i]));
        }
    }
    plan.unplaced.sort_by(|a, b| a.service.cmp(&b.service));
    plan.moves.sort();
    plan.assignments = services
        .iter()
        .zip(&hosts)
        .flat_map(|(service, kept)| {
            kept.iter()
                .map(|&n| (service.name.clone(), nodes[n].name.clone()))
        })
        .collect();
    Ok(plan)
}

/// `items` sorted by name, or the first name that appears twice.
fn by_name<T>(items: &[T], name: fn(&T) -> &String) -> Result<Vec<&T>, String> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by(|a, b| name(a).cmp(name(b)));
    match sorted.windows(2).find(|w| name(w[0]) == name(w[1])) {
        Some(pair) => Err(name(pair[0]).clone()),
        None => Ok(sorted),
    }
}

/// A copy of a service that exists now, as [`keep`] weighs it.
struct Existing<'a> {
    node: &'a str,
    /// `None` when the node was removed from the cluster.
    index: Option<usize>,
    /// Why the copy must leave its node, if it must.
    leave: Option<MoveReason>,
}

/// Splits a service's existing copies (`names`, sorted) into the node indices that keep them and
/// the copies that leave with a [`Move`] (sorted by node name). Dropped copies of an every-node
/// service, and copies removed by a scale-down, are in neither.
fn keep<'a>(
    service: &Service,
    names: &[&'a str],
    nodes: &[&Node],
    index: &BTreeMap<&str, usize>,
) -> (BTreeSet<usize>, Vec<(&'a str, MoveReason)>) {
    let mut copies: Vec<Existing<'a>> = names
        .iter()
        .map(|&name| {
            let Some(&i) = index.get(name) else {
                return Existing {
                    node: name,
                    index: None,
                    leave: Some(MoveReason::NodeRemoved),
                };
            };
            let node = nodes[i];
            let leave = if !service.selector.matches(node) {
                Some(MoveReason::NoLongerMatches)
            } else if service.rule == Rule::EveryNode {
                None
            } else if node.health == Health::Lost && service.relocate {
                Some(MoveReason::NodeLost)
            } else if node
                .draining
                .is_some_and(|drain| service.relocate || drain.force)
            {
                Some(MoveReason::Drained)
            } else {
                None
            };
            Existing {
                node: name,
                index: Some(i),
                leave,
            }
        })
        .collect();

    let Rule::Replicas(wanted) = service.rule else {
        // An every-node service never moves: a copy that must leave is simply dropped.
        let kept = copies
            .iter()
            .filter(|c| c.leave.is_none())
            .filter_map(|c| c.index)
            .collect();
        return (kept, Vec::new());
    };

    let wanted = usize::try_from(wanted).unwrap_or(usize::MAX);
    if copies.len() > wanted {
        // Scaled down: remove copies that leave anyway, then those on lost, draining and
        // cordoned nodes, then by name, last first.
        let rank = |c: &Existing<'_>| match c.index.map(|i| nodes[i]) {
            _ if c.leave.is_some() => 0,
            Some(n) if n.health == Health::Lost => 1,
            Some(n) if n.draining.is_some() => 2,
            Some(n) if n.cordoned => 3,
            _ => 4,
        };
        copies.sort_by_key(|c| (rank(c), Reverse(c.node)));
        copies.drain(..copies.len() - wanted);
    }

    let mut kept = BTreeSet::new();
    let mut leaving = Vec::new();
    for copy in copies {
        match (copy.leave, copy.index) {
            (Some(why), _) => leaving.push((copy.node, why)),
            (None, Some(i)) => {
                kept.insert(i);
            }
            (None, None) => {}
        }
    }
    leaving.sort();
    (kept, leaving)
}

/// The nodes of a round and what their assignments use so far.
struct Round<'a> {
    nodes: &'a [&'a Node],
    used: Vec<Resources>,
}

impl Round<'_> {
    /// Counts `requests` against node `i`.
    fn take(&mut self, i: usize, requests: Resources) {
        self.used[i] = self.used[i].saturating_add(requests);
    }

    /// What node `i` has left.
    fn free(&self, i: usize) -> Resources {
        self.nodes[i].allocatable.saturating_sub(self.used[i])
    }

    /// Why node `i` cannot take a new copy of `service` now, `None` when it can. Does not look
    /// at whether the node already runs a copy.
    fn refusal(&self, service: &Service, i: usize) -> Option<Reason> {
        let node = self.nodes[i];
        if let Some(mismatch) = service.selector.mismatch(node) {
            return Some(Reason::SelectorMismatch(mismatch));
        }
        if node.health == Health::Lost {
            return Some(Reason::Lost);
        }
        if node.draining.is_some() {
            return Some(Reason::Draining);
        }
        if node.cordoned {
            return Some(Reason::Cordoned);
        }
        let (used, alloc, req) = (self.used[i], node.allocatable, service.requests);
        let checks = [
            (
                ResourceKind::Memory,
                used.memory_bytes,
                alloc.memory_bytes,
                req.memory_bytes,
            ),
            (
                ResourceKind::Cpu,
                used.cpu_milli,
                alloc.cpu_milli,
                req.cpu_milli,
            ),
        ];
        checks.into_iter().find_map(|(resource, used, alloc, req)| {
            let fits = req == 0 || used.checked_add(req).is_some_and(|sum| sum <= alloc);
            (!fits).then(|| Reason::DoesNotFit {
                resource,
                requested: req,
                free: alloc.saturating_sub(used),
                allocatable: alloc,
            })
        })
    }

    /// Adds a copy of an every-node service to every open, matching node where it fits; reports
    /// the open, matching nodes where it does not fit.
    fn fill_every_node(
        &mut self,
        service: &Service,
        hosts: &mut BTreeSet<usize>,
    ) -> Option<Unplaced> {
        let mut reasons = Vec::new();
        for i in 0..self.nodes.len() {
            if hosts.contains(&i) {
                continue;
            }
            match self.refusal(service, i) {
                None => {
                    self.take(i, service.requests);
                    hosts.insert(i);
                }
                Some(reason @ Reason::DoesNotFit { .. }) => {
                    reasons.push((self.nodes[i].name.clone(), reason));
                }
                Some(_) => {}
            }
        }
        if reasons.is_empty() {
            return None;
        }
        let placed = count(hosts.len());
        Some(Unplaced {
            service: service.name.clone(),
            rule: service.rule,
            wanted: placed.saturating_add(count(reasons.len())),
            placed,
            reasons,
        })
    }

    /// Adds the missing copies of a replicated service, one per node, most free memory first,
    /// then most free cpu, then by name; returns the chosen nodes in that order.
    fn fill_replicas(
        &mut self,
        service: &Service,
        wanted: u32,
        hosts: &mut BTreeSet<usize>,
    ) -> Vec<usize> {
        let missing = usize::try_from(wanted)
            .unwrap_or(usize::MAX)
            .saturating_sub(hosts.len());
        if missing == 0 {
            return Vec::new();
        }
        // Taking a copy changes only the chosen node, which gets no second copy, so one sort
        // ranks the candidates for every copy of this service.
        let mut candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|i| !hosts.contains(i) && self.refusal(service, *i).is_none())
            .collect();
        candidates.sort_by_key(|&i| {
            let free = self.free(i);
            (
                Reverse(free.memory_bytes),
                Reverse(free.cpu_milli),
                &self.nodes[i].name,
            )
        });
        candidates.truncate(missing);
        for &i in &candidates {
            self.take(i, service.requests);
            hosts.insert(i);
        }
        candidates
    }

    /// Explains, node by node, why a replicated service has fewer copies than it wants.
    fn explain_replicas(
        &self,
        service: &Service,
        wanted: u32,
        hosts: &BTreeSet<usize>,
    ) -> Option<Unplaced> {
        let placed = count(hosts.len());
        if placed >= wanted {
            return None;
        }
        let reasons = (0..self.nodes.len())
            .filter_map(|i| {
                let reason = if hosts.contains(&i) {
                    Some(Reason::AlreadyHosts)
                } else {
                    self.refusal(service, i)
                };
                reason.map(|r| (self.nodes[i].name.clone(), r))
            })
            .collect();
        Some(Unplaced {
            service: service.name.clone(),
            rule: service.rule,
            wanted,
            placed,
            reasons,
        })
    }
}

/// A number of copies as a `u32`, saturating (a cluster has far fewer nodes).
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
