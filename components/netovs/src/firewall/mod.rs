//! The node firewall: a declarative [`Policy`] for the host's IPv4 traffic on an Open vSwitch
//! bridge, compiled into OpenFlow flows ([`compile`]) and reconciled against what the bridge
//! holds ([`diff`]), as Cloudpods' sdnagent reconciles its flows. [`crate::ofctl`] does the I/O.
//!
//! It never touches iptables or nftables, and never a flow that is not its own: its flows are
//! the ones with [`COOKIE`] in the high 32 bits of their cookie, in table 0 or in the
//! [`TableRange`] it owns. Pure: no I/O in this module.
//!
//! # The pipeline
//!
//! With the tables `T..=T+n` of the [`Scope`] (`n >= 3`; tables past `T+3` are left free):
//!
//! | table | priority | match | actions |
//! | --- | --- | --- | --- |
//! | 0 | 60001 | `ip,in_port=<host port>` | `resubmit(,T)`: outbound |
//! | 0 | 60000 | `ip,nw_dst=<host address>` (one per address) | `resubmit(,T+1)`: inbound |
//! | T, T+1 | 1 | `ip` | `ct(table=T+2 / T+3,zone=Z)` (stateful) or `resubmit(,T+2 / T+3)` |
//! | T+2, T+3 | 50002 | `ct_state=+inv+trk` | `drop` (stateful only) |
//! | T+2, T+3 | 50001, 50000 | `ct_state=+est+trk`, `ct_state=+rel+trk` | `NORMAL` (stateful only) |
//! | T+2, T+3 | 40000 - rank | a rule (`ct_state=+new+trk,` when stateful) | allow or deny |
//! | T+2, T+3 | 1 | `ip` | the default |
//!
//! T+2 holds the outbound rules, T+3 the inbound ones. Allow is `NORMAL` (the bridge's learning
//! switch, what the bridge's own default flow does), preceded by `ct(commit,zone=Z)` when
//! stateful, so that the replies of an allowed connection are established and pass; deny is
//! `drop`. A rule's rank is its place when rules are sorted by `priority` (highest first) and
//! then as written.
//!
//! The two hooks are the only flows outside the firewall's range: table 0 is the bridge's (it
//! holds the `priority=0 actions=NORMAL` flow, and other owners may add theirs), so the firewall
//! adds flows there that match only the host's own traffic, at priorities above what Cloudpods
//! uses (at most 40000), carrying its cookie like every other flow of its own.
//!
//! What is not filtered, by design: ARP (only `ip` enters the pipeline, so the host never loses
//! its neighbours), IPv6 (this firewall is IPv4 only: IPv6 to and from the host passes as if
//! there were no firewall), and broadcast or multicast IPv4 to the host (it is not addressed to
//! one of the host's addresses). Switching the policy on with stateful tracking may cut the
//! host's open TCP connections: Open vSwitch's userspace conntrack did not see them start, and
//! marks their packets invalid.
//!
//! # Cookies and the diff
//!
//! The pipeline's flows have cookie [`COOKIE`]; a rule's flows have [`rule_cookie`] (the low 32
//! bits hash its name), so `ovs-ofctl dump-flows BR cookie=0x.../-1` shows one rule's counters.
//! A flow is identified by table, priority and match, compared in the canonical form of
//! [`Flow`], so compiling the same policy again and diffing it against the installed flows
//! gives an empty [`Diff`], and changing one rule gives exactly that rule's flows.

mod compile;
mod flow;
mod policy;
mod ports;

pub use compile::{
    COOKIE, COOKIE_MASK, DEFAULT_PRIORITY, ESTABLISHED_PRIORITY, HOOK_IN_PRIORITY,
    HOOK_OUT_PRIORITY, HostPort, INVALID_PRIORITY, RELATED_PRIORITY, RULE_TOP_PRIORITY, Scope,
    TABLES_USED, TableRange, compile, rule_cookie,
};
pub use flow::{Diff, Flow, diff};
pub use policy::{Action, Direction, Ipv4Cidr, MAX_RULES, Policy, Protocol, Rule};
pub use ports::PortRange;
