//! JSON-RPC 1.0 as OVSDB speaks it (RFC 7047 section 4): requests, responses and notifications,
//! and the server's error objects.
//!
//! Owns: telling the three kinds of message apart and encoding ours.
//! Must never: do IO or know what a method means.

use serde_json::{Value, json};

use crate::NetovsError;

/// A message from the peer.
#[derive(Debug, PartialEq)]
pub(crate) enum Message {
    /// A request, to be answered with the same `id` (the server sends `echo`).
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    /// A request that wants no answer (`update`, `locked`, ...): its `id` is null.
    Notification { method: String, params: Value },
    /// The answer to one of our requests: its result, or the error object.
    Response {
        id: Value,
        result: Result<Value, Value>,
    },
}

impl Message {
    pub(crate) fn parse(value: Value) -> Result<Self, NetovsError> {
        let Value::Object(mut fields) = value else {
            return Err(NetovsError::Protocol(format!(
                "not a JSON-RPC message: {value}"
            )));
        };
        let id = fields.remove("id").unwrap_or(Value::Null);
        match fields.remove("method") {
            Some(Value::String(method)) => {
                let params = fields.remove("params").unwrap_or(Value::Null);
                Ok(if id.is_null() {
                    Self::Notification { method, params }
                } else {
                    Self::Request { id, method, params }
                })
            }
            Some(other) => Err(NetovsError::Protocol(format!(
                "JSON-RPC method is not a string: {other}"
            ))),
            None => {
                let result = match fields.remove("error") {
                    Some(error) if !error.is_null() => Err(error),
                    _ => Ok(fields.remove("result").unwrap_or(Value::Null)),
                };
                Ok(Self::Response { id, result })
            }
        }
    }
}

/// Our request number `id`, encoded.
pub(crate) fn request(id: u64, method: &str, params: &Value) -> Vec<u8> {
    json!({"id": id, "method": method, "params": params})
        .to_string()
        .into_bytes()
}

/// The answer to the peer's request `id`, encoded.
pub(crate) fn response(id: &Value, result: Result<&Value, &str>) -> Vec<u8> {
    let (result, error) = match result {
        Ok(result) => (result.clone(), Value::Null),
        Err(error) => (Value::Null, json!(error)),
    };
    json!({"id": id, "result": result, "error": error})
        .to_string()
        .into_bytes()
}

/// The server's error object (`{"error": .., "details": ..}`, or a bare string) as our error,
/// attributed to `method` (a method name, or which operation of a transaction).
pub(crate) fn server_error(method: String, error: &Value) -> NetovsError {
    let text = |value: Option<&Value>| {
        value.map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    };
    match error {
        Value::Object(fields) => NetovsError::Server {
            method,
            error: text(fields.get("error")).unwrap_or_else(|| error.to_string()),
            details: text(fields.get("details")),
        },
        other => NetovsError::Server {
            method,
            error: text(Some(other)).unwrap_or_default(),
            details: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_kinds_of_message() {
        let echo = Message::parse(json!({"id": "echo", "method": "echo", "params": []})).unwrap();
        assert_eq!(
            echo,
            Message::Request {
                id: json!("echo"),
                method: "echo".into(),
                params: json!([])
            }
        );

        let update =
            Message::parse(json!({"id": null, "method": "update", "params": [1, {}]})).unwrap();
        assert_eq!(
            update,
            Message::Notification {
                method: "update".into(),
                params: json!([1, {}])
            }
        );

        let ok =
            Message::parse(json!({"id": 3, "result": ["Open_vSwitch"], "error": null})).unwrap();
        assert_eq!(
            ok,
            Message::Response {
                id: json!(3),
                result: Ok(json!(["Open_vSwitch"]))
            }
        );

        let failed = Message::parse(
            json!({"id": 4, "result": null, "error": {"error": "unknown database"}}),
        )
        .unwrap();
        assert_eq!(
            failed,
            Message::Response {
                id: json!(4),
                result: Err(json!({"error": "unknown database"}))
            }
        );

        assert!(Message::parse(json!([1])).is_err());
        assert!(Message::parse(json!({"method": 5, "id": 1})).is_err());
    }

    #[test]
    fn our_messages() {
        let sent: Value = serde_json::from_slice(&request(7, "list_dbs", &json!([]))).unwrap();
        assert_eq!(sent, json!({"id": 7, "method": "list_dbs", "params": []}));
        let echoed: Value =
            serde_json::from_slice(&response(&json!("echo"), Ok(&json!(["x"])))).unwrap();
        assert_eq!(
            echoed,
            json!({"id": "echo", "result": ["x"], "error": null})
        );
        let refused: Value =
            serde_json::from_slice(&response(&json!(1), Err("unknown method"))).unwrap();
        assert_eq!(
            refused,
            json!({"id": 1, "result": null, "error": "unknown method"})
        );
    }

    #[test]
    fn server_errors_keep_error_and_details() {
        let error = json!({"error": "unknown database", "details": "no database named Nope", "syntax": "[]"});
        let err = server_error("transact".into(), &error);
        assert_eq!(
            err.to_string(),
            "OVSDB transact: unknown database: no database named Nope"
        );
        let err = server_error("monitor".into(), &json!("not allowed"));
        assert_eq!(err.to_string(), "OVSDB monitor: not allowed");
    }
}
