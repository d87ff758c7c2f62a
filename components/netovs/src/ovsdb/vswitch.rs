//! Typed access to the `Open_vSwitch` database (`vswitch.ovsschema`): the root row, bridges,
//! ports and interfaces as plain structs ([`State`]), and builders for the changes cloudlet
//! makes to them.
//!
//! Owns: which columns cloudlet reads and writes and how they decode, and the operations that
//! make a bridge, port or interface what the caller wants. Builders are pure functions of a
//! [`State`] (from [`State::read`] or kept current from [`State::monitor`]): they return the
//! operations that close the gap, none when nothing differs, for the caller to combine into one
//! transaction. They use commutative forms where the schema allows (`mutate` to add to or take
//! from a set or map) so a concurrent writer's other changes survive; where a change must rest
//! on what was read, add the row's guard ([`Bridge::unchanged`] and alike) to the transaction.
//! Must never: write a column or key it does not manage (other `other_config` keys are left
//! alone), delete rows other than by unreferencing them (the schema's garbage collection removes
//! a bridge's ports and a port's interfaces with it, as `ovs-vsctl` relies on), or run
//! `ovs-vsctl`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{
    Atom, Client, Condition, Datum, Monitor, MonitorEvent, MonitorRequest, Mutation, Mutator,
    Operation, Row, Uuid,
};
use crate::NetovsError;

/// The database's name.
pub const DATABASE: &str = "Open_vSwitch";

/// The tables [`State`] holds and the columns it reads from each.
const TABLES: [(&str, &[&str]); 4] = [
    ("Open_vSwitch", &["_version", "bridges", "external_ids"]),
    (
        "Bridge",
        &[
            "_version",
            "name",
            "ports",
            "datapath_type",
            "fail_mode",
            "stp_enable",
            "other_config",
            "external_ids",
        ],
    ),
    (
        "Port",
        &[
            "_version",
            "name",
            "interfaces",
            "tag",
            "other_config",
            "external_ids",
        ],
    ),
    (
        "Interface",
        &[
            "_version",
            "name",
            "type",
            "mtu_request",
            "mac_in_use",
            "ofport",
            "external_ids",
            "admin_state",
            "link_state",
        ],
    ),
];

/// The root row, of which there is exactly one once the database is initialized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenVswitch {
    /// The row's UUID.
    pub uuid: Uuid,
    /// The row's `_version`.
    pub version: Uuid,
    /// The bridges.
    pub bridges: Vec<Uuid>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
}

/// What a bridge does when it has no OpenFlow controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Forward like a learning switch.
    Standalone,
    /// Forward only by the flows it was given (what a firewall of OpenFlow rules needs).
    Secure,
}

impl FailMode {
    /// The schema's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Secure => "secure",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "standalone" => Some(Self::Standalone),
            "secure" => Some(Self::Secure),
            _ => None,
        }
    }
}

/// A `Bridge` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// The row's UUID.
    pub uuid: Uuid,
    /// The row's `_version`.
    pub version: Uuid,
    /// The name.
    pub name: String,
    /// Its ports, including its own internal port.
    pub ports: Vec<Uuid>,
    /// `""` (the kernel datapath, `system`) or `netdev` (userspace).
    pub datapath_type: String,
    /// Unset means standalone.
    pub fail_mode: Option<FailMode>,
    /// Spanning tree.
    pub stp_enable: bool,
    /// `other_config` (`hwaddr`, `disable-in-band`, ...).
    pub other_config: BTreeMap<String, String>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
}

impl Bridge {
    /// A guard: the transaction fails if this row changed since it was read.
    pub fn unchanged(&self) -> Operation {
        Operation::unchanged("Bridge", &self.uuid, &self.version)
    }
}

/// A `Port` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The row's UUID.
    pub uuid: Uuid,
    /// The row's `_version`.
    pub version: Uuid,
    /// The name.
    pub name: String,
    /// Its interfaces (one, unless a bond).
    pub interfaces: Vec<Uuid>,
    /// The access VLAN, if any.
    pub tag: Option<u16>,
    /// `other_config`.
    pub other_config: BTreeMap<String, String>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
}

impl Port {
    /// A guard: the transaction fails if this row changed since it was read.
    pub fn unchanged(&self) -> Operation {
        Operation::unchanged("Port", &self.uuid, &self.version)
    }
}

/// An `Interface` row. The columns after `mtu_request` are written by `ovs-vswitchd`, and are
/// empty while it does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The row's UUID.
    pub uuid: Uuid,
    /// The row's `_version`.
    pub version: Uuid,
    /// The name.
    pub name: String,
    /// The `type`: `""` for a system device, `internal`, `patch`, `vxlan`, ...
    pub kind: String,
    /// The MTU asked for.
    pub mtu_request: Option<u32>,
    /// The MAC address in use.
    pub mac_in_use: Option<String>,
    /// The OpenFlow port number (-1 when it failed to attach).
    pub ofport: Option<i64>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// `up` or `down`, as configured.
    pub admin_state: Option<String>,
    /// `up` or `down`, as the link is.
    pub link_state: Option<String>,
}

impl Interface {
    /// A guard: the transaction fails if this row changed since it was read.
    pub fn unchanged(&self) -> Operation {
        Operation::unchanged("Interface", &self.uuid, &self.version)
    }
}

/// The part of the database cloudlet works with, as of one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The root row (`None` until the database is initialized).
    pub root: Option<OpenVswitch>,
    /// Bridges by UUID.
    pub bridges: BTreeMap<Uuid, Bridge>,
    /// Ports by UUID.
    pub ports: BTreeMap<Uuid, Port>,
    /// Interfaces by UUID.
    pub interfaces: BTreeMap<Uuid, Interface>,
}

impl State {
    /// Reads the current state, in one transaction (so it is consistent).
    pub async fn read(client: &Client) -> Result<Self, NetovsError> {
        let selects: Vec<Operation> = TABLES
            .iter()
            .map(|(table, columns)| Operation::Select {
                table: (*table).to_owned(),
                conditions: Vec::new(),
                columns: Some(
                    std::iter::once("_uuid")
                        .chain(columns.iter().copied())
                        .map(str::to_owned)
                        .collect(),
                ),
            })
            .collect();
        let results = client.transact(DATABASE, &selects).await?;
        let mut state = Self::default();
        for ((table, _), result) in TABLES.iter().zip(&results) {
            for row in result.rows().unwrap_or_default() {
                let uuid = Columns { table, row }.required("_uuid", |a| a.as_uuid().cloned())?;
                state.upsert(table, uuid, row)?;
            }
        }
        Ok(state)
    }

    /// Monitors the rows [`State`] holds; feed its events to [`State::apply`].
    pub async fn monitor(client: &Client) -> Result<Monitor, NetovsError> {
        let requests = TABLES.map(|(table, columns)| MonitorRequest::new(table, columns));
        client.monitor(DATABASE, &requests).await
    }

    /// Brings the state up to date with a monitor's event: a snapshot replaces it, an update
    /// changes it. After an error (a row that does not decode) the state is incomplete: read it
    /// again.
    pub fn apply(&mut self, event: &MonitorEvent) -> Result<(), NetovsError> {
        let updates = match event {
            MonitorEvent::Snapshot { rows, .. } => {
                *self = Self::default();
                rows
            }
            MonitorEvent::Update(updates) => updates,
        };
        for (table, rows) in updates {
            for (uuid, update) in rows {
                match &update.new {
                    Some(row) => self.upsert(table, uuid.clone(), row)?,
                    None => self.remove(table, uuid),
                }
            }
        }
        Ok(())
    }

    /// The bridge named `name`.
    pub fn bridge(&self, name: &str) -> Option<&Bridge> {
        self.bridges.values().find(|b| b.name == name)
    }

    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&Port> {
        self.ports.values().find(|p| p.name == name)
    }

    /// The interface named `name`.
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.values().find(|i| i.name == name)
    }

    /// The ports of `bridge`.
    pub fn ports_of<'a>(&'a self, bridge: &'a Bridge) -> impl Iterator<Item = &'a Port> {
        bridge.ports.iter().filter_map(|uuid| self.ports.get(uuid))
    }

    /// The interfaces of `port`.
    pub fn interfaces_of<'a>(&'a self, port: &'a Port) -> impl Iterator<Item = &'a Interface> {
        port.interfaces
            .iter()
            .filter_map(|uuid| self.interfaces.get(uuid))
    }

    fn upsert(&mut self, table: &str, uuid: Uuid, row: &Row) -> Result<(), NetovsError> {
        match table {
            "Open_vSwitch" => self.root = Some(decode_root(uuid, row)?),
            "Bridge" => {
                self.bridges.insert(uuid.clone(), decode_bridge(uuid, row)?);
            }
            "Port" => {
                self.ports.insert(uuid.clone(), decode_port(uuid, row)?);
            }
            "Interface" => {
                self.interfaces
                    .insert(uuid.clone(), decode_interface(uuid, row)?);
            }
            _ => {}
        }
        Ok(())
    }

    fn remove(&mut self, table: &str, uuid: &Uuid) {
        match table {
            "Open_vSwitch" => self.root = self.root.take().filter(|root| root.uuid != *uuid),
            "Bridge" => {
                self.bridges.remove(uuid);
            }
            "Port" => {
                self.ports.remove(uuid);
            }
            "Interface" => {
                self.interfaces.remove(uuid);
            }
            _ => {}
        }
    }
}

/// What cloudlet manages of a bridge. `Default` is what a new bridge gets from OVS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeSettings {
    /// `""` (the kernel datapath) or `netdev` (userspace).
    pub datapath_type: String,
    /// `None` leaves it unset (standalone).
    pub fail_mode: Option<FailMode>,
    /// Spanning tree.
    pub stp_enable: bool,
    /// `other_config:hwaddr`, the bridge's MAC address; `None` removes the key.
    pub hwaddr: Option<String>,
}

/// What cloudlet manages of a port with one interface of the same name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSettings {
    /// The interface's `type`: `""` for an existing system device, `internal` for one OVS
    /// creates.
    pub kind: String,
    /// The access VLAN; `None` for none.
    pub tag: Option<u16>,
    /// The MTU to ask for; `None` leaves it to OVS.
    pub mtu_request: Option<u32>,
}

/// Makes bridge `name` exist with `settings`. A new bridge gets its own internal port and
/// interface of the same name and is added to the root row's `bridges`, as `ovs-vsctl add-br`
/// does; an existing one gets only the columns that differ.
pub fn ensure_bridge(
    state: &State,
    name: &str,
    settings: &BridgeSettings,
) -> Result<Vec<Operation>, NetovsError> {
    let Some(bridge) = state.bridge(name) else {
        return create_bridge(state, name, settings);
    };
    let mut row = Row::new();
    if bridge.datapath_type != settings.datapath_type {
        row.insert("datapath_type", settings.datapath_type.as_str());
    }
    if bridge.fail_mode != settings.fail_mode {
        row.insert(
            "fail_mode",
            Datum::optional(settings.fail_mode.map(FailMode::as_str)),
        );
    }
    if bridge.stp_enable != settings.stp_enable {
        row.insert("stp_enable", settings.stp_enable);
    }
    let mut ops = Vec::new();
    if !row.is_empty() {
        ops.push(Operation::update(
            "Bridge",
            vec![Condition::uuid(&bridge.uuid)],
            row,
        ));
    }
    if bridge.other_config.get("hwaddr") != settings.hwaddr.as_ref() {
        ops.push(set_map_key(
            "Bridge",
            &bridge.uuid,
            "other_config",
            "hwaddr",
            settings.hwaddr.as_deref(),
        ));
    }
    Ok(ops)
}

fn create_bridge(
    state: &State,
    name: &str,
    settings: &BridgeSettings,
) -> Result<Vec<Operation>, NetovsError> {
    let root = state
        .root
        .as_ref()
        .ok_or_else(|| not_found(DATABASE, "."))?;
    let (interface, port, bridge) = (
        row_name("interface", name),
        row_name("port", name),
        row_name("bridge", name),
    );
    let row = Row::new()
        .with("name", name)
        .with("ports", Datum::named_uuid(&port))
        .with("datapath_type", settings.datapath_type.as_str())
        .with(
            "fail_mode",
            Datum::optional(settings.fail_mode.map(FailMode::as_str)),
        )
        .with("stp_enable", settings.stp_enable)
        .with(
            "other_config",
            Datum::map(settings.hwaddr.as_deref().map(|mac| ("hwaddr", mac))),
        );
    Ok(vec![
        Operation::insert_named(
            "Interface",
            &interface,
            Row::new().with("name", name).with("type", "internal"),
        ),
        Operation::insert_named(
            "Port",
            &port,
            Row::new()
                .with("name", name)
                .with("interfaces", Datum::named_uuid(&interface)),
        ),
        Operation::insert_named("Bridge", &bridge, row),
        Operation::mutate(
            DATABASE,
            vec![Condition::uuid(&root.uuid)],
            vec![Mutation::new(
                "bridges",
                Mutator::Insert,
                Datum::named_uuid(&bridge),
            )],
        ),
    ])
}

/// Removes bridge `name` (its ports and interfaces go with it). Nothing if there is none.
pub fn delete_bridge(state: &State, name: &str) -> Vec<Operation> {
    let Some(bridge) = state.bridge(name) else {
        return Vec::new();
    };
    vec![Operation::mutate(
        DATABASE,
        Vec::new(),
        vec![Mutation::new(
            "bridges",
            Mutator::Delete,
            bridge.uuid.clone(),
        )],
    )]
}

/// Makes port `name`, with one interface also named `name`, exist on bridge `bridge` with
/// `settings`: a new port is created, one on another bridge is moved, and an existing one gets
/// only the columns that differ. Fails if the bridge does not exist, or if the port exists
/// without an interface of its name (a bond).
pub fn ensure_port(
    state: &State,
    bridge: &str,
    name: &str,
    settings: &PortSettings,
) -> Result<Vec<Operation>, NetovsError> {
    let target = state
        .bridge(bridge)
        .ok_or_else(|| not_found("Bridge", bridge))?;
    let tag = Datum::optional(settings.tag.map(i64::from));
    let mtu_request = Datum::optional(settings.mtu_request.map(i64::from));
    let Some(port) = state.port(name) else {
        let (interface, port) = (row_name("interface", name), row_name("port", name));
        let interface_row = Row::new()
            .with("name", name)
            .with("type", settings.kind.as_str())
            .with("mtu_request", mtu_request);
        let port_row = Row::new()
            .with("name", name)
            .with("interfaces", Datum::named_uuid(&interface))
            .with("tag", tag);
        return Ok(vec![
            Operation::insert_named("Interface", &interface, interface_row),
            Operation::insert_named("Port", &port, port_row),
            Operation::mutate(
                "Bridge",
                vec![Condition::uuid(&target.uuid)],
                vec![Mutation::new(
                    "ports",
                    Mutator::Insert,
                    Datum::named_uuid(&port),
                )],
            ),
        ]);
    };
    let interface = state
        .interfaces_of(port)
        .find(|i| i.name == name)
        .ok_or_else(|| not_found("Interface", name))?;

    let mut ops = Vec::new();
    // Taking it from one bridge and giving it to another in one transaction keeps the row:
    // unreferenced rows are collected only at commit.
    for owner in state
        .bridges
        .values()
        .filter(|b| b.uuid != target.uuid && b.ports.contains(&port.uuid))
    {
        ops.push(remove_port(owner, &port.uuid));
    }
    if !target.ports.contains(&port.uuid) {
        ops.push(Operation::mutate(
            "Bridge",
            vec![Condition::uuid(&target.uuid)],
            vec![Mutation::new("ports", Mutator::Insert, port.uuid.clone())],
        ));
    }
    if port.tag != settings.tag {
        ops.push(Operation::update(
            "Port",
            vec![Condition::uuid(&port.uuid)],
            Row::new().with("tag", tag),
        ));
    }
    let mut row = Row::new();
    if interface.kind != settings.kind {
        row.insert("type", settings.kind.as_str());
    }
    if interface.mtu_request != settings.mtu_request {
        row.insert("mtu_request", mtu_request);
    }
    if !row.is_empty() {
        ops.push(Operation::update(
            "Interface",
            vec![Condition::uuid(&interface.uuid)],
            row,
        ));
    }
    Ok(ops)
}

/// Removes port `name` from whichever bridge has it (its interfaces go with it). Nothing if
/// there is none.
pub fn delete_port(state: &State, name: &str) -> Vec<Operation> {
    let Some(port) = state.port(name) else {
        return Vec::new();
    };
    state
        .bridges
        .values()
        .filter(|b| b.ports.contains(&port.uuid))
        .map(|owner| remove_port(owner, &port.uuid))
        .collect()
}

/// Sets interface `name`'s `mtu_request` (`None` leaves the MTU to OVS). Nothing if it already is.
pub fn set_interface_mtu(
    state: &State,
    name: &str,
    mtu: Option<u32>,
) -> Result<Vec<Operation>, NetovsError> {
    let interface = state
        .interface(name)
        .ok_or_else(|| not_found("Interface", name))?;
    if interface.mtu_request == mtu {
        return Ok(Vec::new());
    }
    let row = Row::new().with("mtu_request", Datum::optional(mtu.map(i64::from)));
    Ok(vec![Operation::update(
        "Interface",
        vec![Condition::uuid(&interface.uuid)],
        row,
    )])
}

fn remove_port(bridge: &Bridge, port: &Uuid) -> Operation {
    Operation::mutate(
        "Bridge",
        vec![Condition::uuid(&bridge.uuid)],
        vec![Mutation::new("ports", Mutator::Delete, port.clone())],
    )
}

/// Sets (or with `None` removes) one key of a map column, leaving the other keys alone.
fn set_map_key(
    table: &str,
    uuid: &Uuid,
    column: &str,
    key: &str,
    value: Option<&str>,
) -> Operation {
    let mut mutations = vec![Mutation::new(column, Mutator::Delete, Datum::set([key]))];
    if let Some(value) = value {
        mutations.push(Mutation::new(
            column,
            Mutator::Insert,
            Datum::map([(key, value)]),
        ));
    }
    Operation::mutate(table, vec![Condition::uuid(uuid)], mutations)
}

/// The `uuid-name` for a new row of `kind` named `name`: unique within any transaction the
/// builders' operations are combined into, and a valid identifier whatever the name holds.
fn row_name(kind: &str, name: &str) -> String {
    let mut id = format!("{kind}_");
    for byte in name.bytes() {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

fn not_found(table: &str, name: &str) -> NetovsError {
    NetovsError::NotFound {
        table: table.to_owned(),
        name: name.to_owned(),
    }
}

fn decode_root(uuid: Uuid, row: &Row) -> Result<OpenVswitch, NetovsError> {
    let columns = Columns {
        table: "Open_vSwitch",
        row,
    };
    Ok(OpenVswitch {
        uuid,
        version: columns.version()?,
        bridges: columns.uuids("bridges")?,
        external_ids: columns.string_map("external_ids")?,
    })
}

fn decode_bridge(uuid: Uuid, row: &Row) -> Result<Bridge, NetovsError> {
    let columns = Columns {
        table: "Bridge",
        row,
    };
    Ok(Bridge {
        uuid,
        version: columns.version()?,
        name: columns.string("name")?,
        ports: columns.uuids("ports")?,
        datapath_type: columns.string("datapath_type")?,
        fail_mode: columns.optional("fail_mode", |a| a.as_str().and_then(FailMode::parse))?,
        stp_enable: columns.required("stp_enable", Atom::as_bool)?,
        other_config: columns.string_map("other_config")?,
        external_ids: columns.string_map("external_ids")?,
    })
}

fn decode_port(uuid: Uuid, row: &Row) -> Result<Port, NetovsError> {
    let columns = Columns { table: "Port", row };
    Ok(Port {
        uuid,
        version: columns.version()?,
        name: columns.string("name")?,
        interfaces: columns.uuids("interfaces")?,
        tag: columns.optional("tag", |a| {
            a.as_integer().and_then(|i| u16::try_from(i).ok())
        })?,
        other_config: columns.string_map("other_config")?,
        external_ids: columns.string_map("external_ids")?,
    })
}

fn decode_interface(uuid: Uuid, row: &Row) -> Result<Interface, NetovsError> {
    let columns = Columns {
        table: "Interface",
        row,
    };
    let string = |atom: &Atom| atom.as_str().map(str::to_owned);
    Ok(Interface {
        uuid,
        version: columns.version()?,
        name: columns.string("name")?,
        kind: columns.string("type")?,
        mtu_request: columns.optional("mtu_request", |a| {
            a.as_integer().and_then(|i| u32::try_from(i).ok())
        })?,
        mac_in_use: columns.optional("mac_in_use", string)?,
        ofport: columns.optional("ofport", Atom::as_integer)?,
        external_ids: columns.string_map("external_ids")?,
        admin_state: columns.optional("admin_state", string)?,
        link_state: columns.optional("link_state", string)?,
    })
}

/// Typed reads of one row's columns; errors name the table and column.
struct Columns<'a> {
    table: &'a str,
    row: &'a Row,
}

impl<'a> Columns<'a> {
    fn error(&self, column: &str, problem: &str) -> NetovsError {
        NetovsError::Protocol(format!("{} column {column}: {problem}", self.table))
    }

    fn datum(&self, column: &str) -> Result<&'a Datum, NetovsError> {
        self.row
            .get(column)
            .ok_or_else(|| self.error(column, "missing"))
    }

    /// A column of zero or one atom, which `convert` must accept.
    fn optional<T>(
        &self,
        column: &str,
        convert: impl Fn(&Atom) -> Option<T>,
    ) -> Result<Option<T>, NetovsError> {
        match self.datum(column)?.atoms() {
            [] => Ok(None),
            [atom] => convert(atom)
                .map(Some)
                .ok_or_else(|| self.error(column, &format!("unexpected value {atom:?}"))),
            _ => Err(self.error(column, "more than one value")),
        }
    }

    fn required<T>(
        &self,
        column: &str,
        convert: impl Fn(&Atom) -> Option<T>,
    ) -> Result<T, NetovsError> {
        self.optional(column, convert)?
            .ok_or_else(|| self.error(column, "no value"))
    }

    fn string(&self, column: &str) -> Result<String, NetovsError> {
        self.required(column, |a| a.as_str().map(str::to_owned))
    }

    fn version(&self) -> Result<Uuid, NetovsError> {
        self.required("_version", |a| a.as_uuid().cloned())
    }

    fn uuids(&self, column: &str) -> Result<Vec<Uuid>, NetovsError> {
        let atoms = self.datum(column)?.atoms();
        atoms
            .iter()
            .map(|a| {
                a.as_uuid()
                    .cloned()
                    .ok_or_else(|| self.error(column, "not a UUID"))
            })
            .collect()
    }

    fn string_map(&self, column: &str) -> Result<BTreeMap<String, String>, NetovsError> {
        let pairs = self.datum(column)?.pairs();
        pairs
            .iter()
            .map(|(key, value)| match (key.as_str(), value.as_str()) {
                (Some(key), Some(value)) => Ok((key.to_owned(), value.to_owned())),
                _ => Err(self.error(column, "not a string map")),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ovsdb::{RowUpdate, SnapshotCause, TableUpdates};

    fn uuid(n: u8) -> Uuid {
        format!("00000000-0000-0000-0000-0000000000{n:02x}")
            .parse()
            .unwrap()
    }

    fn bridge(name: &str, n: u8, ports: Vec<Uuid>) -> Bridge {
        Bridge {
            uuid: uuid(n),
            version: uuid(n + 100),
            name: name.into(),
            ports,
            datapath_type: "netdev".into(),
            fail_mode: Some(FailMode::Secure),
            stp_enable: false,
            other_config: BTreeMap::from([("hwaddr".into(), "02:00:00:00:00:01".into())]),
            external_ids: BTreeMap::new(),
        }
    }

    fn port(name: &str, n: u8, interface: Uuid, tag: Option<u16>) -> Port {
        Port {
            uuid: uuid(n),
            version: uuid(n + 100),
            name: name.into(),
            interfaces: vec![interface],
            tag,
            other_config: BTreeMap::new(),
            external_ids: BTreeMap::new(),
        }
    }

    fn interface(name: &str, n: u8, kind: &str, mtu_request: Option<u32>) -> Interface {
        Interface {
            uuid: uuid(n),
            version: uuid(n + 100),
            name: name.into(),
            kind: kind.into(),
            mtu_request,
            mac_in_use: None,
            ofport: None,
            external_ids: BTreeMap::new(),
            admin_state: None,
            link_state: None,
        }
    }

    /// br0 (1) with port p1 (2, tag 10) and interface p1 (3, internal, MTU 1400); br1 (4), empty.
    fn state() -> State {
        let root = OpenVswitch {
            uuid: uuid(0),
            version: uuid(100),
            bridges: vec![uuid(1), uuid(4)],
            external_ids: BTreeMap::new(),
        };
        State {
            root: Some(root),
            bridges: [bridge("br0", 1, vec![uuid(2)]), bridge("br1", 4, vec![])]
                .map(|b| (b.uuid.clone(), b))
                .into(),
            ports: [(uuid(2), port("p1", 2, uuid(3), Some(10)))].into(),
            interfaces: [(uuid(3), interface("p1", 3, "internal", Some(1400)))].into(),
        }
    }

    fn settings() -> BridgeSettings {
        BridgeSettings {
            datapath_type: "netdev".into(),
            fail_mode: Some(FailMode::Secure),
            stp_enable: false,
            hwaddr: Some("02:00:00:00:00:01".into()),
        }
    }

    fn p1() -> PortSettings {
        PortSettings {
            kind: "internal".into(),
            tag: Some(10),
            mtu_request: Some(1400),
        }
    }

    fn json(ops: &[Operation]) -> Vec<serde_json::Value> {
        ops.iter().map(Operation::to_json).collect()
    }

    #[test]
    fn what_already_is_needs_no_operation() {
        let state = state();
        assert_eq!(ensure_bridge(&state, "br0", &settings()).unwrap(), []);
        assert_eq!(ensure_port(&state, "br0", "p1", &p1()).unwrap(), []);
        assert_eq!(set_interface_mtu(&state, "p1", Some(1400)).unwrap(), []);
        assert_eq!(delete_port(&state, "nope"), []);
        assert_eq!(delete_bridge(&state, "nope"), []);
    }

    #[test]
    fn a_new_bridge_is_inserted_with_its_own_port_and_added_to_the_root() {
        let ops = ensure_bridge(&state(), "br-x", &settings()).unwrap();
        assert_eq!(
            json(&ops),
            [
                json!({"op": "insert", "table": "Interface", "uuid-name": "interface_62722d78",
                       "row": {"name": "br-x", "type": "internal"}}),
                json!({"op": "insert", "table": "Port", "uuid-name": "port_62722d78",
                       "row": {"name": "br-x", "interfaces": ["named-uuid", "interface_62722d78"]}}),
                json!({"op": "insert", "table": "Bridge", "uuid-name": "bridge_62722d78",
                       "row": {"name": "br-x", "ports": ["named-uuid", "port_62722d78"], "datapath_type": "netdev",
                               "fail_mode": ["set", ["secure"]], "stp_enable": false,
                               "other_config": ["map", [["hwaddr", "02:00:00:00:00:01"]]]}}),
                json!({"op": "mutate", "table": "Open_vSwitch", "where": [["_uuid", "==", ["uuid", uuid(0).as_str()]]],
                       "mutations": [["bridges", "insert", ["named-uuid", "bridge_62722d78"]]]}),
            ]
        );
    }

    #[test]
    fn an_existing_bridge_gets_only_what_differs() {
        let wanted = BridgeSettings {
            stp_enable: true,
            hwaddr: Some("02:00:00:00:00:02".into()),
            ..settings()
        };
        let ops = ensure_bridge(&state(), "br0", &wanted).unwrap();
        let br0 = json!(["_uuid", "==", ["uuid", uuid(1).as_str()]]);
        assert_eq!(
            json(&ops),
            [
                json!({"op": "update", "table": "Bridge", "where": [br0], "row": {"stp_enable": true}}),
                json!({"op": "mutate", "table": "Bridge", "where": [br0], "mutations": [
                    ["other_config", "delete", ["set", ["hwaddr"]]],
                    ["other_config", "insert", ["map", [["hwaddr", "02:00:00:00:00:02"]]]]]}),
            ]
        );
        let unset = BridgeSettings {
            fail_mode: None,
            hwaddr: None,
            ..settings()
        };
        let ops = ensure_bridge(&state(), "br0", &unset).unwrap();
        assert_eq!(
            json(&ops),
            [
                json!({"op": "update", "table": "Bridge", "where": [br0], "row": {"fail_mode": ["set", []]}}),
                json!({"op": "mutate", "table": "Bridge", "where": [br0], "mutations": [
                    ["other_config", "delete", ["set", ["hwaddr"]]]]}),
            ]
        );
    }

    #[test]
    fn a_new_bridge_needs_an_initialized_database() {
        let err = ensure_bridge(&State::default(), "br0", &settings()).unwrap_err();
        assert!(
            matches!(&err, NetovsError::NotFound { table, .. } if table == DATABASE),
            "{err}"
        );
    }

    #[test]
    fn ports_are_created_changed_moved_and_deleted() {
        let state = state();
        let new = json(&ensure_port(&state, "br0", "p2", &PortSettings::default()).unwrap());
        assert_eq!(
            new[0]["row"],
            json!({"name": "p2", "type": "", "mtu_request": ["set", []]})
        );
        assert_eq!(new[1]["row"]["tag"], json!(["set", []]));
        assert_eq!(
            new[2]["mutations"],
            json!([["ports", "insert", ["named-uuid", "port_7032"]]])
        );

        let changed = ensure_port(
            &state,
            "br0",
            "p1",
            &PortSettings {
                tag: None,
                mtu_request: Some(9000),
                ..p1()
            },
        )
        .unwrap();
        assert_eq!(
            changed.iter().map(Operation::describe).collect::<Vec<_>>(),
            ["update Port", "update Interface"]
        );
        assert_eq!(
            json(&changed)[1]["row"],
            json!({"mtu_request": ["set", [9000]]})
        );

        let moved = json(&ensure_port(&state, "br1", "p1", &p1()).unwrap());
        assert_eq!(moved[0]["where"][0][2], json!(["uuid", uuid(1).as_str()]));
        assert_eq!(
            moved[0]["mutations"],
            json!([["ports", "delete", ["uuid", uuid(2).as_str()]]])
        );
        assert_eq!(moved[1]["where"][0][2], json!(["uuid", uuid(4).as_str()]));
        assert_eq!(
            moved[1]["mutations"],
            json!([["ports", "insert", ["uuid", uuid(2).as_str()]]])
        );

        let deleted = json(&delete_port(&state, "p1"));
        assert_eq!(deleted, [moved[0].clone()]);

        let err = ensure_port(&state, "nope", "p1", &p1()).unwrap_err();
        assert_eq!(err.to_string(), r#"Bridge "nope" does not exist"#);
    }

    #[test]
    fn state_follows_monitor_events() {
        let row = |name: &str| {
            Row::new()
                .with("_version", uuid(101))
                .with("name", name)
                .with("ports", Datum::empty())
                .with("datapath_type", "")
                .with("fail_mode", Datum::empty())
                .with("stp_enable", false)
                .with(
                    "other_config",
                    Datum::map([("hwaddr", "02:00:00:00:00:09")]),
                )
                .with("external_ids", Datum::Map(vec![]))
        };
        let updates = |update: RowUpdate| -> TableUpdates {
            [("Bridge".to_owned(), [(uuid(1), update)].into())].into()
        };

        let mut state = state();
        let snapshot = MonitorEvent::Snapshot {
            cause: SnapshotCause::Reconnected,
            rows: updates(RowUpdate {
                old: None,
                new: Some(row("br9")),
            }),
        };
        state.apply(&snapshot).unwrap();
        assert_eq!(state.bridges.len(), 1, "a snapshot replaces everything");
        assert!(state.root.is_none() && state.ports.is_empty());
        let br9 = state.bridge("br9").unwrap();
        assert_eq!(
            (br9.fail_mode, br9.other_config["hwaddr"].as_str()),
            (None, "02:00:00:00:00:09")
        );

        state
            .apply(&MonitorEvent::Update(updates(RowUpdate {
                old: None,
                new: Some(row("br8")),
            })))
            .unwrap();
        assert_eq!(
            state
                .bridges
                .values()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>(),
            ["br8"]
        );
        state
            .apply(&MonitorEvent::Update(updates(RowUpdate {
                old: Some(row("br8")),
                new: None,
            })))
            .unwrap();
        assert!(state.bridges.is_empty());

        let bad = updates(RowUpdate {
            old: None,
            new: Some(row("br7").with("stp_enable", "yes")),
        });
        let err = state.apply(&MonitorEvent::Update(bad)).unwrap_err();
        assert!(
            err.to_string().contains("Bridge column stp_enable"),
            "{err}"
        );
    }

    #[test]
    fn row_names_are_identifiers() {
        assert_eq!(row_name("port", "eth0.10"), "port_657468302e3130");
    }
}
