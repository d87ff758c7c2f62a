//! Monitors (RFC 7047 section 4.1.5): what to watch, the events a consumer receives, and the
//! consumer's handle, [`Monitor`].
//!
//! Owns: decoding `<table-updates>`, and the consumer side of the rule that keeps a monitor
//! bounded: a consumer that falls behind is not queued for without limit but handed a fresh
//! snapshot once it catches up ([`SnapshotCause::Lagged`]).
//! Must never: block the connection's task (it only ever `try_send`s to the consumer).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::datum::{Row, Uuid};
use super::session::Command;
use crate::NetovsError;

/// One table to monitor, and which of its columns (all when empty). Rows are keyed by UUID, so
/// `_uuid` need not be listed; `_version` may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorRequest {
    /// The table.
    pub table: String,
    /// The columns; empty for all.
    pub columns: Vec<String>,
}

impl MonitorRequest {
    /// Monitors `columns` of `table` (all columns when empty).
    pub fn new(table: &str, columns: &[&str]) -> Self {
        Self {
            table: table.to_owned(),
            columns: columns.iter().map(|&c| c.to_owned()).collect(),
        }
    }

    /// The `<monitor-requests>` object for a set of requests.
    pub(crate) fn to_json(requests: &[Self]) -> Value {
        let tables = requests.iter().map(|request| {
            let body = if request.columns.is_empty() {
                json!({})
            } else {
                json!({"columns": request.columns})
            };
            (request.table.clone(), body)
        });
        Value::Object(tables.collect())
    }
}

/// How one row changed: `old` is absent for an insert, `new` for a delete. In a modification,
/// `old` holds only the columns that changed and `new` all monitored columns.
#[derive(Debug, Clone, PartialEq)]
pub struct RowUpdate {
    /// The row before, if it existed.
    pub old: Option<Row>,
    /// The row after, if it still exists.
    pub new: Option<Row>,
}

/// Changed rows, by table and row UUID. In a snapshot, every row has only `new`.
pub type TableUpdates = BTreeMap<String, BTreeMap<Uuid, RowUpdate>>;

/// Decodes a `<table-updates>` object.
pub(crate) fn decode_table_updates(value: &Value) -> Result<TableUpdates, NetovsError> {
    let bad = || NetovsError::Protocol(format!("not a table-updates object: {value}"));
    let tables = value.as_object().ok_or_else(bad)?;
    tables
        .iter()
        .map(|(table, rows)| {
            let rows = rows.as_object().ok_or_else(bad)?;
            let rows = rows
                .iter()
                .map(|(uuid, update)| {
                    let row = |key| update.get(key).map(Row::from_json).transpose();
                    Ok((
                        uuid.parse()?,
                        RowUpdate {
                            old: row("old")?,
                            new: row("new")?,
                        },
                    ))
                })
                .collect::<Result<_, NetovsError>>()?;
            Ok((table.clone(), rows))
        })
        .collect()
}

/// Why a [`MonitorEvent::Snapshot`] was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotCause {
    /// The monitor was just created.
    Initial,
    /// The connection was lost and re-established: changes made meanwhile are not reported
    /// one by one; this is the whole state now.
    Reconnected,
    /// The consumer fell behind and updates were dropped; this is the whole state now.
    Lagged,
}

/// What a [`Monitor`] delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum MonitorEvent {
    /// The full current state of the monitored tables: replace whatever was known before
    /// (rows absent from it no longer exist).
    Snapshot {
        /// Why.
        cause: SnapshotCause,
        /// Every row, as inserts.
        rows: TableUpdates,
    },
    /// Changes since the previous event.
    Update(TableUpdates),
}

/// What the connection's task puts in a monitor's channel.
#[derive(Debug)]
pub(crate) enum Delivery {
    Event(MonitorEvent),
    /// The channel was full and updates were dropped after this point: ask for a snapshot.
    Lagged,
}

/// The consumer's end of a monitor, from [`Client::monitor`](super::Client::monitor).
///
/// Dropping it cancels the monitor on the server.
#[derive(Debug)]
pub struct Monitor {
    id: u64,
    deliveries: mpsc::Receiver<Delivery>,
    commands: mpsc::WeakUnboundedSender<Command>,
}

impl Monitor {
    pub(crate) fn new(
        id: u64,
        deliveries: mpsc::Receiver<Delivery>,
        commands: mpsc::WeakUnboundedSender<Command>,
    ) -> Self {
        Self {
            id,
            deliveries,
            commands,
        }
    }

    /// The next event: first the [`SnapshotCause::Initial`] snapshot, then updates, and a new
    /// snapshot after each reconnection or lag.
    ///
    /// `None` when the monitor has ended: every [`Client`](super::Client) handle was dropped, or
    /// the server refused to re-establish the monitor after a reconnection (logged).
    /// Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Option<MonitorEvent> {
        loop {
            match self.deliveries.recv().await? {
                Delivery::Event(event) => return Some(event),
                Delivery::Lagged => {
                    self.commands
                        .upgrade()?
                        .send(Command::Resync(self.id))
                        .ok()?;
                }
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(commands) = self.commands.upgrade() {
            // The task is gone if this fails, and the monitor with it.
            let _ = commands.send(Command::Cancel(self.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "2940d6ad-9af7-454b-820d-3b793ef462ac";

    #[test]
    fn requests_name_columns_only_when_given() {
        let requests = [
            MonitorRequest::new("Bridge", &["name", "_version"]),
            MonitorRequest::new("Port", &[]),
        ];
        assert_eq!(
            MonitorRequest::to_json(&requests),
            json!({"Bridge": {"columns": ["name", "_version"]}, "Port": {}})
        );
    }

    #[test]
    fn table_updates_decode_inserts_modifications_and_deletes() {
        let updates = decode_table_updates(&json!({"Bridge": {U: {"old": {"stp_enable": false},
                                                                  "new": {"stp_enable": true, "name": "br0"}}},
                                                    "Port": {}}))
        .unwrap();
        let update = &updates["Bridge"][&U.parse().unwrap()];
        assert_eq!(update.old, Some(Row::new().with("stp_enable", false)));
        assert_eq!(
            update.new,
            Some(Row::new().with("stp_enable", true).with("name", "br0"))
        );
        assert!(updates["Port"].is_empty());

        let deleted =
            decode_table_updates(&json!({"Bridge": {U: {"old": {"name": "br0"}}}})).unwrap();
        assert_eq!(deleted["Bridge"][&U.parse().unwrap()].new, None);

        assert!(decode_table_updates(&json!({"Bridge": {"not-a-uuid": {}}})).is_err());
        assert!(decode_table_updates(&json!([])).is_err());
    }
}
