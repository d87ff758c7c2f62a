//! The node network spec (`kind: NodeNetwork`, given to a node with `--network FILE`): the
//! bridges cloudlet owns and keeps true, their uplink NIC and ports, and the node firewall.
//!
//! Pure data with its checks: parsing goes through `cloudlet_spec::parse_config` (errors name
//! the file, the field path and the line), and every semantic rule is checked here, naming the
//! field. It never touches the system.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use serde::Deserialize;

use crate::NetovsError;
use crate::firewall::Policy;

/// Where the Open vSwitch database listens unless the spec says otherwise.
pub const DEFAULT_OVSDB: &str = "unix:/var/run/openvswitch/db.sock";
/// The OpenFlow tables the firewall owns unless the spec says otherwise.
pub const DEFAULT_FIREWALL_TABLES: (u8, u8) = (200, 209);
/// Linux interface names are at most this long.
const IFNAMSIZ: usize = 15;
/// The most bridges a node network declares.
pub const MAX_BRIDGES: usize = 64;
/// The most ports a bridge declares (besides its uplink).
pub const MAX_PORTS: usize = 4096;
/// The most `otherConfig` keys of a bridge, and the longest key or value, in bytes.
pub const MAX_OTHER_CONFIG: usize = 64;
/// The longest `otherConfig` key or value, and `ovsdb`, in bytes.
pub const MAX_TEXT: usize = 4096;
/// The longest an uplink check may take.
pub const MAX_CHECK_TIMEOUT: Duration = Duration::from_secs(600);

/// A node's network: `apiVersion: cloudlet/v1`, `kind: NodeNetwork`, `spec`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    try_from = "NodeNetworkFile"
)]
pub struct NodeNetwork {
    /// The spec.
    pub spec: NetworkSpec,
}

/// `spec` of a [`NodeNetwork`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkSpec {
    /// The OVS database: `unix:PATH` (default `unix:/var/run/openvswitch/db.sock`).
    #[serde(default = "default_ovsdb")]
    pub ovsdb: String,
    /// The bridges cloudlet owns.
    #[serde(default)]
    pub bridges: Vec<BridgeSpec>,
    /// The node firewall, on one of the bridges.
    #[serde(default)]
    pub firewall: Option<FirewallSpec>,
}

fn default_ovsdb() -> String {
    DEFAULT_OVSDB.to_owned()
}

/// One bridge, with the settings Cloudpods' host agent gives it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BridgeSpec {
    /// Its name (also its internal port's and its host interface's).
    pub name: String,
    /// `system` (the kernel datapath, default) or `netdev` (userspace).
    #[serde(default)]
    pub datapath_type: Option<String>,
    /// `standalone` (default: a learning switch without a controller) or `secure`.
    #[serde(default = "standalone")]
    pub fail_mode: String,
    /// Spanning tree (default off).
    #[serde(default)]
    pub stp_enable: bool,
    /// The MTU of the bridge's interface.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The NIC the bridge is attached to, whose addresses and routes move to the bridge.
    #[serde(default)]
    pub uplink: Option<UplinkSpec>,
    /// Ports besides the uplink.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Extra `other_config` keys.
    #[serde(default)]
    pub other_config: BTreeMap<String, String>,
}

fn standalone() -> String {
    "standalone".to_owned()
}

/// The bridge's uplink NIC.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UplinkSpec {
    /// The NIC, e.g. `eth0`.
    pub nic: String,
    /// Move the NIC's IPv4 addresses and routes to the bridge (default true).
    #[serde(default = "yes")]
    pub move_addresses: bool,
    /// Give the bridge the NIC's MAC (`other_config:hwaddr`, default true), as Cloudpods does.
    #[serde(default = "yes")]
    pub hwaddr_from_nic: bool,
    /// What must work after the move, or it is rolled back.
    #[serde(default)]
    pub check: Option<CheckSpec>,
}

fn yes() -> bool {
    true
}

/// A connectivity check: every target given must answer within `timeout`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CheckSpec {
    /// An address that must answer ping.
    #[serde(default)]
    pub ping: Option<Ipv4Addr>,
    /// An address and port that must accept a TCP connection.
    #[serde(default)]
    pub tcp: Option<SocketAddrV4>,
    /// How long the check may take (default 5s).
    #[serde(default = "five_seconds", with = "duration")]
    pub timeout: Duration,
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

/// A port of a bridge.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortSpec {
    /// Its name (and its interface's).
    pub name: String,
    /// `internal` (default: a host interface) or `system` (an existing NIC).
    #[serde(default = "internal", rename = "type")]
    pub kind: String,
    /// Its VLAN tag (an access port), 0 to 4095.
    #[serde(default)]
    pub tag: Option<u16>,
    /// Its interface's MTU.
    #[serde(default)]
    pub mtu: Option<u32>,
}

fn internal() -> String {
    "internal".to_owned()
}

/// The node firewall: a policy on one bridge, in the OpenFlow tables cloudlet owns.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FirewallSpec {
    /// The bridge whose host port it protects.
    pub bridge: String,
    /// The first and last table it owns (default 200 to 209).
    #[serde(default)]
    pub tables: Option<(u8, u8)>,
    /// The policy.
    #[serde(flatten)]
    pub policy: Policy,
}

/// The file as written, before the checks that need the whole of it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NodeNetworkFile {
    api_version: String,
    kind: String,
    spec: NetworkSpec,
}

impl TryFrom<NodeNetworkFile> for NodeNetwork {
    type Error = NetovsError;

    fn try_from(file: NodeNetworkFile) -> Result<NodeNetwork, NetovsError> {
        if file.api_version != "cloudlet/v1" {
            return Err(invalid(
                "apiVersion",
                format!("{:?}: expected cloudlet/v1", file.api_version),
            ));
        }
        if file.kind != "NodeNetwork" {
            return Err(invalid(
                "kind",
                format!("{:?}: expected NodeNetwork", file.kind),
            ));
        }
        check(&file.spec)?;
        Ok(NodeNetwork { spec: file.spec })
    }
}

fn invalid(path: &str, message: String) -> NetovsError {
    NetovsError::Invalid(format!("{path}: {message}"))
}

fn check_ifname(path: &str, name: &str) -> Result<(), NetovsError> {
    let ok = !name.is_empty()
        && name.len() <= IFNAMSIZ
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            format!(
                "{name:?} is not an interface name: 1 to {IFNAMSIZ} letters, digits, '-', '_', '.'"
            ),
        ))
    }
}

fn check_mtu(path: &str, mtu: Option<u32>) -> Result<(), NetovsError> {
    match mtu {
        Some(m) if !(68..=65_535).contains(&m) => {
            Err(invalid(path, format!("{m}: expected 68 to 65535")))
        }
        _ => Ok(()),
    }
}

/// Refuses more than `max` of something.
fn at_most(path: &str, what: &str, count: usize, max: usize) -> Result<(), NetovsError> {
    if count > max {
        return Err(invalid(path, format!("{count} {what}, at most {max}")));
    }
    Ok(())
}

/// The checks that need more than one field.
fn check(spec: &NetworkSpec) -> Result<(), NetovsError> {
    at_most("spec.ovsdb", "bytes", spec.ovsdb.len(), MAX_TEXT)?;
    at_most("spec.bridges", "bridges", spec.bridges.len(), MAX_BRIDGES)?;
    if !spec.ovsdb.starts_with("unix:") && !spec.ovsdb.starts_with("tcp:") {
        return Err(invalid(
            "spec.ovsdb",
            format!("{:?}: expected unix:PATH or tcp:HOST:PORT", spec.ovsdb),
        ));
    }
    let mut names = BTreeSet::new();
    for (b, bridge) in spec.bridges.iter().enumerate() {
        let at = format!("spec.bridges[{b}]");
        check_ifname(&format!("{at}.name"), &bridge.name)?;
        if !names.insert(bridge.name.clone()) {
            return Err(invalid(
                &format!("{at}.name"),
                format!("{:?} is used twice", bridge.name),
            ));
        }
        if let Some(dp) = &bridge.datapath_type
            && !matches!(dp.as_str(), "system" | "netdev")
        {
            return Err(invalid(
                &format!("{at}.datapathType"),
                format!("{dp:?}: expected system or netdev"),
            ));
        }
        if !matches!(bridge.fail_mode.as_str(), "standalone" | "secure") {
            return Err(invalid(
                &format!("{at}.failMode"),
                format!("{:?}: expected standalone or secure", bridge.fail_mode),
            ));
        }
        check_mtu(&format!("{at}.mtu"), bridge.mtu)?;
        at_most(
            &format!("{at}.ports"),
            "ports",
            bridge.ports.len(),
            MAX_PORTS,
        )?;
        let other = &bridge.other_config;
        at_most(
            &format!("{at}.otherConfig"),
            "keys",
            other.len(),
            MAX_OTHER_CONFIG,
        )?;
        for (key, value) in other {
            at_most(
                &format!("{at}.otherConfig.{key}"),
                "bytes",
                key.len().max(value.len()),
                MAX_TEXT,
            )?;
        }
        if let Some(uplink) = &bridge.uplink {
            check_ifname(&format!("{at}.uplink.nic"), &uplink.nic)?;
            if !names.insert(uplink.nic.clone()) {
                return Err(invalid(
                    &format!("{at}.uplink.nic"),
                    format!("{:?} is used twice", uplink.nic),
                ));
            }
            if let Some(c) = &uplink.check {
                if c.ping.is_none() && c.tcp.is_none() {
                    return Err(invalid(
                        &format!("{at}.uplink.check"),
                        "needs ping, tcp or both".to_owned(),
                    ));
                }
                if c.timeout > MAX_CHECK_TIMEOUT || c.timeout.is_zero() {
                    return Err(invalid(
                        &format!("{at}.uplink.check.timeout"),
                        format!(
                            "{:?}: expected more than 0 and at most {}s",
                            c.timeout,
                            MAX_CHECK_TIMEOUT.as_secs()
                        ),
                    ));
                }
            }
        }
        for (p, port) in bridge.ports.iter().enumerate() {
            let at = format!("{at}.ports[{p}]");
            check_ifname(&format!("{at}.name"), &port.name)?;
            if !names.insert(port.name.clone()) {
                return Err(invalid(
                    &format!("{at}.name"),
                    format!("{:?} is used twice", port.name),
                ));
            }
            if !matches!(port.kind.as_str(), "internal" | "system") {
                return Err(invalid(
                    &format!("{at}.type"),
                    format!("{:?}: expected internal or system", port.kind),
                ));
            }
            if port.tag.is_some_and(|t| t > 4095) {
                return Err(invalid(
                    &format!("{at}.tag"),
                    "expected 0 to 4095".to_owned(),
                ));
            }
            check_mtu(&format!("{at}.mtu"), port.mtu)?;
        }
    }
    if let Some(fw) = &spec.firewall {
        if !spec.bridges.iter().any(|b| b.name == fw.bridge) {
            return Err(invalid(
                "spec.firewall.bridge",
                format!("{:?} is not one of spec.bridges", fw.bridge),
            ));
        }
        if let Some((first, last)) = fw.tables
            && first > last
        {
            return Err(invalid(
                "spec.firewall.tables",
                format!("[{first}, {last}]: the first table comes after the last"),
            ));
        }
    }
    Ok(())
}

/// Parses a network spec file.
pub fn parse(file: &str, text: &str) -> Result<NodeNetwork, NetovsError> {
    cloudlet_spec::parse_config(file, text).map_err(|e| NetovsError::Invalid(e.to_string()))
}

/// Durations as the manifests write them (`5s`, `500ms`).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        cloudlet_spec::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
apiVersion: cloudlet/v1
kind: NodeNetwork
spec:
  ovsdb: unix:/run/ovs/db.sock
  bridges:
    - name: br0
      datapathType: netdev
      mtu: 1500
      uplink: {nic: eth0, check: {ping: 10.0.0.254, timeout: 3s}}
      ports:
        - {name: vlan10, tag: 10, mtu: 1400}
  firewall:
    bridge: br0
    default: deny
    rules:
      - {name: ssh, direction: in, action: allow, protocol: tcp, ports: 22}
";

    #[test]
    fn the_example_parses_with_defaults() {
        let net = parse("net.yaml", EXAMPLE).unwrap();
        let br = &net.spec.bridges[0];
        assert_eq!(br.fail_mode, "standalone");
        assert!(!br.stp_enable);
        let up = br.uplink.as_ref().unwrap();
        assert!(up.move_addresses && up.hwaddr_from_nic);
        assert_eq!(up.check.as_ref().unwrap().timeout, Duration::from_secs(3));
        assert_eq!(br.ports[0].kind, "internal");
        assert_eq!(net.spec.firewall.as_ref().unwrap().policy.rules().len(), 1);
    }

    #[test]
    fn counts_are_bounded() {
        let port = "        - {name: p, tag: 1}\n";
        let ports: String = (0..=MAX_PORTS)
            .map(|i| port.replace("name: p", &format!("name: p{i}")))
            .collect();
        let text = EXAMPLE.replace("        - {name: vlan10, tag: 10, mtu: 1400}\n", &ports);
        let err = parse("net.yaml", &text).unwrap_err().to_string();
        assert!(
            err.contains("spec.bridges[0].ports: 4097 ports, at most 4096"),
            "{err}"
        );

        let bridges: String = (0..=MAX_BRIDGES)
            .map(|i| format!("    - name: br{i}\n"))
            .collect();
        let text =
            format!("apiVersion: cloudlet/v1\nkind: NodeNetwork\nspec:\n  bridges:\n{bridges}");
        let err = parse("net.yaml", &text).unwrap_err().to_string();
        assert!(
            err.contains("spec.bridges: 65 bridges, at most 64"),
            "{err}"
        );
    }

    #[test]
    fn mistakes_name_their_field() {
        let cases = [
            (
                EXAMPLE.replace("name: vlan10", "name: a-name-that-is-too-long"),
                "spec.bridges[0].ports[0].name",
            ),
            (
                EXAMPLE.replace("tag: 10", "tag: 5000"),
                "spec.bridges[0].ports[0].tag",
            ),
            (
                EXAMPLE.replace("bridge: br0", "bridge: br9"),
                "spec.firewall.bridge",
            ),
            (
                EXAMPLE.replace("datapathType: netdev", "datapathType: dpdk"),
                "spec.bridges[0].datapathType",
            ),
            (
                EXAMPLE.replace("mtu: 1500", "mtu: 10"),
                "spec.bridges[0].mtu",
            ),
            (EXAMPLE.replace("nic: eth0", "nic: vlan10"), "is used twice"),
            (
                EXAMPLE.replace("kind: NodeNetwork", "kind: Service"),
                "kind",
            ),
            (
                EXAMPLE.replace("datapathType", "dataPathType"),
                "unknown field",
            ),
            (
                EXAMPLE.replace("timeout: 3s", "timeout: 87600h"),
                "spec.bridges[0].uplink.check.timeout",
            ),
            (
                EXAMPLE.replace("timeout: 3s", "timeout: 0s"),
                "spec.bridges[0].uplink.check.timeout",
            ),
            (
                EXAMPLE.replace(
                    "      mtu: 1500\n",
                    &format!(
                        "      mtu: 1500\n      otherConfig: {{k: {}}}\n",
                        "v".repeat(MAX_TEXT + 1)
                    ),
                ),
                "spec.bridges[0].otherConfig.k: 4097 bytes, at most 4096",
            ),
        ];
        for (text, want) in cases {
            let err = parse("net.yaml", &text).unwrap_err().to_string();
            assert!(err.contains(want), "{want:?} not in {err}");
            assert!(err.starts_with("net.yaml"), "{err}");
        }
    }
}
