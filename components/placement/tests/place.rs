//! The placement rules through the public API: each test builds a small cluster, plans one
//! round with `place`, and checks the assignments, the moves and the unplaced report.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};

use cloudlet_placement::{
    Assignment, Drain, Health, Move, MoveReason, Node, PlacementError, Plan, Reason, ResourceKind,
    Resources, Role, Rule, Selector, Service, Unplaced, place,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A ready compute node with 4 cores and 8 GiB allocatable.
fn node(name: &str) -> Node {
    Node {
        name: name.into(),
        roles: [Role::Compute].into(),
        labels: BTreeMap::new(),
        health: Health::Ready,
        cordoned: false,
        draining: None,
        allocatable: Resources::new(4000, 8 * GIB),
    }
}

trait NodeExt {
    fn lost(self) -> Self;
    fn cordoned(self) -> Self;
    fn draining(self, force: bool) -> Self;
    fn roles(self, roles: &[Role]) -> Self;
    fn label(self, key: &str, value: &str) -> Self;
    fn alloc(self, cpu_milli: u64, memory_bytes: u64) -> Self;
}

impl NodeExt for Node {
    fn lost(mut self) -> Self {
        self.health = Health::Lost;
        self
    }
    fn cordoned(mut self) -> Self {
        self.cordoned = true;
        self
    }
    fn draining(mut self, force: bool) -> Self {
        self.draining = Some(Drain { force });
        self
    }
    fn roles(mut self, roles: &[Role]) -> Self {
        self.roles = roles.iter().copied().collect();
        self
    }
    fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
    fn alloc(mut self, cpu_milli: u64, memory_bytes: u64) -> Self {
        self.allocatable = Resources::new(cpu_milli, memory_bytes);
        self
    }
}

/// A service that asks for 100m and 256 MiB on any node, not relocatable.
fn service(name: &str, rule: Rule) -> Service {
    Service {
        name: name.into(),
        rule,
        selector: Selector::default(),
        relocate: false,
        requests: Resources::new(100, 256 * MIB),
    }
}

fn replicas(name: &str, n: u32) -> Service {
    service(name, Rule::Replicas(n))
}

fn every(name: &str) -> Service {
    service(name, Rule::EveryNode)
}

trait ServiceExt {
    fn relocate(self) -> Self;
    fn on(self, roles: &[Role]) -> Self;
    fn label(self, key: &str, value: &str) -> Self;
    fn req(self, cpu_milli: u64, memory_bytes: u64) -> Self;
}

impl ServiceExt for Service {
    fn relocate(mut self) -> Self {
        self.relocate = true;
        self
    }
    fn on(mut self, roles: &[Role]) -> Self {
        self.selector.roles = roles.iter().copied().collect();
        self
    }
    fn label(mut self, key: &str, value: &str) -> Self {
        self.selector.labels.insert(key.into(), value.into());
        self
    }
    fn req(mut self, cpu_milli: u64, memory_bytes: u64) -> Self {
        self.requests = Resources::new(cpu_milli, memory_bytes);
        self
    }
}

/// Assignments from `"service@node"` strings.
fn current(pairs: &[&str]) -> BTreeSet<Assignment> {
    pairs
        .iter()
        .map(|p| {
            let (s, n) = p.split_once('@').unwrap();
            (s.to_owned(), n.to_owned())
        })
        .collect()
}

fn plan(services: &[Service], nodes: &[Node], now: &[&str]) -> Plan {
    place(services, nodes, &current(now)).unwrap()
}

/// The plan's assignments as sorted `"service@node"` strings.
fn assigned(plan: &Plan) -> Vec<String> {
    plan.assignments
        .iter()
        .map(|(s, n)| format!("{s}@{n}"))
        .collect()
}

fn unplaced(plan: &Plan) -> Vec<String> {
    plan.unplaced.iter().map(Unplaced::to_string).collect()
}

fn moves(plan: &Plan) -> Vec<String> {
    plan.moves.iter().map(Move::to_string).collect()
}

// Rule 1: deterministic.

#[test]
fn same_inputs_in_any_order_give_the_same_plan() {
    let nodes = vec![
        node("n1"),
        node("n2"),
        node("n3").alloc(2000, 2 * GIB),
        node("n4").lost(),
        node("n5").cordoned(),
        node("n6").roles(&[Role::Control]),
        node("n7"),
        node("n8").alloc(1000, GIB),
    ];
    let services = vec![
        replicas("api", 3).req(500, GIB),
        replicas("db", 2).req(1000, 3 * GIB).relocate(),
        every("agent").req(100, 512 * MIB),
        every("ctl").on(&[Role::Control]),
        replicas("web", 4).req(200, 2 * GIB),
        replicas("big", 2).req(100, 7 * GIB),
    ];
    let now = current(&["db@n4", "api@n1", "gone@n2", "web@n5"]);
    let want = place(&services, &nodes, &now).unwrap();
    assert!(!want.unplaced.is_empty() && !want.moves.is_empty());
    for shift in 0..nodes.len() {
        let mut n = nodes.clone();
        n.rotate_left(shift);
        let mut s = services.clone();
        s.rotate_left(shift % services.len());
        assert_eq!(place(&s, &n, &now).unwrap(), want, "nodes rotated {shift}");
        n.reverse();
        s.reverse();
        assert_eq!(place(&s, &n, &now).unwrap(), want, "reversed, {shift}");
    }
}

#[test]
fn ties_go_to_the_first_node_by_name() {
    let nodes = [node("c"), node("a"), node("b")];
    let p = plan(&[replicas("one", 1), replicas("two", 2)], &nodes, &[]);
    // After `one` takes a, b and c have more memory left than a.
    assert_eq!(assigned(&p), ["one@a", "two@b", "two@c"]);
}

// Rule 2: no eviction; new placements must fit.

#[test]
fn existing_assignments_stay_on_an_overcommitted_node() {
    let nodes = [node("a").alloc(1000, GIB)];
    let services = [
        replicas("big", 1).req(4000, 4 * GIB),
        every("agent").req(0, 0),
        replicas("small", 1).req(0, 512 * MIB),
    ];
    let p = plan(&services, &nodes, &["big@a"]);
    assert_eq!(assigned(&p), ["agent@a", "big@a"]);
    assert_eq!(
        unplaced(&p),
        [
            "small: 0 of 1 replica placed: node a: memory request 512 MiB does not fit \
          (0 B free of 1.0 GiB allocatable)"
        ]
    );
}

#[test]
fn assignments_of_deleted_services_and_removed_nodes_are_dropped() {
    let nodes = [node("a").alloc(1000, 4 * GIB)];
    let services = [replicas("new", 1).req(0, 4 * GIB), every("agent").req(0, 0)];
    let now = current(&["old@a", "agent@gone"]);
    let p = place(&services, &nodes, &now).unwrap();
    // old's 4 GiB no longer count on a: the service was deleted.
    assert_eq!(assigned(&p), ["agent@a", "new@a"]);
    assert_eq!(p.removed(&now), current(&["agent@gone", "old@a"]));
    assert_eq!(p.added(&now), current(&["agent@a", "new@a"]));
    assert!(p.moves.is_empty() && p.unplaced.is_empty());
}

#[test]
fn a_request_fits_up_to_allocatable_and_not_one_unit_more() {
    let nodes = [node("a").alloc(2000, 4 * GIB)];
    let services = [
        replicas("x", 1).req(1000, 2 * GIB),
        replicas("y", 1).req(1000, 2 * GIB),
        replicas("z1", 1).req(0, 1),
        replicas("z2", 1).req(1, 0),
        replicas("zero", 1).req(0, 0),
    ];
    let p = plan(&services, &nodes, &[]);
    assert_eq!(assigned(&p), ["x@a", "y@a", "zero@a"]);
    let reasons: Vec<_> = p.unplaced.iter().map(|u| &u.reasons[0].1).collect();
    assert_eq!(
        reasons,
        [
            &Reason::DoesNotFit {
                resource: ResourceKind::Memory,
                requested: 1,
                free: 0,
                allocatable: 4 * GIB
            },
            &Reason::DoesNotFit {
                resource: ResourceKind::Cpu,
                requested: 1,
                free: 0,
                allocatable: 2000
            },
        ]
    );
}

// Rule 3: every-node.

#[test]
fn every_node_runs_on_each_ready_uncordoned_matching_node() {
    let nodes = [
        node("a"),
        node("b").lost(),
        node("c").cordoned(),
        node("d").draining(false),
        node("e").roles(&[Role::Control]),
        node("f").roles(&[Role::Control, Role::Compute]),
    ];
    let p = plan(&[every("agent").on(&[Role::Compute])], &nodes, &[]);
    assert_eq!(assigned(&p), ["agent@a", "agent@f"]);
    // Lost, cordoned and non-matching nodes are not a shortfall of an every-node service.
    assert!(p.unplaced.is_empty());
}

#[test]
fn every_node_keeps_its_copies_on_lost_cordoned_and_draining_nodes() {
    let nodes = [
        node("a"),
        node("b").lost(),
        node("c").cordoned(),
        node("d").draining(true),
        node("e").lost().draining(true),
    ];
    let s = every("agent").relocate();
    let p = plan(&[s], &nodes, &["agent@b", "agent@c", "agent@d", "agent@e"]);
    assert_eq!(
        assigned(&p),
        ["agent@a", "agent@b", "agent@c", "agent@d", "agent@e"]
    );
    assert!(p.moves.is_empty());
}

#[test]
fn every_node_leaves_a_node_whose_labels_no_longer_match() {
    let nodes = [node("a").label("net", "10g"), node("b").label("net", "1g")];
    let s = every("ovs").label("net", "10g");
    let now = current(&["ovs@a", "ovs@b"]);
    let p = place(&[s], &nodes, &now).unwrap();
    assert_eq!(assigned(&p), ["ovs@a"]);
    assert_eq!(p.removed(&now), current(&["ovs@b"]));
    assert!(p.moves.is_empty());
}

#[test]
fn every_node_reports_only_open_matching_nodes_where_it_does_not_fit() {
    let nodes = [
        node("a"),
        node("b").alloc(4000, GIB + GIB / 2),
        node("c").alloc(4000, GIB).lost(),
        node("d").alloc(4000, GIB).cordoned(),
        node("e").alloc(4000, GIB).roles(&[Role::Control]),
    ];
    let s = every("agent").on(&[Role::Compute]).req(100, 2 * GIB);
    let p = plan(&[s], &nodes, &[]);
    assert_eq!(assigned(&p), ["agent@a"]);
    assert_eq!(
        unplaced(&p),
        [
            "agent: on 1 of 2 nodes: node b: memory request 2.0 GiB does not fit \
          (1.5 GiB free of 1.5 GiB allocatable)"
        ]
    );
}

// Rule 4: replicas.

#[test]
fn replicas_prefer_most_free_memory_then_cpu_then_name() {
    let nodes = [
        node("a").alloc(8000, 8 * GIB),
        node("b").alloc(2000, 16 * GIB),
        node("c").alloc(4000, 16 * GIB),
        node("d").alloc(4000, 16 * GIB),
    ];
    let p = plan(&[replicas("web", 1)], &nodes, &[]);
    assert_eq!(assigned(&p), ["web@c"]);
    let p = plan(&[replicas("web", 2)], &nodes, &[]);
    assert_eq!(assigned(&p), ["web@c", "web@d"]);
    let p = plan(&[replicas("web", 3)], &nodes, &[]);
    assert_eq!(assigned(&p), ["web@b", "web@c", "web@d"]);
}

#[test]
fn replicas_count_memory_taken_earlier_in_the_round() {
    let nodes = [
        node("big").alloc(4000, 16 * GIB).label("size", "big"),
        node("small"),
    ];
    // The every-node service takes 12 GiB of big's 16: small (8 GiB) has more left.
    let hog = every("hog").req(0, 12 * GIB).label("size", "big");
    let p = plan(&[hog, replicas("web", 1)], &nodes, &[]);
    assert_eq!(assigned(&p), ["hog@big", "web@small"]);
}

#[test]
fn replicas_never_put_two_copies_on_one_node() {
    let p = plan(&[replicas("web", 3)], &[node("a")], &[]);
    assert_eq!(assigned(&p), ["web@a"]);
    assert_eq!(
        unplaced(&p),
        ["web: 1 of 3 replicas placed: node a: already runs a copy"]
    );
}

#[test]
fn a_non_relocatable_replica_waits_on_its_lost_node() {
    let nodes = [node("a").lost(), node("b")];
    let p = plan(&[replicas("vmhost", 1)], &nodes, &["vmhost@a"]);
    assert_eq!(assigned(&p), ["vmhost@a"]);
    assert!(p.moves.is_empty() && p.unplaced.is_empty());
}

#[test]
fn a_relocatable_replica_moves_off_a_lost_node() {
    let nodes = [node("a").lost(), node("b"), node("c")];
    let p = plan(
        &[replicas("web", 2).relocate()],
        &nodes,
        &["web@a", "web@b"],
    );
    assert_eq!(assigned(&p), ["web@b", "web@c"]);
    assert_eq!(
        p.moves,
        [Move {
            service: "web".into(),
            from: "a".into(),
            to: Some("c".into()),
            why: MoveReason::NodeLost
        }]
    );
}

#[test]
fn a_relocatable_replica_with_nowhere_to_go_is_moved_to_none_and_unplaced() {
    let nodes = [node("a").lost(), node("b").cordoned()];
    let p = plan(&[replicas("web", 1).relocate()], &nodes, &["web@a"]);
    assert!(p.assignments.is_empty());
    assert_eq!(
        moves(&p),
        ["web: leaves node a (node lost), no node can take it"]
    );
    assert_eq!(
        unplaced(&p),
        ["web: 0 of 1 replica placed: node a: lost; node b: cordoned"]
    );
}

#[test]
fn a_drain_moves_relocatable_replicas_and_others_only_when_forced() {
    let services = [replicas("web", 1).relocate(), replicas("vmhost", 1)];
    let now = ["web@a", "vmhost@a"];
    let gentle = plan(&services, &[node("a").draining(false), node("b")], &now);
    assert_eq!(assigned(&gentle), ["vmhost@a", "web@b"]);
    assert_eq!(
        moves(&gentle),
        ["web: moves from node a to node b (node drained)"]
    );

    let forced = plan(&services, &[node("a").draining(true), node("b")], &now);
    assert_eq!(assigned(&forced), ["vmhost@b", "web@b"]);
    assert_eq!(
        moves(&forced),
        [
            "vmhost: moves from node a to node b (node drained)",
            "web: moves from node a to node b (node drained)"
        ]
    );
}

#[test]
fn a_forced_drain_of_a_lost_node_moves_a_non_relocatable_replica() {
    // The operator's way to say "this node is dead, start it elsewhere".
    let nodes = [node("a").lost().draining(true), node("b")];
    let p = plan(&[replicas("vmhost", 1)], &nodes, &["vmhost@a"]);
    assert_eq!(assigned(&p), ["vmhost@b"]);
    assert_eq!(p.moves[0].why, MoveReason::Drained);
}

#[test]
fn scale_down_removes_lost_then_draining_then_cordoned_then_last_by_name() {
    let nodes = [
        node("a"),
        node("b"),
        node("c").cordoned(),
        node("d").draining(false),
        node("e").lost(),
        node("f"),
    ];
    let now = ["web@a", "web@b", "web@c", "web@d", "web@e", "web@f"];
    let keep = |n| assigned(&plan(&[replicas("web", n)], &nodes, &now));
    assert_eq!(keep(6).len(), 6);
    assert_eq!(keep(5), ["web@a", "web@b", "web@c", "web@d", "web@f"]);
    assert_eq!(keep(4), ["web@a", "web@b", "web@c", "web@f"]);
    assert_eq!(keep(3), ["web@a", "web@b", "web@f"]);
    assert_eq!(keep(2), ["web@a", "web@b"]);
    assert_eq!(keep(1), ["web@a"]);
    assert!(keep(0).is_empty());
}

#[test]
fn scale_down_drops_a_copy_that_leaves_anyway_without_a_move() {
    let nodes = [node("a").lost(), node("b"), node("c"), node("d")];
    let p = plan(
        &[replicas("web", 2).relocate()],
        &nodes,
        &["web@a", "web@b", "web@c"],
    );
    assert_eq!(assigned(&p), ["web@b", "web@c"]);
    assert!(p.moves.is_empty() && p.unplaced.is_empty());
}

#[test]
fn a_replica_leaves_a_node_that_no_longer_matches_or_was_removed() {
    let nodes = [
        node("a").label("disk", "hdd"),
        node("b").label("disk", "ssd"),
        node("c").label("disk", "ssd"),
    ];
    let s = replicas("db", 2).label("disk", "ssd");
    let p = plan(&[s], &nodes, &["db@a", "db@gone"]);
    assert_eq!(assigned(&p), ["db@b", "db@c"]);
    assert_eq!(
        p.moves,
        [
            Move {
                service: "db".into(),
                from: "a".into(),
                to: Some("b".into()),
                why: MoveReason::NoLongerMatches
            },
            Move {
                service: "db".into(),
                from: "gone".into(),
                to: Some("c".into()),
                why: MoveReason::NodeRemoved
            },
        ]
    );
}

// Rule 5: capacity is accounted in a fixed order.

#[test]
fn existing_copies_count_before_any_new_one() {
    let nodes = [node("n").alloc(4000, 4 * GIB)];
    let services = [
        replicas("a-new", 1).req(0, 3 * GIB),
        replicas("z-old", 1).req(0, 3 * GIB),
    ];
    let p = plan(&services, &nodes, &["z-old@n"]);
    assert_eq!(assigned(&p), ["z-old@n"]);
    assert_eq!(p.unplaced[0].service, "a-new");
}

#[test]
fn every_node_services_are_placed_before_replicas_and_each_kind_by_name() {
    let nodes = [node("n").alloc(4000, 4 * GIB)];
    let services = [
        replicas("b-web", 1).req(0, GIB),
        replicas("a-web", 1).req(0, GIB),
        every("z-agent").req(0, 2 * GIB + GIB / 2),
    ];
    let p = plan(&services, &nodes, &[]);
    assert_eq!(assigned(&p), ["a-web@n", "z-agent@n"]);
    assert_eq!(p.unplaced.len(), 1);
    assert_eq!(p.unplaced[0].service, "b-web");
}

// Rule 6: unplaced explains every node.

#[test]
fn unplaced_explains_every_node() {
    let nodes = [
        node("a"),
        node("b").lost(),
        node("c").cordoned(),
        node("d").draining(false),
        node("e").roles(&[Role::Control]),
        node("f").label("zone", "west"),
        node("g").alloc(250, 8 * GIB),
        node("h").alloc(4000, GIB),
    ];
    let s = replicas("web", 8).on(&[Role::Compute]).req(500, 2 * GIB);
    let p = plan(&[s.clone().label("zone", "east")], &nodes, &[]);
    assert!(p.assignments.is_empty());
    assert_eq!(
        unplaced(&p),
        ["web: 0 of 8 replicas placed: \
          node a: does not match nodeSelector (label zone=east, node has no label zone); \
          node b: does not match nodeSelector (label zone=east, node has no label zone); \
          node c: does not match nodeSelector (label zone=east, node has no label zone); \
          node d: does not match nodeSelector (label zone=east, node has no label zone); \
          node e: does not match nodeSelector (roles compute); \
          node f: does not match nodeSelector (label zone=east, node has zone=west); \
          node g: does not match nodeSelector (label zone=east, node has no label zone); \
          node h: does not match nodeSelector (label zone=east, node has no label zone)"]
    );
    let p = plan(&[s], &nodes, &[]);
    assert_eq!(assigned(&p), ["web@a", "web@f"]);
    assert_eq!(
        unplaced(&p),
        [
            "web: 2 of 8 replicas placed: node a: already runs a copy; node b: lost; \
          node c: cordoned; node d: draining; \
          node e: does not match nodeSelector (roles compute); node f: already runs a copy; \
          node g: cpu request 500m does not fit (250m free of 250m allocatable); \
          node h: memory request 2.0 GiB does not fit (1.0 GiB free of 1.0 GiB allocatable)"
        ]
    );
}

#[test]
fn no_nodes_is_reported_as_such() {
    let p = plan(&[replicas("web", 2), every("agent")], &[], &[]);
    assert_eq!(unplaced(&p), ["web: 0 of 2 replicas placed: no nodes"]);
    assert_eq!(p.unplaced[0].reasons, []);
}

// Inputs and helpers.

#[test]
fn duplicate_names_are_refused() {
    let err = place(&[], &[node("a"), node("b"), node("a")], &BTreeSet::new()).unwrap_err();
    assert_eq!(err, PlacementError::DuplicateNode { name: "a".into() });
    assert_eq!(err.to_string(), "two nodes are named \"a\"");
    let err = place(&[every("x"), every("x")], &[], &BTreeSet::new()).unwrap_err();
    assert_eq!(err, PlacementError::DuplicateService { name: "x".into() });
}

#[test]
fn a_selector_needs_any_of_its_roles_and_all_of_its_labels() {
    let both = node("n")
        .roles(&[Role::Control, Role::Compute])
        .label("zone", "east")
        .label("disk", "ssd");
    let mut sel = Selector::default();
    assert!(sel.matches(&both));
    sel.roles = [Role::Control].into();
    assert!(sel.matches(&both));
    assert!(!sel.matches(&node("compute-only")));
    sel.labels.insert("zone".into(), "east".into());
    sel.labels.insert("disk".into(), "ssd".into());
    assert!(sel.matches(&both));
    sel.labels.insert("disk".into(), "hdd".into());
    assert!(!sel.matches(&both));
}

#[test]
fn resources_saturate() {
    let a = Resources::new(1000, GIB);
    assert_eq!(
        a.saturating_sub(Resources::new(2000, 1)),
        Resources::new(0, GIB - 1)
    );
    assert_eq!(
        a.saturating_add(Resources::new(u64::MAX, 0)),
        Resources::new(u64::MAX, GIB)
    );
    assert_eq!(a.to_string(), "cpu 1, memory 1.0 GiB");
}

// Rule 7: a cluster of 300 nodes and 50 services.

/// xorshift64: a fixed, dependency-free stream of numbers for the large cluster.
struct Numbers(u64);

impl Numbers {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn large_cluster() -> (Vec<Service>, Vec<Node>) {
    let mut rng = Numbers(0x5eed_cafe);
    let nodes = (0..300)
        .map(|i| {
            let roles: &[Role] = match i % 10 {
                0 => &[Role::Control],
                1 => &[Role::Control, Role::Compute],
                _ => &[Role::Compute],
            };
            let cores = 4 + rng.below(60);
            node(&format!("node-{i:03}"))
                .roles(roles)
                .label("rack", &format!("r{}", i % 12))
                .alloc(cores * 1000, (8 + rng.below(248)) * GIB)
        })
        .collect();
    let services = (0..50)
        .map(|i| {
            let req = Resources::new(100 * (1 + rng.below(20)), (1 + rng.below(16)) * GIB);
            let mut s = if i % 2 == 0 {
                every(&format!("svc-{i:02}"))
            } else {
                replicas(
                    &format!("svc-{i:02}"),
                    1 + u32::try_from(rng.below(40)).unwrap(),
                )
            };
            s.requests = req;
            s.relocate = i % 3 == 0;
            match i % 5 {
                0 => s.on(&[Role::Control]),
                1 => s.on(&[Role::Compute]),
                2 => s.label("rack", "r3"),
                _ => s,
            }
        })
        .collect();
    (services, nodes)
}

/// Checks what must hold of any plan: assignments name known services and nodes, replicas sit
/// on distinct matching nodes and never exceed their count, and a service short of copies is
/// reported with its true count.
fn check_invariants(services: &[Service], nodes: &[Node], p: &Plan) {
    let by_name: BTreeMap<_, _> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    for service in services {
        let hosts: Vec<&Node> = p
            .assignments
            .iter()
            .filter(|(s, _)| *s == service.name)
            .map(|(_, n)| by_name[n.as_str()])
            .collect();
        assert!(
            hosts.iter().all(|n| service.selector.matches(n)),
            "{}",
            service.name
        );
        let placed = u32::try_from(hosts.len()).unwrap();
        let short = p.unplaced.iter().find(|u| u.service == service.name);
        match service.rule {
            Rule::Replicas(n) => {
                assert!(placed <= n, "{}", service.name);
                assert_eq!(placed < n, short.is_some(), "{}", service.name);
            }
            Rule::EveryNode => {
                let open = nodes.iter().filter(|n| {
                    service.selector.matches(n) && n.health == Health::Ready && !n.is_cordoned()
                });
                let missing = open.filter(|n| !hosts.contains(n)).count();
                assert_eq!(
                    missing,
                    short.map_or(0, |u| u.reasons.len()),
                    "{}",
                    service.name
                );
            }
        }
        if let Some(u) = short {
            assert_eq!(u.placed, placed, "{}", service.name);
        }
    }
}

#[test]
fn plans_300_nodes_and_50_services() {
    let (services, mut nodes) = large_cluster();
    let first = place(&services, &nodes, &BTreeSet::new()).unwrap();
    check_invariants(&services, &nodes, &first);
    // From nothing, every node's assignments fit its allocatable.
    for n in &nodes {
        let used = first
            .assignments
            .iter()
            .filter(|(_, node)| *node == n.name)
            .map(|(s, _)| services.iter().find(|x| x.name == *s).unwrap().requests)
            .fold(Resources::ZERO, Resources::saturating_add);
        assert!(used.cpu_milli <= n.allocatable.cpu_milli, "{}", n.name);
        assert!(
            used.memory_bytes <= n.allocatable.memory_bytes,
            "{}",
            n.name
        );
    }
    assert!(
        first.assignments.len() > 1000,
        "{}",
        first.assignments.len()
    );
    assert!(
        !first.unplaced.is_empty(),
        "the cluster should be tight somewhere"
    );

    // One node in seven is lost: non-relocatable replicas stay there, relocatable ones move.
    for n in nodes.iter_mut().step_by(7) {
        n.health = Health::Lost;
    }
    nodes.reverse();
    let second = place(&services, &nodes, &first.assignments).unwrap();
    check_invariants(&services, &nodes, &second);
    let lost: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| n.health == Health::Lost)
        .map(|n| n.name.as_str())
        .collect();
    for (s, n) in &first.assignments {
        let service = services.iter().find(|x| x.name == *s).unwrap();
        let stays = second.assignments.contains(&(s.clone(), n.clone()));
        let moved = second.moves.iter().any(|m| m.service == *s && m.from == *n);
        if lost.contains(n.as_str()) {
            let relocates = service.relocate && service.rule != Rule::EveryNode;
            assert_eq!(stays, !relocates, "{s}@{n}");
            assert_eq!(moved, relocates, "{s}@{n}");
        } else {
            assert!(stays, "{s}@{n} was evicted");
        }
    }
    assert!(second.moves.iter().all(|m| m.why == MoveReason::NodeLost));
    assert!(!second.moves.is_empty());
    assert!(
        second
            .added(&first.assignments)
            .iter()
            .all(|(_, n)| !lost.contains(n.as_str()))
    );
}
