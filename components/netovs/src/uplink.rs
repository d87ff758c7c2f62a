//! Moving a NIC's IPv4 addresses and routes to its bridge, checking that the host still reaches
//! what it must, and moving them back when it does not.
//!
//! It speaks to the kernel through iproute2 (`ip -json` to read, `ip -batch` to change: one
//! process applies the whole move, stopping at the first failure, which is then undone), as every
//! node has it and no maintained netlink crate gives a multi-step change a better guarantee. It
//! never touches a NIC or bridge other than the two it is given, and never iptables.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::NetovsError;
use crate::network::CheckSpec;
use crate::run::{Job, Runner};

/// An IPv4 address of an interface, as `ip addr` takes it back: `10.0.0.2/24`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// `addr/prefix`.
    pub cidr: String,
}

/// A route through an interface that the kernel did not make for an address (those come back
/// with the address): `default via 10.0.0.1`, `10.1.0.0/16 via 10.0.0.9 metric 5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `ip route` arguments without the device.
    pub spec: String,
}

/// What an interface has: its addresses and its own routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addressing {
    /// IPv4 addresses.
    pub addresses: Vec<Address>,
    /// Routes through it, other than the kernel's.
    pub routes: Vec<Route>,
}

#[derive(Deserialize)]
struct IpLink {
    #[serde(default)]
    addr_info: Vec<IpAddr>,
}

#[derive(Deserialize)]
struct IpAddr {
    family: String,
    local: String,
    prefixlen: u8,
}

#[derive(Deserialize)]
struct IpRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    metric: Option<u32>,
}

async fn ip(runner: &dyn Runner, args: &[&str]) -> Result<String, NetovsError> {
    let out = runner
        .run(Job::new("ip", args))
        .await
        .map_err(|e| NetovsError::Ip {
            args: args.join(" "),
            message: format!("cannot run ip: {e}"),
        })?;
    if !out.status.success() {
        return Err(NetovsError::Ip {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, json: &str) -> Result<T, NetovsError> {
    serde_json::from_str(json).map_err(|e| NetovsError::Ip {
        args: what.to_owned(),
        message: format!("unreadable output: {e}"),
    })
}

/// The IPv4 addresses and non-kernel routes of `dev`.
pub async fn addressing(runner: &dyn Runner, dev: &str) -> Result<Addressing, NetovsError> {
    let links: Vec<IpLink> = decode(
        "-json -4 addr show",
        &ip(runner, &["-json", "-4", "addr", "show", "dev", dev]).await?,
    )?;
    let addresses = links
        .iter()
        .flat_map(|l| &l.addr_info)
        .filter(|a| a.family == "inet")
        .map(|a| Address {
            cidr: format!("{}/{}", a.local, a.prefixlen),
        })
        .collect();
    let routes: Vec<IpRoute> = decode(
        "-json -4 route show",
        &ip(runner, &["-json", "-4", "route", "show", "dev", dev]).await?,
    )?;
    let routes = routes
        .into_iter()
        .filter(|r| r.protocol.as_deref() != Some("kernel"))
        .map(|r| {
            let mut spec = r.dst;
            if let Some(gw) = r.gateway {
                spec.push_str(&format!(" via {gw}"));
            }
            if let Some(m) = r.metric {
                spec.push_str(&format!(" metric {m}"));
            }
            Route { spec }
        })
        .collect();
    Ok(Addressing { addresses, routes })
}

#[derive(Deserialize)]
struct IpLinkAddress {
    #[serde(default)]
    address: Option<String>,
}

/// The MAC address of `dev`, as the kernel of this process's network namespace has it (never
/// from `/sys`, which shows the namespace that mounted it).
pub async fn mac(runner: &dyn Runner, dev: &str) -> Result<String, NetovsError> {
    let links: Vec<IpLinkAddress> = decode(
        "-json link show",
        &ip(runner, &["-json", "link", "show", "dev", dev]).await?,
    )?;
    links
        .into_iter()
        .find_map(|l| l.address)
        .ok_or_else(|| NetovsError::Ip {
            args: format!("-json link show dev {dev}"),
            message: "no MAC address in the answer".to_owned(),
        })
}

/// The `ip -batch` lines that move `what` from `from` to `to` (addresses first, then the routes,
/// which need the addresses).
fn move_lines(what: &Addressing, from: &str, to: &str) -> Vec<String> {
    let mut lines = vec![format!("link set dev {to} up")];
    for a in &what.addresses {
        lines.push(format!("address del {} dev {from}", a.cidr));
        lines.push(format!("address add {} dev {to}", a.cidr));
    }
    for r in &what.routes {
        lines.push(format!("route replace {} dev {to}", r.spec));
    }
    lines
}

async fn batch(runner: &dyn Runner, lines: &[String]) -> Result<(), NetovsError> {
    let mut job = Job::new("ip", &["-batch", "-"]);
    job.input = Some(lines.join("\n") + "\n");
    let out = runner.run(job).await.map_err(|e| NetovsError::Ip {
        args: "-batch -".to_owned(),
        message: format!("cannot run ip: {e}"),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetovsError::Ip {
            args: format!("-batch - ({})", lines.join("; ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// How a move ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// The NIC had no IPv4 address: nothing to move.
    Nothing,
    /// Moved, and the check passed (or there was none).
    Done(Addressing),
    /// Moved, the check failed, and everything was moved back: why.
    RolledBack(String),
}

/// Moves `nic`'s addresses and routes to `bridge`, runs `check`, and moves them back if it
/// fails. An error means the move itself failed (and was undone as far as it went).
pub async fn move_to_bridge(
    runner: &dyn Runner,
    nic: &str,
    bridge: &str,
    check: Option<&CheckSpec>,
) -> Result<Moved, NetovsError> {
    let what = addressing(runner, nic).await?;
    if what.addresses.is_empty() {
        return Ok(Moved::Nothing);
    }
    if let Err(e) = batch(runner, &move_lines(&what, nic, bridge)).await {
        undo(runner, &what, nic, bridge).await;
        return Err(e);
    }
    let Some(check) = check else {
        return Ok(Moved::Done(what));
    };
    match connectivity(runner, check).await {
        Ok(()) => Ok(Moved::Done(what)),
        Err(why) => {
            undo(runner, &what, nic, bridge).await;
            Ok(Moved::RolledBack(why))
        }
    }
}

/// Moves everything back, one line at a time so that a line that fails (because the forward
/// move never got that far) does not stop the others.
async fn undo(runner: &dyn Runner, what: &Addressing, nic: &str, bridge: &str) {
    for line in move_lines(what, bridge, nic).iter().skip(1) {
        if let Err(e) = batch(runner, std::slice::from_ref(line)).await {
            tracing::debug!("uplink rollback: {e}");
        }
    }
}

/// Whether every target of `check` answers within its timeout.
pub async fn connectivity(runner: &dyn Runner, check: &CheckSpec) -> Result<(), String> {
    let deadline = Instant::now() + check.timeout;
    if let Some(addr) = check.ping {
        ping(runner, addr, deadline).await?;
    }
    if let Some(addr) = check.tcp {
        tcp(addr, deadline).await?;
    }
    Ok(())
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

async fn ping(runner: &dyn Runner, addr: Ipv4Addr, deadline: Instant) -> Result<(), String> {
    // One probe a second until the deadline: the first packets after a move may meet an ARP
    // cache that still points at the old interface.
    let target = addr.to_string();
    while !left(deadline).is_zero() {
        let answered = runner
            .run(Job::new(
                "ping",
                &["-c", "1", "-W", "1", "-n", "-q", &target],
            ))
            .await
            .map_err(|e| format!("cannot run ping: {e}"))?
            .status
            .success();
        if answered {
            return Ok(());
        }
    }
    Err(format!("{addr} did not answer ping"))
}

async fn tcp(addr: SocketAddrV4, deadline: Instant) -> Result<(), String> {
    loop {
        let wait = left(deadline);
        if wait.is_zero() {
            return Err(format!("{addr} did not accept a TCP connection"));
        }
        let attempt = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(_)) = tokio::time::timeout(wait.min(Duration::from_secs(1)), attempt).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100).min(left(deadline))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_brings_the_bridge_up_then_moves_addresses_before_routes() {
        let what = Addressing {
            addresses: vec![Address {
                cidr: "10.0.0.2/24".into(),
            }],
            routes: vec![Route {
                spec: "default via 10.0.0.1".into(),
            }],
        };
        assert_eq!(
            move_lines(&what, "eth0", "br0"),
            [
                "link set dev br0 up",
                "address del 10.0.0.2/24 dev eth0",
                "address add 10.0.0.2/24 dev br0",
                "route replace default via 10.0.0.1 dev br0",
            ]
        );
    }
}
