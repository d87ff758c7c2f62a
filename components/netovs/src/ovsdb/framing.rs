//! Message framing: OVSDB's JSON-RPC is a stream of JSON objects with no delimiter between them, so
//! a read may end inside a message or hold several.
//!
//! Owns: finding where each top-level value ends, incrementally (bytes already scanned are never
//! scanned again, so a large message arriving in many reads costs linear time), and parsing it.
//! Must never: interpret the messages (that is `rpc`), or do IO.

use serde_json::Value;

use crate::NetovsError;

/// The longest message a peer may send, in bytes: a monitor's snapshot of a host with thousands
/// of ports is a few MiB. A longer one ends the stream, so a peer that never ends its message
/// cannot grow our memory without bound.
pub(crate) const MAX_MESSAGE: usize = 64 << 20;

/// Splits a byte stream into JSON values.
///
/// Only objects and arrays may appear at the top level: a bare number would have no end.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    buf: Vec<u8>,
    /// Where the value being scanned begins (bytes before it are consumed).
    start: usize,
    /// How far `buf` has been scanned.
    pos: usize,
    /// Nesting depth of `{`/`[` at `pos`; 0 between values.
    depth: usize,
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escaped: bool,
}

impl Decoder {
    /// Appends bytes read from the stream.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.pos -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete value, or `None` until more bytes arrive; an error once the value
    /// being read passes [`MAX_MESSAGE`]. After an error the stream is out of step and must be
    /// dropped.
    pub(crate) fn next_value(&mut self) -> Result<Option<Value>, NetovsError> {
        while let Some(&byte) = self.buf.get(self.pos) {
            self.pos += 1;
            if self.in_string {
                match byte {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let text = &self.buf[self.start..self.pos];
                        self.start = self.pos;
                        return serde_json::from_slice(text)
                            .map(Some)
                            .map_err(|e| NetovsError::Protocol(format!("bad JSON message: {e}")));
                    }
                }
                b'"' if self.depth > 0 => self.in_string = true,
                b' ' | b'\t' | b'\n' | b'\r' if self.depth == 0 => self.start = self.pos,
                _ if self.depth == 0 => {
                    return Err(NetovsError::Protocol(format!(
                        "expected a JSON object, found {:?}",
                        char::from(byte)
                    )));
                }
                _ => {}
            }
        }
        if self.buf.len() - self.start > MAX_MESSAGE {
            return Err(NetovsError::Protocol(format!(
                "a message longer than {MAX_MESSAGE} bytes"
            )));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Feeds `reads` one by one and collects every value that completes.
    fn decode(reads: &[&str]) -> Vec<Value> {
        let mut decoder = Decoder::default();
        let mut values = Vec::new();
        for read in reads {
            decoder.push(read.as_bytes());
            while let Some(value) = decoder.next_value().unwrap() {
                values.push(value);
            }
        }
        values
    }

    #[test]
    fn two_values_in_one_read() {
        let values = decode(&[r#"{"id":1,"result":[]}{"id":2,"result":{"a":[1,2]}}"#]);
        assert_eq!(
            values,
            [
                json!({"id": 1, "result": []}),
                json!({"id": 2, "result": {"a": [1, 2]}})
            ]
        );
    }

    #[test]
    fn one_value_split_over_three_reads() {
        let values = decode(&[
            r#"{"method":"upd"#,
            r#"ate","params":[null,{"Bri"#,
            r#"dge":{}}],"id":null}"#,
        ]);
        assert_eq!(
            values,
            [json!({"method": "update", "params": [null, {"Bridge": {}}], "id": null})]
        );
    }

    #[test]
    fn nothing_is_returned_before_a_value_completes() {
        let mut decoder = Decoder::default();
        decoder.push(br#"{"a":"#);
        assert_eq!(decoder.next_value().unwrap(), None);
        decoder.push(br#"1} {"b""#);
        assert_eq!(decoder.next_value().unwrap(), Some(json!({"a": 1})));
        assert_eq!(decoder.next_value().unwrap(), None);
        decoder.push(b":2}");
        assert_eq!(decoder.next_value().unwrap(), Some(json!({"b": 2})));
    }

    #[test]
    fn strings_containing_braces_and_escaped_quotes() {
        let text = r#"{"details":"a } b ] c { \" } \\"}[" [ "]"#;
        // Split inside the escape sequence and inside the string, too.
        let values = decode(&[&text[..28], &text[28..31], &text[31..]]);
        assert_eq!(
            values,
            [json!({"details": "a } b ] c { \" } \\"}), json!([" [ "])]
        );
    }

    #[test]
    fn whitespace_between_values_is_skipped() {
        let values = decode(&["\n {\"a\":1}\r\n\t", " [] \n"]);
        assert_eq!(values, [json!({"a": 1}), json!([])]);
    }

    /// A peer that never ends its message (a broken or hostile server) cannot grow the buffer
    /// past MAX_MESSAGE: the stream is dropped instead.
    #[test]
    fn a_message_longer_than_the_maximum_is_an_error() {
        let mut decoder = Decoder::default();
        decoder.push(br#"{"a":""#);
        let chunk = vec![b'x'; 1 << 20];
        let mut pushed = 0;
        let err = loop {
            decoder.push(&chunk);
            pushed += chunk.len();
            match decoder.next_value() {
                Ok(None) => assert!(pushed <= MAX_MESSAGE, "{pushed} bytes buffered"),
                Ok(Some(value)) => panic!("{value}"),
                Err(err) => break err,
            }
        };
        assert!(err.to_string().contains("longer than"), "{err}");

        // Up to the maximum, a long message is fine, and so are many short ones.
        let mut decoder = Decoder::default();
        for _ in 0..(MAX_MESSAGE / 1_000_000 + 3) {
            decoder.push(format!("{{\"a\":\"{}\"}}", "x".repeat(999_990)).as_bytes());
            assert!(decoder.next_value().unwrap().is_some());
        }
    }

    #[test]
    fn a_bare_scalar_or_bad_json_is_an_error() {
        let mut decoder = Decoder::default();
        decoder.push(b"42");
        assert!(matches!(
            decoder.next_value(),
            Err(NetovsError::Protocol(_))
        ));

        let mut decoder = Decoder::default();
        decoder.push(b"{\"a\" 1}");
        let err = decoder.next_value().unwrap_err();
        assert!(err.to_string().contains("bad JSON message"), "{err}");
    }
}
