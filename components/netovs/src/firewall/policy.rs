//! The node firewall's declarative policy: what an operator writes (YAML or JSON, camelCase) and
//! the validated [`Policy`] it becomes. Validation errors name the field, as in `rules[3].ports`.
//!
//! Pure data: it never compiles flows and never does I/O. A [`Policy`] can only be built
//! through validation ([`Policy::new`] or deserialization), so compiling one cannot fail.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::Deserialize;

use super::ports::PortRange;
use crate::NetovsError;

/// The most rules a policy may have (each gets an OpenFlow priority of its own in a fixed band).
pub const MAX_RULES: usize = 10_000;

/// What happens to a packet a rule matches (or that no rule matches, for the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it through.
    Allow,
    /// Drop it (silently: OpenFlow cannot answer with a reset).
    Deny,
}

/// Which traffic of the host a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Packets to the host (their source is the remote side).
    In,
    /// Packets from the host (their destination is the remote side).
    Out,
}

/// The IPv4 protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (may have ports).
    Tcp,
    /// UDP (may have ports).
    Udp,
    /// ICMP, every type.
    Icmp,
    /// Every IPv4 packet.
    #[default]
    Any,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Any => "any",
        })
    }
}

/// An IPv4 network `addr/len` with no bits set past the prefix (`10.0.0.0/24`; `/32` is a host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Cidr {
    /// The network `addr/len`; an error when `len > 32` or `addr` has bits past the prefix.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Ipv4Cidr, NetovsError> {
        if len > 32 {
            return Err(NetovsError::Invalid(format!(
                "{addr}/{len}: the prefix length is at most 32"
            )));
        }
        let network = Ipv4Addr::from(u32::from(addr) & prefix_mask(len));
        if network != addr {
            return Err(NetovsError::Invalid(format!(
                "{addr}/{len} has bits set past the /{len} prefix (the network is {network}/{len})"
            )));
        }
        Ok(Ipv4Cidr { addr, len })
    }

    /// The network's first address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length, 0 to 32.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this is `0.0.0.0/0`, every address.
    pub fn is_everything(&self) -> bool {
        self.len == 0
    }
}

/// The netmask of a `/len` prefix, `len <= 32`.
pub(crate) fn prefix_mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

impl fmt::Display for Ipv4Cidr {
    /// Always `addr/len`, also for `/32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = NetovsError;

    /// `10.0.0.0/24`, or an address alone for a single host (`/32`).
    fn from_str(s: &str) -> Result<Ipv4Cidr, NetovsError> {
        let bad = || {
            NetovsError::Invalid(format!(
                "{s:?} is not an IPv4 address or network like 10.0.0.0/24"
            ))
        };
        let (addr, len) = match s.trim().split_once('/') {
            None => (s.trim(), "32"),
            Some(parts) => parts,
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        Ipv4Cidr::new(addr, len)
    }
}

/// One firewall rule. Rules are tried from the highest `priority` down (no priority is 0), and
/// in the order written among equal priorities; the first that matches decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its name, unique in the policy (flows carry a cookie derived from it).
    pub name: String,
    /// Traffic to the host or from it.
    pub direction: Direction,
    /// What to do with a matching packet.
    pub action: Action,
    /// The protocol it matches.
    pub protocol: Protocol,
    /// The destination ports it matches (tcp and udp only): the host's ports for
    /// [`Direction::In`], the remote's for [`Direction::Out`]. `None` is every port.
    pub ports: Option<PortRange>,
    /// The remote side it matches: the source for [`Direction::In`], the destination for
    /// [`Direction::Out`]. `None` is everywhere.
    pub cidr: Option<Ipv4Cidr>,
    /// Its precedence over other rules (higher first); `None` is 0.
    pub priority: Option<u16>,
}

/// A validated firewall policy for the host's IPv4 traffic on a bridge.
///
/// Deserializes (camelCase) from `{default, rules, stateful}`; `stateful` defaults to `true`
/// and `rules` to none. A rule's `ports` is a number or a `"lo-hi"` string, its `cidr` a string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "PolicySpec")]
pub struct Policy {
    default: Action,
    rules: Vec<Rule>,
    stateful: bool,
}

impl Policy {
    /// Validates a policy: rule names non-empty and unique, ports only with tcp or udp, at most
    /// [`MAX_RULES`] rules. The error names the field, e.g. `rules[3].ports: ...`.
    pub fn new(default: Action, rules: Vec<Rule>, stateful: bool) -> Result<Policy, NetovsError> {
        if rules.len() > MAX_RULES {
            return Err(NetovsError::Invalid(format!(
                "rules: {} rules, at most {MAX_RULES}",
                rules.len()
            )));
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, rule) in rules.iter().enumerate() {
            if rule.name.trim().is_empty() {
                return Err(invalid(i, "name", "must not be empty"));
            }
            if let Some(first) = names.insert(&rule.name, i) {
                return Err(invalid(
                    i,
                    "name",
                    &format!("{:?} is also the name of rules[{first}]", rule.name),
                ));
            }
            if rule.ports.is_some() && !matches!(rule.protocol, Protocol::Tcp | Protocol::Udp) {
                return Err(invalid(
                    i,
                    "ports",
                    &format!("ports need protocol tcp or udp, not {}", rule.protocol),
                ));
            }
        }
        Ok(Policy {
            default,
            rules,
            stateful,
        })
    }

    /// What happens to packets no rule matches, in both directions.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// The rules, as written.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether connections are tracked: rules then decide only a connection's first packet, and
    /// the rest of it (replies included) and related ICMP errors pass.
    pub fn stateful(&self) -> bool {
        self.stateful
    }
}

fn invalid(index: usize, field: &str, message: &str) -> NetovsError {
    NetovsError::Invalid(format!("rules[{index}].{field}: {message}"))
}

/// The policy as written, before validation.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicySpec {
    default: Action,
    #[serde(default)]
    rules: Vec<RuleSpec>,
    #[serde(default = "stateful_by_default")]
    stateful: bool,
}

fn stateful_by_default() -> bool {
    true
}

/// A rule as written, before validation.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleSpec {
    name: String,
    direction: Direction,
    action: Action,
    #[serde(default)]
    protocol: Protocol,
    #[serde(default)]
    ports: Option<PortsText>,
    #[serde(default)]
    cidr: Option<String>,
    #[serde(default)]
    priority: Option<u16>,
}

impl TryFrom<PolicySpec> for Policy {
    type Error = NetovsError;

    fn try_from(spec: PolicySpec) -> Result<Policy, NetovsError> {
        let field = |i: usize, name: &str, e: NetovsError| invalid(i, name, &e.to_string());
        let rules = spec
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(Rule {
                    ports: r
                        .ports
                        .map(|p| p.0.parse())
                        .transpose()
                        .map_err(|e| field(i, "ports", e))?,
                    cidr: r
                        .cidr
                        .map(|c| c.parse())
                        .transpose()
                        .map_err(|e| field(i, "cidr", e))?,
                    name: r.name,
                    direction: r.direction,
                    action: r.action,
                    protocol: r.protocol,
                    priority: r.priority,
                })
            })
            .collect::<Result<Vec<Rule>, NetovsError>>()?;
        Policy::new(spec.default, rules, spec.stateful)
    }
}

/// A rule's `ports` as written: a number (`8080`) or a string (`"8080"`, `"8000-8099"`).
struct PortsText(String);

impl<'de> Deserialize<'de> for PortsText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PortsText, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PortsText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a range like \"8000-8099\"")
            }
            fn visit_u64<E>(self, v: u64) -> Result<PortsText, E> {
                Ok(PortsText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<PortsText, E> {
                Ok(PortsText(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<PortsText, E> {
                Ok(PortsText(v.to_owned()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Policy, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    /// The error message of `json` with its rules, before serde's " at line ..." suffix.
    fn error(rules: &str) -> String {
        let json = format!(r#"{{"default":"deny","rules":[{rules}]}}"#);
        let e = parse(&json).unwrap_err();
        e.split(" at line ").next().unwrap().to_owned()
    }

    #[test]
    fn deserializes_camel_case_with_defaults() {
        let p = parse(
            r#"{"default":"deny","rules":[
                {"name":"web","direction":"in","action":"allow","protocol":"tcp","ports":8080},
                {"name":"range","direction":"in","action":"allow","protocol":"udp","ports":"6000-6010","cidr":"10.1.0.0/16","priority":7},
                {"name":"out","direction":"out","action":"allow"}]}"#,
        )
        .unwrap();
        assert_eq!(p.default_action(), Action::Deny);
        assert!(p.stateful());
        let r = p.rules();
        assert_eq!(r[0].ports, Some(PortRange::single(8080)));
        assert_eq!(r[0].priority, None);
        assert_eq!(r[1].ports, Some(PortRange::new(6000, 6010).unwrap()));
        assert_eq!(r[1].cidr.unwrap().to_string(), "10.1.0.0/16");
        assert_eq!(r[1].priority, Some(7));
        assert_eq!(
            (r[2].direction, r[2].protocol),
            (Direction::Out, Protocol::Any)
        );
        let p = parse(r#"{"default":"allow","stateful":false}"#).unwrap();
        assert!(!p.stateful() && p.rules().is_empty());
    }

    #[test]
    fn validation_errors_name_the_rule_and_field() {
        let ok = r#"{"name":"a","direction":"in","action":"allow","protocol":"tcp","ports":22}"#;
        assert_eq!(
            error(&format!(
                r#"{ok},{{"name":"b","direction":"in","action":"allow","protocol":"tcp","ports":"90-80"}}"#
            )),
            "rules[1].ports: 90-80: the first port is above the last"
        );
        assert_eq!(
            error(r#"{"name":"a","direction":"in","action":"allow","protocol":"icmp","ports":7}"#),
            "rules[0].ports: ports need protocol tcp or udp, not icmp"
        );
        assert_eq!(
            error(r#"{"name":"a","direction":"in","action":"allow","ports":7}"#),
            "rules[0].ports: ports need protocol tcp or udp, not any"
        );
        assert_eq!(
            error(&format!(r#"{ok},{ok},{ok}"#).replacen(r#""a""#, r#""z""#, 1)),
            "rules[2].name: \"a\" is also the name of rules[1]"
        );
        assert_eq!(
            error(r#"{"name":" ","direction":"in","action":"allow"}"#),
            "rules[0].name: must not be empty"
        );
        assert_eq!(
            error(r#"{"name":"a","direction":"in","action":"allow","cidr":"10.0.0.1/24"}"#),
            "rules[0].cidr: 10.0.0.1/24 has bits set past the /24 prefix (the network is 10.0.0.0/24)"
        );
        assert_eq!(
            error(r#"{"name":"a","direction":"in","action":"allow","cidr":"10.0.0/8"}"#),
            "rules[0].cidr: \"10.0.0/8\" is not an IPv4 address or network like 10.0.0.0/24"
        );
        assert_eq!(
            error(
                r#"{"name":"a","direction":"in","action":"allow","protocol":"udp","ports":70000}"#
            ),
            "rules[0].ports: \"70000\" is not a port or a range like 8000-8099 (ports are 0 to 65535)"
        );
        let unknown = error(r#"{"name":"a","direction":"in","action":"allow","port":80}"#);
        assert!(unknown.contains("unknown field `port`"), "{unknown}");
        let bad_enum = error(r#"{"name":"a","direction":"sideways","action":"allow"}"#);
        assert!(
            bad_enum.contains("unknown variant `sideways`"),
            "{bad_enum}"
        );
    }

    #[test]
    fn too_many_rules_is_an_error() {
        let rule = |i: usize| Rule {
            name: format!("r{i}"),
            direction: Direction::In,
            action: Action::Allow,
            protocol: Protocol::Any,
            ports: None,
            cidr: None,
            priority: None,
        };
        assert!(Policy::new(Action::Deny, (0..MAX_RULES).map(rule).collect(), true).is_ok());
        let e = Policy::new(Action::Deny, (0..=MAX_RULES).map(rule).collect(), true).unwrap_err();
        assert_eq!(e.to_string(), "rules: 10001 rules, at most 10000");
    }

    #[test]
    fn cidrs_parse_hosts_and_networks() {
        let host: Ipv4Cidr = "10.88.0.2".parse().unwrap();
        assert_eq!(
            (host.addr(), host.prefix_len()),
            (Ipv4Addr::new(10, 88, 0, 2), 32)
        );
        assert!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().is_everything());
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(24), 0xffff_ff00);
        assert_eq!(prefix_mask(32), u32::MAX);
    }
}
