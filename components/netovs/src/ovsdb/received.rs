//! What the connection makes of the bytes a server sends, without the socket: the same steps the
//! connection's task runs (`session`), callable on a byte slice so that the fuzz targets
//! (`tests/fuzz`, `make fuzz`) can feed them anything.
//!
//! Owns: nothing of its own; it only chains `framing`, `rpc`, `monitor` and `operation`.
//! Must never: do IO, or take a step the connection does not take.

use serde_json::Value;

use super::client::DatabaseSchema;
use super::framing::Decoder;
use super::monitor::{TableUpdates, decode_table_updates};
use super::operation::{Operation, decode_results};
use super::rpc::{Message, server_error};
use crate::NetovsError;

/// Decodes `reads`, the bytes of successive reads from a server, as the connection would: every
/// complete message is split out and told apart; an `update` notification's table updates are
/// decoded; an answer is decoded as each kind of request's answer would be (a monitor's
/// snapshot, a transaction's results, a schema, an error object). Returns the table updates of
/// the notifications and snapshots, in order, or the first error that would end the connection.
#[doc(hidden)]
pub fn decode_received(reads: &[&[u8]]) -> Result<Vec<TableUpdates>, NetovsError> {
    let mut decoder = Decoder::default();
    let mut updates = Vec::new();
    for read in reads {
        decoder.push(read);
        while let Some(value) = decoder.next_value()? {
            match Message::parse(value)? {
                Message::Request { .. } => {}
                Message::Notification { method, params } if method == "update" => {
                    // As `Session::on_update`: a malformed notification ends the connection.
                    let Some([_monitor, table_updates]) = params.as_array().map(Vec::as_slice)
                    else {
                        return Err(NetovsError::Protocol(format!(
                            "malformed update notification: {params}"
                        )));
                    };
                    updates.push(decode_table_updates(table_updates)?);
                }
                Message::Notification { .. } => {}
                Message::Response { result, .. } => match result {
                    Err(error) => drop(server_error("call".to_owned(), &error)),
                    Ok(result) => {
                        if let Ok(rows) = decode_table_updates(&result) {
                            updates.push(rows);
                        }
                        let ops = match &result {
                            Value::Array(results) => vec![Operation::comment(""); results.len()],
                            _ => Vec::new(),
                        };
                        let _ = decode_results(&ops, &result);
                        let _ = serde_json::from_value::<DatabaseSchema>(result);
                    }
                },
            }
        }
    }
    Ok(updates)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A monitor's answer and an update, as ovsdb-server 3.1 sent them, cut mid-message.
    #[test]
    fn snapshots_and_updates_come_out_in_order_however_the_reads_are_cut() {
        let stream = concat!(
            r#"{"id":4,"result":{"Bridge":{"596c13b3-8cc8-4468-9a3d-f13c718de25a":{"new":{"name":"br0"}}}},"error":null}"#,
            r#"{"id":null,"method":"update","params":[4,{"Bridge":{"596c13b3-8cc8-4468-9a3d-f13c718de25a":{"new":{"name":"br1"},"old":{"name":"br0"}}}}]}"#,
            r#"{"id":"echo","method":"echo","params":[]}"#,
        )
        .as_bytes();
        let whole = decode_received(&[stream]).unwrap();
        assert_eq!(whole.len(), 2);
        let uuid: super::super::Uuid = "596c13b3-8cc8-4468-9a3d-f13c718de25a".parse().unwrap();
        let name = |updates: &TableUpdates| {
            updates["Bridge"][&uuid]
                .new
                .as_ref()
                .unwrap()
                .get("name")
                .cloned()
        };
        assert_eq!(name(&whole[0]), Some("br0".into()));
        assert_eq!(name(&whole[1]), Some("br1".into()));
        let reads: Vec<&[u8]> = stream.chunks(7).collect();
        assert_eq!(decode_received(&reads).unwrap(), whole);
    }

    #[test]
    fn what_ends_the_connection_is_an_error() {
        for stream in [
            &br#"{"id":null,"method":"update","params":[4]}"#[..],
            br#"{"id":null,"method":"update","params":[4,{"Bridge":{"not-a-uuid":{}}}]}"#,
            br#"{"method":1}"#,
            b"42",
        ] {
            assert!(
                decode_received(&[stream]).is_err(),
                "{}",
                String::from_utf8_lossy(stream)
            );
        }
    }
}
