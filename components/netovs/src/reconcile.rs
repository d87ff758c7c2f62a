//! Keeps a node's network as its spec says, continuously: the bridges, their settings and
//! declared ports through OVSDB (repairing drift — a port deleted by hand, a setting changed —
//! as soon as the database's monitor reports it), the uplink's addresses moved to its bridge
//! (once, checked, rolled back when the check fails), and the firewall's flows (compared with
//! the bridge's every couple of seconds, only the difference sent).
//!
//! It owns the loop and the decisions of what to repair; it reports every change through the
//! caller's callback and keeps a [`Status`]. It never removes a port it was not told about
//! (guests' NICs live on these bridges too), never touches iptables, and never stops on an
//! error: it says what is wrong and tries again.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::sync::watch;

use crate::NetovsError;
use crate::firewall::{self, HostPort, Scope, TableRange};
use crate::network::{BridgeSpec, DEFAULT_FIREWALL_TABLES, NetworkSpec};
use crate::ofctl::Ofctl;
use crate::ovsdb::vswitch::{self, BridgeSettings, FailMode, PortSettings, State};
use crate::ovsdb::{Client, ClientOptions, Endpoint, Operation};
use crate::run::Runner;
use crate::uplink::{self, Moved};

/// How often the firewall's flows are compared with the bridge's, and a failed step retried.
const TICK: Duration = Duration::from_secs(2);
/// The conntrack zone of the firewall's connections.
const CT_ZONE: u16 = 0xc10;

/// What the reconciler has to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `NetworkConfigured`, `NetworkRepaired`, `UplinkMoved`, `UplinkRolledBack`,
    /// `FirewallApplied`, `FirewallRepaired`, `NetworkError`.
    pub reason: &'static str,
    /// In words.
    pub message: String,
}

/// The network as last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The database endpoint.
    pub ovsdb: String,
    /// Connected to it now.
    pub connected: bool,
    /// The spec's bridges as they are: name, ports, fail mode, datapath type, uplink.
    pub bridges: Vec<BridgeStatus>,
    /// The firewall: bridge, rules, flows installed.
    pub firewall: Option<(String, usize, usize)>,
    /// Repairs of drift since the start.
    pub repairs: u64,
    /// The last repair.
    pub last_repair: Option<String>,
    /// When everything last matched the spec.
    pub reconciled_at: Option<jiff::Timestamp>,
    /// Why it does not, now.
    pub problem: Option<String>,
}

/// One bridge in a [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeStatus {
    /// Its name.
    pub name: String,
    /// Its ports.
    pub ports: Vec<String>,
    /// Its fail mode.
    pub fail_mode: Option<String>,
    /// Its datapath type.
    pub datapath_type: Option<String>,
    /// Its uplink, in words.
    pub uplink: Option<String>,
}

/// What cloudlet sets on a bridge: the spec's settings, and the NIC's MAC when asked for.
fn bridge_settings(bridge: &BridgeSpec, hwaddr: Option<String>) -> BridgeSettings {
    BridgeSettings {
        datapath_type: match bridge.datapath_type.as_deref() {
            Some("netdev") => "netdev".to_owned(),
            _ => String::new(),
        },
        fail_mode: Some(if bridge.fail_mode == "secure" {
            FailMode::Secure
        } else {
            FailMode::Standalone
        }),
        stp_enable: bridge.stp_enable,
        hwaddr,
    }
}

/// What happened to an uplink's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UplinkState {
    /// Not tried yet (the NIC is not on the bridge yet, or this is a new process).
    Pending,
    /// Moved (or nothing to move).
    Moved,
    /// The check failed and everything was moved back: the NIC stays off the bridge until the
    /// next start.
    RolledBack(String),
}

/// Runs until the process ends. `report` gets every change; `status` the state after each
/// round; `runner` runs `ip`, `ping` and `ovs-ofctl`.
pub async fn run(
    spec: NetworkSpec,
    runner: std::sync::Arc<dyn Runner>,
    report: impl Fn(Report) + Send + Sync + 'static,
    status: watch::Sender<Status>,
) {
    let mut r = Reconciler {
        runner,
        uplinks: spec
            .bridges
            .iter()
            .filter(|b| b.uplink.is_some())
            .map(|b| (b.name.clone(), UplinkState::Pending))
            .collect(),
        configured: false,
        firewall_applied: false,
        report: Box::new(report),
        status: status.clone(),
        spec,
    };
    status.send_modify(|s| s.ovsdb = r.spec.ovsdb.clone());
    let endpoint = match Endpoint::from_str(&r.spec.ovsdb) {
        Ok(e) => e,
        Err(e) => {
            r.problem(e.to_string());
            return;
        }
    };
    loop {
        let client = match Client::connect(endpoint.clone(), ClientOptions::default()).await {
            Ok(c) => c,
            Err(e) => {
                r.problem(format!("{e}; retrying"));
                tokio::time::sleep(TICK).await;
                continue;
            }
        };
        if let Err(e) = r.follow(&client).await {
            r.problem(format!("{e}; starting over"));
            tokio::time::sleep(TICK).await;
        }
    }
}

struct Reconciler {
    runner: std::sync::Arc<dyn Runner>,
    spec: NetworkSpec,
    uplinks: BTreeMap<String, UplinkState>,
    configured: bool,
    firewall_applied: bool,
    report: Box<dyn Fn(Report) + Send + Sync>,
    status: watch::Sender<Status>,
}

impl Reconciler {
    fn say(&self, reason: &'static str, message: String) {
        (self.report)(Report { reason, message });
    }

    fn problem(&self, why: String) {
        let changed = self.status.borrow().problem.as_ref() != Some(&why);
        if changed {
            tracing::warn!("network: {why}");
            self.say("NetworkError", why.clone());
        }
        self.status.send_modify(|s| s.problem = Some(why));
    }

    /// Follows the database's monitor (the client reconnects by itself and the monitor then
    /// delivers a fresh snapshot), reconciling after every change and every tick.
    async fn follow(&mut self, client: &Client) -> Result<(), NetovsError> {
        let mut monitor = State::monitor(client).await?;
        let mut state = State::default();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // After a transaction, the state is stale until the monitor reports its result: no
        // round on a tick meanwhile (it would redo what was just done) — for a few ticks at
        // most, so that a transaction the monitor never reports cannot stall the loop.
        let mut awaiting_monitor = 0u8;
        loop {
            tokio::select! {
                event = monitor.next() => {
                    let Some(event) = event else {
                        return Err(NetovsError::Connection("the monitor ended".into()));
                    };
                    state.apply(&event)?;
                    awaiting_monitor = 0;
                    self.status.send_modify(|s| s.connected = true);
                    // A burst of changes (ours, or a tool's) is one round.
                    while let Ok(Some(more)) =
                        tokio::time::timeout(Duration::from_millis(50), monitor.next()).await
                    {
                        state.apply(&more)?;
                    }
                }
                _ = tick.tick() => {
                    if awaiting_monitor > 0 {
                        awaiting_monitor -= 1;
                        continue;
                    }
                }
            }
            match self.round(client, &state).await {
                Ok(changed) => {
                    awaiting_monitor = if changed { 2 } else { 0 };
                    if !changed {
                        self.status.send_modify(|s| {
                            s.problem = None;
                            s.reconciled_at = Some(jiff::Timestamp::now());
                        });
                    }
                }
                Err(e) => self.problem(e.to_string()),
            }
            self.publish(&state);
        }
    }

    /// One round: the database, the uplinks, the firewall. True when it changed the database
    /// (the uplinks and the firewall then wait for the next round, on the monitor's news).
    async fn round(&mut self, client: &Client, state: &State) -> Result<bool, NetovsError> {
        let fixes = self.database(client, state).await?;
        if !fixes.is_empty() {
            let message = fixes.join("; ");
            if self.configured {
                self.status.send_modify(|s| {
                    s.repairs += 1;
                    s.last_repair = Some(message.clone());
                });
                self.say("NetworkRepaired", format!("drift repaired: {message}"));
            } else {
                self.say("NetworkConfigured", message);
            }
            // The monitor brings the result; the uplinks and the firewall follow next round.
            return Ok(true);
        }
        self.configured = true;
        self.move_uplinks(client, state).await?;
        self.firewall(state).await?;
        Ok(false)
    }

    /// The transaction that makes the database match the spec, and what it fixes.
    async fn database(&self, client: &Client, state: &State) -> Result<Vec<String>, NetovsError> {
        let mut ops: Vec<Operation> = Vec::new();
        let mut fixes = Vec::new();
        if state.root.is_none() {
            ops.push(Operation::insert(vswitch::DATABASE, Default::default()));
            fixes.push("database initialized".to_owned());
            client.transact(vswitch::DATABASE, &ops).await?;
            return Ok(fixes);
        }
        for bridge in &self.spec.bridges {
            let hwaddr = match &bridge.uplink {
                Some(up)
                    if up.hwaddr_from_nic
                        && !matches!(
                            self.uplinks.get(&bridge.name),
                            Some(UplinkState::RolledBack(_))
                        ) =>
                {
                    Some(uplink::mac(self.runner.as_ref(), &up.nic).await?)
                }
                _ => None,
            };
            let settings = bridge_settings(bridge, hwaddr);
            let existed = state.bridge(&bridge.name).is_some();
            let bridge_ops = vswitch::ensure_bridge(state, &bridge.name, &settings)?;
            if !bridge_ops.is_empty() {
                fixes.push(if existed {
                    format!("bridge {} settings restored", bridge.name)
                } else {
                    format!("bridge {} created", bridge.name)
                });
                ops.extend(bridge_ops);
                // Its ports need it to exist: the next round adds them.
                continue;
            }
            let mut ports: Vec<(String, PortSettings)> = bridge
                .ports
                .iter()
                .map(|p| {
                    let kind = if p.kind == "system" {
                        ""
                    } else {
                        p.kind.as_str()
                    };
                    (
                        p.name.clone(),
                        PortSettings {
                            kind: kind.to_owned(),
                            tag: p.tag,
                            mtu_request: p.mtu,
                        },
                    )
                })
                .collect();
            if let Some(up) = &bridge.uplink
                && !matches!(
                    self.uplinks.get(&bridge.name),
                    Some(UplinkState::RolledBack(_))
                )
            {
                ports.push((up.nic.clone(), PortSettings::default()));
            }
            for (name, settings) in &ports {
                let had = state.port(name).is_some();
                let port_ops = vswitch::ensure_port(state, &bridge.name, name, settings)?;
                if !port_ops.is_empty() {
                    fixes.push(if had {
                        format!("port {name} of bridge {} restored", bridge.name)
                    } else {
                        format!("port {name} added to bridge {}", bridge.name)
                    });
                    ops.extend(port_ops);
                }
            }
            if let Some(mtu) = bridge.mtu {
                let mtu_ops = vswitch::set_interface_mtu(state, &bridge.name, Some(mtu))?;
                if !mtu_ops.is_empty() {
                    fixes.push(format!("bridge {} mtu set to {mtu}", bridge.name));
                    ops.extend(mtu_ops);
                }
            }
        }
        if !ops.is_empty() {
            client.transact(vswitch::DATABASE, &ops).await?;
        }
        Ok(fixes)
    }

    /// Moves each uplink's addresses once its NIC is on the bridge; a failed check puts
    /// everything back and takes the NIC off the bridge.
    async fn move_uplinks(&mut self, client: &Client, state: &State) -> Result<(), NetovsError> {
        for bridge in self.spec.bridges.clone() {
            let Some(up) = &bridge.uplink else { continue };
            if self.uplinks.get(&bridge.name) != Some(&UplinkState::Pending) {
                continue;
            }
            if !up.move_addresses {
                self.uplinks.insert(bridge.name.clone(), UplinkState::Moved);
                continue;
            }
            let moved = uplink::move_to_bridge(
                self.runner.as_ref(),
                &up.nic,
                &bridge.name,
                up.check.as_ref(),
            )
            .await?;
            match moved {
                Moved::Nothing => {
                    self.uplinks.insert(bridge.name.clone(), UplinkState::Moved);
                }
                Moved::Done(what) => {
                    let addrs: Vec<&str> = what.addresses.iter().map(|a| a.cidr.as_str()).collect();
                    self.say(
                        "UplinkMoved",
                        format!(
                            "{} moved from {} to bridge {} ({} routes); the check passed",
                            addrs.join(", "),
                            up.nic,
                            bridge.name,
                            what.routes.len()
                        ),
                    );
                    self.uplinks.insert(bridge.name.clone(), UplinkState::Moved);
                }
                Moved::RolledBack(why) => {
                    let ops = vswitch::delete_port(state, &up.nic);
                    client.transact(vswitch::DATABASE, &ops).await?;
                    self.say(
                        "UplinkRolledBack",
                        format!(
                            "moving {}'s addresses to bridge {} failed its check ({why}): moved \
                             back and {} taken off the bridge; fix the check or the network and \
                             restart cloudlet to try again",
                            up.nic, bridge.name, up.nic
                        ),
                    );
                    self.uplinks
                        .insert(bridge.name.clone(), UplinkState::RolledBack(why));
                }
            }
        }
        Ok(())
    }

    /// The firewall's flows, compared with the bridge's; only the difference is sent.
    async fn firewall(&mut self, state: &State) -> Result<(), NetovsError> {
        let Some(fw) = &self.spec.firewall else {
            return Ok(());
        };
        if state.bridge(&fw.bridge).is_none() {
            return Ok(());
        }
        let (first, last) = fw.tables.unwrap_or(DEFAULT_FIREWALL_TABLES);
        let host_addrs = uplink::addressing(self.runner.as_ref(), &fw.bridge)
            .await?
            .addresses
            .iter()
            .filter_map(|a| a.cidr.split('/').next()?.parse::<Ipv4Addr>().ok())
            .collect();
        let scope = Scope {
            host_port: HostPort::Local,
            host_addrs,
            tables: TableRange::new(first..=last)?,
            ct_zone: CT_ZONE,
        };
        let desired = firewall::compile(&fw.policy, &scope);
        let ofctl = Ofctl::new(
            format!(
                "unix:{}",
                self.rundir().join(format!("{}.mgmt", fw.bridge)).display()
            ),
            std::sync::Arc::clone(&self.runner),
        );
        let diff = ofctl.sync(&scope, &desired).await?;
        if !diff.is_empty() {
            let what = format!(
                "{} flows added, {} removed on bridge {} ({} rules)",
                diff.add.len(),
                diff.delete.len(),
                fw.bridge,
                fw.policy.rules().len()
            );
            if self.firewall_applied {
                self.status.send_modify(|s| {
                    s.repairs += 1;
                    s.last_repair = Some(format!("firewall: {what}"));
                });
                self.say("FirewallRepaired", format!("drift repaired: {what}"));
            } else {
                self.say("FirewallApplied", what);
            }
        }
        self.firewall_applied = true;
        let flows = desired.len();
        let rules = fw.policy.rules().len();
        let bridge = fw.bridge.clone();
        self.status
            .send_modify(|s| s.firewall = Some((bridge, rules, flows)));
        Ok(())
    }

    /// Where the switch keeps its management sockets: next to the database's socket.
    fn rundir(&self) -> PathBuf {
        self.spec
            .ovsdb
            .strip_prefix("unix:")
            .and_then(|p| std::path::Path::new(p).parent())
            .map_or_else(
                || PathBuf::from("/var/run/openvswitch"),
                std::path::Path::to_path_buf,
            )
    }

    fn publish(&self, state: &State) {
        let bridges = self
            .spec
            .bridges
            .iter()
            .map(|spec| {
                let found = state.bridge(&spec.name);
                let mut ports: Vec<String> = found
                    .map(|b| state.ports_of(b).map(|p| p.name.clone()).collect())
                    .unwrap_or_default();
                ports.sort();
                BridgeStatus {
                    name: spec.name.clone(),
                    ports,
                    fail_mode: found.map(|b| {
                        b.fail_mode
                            .unwrap_or(FailMode::Standalone)
                            .as_str()
                            .to_owned()
                    }),
                    datapath_type: found.map(|b| {
                        if b.datapath_type.is_empty() {
                            "system".to_owned()
                        } else {
                            b.datapath_type.clone()
                        }
                    }),
                    uplink: spec
                        .uplink
                        .as_ref()
                        .map(|u| match self.uplinks.get(&spec.name) {
                            Some(UplinkState::Moved) => format!("{} (addresses moved)", u.nic),
                            Some(UplinkState::RolledBack(why)) => {
                                format!("{} (rolled back: {why})", u.nic)
                            }
                            _ => format!("{} (pending)", u.nic),
                        }),
                }
            })
            .collect();
        self.status.send_modify(|s| s.bridges = bridges);
    }
}
