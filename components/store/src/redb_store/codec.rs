//! The on-disk encoding of the redb backend's records: a small hand-written binary format.
//!
//! Owns: the byte layout of the `kv` and `history` table values. Must never: change a layout
//! without bumping its leading format byte (old files must fail loudly, not decode wrongly).
//!
//! All integers are little-endian. Lengths are u64.
//!
//! `kv` value (the key is the table key):
//! `1u8 | create_revision u64 | mod_revision u64 | version u64 | lease i64 (0 = none) | value..`
//!
//! `history` value (the revision is the table key; every event has it as mod_revision):
//! `1u8 | count u64 | count × event`, where an event is
//! `kind u8 (0 put, 1 delete) | key_len u64 | key | ` and, for a put only,
//! `create_revision u64 | version u64 | lease i64 | value_len u64 | value`.

use crate::{EventKind, KeyValue, LeaseId, Revision, WatchEvent};

const FORMAT: u8 = 1;
const PUT: u8 = 0;
const DELETE: u8 = 1;

/// Encodes the stored form of `kv` (everything but the key).
pub(crate) fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(33 + kv.value.len());
    out.push(FORMAT);
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&lease_to_raw(kv.lease).to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

/// Decodes what [`encode_kv`] wrote for `key`.
pub(crate) fn decode_kv(key: &str, bytes: &[u8]) -> Result<KeyValue, String> {
    let mut r = Reader::new(bytes);
    r.format().map_err(|e| format!("key {key:?}: {e}"))?;
    let fields = (|| {
        Ok::<_, String>(KeyValue {
            key: key.to_string(),
            create_revision: r.u64()?,
            mod_revision: r.u64()?,
            version: r.u64()?,
            lease: lease_from_raw(r.i64()?),
            value: r.rest().to_vec(),
        })
    })();
    fields.map_err(|e| format!("key {key:?}: {e}"))
}

/// Encodes the events of one revision.
pub(crate) fn encode_events(events: &[WatchEvent]) -> Vec<u8> {
    let mut out = vec![FORMAT];
    put_len(&mut out, events.len());
    for event in events {
        let kv = &event.kv;
        out.push(match event.kind {
            EventKind::Put => PUT,
            EventKind::Delete => DELETE,
        });
        put_len(&mut out, kv.key.len());
        out.extend_from_slice(kv.key.as_bytes());
        if event.kind == EventKind::Put {
            out.extend_from_slice(&kv.create_revision.to_le_bytes());
            out.extend_from_slice(&kv.version.to_le_bytes());
            out.extend_from_slice(&lease_to_raw(kv.lease).to_le_bytes());
            put_len(&mut out, kv.value.len());
            out.extend_from_slice(&kv.value);
        }
    }
    out
}

/// Decodes what [`encode_events`] wrote for `revision`.
pub(crate) fn decode_events(revision: Revision, bytes: &[u8]) -> Result<Vec<WatchEvent>, String> {
    let decode = || {
        let mut r = Reader::new(bytes);
        r.format()?;
        let count = r.len()?;
        // Every event takes at least 9 bytes: do not trust a corrupt count for the allocation.
        let mut events = Vec::with_capacity(count.min(bytes.len() / 9));
        for _ in 0..count {
            let kind = r.u8()?;
            let key_len = r.len()?;
            let key = String::from_utf8(r.bytes(key_len)?.to_vec())
                .map_err(|_| "key is not UTF-8".to_string())?;
            let event = match kind {
                PUT => {
                    let create_revision = r.u64()?;
                    let version = r.u64()?;
                    let lease = lease_from_raw(r.i64()?);
                    let value_len = r.len()?;
                    let value = r.bytes(value_len)?.to_vec();
                    WatchEvent {
                        kind: EventKind::Put,
                        kv: KeyValue {
                            key,
                            value,
                            create_revision,
                            mod_revision: revision,
                            version,
                            lease,
                        },
                    }
                }
                DELETE => WatchEvent::delete(key, revision),
                other => return Err(format!("unknown event kind {other}")),
            };
            events.push(event);
        }
        if !r.rest().is_empty() {
            return Err("trailing bytes".to_string());
        }
        Ok(events)
    };
    decode().map_err(|e: String| format!("history of revision {revision}: {e}"))
}

fn lease_to_raw(lease: Option<LeaseId>) -> i64 {
    lease.map_or(0, |id| id.0)
}

fn lease_from_raw(raw: i64) -> Option<LeaseId> {
    (raw != 0).then_some(LeaseId(raw))
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u64::try_from(len).expect("usize fits in u64 on supported targets");
    out.extend_from_slice(&len.to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn format(&mut self) -> Result<(), String> {
        match self.u8()? {
            FORMAT => Ok(()),
            other => Err(format!("unknown record format {other}")),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!(
                "truncated: wanted {n} bytes, {} left",
                self.bytes.len()
            ));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn len(&mut self) -> Result<usize, String> {
        let len = self.u64()?;
        usize::try_from(len).map_err(|_| format!("length {len} does not fit in memory"))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &[u8], lease: Option<LeaseId>) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision: 3,
            mod_revision: 9,
            version: 4,
            lease,
        }
    }

    #[test]
    fn kv_round_trips() {
        for kv in [
            kv("a", b"", None),
            kv("a/b", b"\x00\xffvalue", Some(LeaseId(7))),
        ] {
            let bytes = encode_kv(&kv);
            assert_eq!(decode_kv(&kv.key, &bytes).unwrap(), kv);
        }
    }

    #[test]
    fn events_round_trip() {
        let mut put = kv("svc/ü", b"payload", Some(LeaseId(i64::MAX)));
        put.mod_revision = 12;
        let events = vec![
            WatchEvent {
                kind: EventKind::Put,
                kv: put,
            },
            WatchEvent::delete("gone".to_string(), 12),
        ];
        let bytes = encode_events(&events);
        assert_eq!(decode_events(12, &bytes).unwrap(), events);
        assert_eq!(decode_events(5, &encode_events(&[])).unwrap(), vec![]);
    }

    #[test]
    fn damaged_records_are_reported_not_misread() {
        let bytes = encode_kv(&kv("k", b"v", None));
        assert_eq!(
            decode_kv("k", &bytes[..20]).unwrap_err(),
            "key \"k\": truncated: wanted 8 bytes, 3 left"
        );
        let mut wrong_format = bytes.clone();
        wrong_format[0] = 2;
        assert_eq!(
            decode_kv("k", &wrong_format).unwrap_err(),
            "key \"k\": unknown record format 2"
        );

        let events = encode_events(&[WatchEvent::delete("k".to_string(), 1)]);
        let err = decode_events(1, &events[..events.len() - 1]).unwrap_err();
        assert!(err.starts_with("history of revision 1: truncated"), "{err}");
        let mut extra = events.clone();
        extra.push(0);
        assert_eq!(
            decode_events(1, &extra).unwrap_err(),
            "history of revision 1: trailing bytes"
        );
        let mut huge_count = events;
        huge_count[1..9].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_events(1, &huge_count).is_err());
    }
}
