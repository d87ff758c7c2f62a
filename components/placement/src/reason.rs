//! Why placement did what it did: the per-node [`Reason`] a service was not placed somewhere,
//! the [`Unplaced`] summary of a service short of copies, the [`Move`] of a copy off a lost,
//! drained, removed or relabelled node, and their human-readable text (memory in binary units,
//! cpu in millicores or cores).
//!
//! This module only describes decisions; it never makes them, and it never does I/O.

use std::collections::BTreeSet;
use std::fmt;

use crate::{Role, Rule};

/// A resource that placement accounts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    /// CPU, in millicores.
    Cpu,
    /// Memory, in bytes.
    Memory,
}

impl ResourceKind {
    /// The name used in messages: `cpu` or `memory`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Cpu => "cpu",
            ResourceKind::Memory => "memory",
        }
    }

    /// An amount of this resource for people: `500m` or `2` for cpu, `1.5 GiB` for memory.
    pub fn format(self, amount: u64) -> String {
        match self {
            ResourceKind::Cpu => format_cpu(amount),
            ResourceKind::Memory => format_memory(amount),
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a node fails a service's node selector (the first failing condition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The node has none of these roles.
    Roles(BTreeSet<Role>),
    /// The node lacks the label `key=wanted`; `found` is its value for `key`, if any.
    Label {
        /// The label key.
        key: String,
        /// The value the selector asks for.
        wanted: String,
        /// The node's value for `key`, `None` when the node has no such label.
        found: Option<String>,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Roles(roles) => {
                f.write_str("roles ")?;
                for (i, role) in roles.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    f.write_str(role.as_str())?;
                }
                Ok(())
            }
            Mismatch::Label { key, wanted, found } => {
                write!(f, "label {key}={wanted}, ")?;
                match found {
                    Some(value) => write!(f, "node has {key}={value}"),
                    None => write!(f, "node has no label {key}"),
                }
            }
        }
    }
}

/// Why a node did not get a copy of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The node already runs a copy (copies of a service go on distinct nodes).
    AlreadyHosts,
    /// The node does not match the service's node selector.
    SelectorMismatch(Mismatch),
    /// The node's heartbeats stopped.
    Lost,
    /// The node is being drained.
    Draining,
    /// The node is cordoned: no new placements.
    Cordoned,
    /// The service's request does not fit in what is left of the node's allocatable.
    DoesNotFit {
        /// The resource that does not fit (memory is checked first).
        resource: ResourceKind,
        /// The service's request.
        requested: u64,
        /// Allocatable minus what the node's assignments already request.
        free: u64,
        /// The node's allocatable.
        allocatable: u64,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::AlreadyHosts => f.write_str("already runs a copy"),
            Reason::SelectorMismatch(m) => write!(f, "does not match nodeSelector ({m})"),
            Reason::Lost => f.write_str("lost"),
            Reason::Draining => f.write_str("draining"),
            Reason::Cordoned => f.write_str("cordoned"),
            Reason::DoesNotFit {
                resource,
                requested,
                free,
                allocatable,
            } => {
                let (mut req, mut fr) = (resource.format(*requested), resource.format(*free));
                // Rounding can show a request and a slightly smaller free amount as the same
                // "2.0 GiB"; then only exact numbers explain the refusal.
                if req == fr {
                    req = format!("{requested} bytes");
                    fr = format!("{free} bytes");
                }
                let alloc = resource.format(*allocatable);
                write!(
                    f,
                    "{resource} request {req} does not fit ({fr} free of {alloc} allocatable)"
                )
            }
        }
    }
}

/// A service that got fewer copies than it wants, and why each node was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplaced {
    /// The service's name.
    pub service: String,
    /// The service's rule (decides how the shortfall is worded).
    pub rule: Rule,
    /// Copies wanted: `n` for `Replicas(n)`; for `EveryNode`, the nodes it is on plus the ready,
    /// uncordoned, matching nodes where it does not fit.
    pub wanted: u32,
    /// Copies in the plan (including copies kept on lost nodes).
    pub placed: u32,
    /// For each node (by node name), why it has no additional copy: the first of
    /// [`Reason::AlreadyHosts`], [`Reason::SelectorMismatch`], [`Reason::Lost`],
    /// [`Reason::Draining`], [`Reason::Cordoned`] and [`Reason::DoesNotFit`] that applies. For
    /// `Replicas`, every node of the cluster is explained; for `EveryNode`, only the nodes where
    /// the request does not fit. Empty when the cluster has no nodes.
    pub reasons: Vec<(String, Reason)>,
}

impl fmt::Display for Unplaced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (service, placed, wanted) = (&self.service, self.placed, self.wanted);
        match self.rule {
            Rule::Replicas(_) => {
                let noun = if wanted == 1 { "replica" } else { "replicas" };
                write!(f, "{service}: {placed} of {wanted} {noun} placed:")?;
            }
            Rule::EveryNode => write!(f, "{service}: on {placed} of {wanted} nodes:")?,
        }
        if self.reasons.is_empty() {
            return f.write_str(" no nodes");
        }
        for (i, (node, reason)) in self.reasons.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(f, "{sep}node {node}: {reason}")?;
        }
        Ok(())
    }
}

/// Why a copy of a `Replicas` service left its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MoveReason {
    /// The node is lost and the service is marked `relocate`.
    NodeLost,
    /// The node is draining, and the service is marked `relocate` or the drain is forced.
    Drained,
    /// The node is no longer part of the cluster.
    NodeRemoved,
    /// The node's roles or labels no longer match the service's node selector.
    NoLongerMatches,
}

impl fmt::Display for MoveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MoveReason::NodeLost => "node lost",
            MoveReason::Drained => "node drained",
            MoveReason::NodeRemoved => "node removed",
            MoveReason::NoLongerMatches => "node no longer matches nodeSelector",
        })
    }
}

/// A copy of a service leaving a node this round, for events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Move {
    /// The service's name.
    pub service: String,
    /// The node the copy leaves.
    pub from: String,
    /// The node that gets the replacement, `None` when no node could take it (the service is
    /// then in [`Plan::unplaced`](crate::Plan::unplaced) too).
    pub to: Option<String>,
    /// Why the copy leaves.
    pub why: MoveReason,
}

impl fmt::Display for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Move {
            service,
            from,
            to,
            why,
        } = self;
        match to {
            Some(to) => write!(f, "{service}: moves from node {from} to node {to} ({why})"),
            None => write!(
                f,
                "{service}: leaves node {from} ({why}), no node can take it"
            ),
        }
    }
}

/// Millicores as `500m`, or whole cores as `2`.
fn format_cpu(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        format!("{}", milli / 1000)
    } else {
        format!("{milli}m")
    }
}

/// Bytes in binary units: one decimal below 10 (`1.5 GiB`, `2.0 GiB`), whole numbers from 10
/// (`512 MiB`), plain bytes below 1 KiB (`512 B`).
fn format_memory(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 1u128;
    let mut name = "B";
    for next in UNITS {
        if u128::from(bytes) < unit * 1024 {
            break;
        }
        unit *= 1024;
        name = next;
    }
    if unit == 1 {
        return format!("{bytes} B");
    }
    let bytes = u128::from(bytes);
    let tenths = (bytes * 10 + unit / 2) / unit;
    if tenths < 100 {
        format!("{}.{} {name}", tenths / 10, tenths % 10)
    } else {
        format!("{} {name}", (bytes + unit / 2) / unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn memory_is_formatted_in_binary_units() {
        let cases = [
            (0, "0 B"),
            (512, "512 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (512 * MIB, "512 MiB"),
            (GIB + GIB / 2, "1.5 GiB"),
            (2 * GIB, "2.0 GiB"),
            (10 * GIB - MIB, "10 GiB"),
            (15 * GIB, "15 GiB"),
            (u64::MAX, "16 EiB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(format_memory(bytes), want, "{bytes} bytes");
        }
    }

    #[test]
    fn cpu_is_formatted_in_millicores_or_cores() {
        assert_eq!(format_cpu(0), "0");
        assert_eq!(format_cpu(500), "500m");
        assert_eq!(format_cpu(1500), "1500m");
        assert_eq!(format_cpu(2000), "2");
    }

    #[test]
    fn does_not_fit_names_the_numbers() {
        let memory = Reason::DoesNotFit {
            resource: ResourceKind::Memory,
            requested: 2 * GIB,
            free: GIB + GIB / 2,
            allocatable: 4 * GIB,
        };
        assert_eq!(
            memory.to_string(),
            "memory request 2.0 GiB does not fit (1.5 GiB free of 4.0 GiB allocatable)"
        );
        let cpu = Reason::DoesNotFit {
            resource: ResourceKind::Cpu,
            requested: 500,
            free: 250,
            allocatable: 2000,
        };
        assert_eq!(
            cpu.to_string(),
            "cpu request 500m does not fit (250m free of 2 allocatable)"
        );
    }

    #[test]
    fn does_not_fit_falls_back_to_bytes_when_rounding_hides_the_difference() {
        let reason = Reason::DoesNotFit {
            resource: ResourceKind::Memory,
            requested: 2 * GIB,
            free: 2 * GIB - 1,
            allocatable: 4 * GIB,
        };
        assert_eq!(
            reason.to_string(),
            "memory request 2147483648 bytes does not fit \
             (2147483647 bytes free of 4.0 GiB allocatable)"
        );
    }

    #[test]
    fn mismatch_says_what_the_selector_wanted() {
        let roles = Mismatch::Roles([Role::Control, Role::Compute].into());
        assert_eq!(
            Reason::SelectorMismatch(roles).to_string(),
            "does not match nodeSelector (roles control or compute)"
        );
        let other = Mismatch::Label {
            key: "disk".into(),
            wanted: "ssd".into(),
            found: Some("hdd".into()),
        };
        assert_eq!(other.to_string(), "label disk=ssd, node has disk=hdd");
        let absent = Mismatch::Label {
            key: "disk".into(),
            wanted: "ssd".into(),
            found: None,
        };
        assert_eq!(absent.to_string(), "label disk=ssd, node has no label disk");
    }

    #[test]
    fn unplaced_reads_as_one_line() {
        let unplaced = Unplaced {
            service: "web".into(),
            rule: Rule::Replicas(3),
            wanted: 3,
            placed: 2,
            reasons: vec![
                ("c".into(), Reason::Cordoned),
                (
                    "d".into(),
                    Reason::SelectorMismatch(Mismatch::Roles([Role::Control].into())),
                ),
            ],
        };
        assert_eq!(
            unplaced.to_string(),
            "web: 2 of 3 replicas placed: node c: cordoned; \
             node d: does not match nodeSelector (roles control)"
        );
        let nowhere = Unplaced {
            service: "db".into(),
            rule: Rule::Replicas(1),
            wanted: 1,
            placed: 0,
            reasons: Vec::new(),
        };
        assert_eq!(nowhere.to_string(), "db: 0 of 1 replica placed: no nodes");
        let every = Unplaced {
            service: "agent".into(),
            rule: Rule::EveryNode,
            wanted: 2,
            placed: 1,
            reasons: vec![("b".into(), Reason::Lost)],
        };
        assert_eq!(every.to_string(), "agent: on 1 of 2 nodes: node b: lost");
    }

    #[test]
    fn moves_read_as_one_line() {
        let mut m = Move {
            service: "web".into(),
            from: "a".into(),
            to: Some("c".into()),
            why: MoveReason::NodeLost,
        };
        assert_eq!(
            m.to_string(),
            "web: moves from node a to node c (node lost)"
        );
        m.to = None;
        m.why = MoveReason::Drained;
        assert_eq!(
            m.to_string(),
            "web: leaves node a (node drained), no node can take it"
        );
    }
}
