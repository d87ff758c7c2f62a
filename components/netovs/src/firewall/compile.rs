//! Compiles a [`Policy`] into the OpenFlow flows of the pipeline described in [`super`]: where
//! the firewall sits on a bridge ([`Scope`]: the host's port and addresses, the tables it owns,
//! its conntrack zone), which cookie marks its flows, and which priority every flow gets.
//!
//! Pure: it never talks to a switch, and every flow it makes carries [`COOKIE`] and lies in
//! table 0 (the hooks) or the scope's [`TableRange`].

use std::cmp::Reverse;
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use super::flow::Flow;
use super::policy::{Action, Direction, Policy, Protocol};
use crate::NetovsError;

/// The high 32 bits of every firewall flow's cookie ("cloudlet"); the low 32 bits are 0 for the
/// pipeline's own flows and a hash of the rule's name for a rule's flows.
pub const COOKIE: u64 = 0x0c10_d1e7_0000_0000;
/// The part of a cookie that says a flow is the firewall's.
pub const COOKIE_MASK: u64 = 0xffff_ffff_0000_0000;
/// How many tables of its range the firewall uses (the rest are left free for later).
pub const TABLES_USED: u8 = 4;

/// Table 0: the hook for packets from the host (above [`HOOK_IN_PRIORITY`], so that a packet
/// from the host to its own address is outbound).
pub const HOOK_OUT_PRIORITY: u16 = 60001;
/// Table 0: the hooks for packets to the host's addresses.
pub const HOOK_IN_PRIORITY: u16 = 60000;
/// Conntrack tables: drop packets conntrack found invalid.
pub const INVALID_PRIORITY: u16 = 50002;
/// Conntrack tables: pass packets of established connections.
pub const ESTABLISHED_PRIORITY: u16 = 50001;
/// Conntrack tables: pass packets related to a connection (ICMP errors).
pub const RELATED_PRIORITY: u16 = 50000;
/// The first rule's priority; the rule of rank `r` gets `RULE_TOP_PRIORITY - r`.
pub const RULE_TOP_PRIORITY: u16 = 40000;
/// The policy's default, and the entry flows.
pub const DEFAULT_PRIORITY: u16 = 1;

/// The flow tables the firewall owns, `first..=last`: never table 0, at least [`TABLES_USED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableRange {
    first: u8,
    last: u8,
}

impl TableRange {
    /// The tables `range`, e.g. `200..=209`; an error when it includes table 0 or 255 (not a
    /// table) or has fewer than [`TABLES_USED`] tables.
    pub fn new(range: RangeInclusive<u8>) -> Result<TableRange, NetovsError> {
        let (first, last) = range.into_inner();
        let bad = |why: &str| NetovsError::Invalid(format!("tables {first}-{last}: {why}"));
        if first == 0 {
            return Err(bad(
                "table 0 is the bridge's, the firewall only hooks into it",
            ));
        }
        if last == u8::MAX {
            return Err(bad("tables are 0 to 254"));
        }
        if last < first || last - first + 1 < TABLES_USED {
            return Err(bad(&format!("the firewall needs {TABLES_USED} tables")));
        }
        Ok(TableRange { first, last })
    }

    /// The first table (where outbound packets enter).
    pub fn first(&self) -> u8 {
        self.first
    }

    /// The last table.
    pub fn last(&self) -> u8 {
        self.last
    }

    /// Whether `table` is in the range.
    pub fn contains(&self, table: u8) -> bool {
        (self.first..=self.last).contains(&table)
    }

    /// The table at `offset` from the first ([`TABLES_USED`] fit, by construction).
    fn at(&self, offset: u8) -> u8 {
        debug_assert!(offset < TABLES_USED);
        self.first + offset
    }
}

impl fmt::Display for TableRange {
    /// `tables 200-209`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tables {}-{}", self.first, self.last)
    }
}

/// The OpenFlow port through which the host itself is on the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostPort {
    /// The bridge's own internal port (`br0` on bridge `br0`), OpenFlow's `LOCAL`.
    Local,
    /// Another internal port, by its OpenFlow port number (the Interface's `ofport`).
    Number(u16),
}

impl fmt::Display for HostPort {
    /// How `ovs-ofctl` writes it in a match: `LOCAL` or the number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPort::Local => f.write_str("LOCAL"),
            HostPort::Number(n) => write!(f, "{n}"),
        }
    }
}

/// Where the firewall sits on a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The host's port on the bridge: packets from it are outbound.
    pub host_port: HostPort,
    /// The host's IPv4 addresses on the bridge: packets to them are inbound. With none, no
    /// inbound packet is filtered.
    pub host_addrs: Vec<Ipv4Addr>,
    /// The tables the firewall owns.
    pub tables: TableRange,
    /// The conntrack zone of stateful policies (one of its own, so that other users of
    /// conntrack on the node never see its connections).
    pub ct_zone: u16,
}

impl Scope {
    /// Whether `flow` is the firewall's: it carries [`COOKIE`] and lies in table 0 or the
    /// firewall's tables. Only such flows are ever deleted or replaced.
    pub fn owns(&self, flow: &Flow) -> bool {
        flow.cookie() & COOKIE_MASK == COOKIE
            && (flow.table() == 0 || self.tables.contains(flow.table()))
    }

    fn out_entry(&self) -> u8 {
        self.tables.at(0)
    }
    fn in_entry(&self) -> u8 {
        self.tables.at(1)
    }
    fn out_rules(&self) -> u8 {
        self.tables.at(2)
    }
    fn in_rules(&self) -> u8 {
        self.tables.at(3)
    }
}

/// The cookie of a rule's flows: [`COOKIE`] and the 32-bit FNV-1a hash of its name, so that
/// `ovs-ofctl dump-flows BR cookie=0x.../-1` shows one rule's flows and counters.
pub fn rule_cookie(name: &str) -> u64 {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    COOKIE | u64::from(hash)
}

/// The flows of `policy` at `scope`, in a fixed order: the table 0 hooks, then each direction's
/// entry and conntrack flows, the defaults, and the rules by rank.
pub fn compile(policy: &Policy, scope: &Scope) -> Vec<Flow> {
    let mut flows = Vec::new();
    let mut push = |table: u8, priority: u16, cookie: u64, matches: &str, actions: &str| {
        let text = format!(
            "table={table},priority={priority},cookie={cookie:#x},{matches} actions={actions}"
        );
        flows.push(
            text.parse::<Flow>()
                .expect("compiled flows are well-formed"),
        );
    };
    let zone = scope.ct_zone;
    let stateful = policy.stateful();
    let act = |action: Action| match (action, stateful) {
        (Action::Allow, true) => format!("ct(commit,zone={zone}),NORMAL"),
        (Action::Allow, false) => "NORMAL".to_owned(),
        (Action::Deny, _) => "drop".to_owned(),
    };

    let hook_out = format!("ip,in_port={}", scope.host_port);
    let to_out = format!("resubmit(,{})", scope.out_entry());
    push(0, HOOK_OUT_PRIORITY, COOKIE, &hook_out, &to_out);
    let mut addrs = scope.host_addrs.clone();
    addrs.sort_unstable();
    addrs.dedup();
    let to_in = format!("resubmit(,{})", scope.in_entry());
    for addr in addrs {
        let hook_in = format!("ip,nw_dst={addr}");
        push(0, HOOK_IN_PRIORITY, COOKIE, &hook_in, &to_in);
    }

    let default = act(policy.default_action());
    for (entry, rules) in [
        (scope.out_entry(), scope.out_rules()),
        (scope.in_entry(), scope.in_rules()),
    ] {
        let enter = if stateful {
            format!("ct(table={rules},zone={zone})")
        } else {
            format!("resubmit(,{rules})")
        };
        push(entry, DEFAULT_PRIORITY, COOKIE, "ip", &enter);
        if stateful {
            for (priority, matches, actions) in [
                (INVALID_PRIORITY, "ct_state=+inv+trk", "drop"),
                (ESTABLISHED_PRIORITY, "ct_state=+est+trk", "NORMAL"),
                (RELATED_PRIORITY, "ct_state=+rel+trk", "NORMAL"),
            ] {
                push(rules, priority, COOKIE, matches, actions);
            }
        }
        push(rules, DEFAULT_PRIORITY, COOKIE, "ip", &default);
    }

    let mut order: Vec<usize> = (0..policy.rules().len()).collect();
    order.sort_by_key(|&i| (Reverse(policy.rules()[i].priority.unwrap_or(0)), i));
    for (rank, rule) in order.into_iter().map(|i| &policy.rules()[i]).enumerate() {
        let rank = u16::try_from(rank).expect("a policy has at most MAX_RULES rules");
        let priority = RULE_TOP_PRIORITY - rank;
        let (table, remote) = match rule.direction {
            Direction::In => (scope.in_rules(), "nw_src"),
            Direction::Out => (scope.out_rules(), "nw_dst"),
        };
        let mut base = Vec::new();
        if stateful {
            base.push("ct_state=+new+trk".to_owned());
        }
        base.push(
            match rule.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Icmp => "icmp",
                Protocol::Any => "ip",
            }
            .to_owned(),
        );
        if let Some(cidr) = rule.cidr.filter(|c| !c.is_everything()) {
            base.push(format!("{remote}={cidr}"));
        }
        let ports: Vec<Option<String>> = match rule.ports {
            None => vec![None],
            Some(range) => range
                .masks()
                .into_iter()
                .map(|(v, m)| (m != 0).then(|| format!("tp_dst={v}/{m:#x}")))
                .collect(),
        };
        let cookie = rule_cookie(&rule.name);
        for port in ports {
            let matches: Vec<&str> = base.iter().chain(port.iter()).map(String::as_str).collect();
            push(
                table,
                priority,
                cookie,
                &matches.join(","),
                &act(rule.action),
            );
        }
    }
    flows
}

#[cfg(test)]
mod tests {
    use super::super::flow::diff;
    use super::super::policy::{Ipv4Cidr, Rule};
    use super::*;

    fn scope() -> Scope {
        Scope {
            host_port: HostPort::Local,
            host_addrs: vec![Ipv4Addr::new(10, 88, 0, 1)],
            tables: TableRange::new(200..=209).unwrap(),
            ct_zone: 7,
        }
    }

    fn rule(name: &str, direction: Direction, protocol: Protocol, ports: Option<&str>) -> Rule {
        Rule {
            name: name.to_owned(),
            direction,
            action: Action::Allow,
            protocol,
            ports: ports.map(|p| p.parse().unwrap()),
            cidr: None,
            priority: None,
        }
    }

    fn text(flows: &[Flow]) -> String {
        flows.iter().map(|f| format!("{f}\n")).collect()
    }

    #[test]
    fn stateful_policy_compiles_to_the_documented_pipeline() {
        let mut web = rule("web", Direction::In, Protocol::Tcp, Some("8080-8083"));
        web.cidr = Some("10.88.0.0/24".parse().unwrap());
        let mut dns = rule("dns", Direction::Out, Protocol::Udp, Some("53"));
        dns.action = Action::Deny;
        let policy = Policy::new(Action::Deny, vec![web, dns], true).unwrap();
        let web = rule_cookie("web");
        let dns = rule_cookie("dns");
        assert_eq!(
            text(&compile(&policy, &scope())),
            format!(
                "\
table=0,priority=60001,cookie=0xc10d1e700000000,ip,in_port=LOCAL actions=resubmit(,200)
table=0,priority=60000,cookie=0xc10d1e700000000,ip,nw_dst=10.88.0.1 actions=resubmit(,201)
table=200,priority=1,cookie=0xc10d1e700000000,ip actions=ct(table=202,zone=7)
table=202,priority=50002,cookie=0xc10d1e700000000,ct_state=+inv+trk actions=drop
table=202,priority=50001,cookie=0xc10d1e700000000,ct_state=+est+trk actions=NORMAL
table=202,priority=50000,cookie=0xc10d1e700000000,ct_state=+rel+trk actions=NORMAL
table=202,priority=1,cookie=0xc10d1e700000000,ip actions=drop
table=201,priority=1,cookie=0xc10d1e700000000,ip actions=ct(table=203,zone=7)
table=203,priority=50002,cookie=0xc10d1e700000000,ct_state=+inv+trk actions=drop
table=203,priority=50001,cookie=0xc10d1e700000000,ct_state=+est+trk actions=NORMAL
table=203,priority=50000,cookie=0xc10d1e700000000,ct_state=+rel+trk actions=NORMAL
table=203,priority=1,cookie=0xc10d1e700000000,ip actions=drop
table=203,priority=40000,cookie={web:#x},ct_state=+new+trk,tcp,nw_src=10.88.0.0/24,tp_dst=0x1f90/0xfffc actions=ct(commit,zone=7),NORMAL
table=202,priority=39999,cookie={dns:#x},ct_state=+new+trk,udp,tp_dst=53 actions=drop
"
            )
        );
    }

    #[test]
    fn stateless_policy_has_no_conntrack() {
        let rules = vec![rule("ping", Direction::In, Protocol::Icmp, None)];
        let policy = Policy::new(Action::Allow, rules, false).unwrap();
        let flows = text(&compile(&policy, &scope()));
        assert!(!flows.contains("ct("), "{flows}");
        assert!(!flows.contains("ct_state"), "{flows}");
        assert!(
            flows.contains(
                "table=200,priority=1,cookie=0xc10d1e700000000,ip actions=resubmit(,202)\n"
            )
        );
        assert!(
            flows.contains("table=203,priority=1,cookie=0xc10d1e700000000,ip actions=NORMAL\n")
        );
        assert!(flows.contains(",icmp actions=NORMAL\n"), "{flows}");
    }

    #[test]
    fn priorities_follow_rule_priority_then_order() {
        let mut rules: Vec<Rule> = ["a", "b", "c"]
            .iter()
            .map(|n| rule(n, Direction::In, Protocol::Any, None))
            .collect();
        rules[2].priority = Some(5);
        let policy = Policy::new(Action::Deny, rules, false).unwrap();
        let of = |name: &str| {
            let flows = compile(&policy, &scope());
            flows
                .iter()
                .find(|f| f.cookie() == rule_cookie(name))
                .unwrap()
                .priority()
        };
        assert_eq!((of("c"), of("a"), of("b")), (40000, 39999, 39998));
    }

    #[test]
    fn port_ranges_become_one_flow_per_mask() {
        let rules = vec![rule("hi", Direction::In, Protocol::Tcp, Some("1024-65535"))];
        let policy = Policy::new(Action::Deny, rules, true).unwrap();
        let flows = compile(&policy, &scope());
        let ours: Vec<_> = flows
            .iter()
            .filter(|f| f.cookie() == rule_cookie("hi"))
            .collect();
        assert_eq!(ours.len(), 6);
        assert!(ours[0].match_text().ends_with("tp_dst=0x400/0xfc00"));
        // All ports is no port match at all.
        let rules = vec![rule("all", Direction::In, Protocol::Udp, Some("0-65535"))];
        let policy = Policy::new(Action::Deny, rules, true).unwrap();
        let flows = compile(&policy, &scope());
        let all: Vec<_> = flows
            .iter()
            .filter(|f| f.cookie() == rule_cookie("all"))
            .collect();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].match_text(), "ct_state=+new+trk,udp");
    }

    #[test]
    fn every_compiled_flow_is_owned_and_reads_back_as_itself() {
        let mut r = rule("x", Direction::Out, Protocol::Tcp, Some("1-1000"));
        r.cidr = Some(Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 9), 32).unwrap());
        let policy = Policy::new(Action::Allow, vec![r], true).unwrap();
        let s = Scope {
            host_port: HostPort::Number(3),
            host_addrs: vec![
                Ipv4Addr::new(10, 0, 0, 2),
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2),
            ],
            ..scope()
        };
        let flows = compile(&policy, &s);
        for f in &flows {
            assert!(s.owns(f), "{f}");
            assert_eq!(&f.to_string().parse::<Flow>().unwrap(), f);
        }
        let t = text(&flows);
        assert!(t.contains("ip,in_port=3 actions"), "{t}");
        assert_eq!(t.matches("actions=resubmit(,201)").count(), 2, "{t}");
        assert!(
            t.contains(",tcp,nw_dst=192.168.1.9,tp_dst=1 actions"),
            "{t}"
        );
    }

    #[test]
    fn table_ranges_exclude_table_0_and_need_four_tables() {
        assert!(TableRange::new(200..=203).is_ok());
        assert_eq!(
            TableRange::new(0..=9).unwrap_err().to_string(),
            "tables 0-9: table 0 is the bridge's, the firewall only hooks into it"
        );
        assert_eq!(
            TableRange::new(200..=202).unwrap_err().to_string(),
            "tables 200-202: the firewall needs 4 tables"
        );
        assert!(TableRange::new(250..=255).is_err());
        let (first, last) = (9, 1);
        assert!(TableRange::new(first..=last).is_err());
    }

    fn web_policy(port: &str) -> Policy {
        let rules = vec![
            rule("ssh", Direction::In, Protocol::Tcp, Some("22")),
            rule("web", Direction::In, Protocol::Tcp, Some(port)),
            rule("out", Direction::Out, Protocol::Any, None),
        ];
        Policy::new(Action::Deny, rules, true).unwrap()
    }

    #[test]
    fn diff_of_the_same_policy_is_empty() {
        let flows = compile(&web_policy("8080"), &scope());
        let d = diff(&scope(), &flows, &flows).unwrap();
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.bundle(), "");
    }

    #[test]
    fn diff_of_a_changed_rule_is_only_that_rules_flows() {
        let before = compile(&web_policy("8080"), &scope());
        let after = compile(&web_policy("8081"), &scope());
        let d = diff(&scope(), &before, &after).unwrap();
        assert_eq!((d.delete.len(), d.add.len()), (1, 1));
        assert!(
            d.delete
                .iter()
                .chain(&d.add)
                .all(|f| f.cookie() == rule_cookie("web"))
        );
        assert_eq!(
            d.bundle(),
            format!(
                "delete_strict table=203,priority=39999,cookie=0xc10d1e700000000/0xffffffff00000000,ct_state=+new+trk,tcp,tp_dst=8080\n\
                 add table=203,priority=39999,cookie={:#x},ct_state=+new+trk,tcp,tp_dst=8081 actions=ct(commit,zone=7),NORMAL\n",
                rule_cookie("web")
            )
        );
        // A changed action on the same match is one add, which replaces the flow.
        let mut p = web_policy("8080").rules().to_vec();
        p[1].action = Action::Deny;
        let after = compile(&Policy::new(Action::Deny, p, true).unwrap(), &scope());
        let d = diff(&scope(), &before, &after).unwrap();
        assert_eq!((d.delete.len(), d.add.len()), (0, 1));
        assert_eq!(d.add[0].actions(), "drop");
    }

    #[test]
    fn diff_never_deletes_flows_it_does_not_own() {
        let foreign: Vec<Flow> = [
            "table=0,priority=0,cookie=0x0 actions=NORMAL",
            "table=0,priority=100,cookie=0x1,udp,tp_dst=5555 actions=drop",
            "table=50,priority=10,cookie=0xc10d1e700000000,ip actions=drop",
            "table=201,priority=7,cookie=0x77,udp actions=drop",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let d = diff(&scope(), &foreign, &[]).unwrap();
        assert!(d.is_empty(), "{d:?}");
        // And it refuses to add them.
        let e = diff(&scope(), &[], &foreign[2..3]).unwrap_err().to_string();
        assert!(
            e.contains(
                "only adds flows with its cookie 0xc10d1e700000000 in table 0 or tables 200-209"
            ),
            "{e}"
        );
        // Removing the firewall deletes exactly its own flows.
        let ours = compile(&web_policy("8080"), &scope());
        let installed: Vec<Flow> = ours.iter().chain(&foreign).cloned().collect();
        let d = diff(&scope(), &installed, &[]).unwrap();
        assert_eq!(d.delete.len(), ours.len());
        assert!(d.add.is_empty());
    }
}
