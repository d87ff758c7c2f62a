//! OpenFlow flows as text, in one canonical form, and the difference between two sets of them.
//!
//! A [`Flow`] reads what `ovs-ofctl dump-flows` prints (with or without statistics) as well as
//! what [`Flow`]'s `Display` writes, and normalizes the match so that the same flow written two
//! ways is equal: protocol shorthands (`tcp` is `dl_type=0x0800,nw_proto=6`), network masks
//! (`10.0.0.0/255.255.255.0` is `10.0.0.0/24`, `/32` is dropped), port masks (decimal or hex),
//! `ct_state` flag order, the defaults `dump-flows` leaves out (`table=0`, `priority=32768`,
//! `cookie=0x0`) and the statistics it adds (`duration`, `n_packets`, `idle_age`, ...).
//! Actions are compared as text: [`super::compile`] writes them the way Open vSwitch prints them.
//!
//! Pure: it never runs `ovs-ofctl`; [`crate::ofctl`] does, with the text this module makes.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::compile::{COOKIE, COOKIE_MASK, Scope};
use crate::NetovsError;

/// The priority of a flow that does not say (OpenFlow's default; `dump-flows` omits it).
const DEFAULT_PRIORITY: u16 = 32768;

/// One OpenFlow flow: where it is (table, priority), whose it is (cookie), what it matches (in
/// canonical form) and what it does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Flow {
    table: u8,
    priority: u16,
    cookie: u64,
    matches: Match,
    actions: String,
}

/// A flow's match, canonical: the protocol apart, other fields in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Match {
    /// `dl_type` and `nw_proto`, printed as a shorthand (`ip`, `tcp`, ...) when there is one.
    proto: Option<(u16, Option<u8>)>,
    /// Every other field, `name[=value]`, sorted by [`field_rank`] then name.
    fields: Vec<(String, Option<String>)>,
}

impl Flow {
    /// The table it is in.
    pub fn table(&self) -> u8 {
        self.table
    }

    /// Its priority (higher matches first).
    pub fn priority(&self) -> u16 {
        self.priority
    }

    /// Its cookie (the firewall's are [`COOKIE`] in the high 32 bits).
    pub fn cookie(&self) -> u64 {
        self.cookie
    }

    /// Its actions, as Open vSwitch prints them.
    pub fn actions(&self) -> &str {
        &self.actions
    }

    /// Its match in canonical form (e.g. `ct_state=+new+trk,tcp,tp_dst=8080`), empty for all.
    pub fn match_text(&self) -> String {
        self.matches.to_string()
    }

    /// What identifies it in its switch: table, priority and match (not cookie or actions).
    fn key(&self) -> (u8, Reverse<u16>, String) {
        (self.table, Reverse(self.priority), self.match_text())
    }

    /// Reads every flow of `ovs-ofctl dump-flows` output, skipping lines that are not flows
    /// (the `NXST_FLOW reply` / `OFPST_FLOW reply` headers, blank lines).
    pub fn parse_dump(text: &str) -> Result<Vec<Flow>, NetovsError> {
        text.lines()
            .filter(|l| find_actions(l).is_some())
            .map(str::parse)
            .collect()
    }
}

impl fmt::Display for Flow {
    /// `table=T,priority=P,cookie=0xC,MATCH actions=ACTIONS`: a flow `ovs-ofctl add-flow` reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "table={},priority={},cookie={:#x}",
            self.table, self.priority, self.cookie
        )?;
        let m = self.match_text();
        if !m.is_empty() {
            write!(f, ",{m}")?;
        }
        write!(f, " actions={}", self.actions)
    }
}

impl FromStr for Flow {
    type Err = NetovsError;

    /// A line of `ovs-ofctl dump-flows` or the `Display` form.
    fn from_str(line: &str) -> Result<Flow, NetovsError> {
        let bad = |reason: String| NetovsError::Flow {
            text: line.trim().to_owned(),
            reason,
        };
        let at = find_actions(line).ok_or_else(|| bad("it has no actions".to_owned()))?;
        let actions = line[at + "actions=".len()..].trim();
        if actions.is_empty() {
            return Err(bad("its actions are empty".to_owned()));
        }
        let mut flow = Flow {
            table: 0,
            priority: DEFAULT_PRIORITY,
            cookie: 0,
            matches: Match::default(),
            actions: actions.to_owned(),
        };
        let mut nw_proto = None;
        let mut fields = Vec::new();
        for token in line[..at].split([',', ' ']).filter(|t| !t.is_empty()) {
            let (name, value) = match token.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (token, None),
            };
            let number = |v: Option<&str>| {
                v.and_then(parse_number)
                    .ok_or_else(|| bad(format!("{token}: not a number")))
            };
            match (canonical_name(name), value) {
                ("table", v) => {
                    flow.table = u8::try_from(number(v)?)
                        .map_err(|_| bad(format!("{token}: not a table")))?;
                }
                ("priority", v) => {
                    flow.priority = u16::try_from(number(v)?)
                        .map_err(|_| bad(format!("{token}: priorities are 0 to 65535")))?;
                }
                ("cookie", v) => flow.cookie = number(v)?,
                ("dl_type", v) => {
                    let t = u16::try_from(number(v)?)
                        .map_err(|_| bad(format!("{token}: not an ethertype")))?;
                    flow.matches.proto = Some((t, flow.matches.proto.and_then(|p| p.1)));
                }
                ("nw_proto", v) => {
                    nw_proto = Some(
                        u8::try_from(number(v)?)
                            .map_err(|_| bad(format!("{token}: not an IP protocol")))?,
                    );
                }
                (name, None) if shorthand(name).is_some() => flow.matches.proto = shorthand(name),
                (name, _) if IGNORED.contains(&name) => {}
                (name, v) => {
                    if let Some(field) = canonical_field(name, v) {
                        fields.push(field);
                    }
                }
            }
        }
        if let Some(p) = nw_proto {
            let t = flow.matches.proto.map_or(0x0800, |(t, _)| t);
            flow.matches.proto = Some((t, Some(p)));
        }
        fields.sort_by(|a, b| (field_rank(&a.0), &a.0).cmp(&(field_rank(&b.0), &b.0)));
        flow.matches.fields = fields;
        Ok(flow)
    }
}

/// Where ` actions=` (or `,actions=`, or a leading `actions=`) starts in a flow's text.
fn find_actions(line: &str) -> Option<usize> {
    line.match_indices("actions=")
        .map(|(i, _)| i)
        .find(|&i| i == 0 || matches!(line.as_bytes()[i - 1], b' ' | b',' | b'\t'))
}

/// What `dump-flows` prints that is not part of a flow's identity or effect on packets.
const IGNORED: &[&str] = &[
    "duration",
    "n_packets",
    "n_bytes",
    "idle_age",
    "hard_age",
    "idle_timeout",
    "hard_timeout",
    "importance",
    "send_flow_rem",
    "check_overlap",
    "reset_counts",
    "no_packet_counts",
    "no_byte_counts",
];

/// The name Open vSwitch prints for a field that has aliases.
fn canonical_name(name: &str) -> &str {
    match name {
        "eth_type" => "dl_type",
        "eth_src" => "dl_src",
        "eth_dst" => "dl_dst",
        "ip_proto" => "nw_proto",
        "ip_src" => "nw_src",
        "ip_dst" => "nw_dst",
        "tcp_src" | "udp_src" | "sctp_src" => "tp_src",
        "tcp_dst" | "udp_dst" | "sctp_dst" => "tp_dst",
        other => other,
    }
}

/// The `(dl_type, nw_proto)` a protocol shorthand stands for.
fn shorthand(name: &str) -> Option<(u16, Option<u8>)> {
    Some(match name {
        "ip" => (0x0800, None),
        "icmp" => (0x0800, Some(1)),
        "tcp" => (0x0800, Some(6)),
        "udp" => (0x0800, Some(17)),
        "sctp" => (0x0800, Some(132)),
        "arp" => (0x0806, None),
        "rarp" => (0x8035, None),
        "ipv6" => (0x86dd, None),
        "tcp6" => (0x86dd, Some(6)),
        "udp6" => (0x86dd, Some(17)),
        "sctp6" => (0x86dd, Some(132)),
        "icmp6" => (0x86dd, Some(58)),
        _ => return None,
    })
}

/// The shorthand of `(dl_type, nw_proto)`, the reverse of [`shorthand`].
fn shorthand_of(proto: (u16, Option<u8>)) -> Option<&'static str> {
    Some(match proto {
        (0x0800, None) => "ip",
        (0x0800, Some(1)) => "icmp",
        (0x0800, Some(6)) => "tcp",
        (0x0800, Some(17)) => "udp",
        (0x0800, Some(132)) => "sctp",
        (0x0806, None) => "arp",
        (0x8035, None) => "rarp",
        (0x86dd, None) => "ipv6",
        (0x86dd, Some(6)) => "tcp6",
        (0x86dd, Some(17)) => "udp6",
        (0x86dd, Some(132)) => "sctp6",
        (0x86dd, Some(58)) => "icmp6",
        _ => return None,
    })
}

/// The order of fields in the canonical form: conntrack and registers, (the protocol,) the
/// port, Ethernet, IP, transport, then anything else; by name within a rank.
fn field_rank(name: &str) -> u8 {
    match name {
        n if n.starts_with("ct_") || n.starts_with("reg") || n == "metadata" => 0,
        "in_port" => 2,
        n if n.starts_with("dl_") || n.starts_with("vlan") => 3,
        "nw_src" => 4,
        "nw_dst" => 5,
        n if n.starts_with("nw_") => 6,
        "tp_src" => 7,
        "tp_dst" => 8,
        _ => 9,
    }
}

/// A field in canonical form, or `None` when its mask makes it match everything.
fn canonical_field(name: &str, value: Option<&str>) -> Option<(String, Option<String>)> {
    let Some(value) = value else {
        return Some((name.to_owned(), None));
    };
    let canonical = match name {
        "nw_src" | "nw_dst" => masked_ipv4(value),
        "tp_src" | "tp_dst" => masked_port(value),
        "ct_state" => Some(Some(ct_state(value))),
        _ => Some(Some(value.to_owned())),
    };
    match canonical {
        // Understood: the canonical value, or nothing when it matches everything.
        Some(v) => v.map(|v| (name.to_owned(), Some(v))),
        // Not understood: kept as written.
        None => Some((name.to_owned(), Some(value.to_owned()))),
    }
}

/// A decimal or `0x` hexadecimal number.
fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `a.b.c.d[/len|/mask]` as `a.b.c.d` (exact), `a.b.c.d/len` or `a.b.c.d/m.m.m.m` (a mask that
/// is no prefix); `Some(None)` when the mask is 0; `None` when it is not IPv4.
fn masked_ipv4(value: &str) -> Option<Option<String>> {
    let (addr, mask) = match value.split_once('/') {
        None => (value, u32::MAX),
        Some((addr, mask)) => {
            let mask = match mask.parse::<u8>() {
                Ok(len) if len <= 32 => super::policy::prefix_mask(len),
                Ok(_) => return None,
                Err(_) => u32::from(mask.parse::<Ipv4Addr>().ok()?),
            };
            (addr, mask)
        }
    };
    let addr = u32::from(addr.parse::<Ipv4Addr>().ok()?) & mask;
    let len = mask.leading_ones();
    Some(match mask {
        0 => None,
        u32::MAX => Some(Ipv4Addr::from(addr).to_string()),
        m if m == super::policy::prefix_mask(u8::try_from(len).ok()?) => {
            Some(format!("{}/{len}", Ipv4Addr::from(addr)))
        }
        m => Some(format!("{}/{}", Ipv4Addr::from(addr), Ipv4Addr::from(m))),
    })
}

/// `port[/mask]` (decimal or hex) as a decimal port (exact) or `0xV/0xM` (how Open vSwitch
/// prints masked ports); `Some(None)` when the mask is 0; `None` when it is not a port.
fn masked_port(value: &str) -> Option<Option<String>> {
    let (v, m) = match value.split_once('/') {
        None => (value, 0xffff),
        Some((v, m)) => (v, u16::try_from(parse_number(m)?).ok()?),
    };
    let v = u16::try_from(parse_number(v)?).ok()? & m;
    Some(match m {
        0 => None,
        0xffff => Some(v.to_string()),
        m => Some(format!("{v:#x}/{m:#x}")),
    })
}

/// `ct_state` flags (`+trk+new`) in bit order, the order Open vSwitch prints (`+new+trk`).
fn ct_state(value: &str) -> String {
    const FLAGS: [&str; 8] = ["new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat"];
    let mut flags: Vec<(usize, char)> = Vec::new();
    let mut rest = value;
    while let Some(sign) = rest.chars().next().filter(|c| matches!(c, '+' | '-')) {
        let end = rest[1..].find(['+', '-']).map_or(rest.len(), |i| i + 1);
        let Some(bit) = FLAGS.iter().position(|f| *f == &rest[1..end]) else {
            return value.to_owned();
        };
        flags.push((bit, sign));
        rest = &rest[end..];
    }
    if !rest.is_empty() {
        return value.to_owned();
    }
    flags.sort_unstable();
    flags.dedup();
    flags
        .iter()
        .map(|(bit, sign)| format!("{sign}{}", FLAGS[*bit]))
        .collect()
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let mut fields = self.fields.iter().peekable();
        while let Some((name, value)) = fields.next_if(|(n, _)| field_rank(n) == 0) {
            parts.push(field_text(name, value.as_deref()));
        }
        if let Some(proto) = self.proto {
            match (shorthand_of(proto), proto) {
                (Some(s), _) => parts.push(s.to_owned()),
                (None, (t, p)) => {
                    parts.push(format!("dl_type={t:#06x}"));
                    if let Some(p) = p {
                        parts.push(format!("nw_proto={p}"));
                    }
                }
            }
        }
        parts.extend(fields.map(|(n, v)| field_text(n, v.as_deref())));
        f.write_str(&parts.join(","))
    }
}

fn field_text(name: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{name}={v}"),
        None => name.to_owned(),
    }
}

/// What to change so that the switch holds exactly the desired flows of a [`Scope`]: the
/// installed flows to delete (strictly: table, priority and match) and the flows to add (an add
/// replaces a flow with the same table, priority and match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Installed flows that are not desired, by table, priority (highest first) and match.
    pub delete: Vec<Flow>,
    /// Desired flows that are not installed as they are, in the same order.
    pub add: Vec<Flow>,
}

impl Diff {
    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.add.is_empty()
    }

    /// The number of flow mods ([`Diff::bundle`]'s lines).
    pub fn len(&self) -> usize {
        self.delete.len() + self.add.len()
    }

    /// The flow mods for `ovs-ofctl --bundle add-flows`, one a line, deletes first:
    /// `delete_strict` lines carry the firewall's cookie under [`COOKIE_MASK`], so that they can
    /// only ever delete the firewall's own flows; `add` lines carry the flow's full cookie.
    pub fn bundle(&self) -> String {
        let mut out = String::new();
        for flow in &self.delete {
            let m = flow.match_text();
            out.push_str(&format!(
                "delete_strict table={},priority={},cookie={COOKIE:#x}/{COOKIE_MASK:#x}{}{m}\n",
                flow.table,
                flow.priority,
                if m.is_empty() { "" } else { "," },
            ));
        }
        for flow in &self.add {
            out.push_str(&format!("add {flow}\n"));
        }
        out
    }
}

/// The difference between the `installed` flows and the `desired` ones. Installed flows the
/// scope does not own (another cookie, or a table other than 0 and its range) are left out, so
/// they can never be deleted; a desired flow the scope does not own is an error.
pub fn diff(scope: &Scope, installed: &[Flow], desired: &[Flow]) -> Result<Diff, NetovsError> {
    if let Some(foreign) = desired.iter().find(|f| !scope.owns(f)) {
        return Err(NetovsError::Flow {
            text: foreign.to_string(),
            reason: format!(
                "the firewall only adds flows with its cookie {COOKIE:#x} in table 0 or {}",
                scope.tables
            ),
        });
    }
    let installed: BTreeMap<_, &Flow> = installed
        .iter()
        .filter(|f| scope.owns(f))
        .map(|f| (f.key(), f))
        .collect();
    let desired: BTreeMap<_, &Flow> = desired.iter().map(|f| (f.key(), f)).collect();
    Ok(Diff {
        delete: installed
            .iter()
            .filter(|(k, _)| !desired.contains_key(*k))
            .map(|(_, f)| (*f).clone())
            .collect(),
        add: desired
            .iter()
            .filter(|(k, f)| installed.get(*k) != Some(*f))
            .map(|(_, f)| (*f).clone())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(s: &str) -> Flow {
        s.parse().unwrap()
    }

    #[test]
    fn dump_lines_with_and_without_statistics_read_the_same() {
        let with_stats = " cookie=0xc10d1e712345678, duration=0.010s, table=203, n_packets=4, \
            n_bytes=296, idle_age=0, priority=40000,ct_state=+new+trk,tcp,nw_src=10.0.0.0/24,\
            tp_dst=0x1f90/0xfff0 actions=ct(commit,zone=7),NORMAL";
        let no_stats = " cookie=0xc10d1e712345678, table=203, priority=40000,ct_state=+new+trk,tcp,\
            nw_src=10.0.0.0/24,tp_dst=0x1f90/0xfff0 actions=ct(commit,zone=7),NORMAL";
        let a = flow(with_stats);
        assert_eq!(a, flow(no_stats));
        assert_eq!(
            (a.table(), a.priority(), a.cookie()),
            (203, 40000, 0xc10d1e712345678)
        );
        assert_eq!(a.actions(), "ct(commit,zone=7),NORMAL");
        assert_eq!(
            a.to_string(),
            "table=203,priority=40000,cookie=0xc10d1e712345678,ct_state=+new+trk,tcp,\
             nw_src=10.0.0.0/24,tp_dst=0x1f90/0xfff0 actions=ct(commit,zone=7),NORMAL"
        );
        // Display reads back as itself.
        assert_eq!(flow(&a.to_string()), a);
    }

    #[test]
    fn defaults_dump_flows_leaves_out_are_filled_in() {
        let f = flow(" priority=0 actions=NORMAL");
        assert_eq!((f.table(), f.priority(), f.cookie()), (0, 0, 0));
        let f = flow(" cookie=0x5, ip actions=drop");
        assert_eq!((f.table(), f.priority(), f.cookie()), (0, 32768, 5));
        assert_eq!(
            f.to_string(),
            "table=0,priority=32768,cookie=0x5,ip actions=drop"
        );
    }

    #[test]
    fn equivalent_matches_normalize_to_one_form() {
        let same = |a: &str, b: &str| {
            let (a, b) = (flow(a), flow(b));
            assert_eq!(a, b, "{a} vs {b}");
        };
        same(
            "priority=5,tcp,tp_dst=80 actions=drop",
            "priority=5,dl_type=0x800,nw_proto=6,tcp_dst=0x50 actions=drop",
        );
        same(
            "priority=5,ip,nw_dst=10.0.0.0/255.255.255.0 actions=drop",
            "priority=5,nw_dst=10.0.0.0/24,eth_type=2048 actions=drop",
        );
        same(
            "priority=5,ip,nw_src=10.0.0.7/32 actions=drop",
            "priority=5,ip,ip_src=10.0.0.7 actions=drop",
        );
        same(
            "priority=5,ct_state=+trk+new,udp,tp_dst=8080/0xfff0 actions=drop",
            "priority=5,udp,ct_state=+new+trk,tp_dst=0x1f90/0xfff0 actions=drop",
        );
        // Masks that match everything are no match at all.
        same(
            "priority=5,tcp,tp_dst=0/0,nw_src=0.0.0.0/0 actions=drop",
            "priority=5,tcp actions=drop",
        );
        assert_ne!(
            flow("priority=5,tcp,tp_dst=80 actions=drop"),
            flow("priority=5,udp,tp_dst=80 actions=drop")
        );
    }

    #[test]
    fn unusual_matches_are_kept() {
        let f = flow(
            "table=3,priority=9,dl_type=0x88cc,in_port=LOCAL,nw_src=10.0.0.0/255.0.255.0,reg0=0x1/0xff,vlan_tci=0x1000/0x1000 actions=drop",
        );
        assert_eq!(
            f.match_text(),
            "reg0=0x1/0xff,dl_type=0x88cc,in_port=LOCAL,vlan_tci=0x1000/0x1000,\
             nw_src=10.0.0.0/255.0.255.0"
        );
        assert_eq!(flow(&f.to_string()), f);
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        let e = "table=x,ip actions=drop".parse::<Flow>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read the flow \"table=x,ip actions=drop\": table=x: not a number"
        );
        assert!("priority=1,ip".parse::<Flow>().is_err());
        assert!("priority=1,ip actions=".parse::<Flow>().is_err());
        assert!("priority=70000,ip actions=drop".parse::<Flow>().is_err());
    }

    #[test]
    fn parse_dump_skips_headers() {
        let dump = "NXST_FLOW reply (xid=0x4):\n cookie=0x0, duration=1.2s, table=0, n_packets=0, \
            n_bytes=0, idle_age=1, priority=0 actions=NORMAL\n\n";
        let flows = Flow::parse_dump(dump).unwrap();
        assert_eq!(flows.len(), 1);
        assert_eq!(
            flows[0].to_string(),
            "table=0,priority=0,cookie=0x0 actions=NORMAL"
        );
    }
}
