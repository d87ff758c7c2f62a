//! OVSDB values (RFC 7047 section 5.1): atoms, UUIDs, sets, maps and rows, and their JSON
//! encodings (`["uuid", ..]`, `["named-uuid", ..]`, `["set", [..]]`, `["map", [[k, v], ..]]`).
//!
//! Owns: the conversion between these types and JSON, in both directions.
//! Must never: know a schema. Without one, a set of exactly one element reads back as its bare
//! atom (the server encodes it that way), so readers use [`Datum::atoms`], which treats both
//! alike.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde_json::{Value, json};

use crate::NetovsError;

/// A row's UUID, in its canonical text form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(String);

impl Uuid {
    /// The canonical text (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Uuid {
    type Err = NetovsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let groups: Vec<&str> = text.split('-').collect();
        let shape_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
            && groups
                .iter()
                .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
        if shape_ok {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(NetovsError::Protocol(format!("not a UUID: {text:?}")))
        }
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One scalar value.
#[derive(Debug, Clone, PartialEq)]
pub enum Atom {
    /// `integer`.
    Integer(i64),
    /// `real`.
    Real(f64),
    /// `boolean`.
    Boolean(bool),
    /// `string`.
    String(String),
    /// `uuid`: a reference to a row.
    Uuid(Uuid),
    /// A reference to a row inserted earlier in the same transaction under this `uuid-name`.
    NamedUuid(String),
}

impl Atom {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Self::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The UUID, if this is one.
    pub fn as_uuid(&self) -> Option<&Uuid> {
        match self {
            Self::Uuid(u) => Some(u),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Self::Integer(i) => json!(i),
            Self::Real(r) => json!(r),
            Self::Boolean(b) => json!(b),
            Self::String(s) => json!(s),
            Self::Uuid(u) => json!(["uuid", u.as_str()]),
            Self::NamedUuid(name) => json!(["named-uuid", name]),
        }
    }

    fn from_json(value: &Value) -> Result<Self, NetovsError> {
        let bad = || NetovsError::Protocol(format!("not an OVSDB atom: {value}"));
        match value {
            Value::Bool(b) => Ok(Self::Boolean(*b)),
            Value::String(s) => Ok(Self::String(s.clone())),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(Self::Integer(i)),
                None => n.as_f64().map(Self::Real).ok_or_else(bad),
            },
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(tag), Value::String(text)] if tag == "uuid" => {
                    Ok(Self::Uuid(text.parse()?))
                }
                [Value::String(tag), Value::String(name)] if tag == "named-uuid" => {
                    Ok(Self::NamedUuid(name.clone()))
                }
                _ => Err(bad()),
            },
            Value::Null | Value::Object(_) => Err(bad()),
        }
    }
}

impl From<&str> for Atom {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}

impl From<String> for Atom {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}

impl From<i64> for Atom {
    fn from(i: i64) -> Self {
        Self::Integer(i)
    }
}

impl From<bool> for Atom {
    fn from(b: bool) -> Self {
        Self::Boolean(b)
    }
}

impl From<Uuid> for Atom {
    fn from(u: Uuid) -> Self {
        Self::Uuid(u)
    }
}

/// A column's value: an atom, a set of atoms or a map.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    /// A single atom (also how the server writes a set of one).
    Atom(Atom),
    /// A set; empty for an optional column that has no value.
    Set(Vec<Atom>),
    /// A map, as key-value pairs.
    Map(Vec<(Atom, Atom)>),
}

impl Datum {
    /// The empty set: "no value" for an optional column.
    pub fn empty() -> Self {
        Self::Set(Vec::new())
    }

    /// A set of atoms.
    pub fn set<A: Into<Atom>>(atoms: impl IntoIterator<Item = A>) -> Self {
        Self::Set(atoms.into_iter().map(Into::into).collect())
    }

    /// A set of zero or one atom: the encoding of an optional column.
    pub fn optional<A: Into<Atom>>(atom: Option<A>) -> Self {
        Self::set(atom)
    }

    /// A map.
    pub fn map<K: Into<Atom>, V: Into<Atom>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// A reference to the row inserted under `uuid-name` `name` in the same transaction.
    pub fn named_uuid(name: &str) -> Self {
        Self::Atom(Atom::NamedUuid(name.to_owned()))
    }

    /// The atoms of a set (one for a bare atom, none for a map).
    pub fn atoms(&self) -> &[Atom] {
        match self {
            Self::Atom(atom) => std::slice::from_ref(atom),
            Self::Set(atoms) => atoms,
            Self::Map(_) => &[],
        }
    }

    /// The pairs of a map (none for anything else; an empty map may read back as an empty set).
    pub fn pairs(&self) -> &[(Atom, Atom)] {
        match self {
            Self::Map(pairs) => pairs,
            Self::Atom(_) | Self::Set(_) => &[],
        }
    }

    /// The JSON encoding.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Atom(atom) => atom.to_json(),
            Self::Set(atoms) => json!(["set", atoms.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Self::Map(pairs) => {
                let pairs: Vec<Value> = pairs
                    .iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect();
                json!(["map", pairs])
            }
        }
    }

    /// Decodes the JSON encoding.
    pub fn from_json(value: &Value) -> Result<Self, NetovsError> {
        let Value::Array(items) = value else {
            return Atom::from_json(value).map(Self::Atom);
        };
        match items.as_slice() {
            [Value::String(tag), Value::Array(atoms)] if tag == "set" => atoms
                .iter()
                .map(Atom::from_json)
                .collect::<Result<_, _>>()
                .map(Self::Set),
            [Value::String(tag), Value::Array(pairs)] if tag == "map" => pairs
                .iter()
                .map(|pair| match pair.as_array().map(Vec::as_slice) {
                    Some([k, v]) => Ok((Atom::from_json(k)?, Atom::from_json(v)?)),
                    _ => Err(NetovsError::Protocol(format!("not a map pair: {pair}"))),
                })
                .collect::<Result<_, _>>()
                .map(Self::Map),
            _ => Atom::from_json(value).map(Self::Atom),
        }
    }
}

/// `Datum::from(x)` for everything an [`Atom`] converts from: a single atom.
macro_rules! datum_from_atom {
    ($($source:ty),*) => {$(
        impl From<$source> for Datum {
            fn from(value: $source) -> Self {
                Self::Atom(value.into())
            }
        }
    )*};
}

datum_from_atom!(Atom, &str, String, i64, bool, Uuid);

/// A row: column names and their values (only the columns an operation names or selected).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row(BTreeMap<String, Datum>);

impl Row {
    /// An empty row.
    pub fn new() -> Self {
        Self::default()
    }

    /// This row with `column` set to `value`.
    #[must_use]
    pub fn with(mut self, column: &str, value: impl Into<Datum>) -> Self {
        self.0.insert(column.to_owned(), value.into());
        self
    }

    /// Sets `column` to `value`.
    pub fn insert(&mut self, column: &str, value: impl Into<Datum>) {
        self.0.insert(column.to_owned(), value.into());
    }

    /// The value of `column`, if the row has it.
    pub fn get(&self, column: &str) -> Option<&Datum> {
        self.0.get(column)
    }

    /// The columns and their values, by column name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Datum)> {
        self.0
            .iter()
            .map(|(column, value)| (column.as_str(), value))
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The JSON encoding (an object).
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(column, value)| (column.clone(), value.to_json()))
                .collect(),
        )
    }

    /// Decodes the JSON encoding.
    pub fn from_json(value: &Value) -> Result<Self, NetovsError> {
        let Value::Object(columns) = value else {
            return Err(NetovsError::Protocol(format!("not a row: {value}")));
        };
        columns
            .iter()
            .map(|(column, value)| Ok((column.clone(), Datum::from_json(value)?)))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "2940d6ad-9af7-454b-820d-3b793ef462ac";

    #[test]
    fn encodings_round_trip() {
        let uuid: Uuid = U.parse().unwrap();
        let cases = [
            (Datum::from(7), json!(7)),
            (Datum::Atom(Atom::Real(1.5)), json!(1.5)),
            (Datum::from(true), json!(true)),
            (Datum::from("br0"), json!("br0")),
            (Datum::from(uuid.clone()), json!(["uuid", U])),
            (Datum::named_uuid("port_1"), json!(["named-uuid", "port_1"])),
            (Datum::empty(), json!(["set", []])),
            (
                Datum::set([uuid.clone(), uuid]),
                json!(["set", [["uuid", U], ["uuid", U]]]),
            ),
            (
                Datum::map([("hwaddr", "02:00:00:00:00:01")]),
                json!(["map", [["hwaddr", "02:00:00:00:00:01"]]]),
            ),
        ];
        for (datum, encoded) in cases {
            assert_eq!(datum.to_json(), encoded, "{datum:?}");
            assert_eq!(Datum::from_json(&encoded).unwrap(), datum, "{encoded}");
        }
    }

    #[test]
    fn a_bare_atom_reads_as_a_set_of_one() {
        let one = Datum::from_json(&json!(["uuid", U])).unwrap();
        assert_eq!(one.atoms(), [Atom::Uuid(U.parse().unwrap())]);
        assert_eq!(Datum::from_json(&json!(["set", []])).unwrap().atoms(), []);
    }

    #[test]
    fn malformed_values_are_errors() {
        for bad in [
            json!(null),
            json!({}),
            json!(["uuid", "nope"]),
            json!(["map", [[1]]]),
            json!([1, 2]),
        ] {
            assert!(Datum::from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rows_encode_as_objects() {
        let row = Row::new()
            .with("name", "p1")
            .with("tag", Datum::optional(Some(10)));
        assert_eq!(row.to_json(), json!({"name": "p1", "tag": ["set", [10]]}));
        let back = Row::from_json(&json!({"name": "p1", "tag": 10})).unwrap();
        assert_eq!(back.get("tag").unwrap().atoms(), [Atom::Integer(10)]);
    }
}
