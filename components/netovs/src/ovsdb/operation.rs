//! Transactions (RFC 7047 sections 5.2 and 4.1.3): the operations of a `transact`, their
//! conditions and mutations, and the decoding of its per-operation results.
//!
//! Owns: the JSON form of operations, and turning a failed operation (or a failed commit) into
//! one error that says which operation failed.
//! Must never: send anything, or know a schema.

use serde_json::{Value, json};

use super::datum::{Datum, Row, Uuid};
use super::rpc::server_error;
use crate::NetovsError;

/// A comparison in a `where` clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `>=`
    GreaterOrEqual,
    /// `>`
    Greater,
    /// `includes`: the set or map holds all of the value's elements.
    Includes,
    /// `excludes`: the set or map holds none of the value's elements.
    Excludes,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Self::Less => "<",
            Self::LessOrEqual => "<=",
            Self::Equal => "==",
            Self::NotEqual => "!=",
            Self::GreaterOrEqual => ">=",
            Self::Greater => ">",
            Self::Includes => "includes",
            Self::Excludes => "excludes",
        }
    }
}

/// One `[column, function, value]` of a `where` clause; a row matches when all hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The column (`_uuid` for the row's own UUID).
    pub column: String,
    /// The comparison.
    pub function: Function,
    /// What the column is compared with.
    pub value: Datum,
}

impl Condition {
    /// `column function value`.
    pub fn new(column: &str, function: Function, value: impl Into<Datum>) -> Self {
        Self {
            column: column.to_owned(),
            function,
            value: value.into(),
        }
    }

    /// `column == value`.
    pub fn equal(column: &str, value: impl Into<Datum>) -> Self {
        Self::new(column, Function::Equal, value)
    }

    /// The row whose UUID is `uuid`.
    pub fn uuid(uuid: &Uuid) -> Self {
        Self::equal("_uuid", uuid.clone())
    }

    fn to_json(&self) -> Value {
        json!([self.column, self.function.as_str(), self.value.to_json()])
    }
}

/// How a mutation changes a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    /// `+=`
    Add,
    /// `-=`
    Subtract,
    /// `*=`
    Multiply,
    /// `/=`
    Divide,
    /// `%=`
    Remainder,
    /// `insert`: add elements to a set, or pairs to a map (keys already present keep their
    /// value).
    Insert,
    /// `delete`: remove elements from a set; from a map, the pairs of a map value or the keys of
    /// a set value.
    Delete,
}

impl Mutator {
    fn as_str(self) -> &'static str {
        match self {
            Self::Add => "+=",
            Self::Subtract => "-=",
            Self::Multiply => "*=",
            Self::Divide => "/=",
            Self::Remainder => "%=",
            Self::Insert => "insert",
            Self::Delete => "delete",
        }
    }
}

/// One `[column, mutator, value]` of a `mutate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// The column.
    pub column: String,
    /// The change.
    pub mutator: Mutator,
    /// Its operand.
    pub value: Datum,
}

impl Mutation {
    /// `column mutator value`.
    pub fn new(column: &str, mutator: Mutator, value: impl Into<Datum>) -> Self {
        Self {
            column: column.to_owned(),
            mutator,
            value: value.into(),
        }
    }

    fn to_json(&self) -> Value {
        json!([self.column, self.mutator.as_str(), self.value.to_json()])
    }
}

/// What a `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUntil {
    /// The selected rows' columns equal the given rows.
    Equal,
    /// They differ.
    NotEqual,
}

/// One operation of a transaction. The server applies all of a transaction's operations
/// atomically: if one fails, none takes effect.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Insert a row; `uuid_name` lets later operations of the same transaction refer to it as
    /// [`Datum::named_uuid`].
    Insert {
        /// The table.
        table: String,
        /// The row's columns (the others get their defaults).
        row: Row,
        /// The name for the new row's UUID within the transaction.
        uuid_name: Option<String>,
    },
    /// Read the rows matching `conditions`.
    Select {
        /// The table.
        table: String,
        /// Which rows.
        conditions: Vec<Condition>,
        /// Which columns (all, with `_uuid` and `_version`, when `None`).
        columns: Option<Vec<String>>,
    },
    /// Set columns of the rows matching `conditions`.
    Update {
        /// The table.
        table: String,
        /// Which rows.
        conditions: Vec<Condition>,
        /// The columns to set.
        row: Row,
    },
    /// Change columns of the rows matching `conditions` relative to their current value.
    Mutate {
        /// The table.
        table: String,
        /// Which rows.
        conditions: Vec<Condition>,
        /// The changes, applied in order.
        mutations: Vec<Mutation>,
    },
    /// Delete the rows matching `conditions`.
    Delete {
        /// The table.
        table: String,
        /// Which rows.
        conditions: Vec<Condition>,
    },
    /// Go on only if the rows matching `conditions`, projected on `columns`, are (or are not)
    /// exactly `rows`; with a zero timeout the transaction fails at once otherwise.
    Wait {
        /// The table.
        table: String,
        /// Which rows.
        conditions: Vec<Condition>,
        /// The columns compared.
        columns: Vec<String>,
        /// Equal or not.
        until: WaitUntil,
        /// The expected rows.
        rows: Vec<Row>,
        /// How long the server may wait for it to hold, in milliseconds (`None`: forever).
        timeout_ms: Option<u64>,
    },
    /// A comment for the server's log.
    Comment(String),
}

impl Operation {
    /// Inserts `row` into `table`.
    pub fn insert(table: &str, row: Row) -> Self {
        Self::Insert {
            table: table.to_owned(),
            row,
            uuid_name: None,
        }
    }

    /// Inserts `row` into `table`, naming its UUID `uuid_name` for later operations.
    pub fn insert_named(table: &str, uuid_name: &str, row: Row) -> Self {
        Self::Insert {
            table: table.to_owned(),
            row,
            uuid_name: Some(uuid_name.to_owned()),
        }
    }

    /// Selects all columns of the rows of `table` matching `conditions`.
    pub fn select(table: &str, conditions: Vec<Condition>) -> Self {
        Self::Select {
            table: table.to_owned(),
            conditions,
            columns: None,
        }
    }

    /// Sets `row`'s columns in the rows of `table` matching `conditions`.
    pub fn update(table: &str, conditions: Vec<Condition>, row: Row) -> Self {
        Self::Update {
            table: table.to_owned(),
            conditions,
            row,
        }
    }

    /// Applies `mutations` to the rows of `table` matching `conditions`.
    pub fn mutate(table: &str, conditions: Vec<Condition>, mutations: Vec<Mutation>) -> Self {
        Self::Mutate {
            table: table.to_owned(),
            conditions,
            mutations,
        }
    }

    /// Deletes the rows of `table` matching `conditions`.
    pub fn delete(table: &str, conditions: Vec<Condition>) -> Self {
        Self::Delete {
            table: table.to_owned(),
            conditions,
        }
    }

    /// A guard: the transaction fails unless the row `uuid` of `table` still has `version`
    /// (its `_version`, which changes with every write to the row), so a change computed from
    /// what was read is not applied over a concurrent one.
    pub fn unchanged(table: &str, uuid: &Uuid, version: &Uuid) -> Self {
        Self::Wait {
            table: table.to_owned(),
            conditions: vec![Condition::uuid(uuid)],
            columns: vec!["_version".to_owned()],
            until: WaitUntil::Equal,
            rows: vec![Row::new().with("_version", version.clone())],
            timeout_ms: Some(0),
        }
    }

    /// A comment for the server's log.
    pub fn comment(text: &str) -> Self {
        Self::Comment(text.to_owned())
    }

    /// The operation's name and table, as errors name it (`insert Port`).
    pub fn describe(&self) -> String {
        match self {
            Self::Insert { table, .. } => format!("insert {table}"),
            Self::Select { table, .. } => format!("select {table}"),
            Self::Update { table, .. } => format!("update {table}"),
            Self::Mutate { table, .. } => format!("mutate {table}"),
            Self::Delete { table, .. } => format!("delete {table}"),
            Self::Wait { table, .. } => format!("wait {table}"),
            Self::Comment(_) => "comment".to_owned(),
        }
    }

    /// The JSON form, as an element of `transact`'s parameters.
    pub fn to_json(&self) -> Value {
        let conditions = |conditions: &[Condition]| {
            conditions
                .iter()
                .map(Condition::to_json)
                .collect::<Vec<_>>()
        };
        match self {
            Self::Insert {
                table,
                row,
                uuid_name,
            } => {
                let mut op = json!({"op": "insert", "table": table, "row": row.to_json()});
                if let Some(name) = uuid_name {
                    op["uuid-name"] = json!(name);
                }
                op
            }
            Self::Select {
                table,
                conditions: c,
                columns,
            } => {
                let mut op = json!({"op": "select", "table": table, "where": conditions(c)});
                if let Some(columns) = columns {
                    op["columns"] = json!(columns);
                }
                op
            }
            Self::Update {
                table,
                conditions: c,
                row,
            } => {
                json!({"op": "update", "table": table, "where": conditions(c), "row": row.to_json()})
            }
            Self::Mutate {
                table,
                conditions: c,
                mutations,
            } => {
                let mutations: Vec<Value> = mutations.iter().map(Mutation::to_json).collect();
                json!({"op": "mutate", "table": table, "where": conditions(c), "mutations": mutations})
            }
            Self::Delete {
                table,
                conditions: c,
            } => json!({"op": "delete", "table": table, "where": conditions(c)}),
            Self::Wait {
                table,
                conditions: c,
                columns,
                until,
                rows,
                timeout_ms,
            } => {
                let until = match until {
                    WaitUntil::Equal => "==",
                    WaitUntil::NotEqual => "!=",
                };
                let rows: Vec<Value> = rows.iter().map(Row::to_json).collect();
                let mut op = json!({"op": "wait", "table": table, "where": conditions(c), "columns": columns,
                                    "until": until, "rows": rows});
                if let Some(timeout) = timeout_ms {
                    op["timeout"] = json!(timeout);
                }
                op
            }
            Self::Comment(text) => json!({"op": "comment", "comment": text}),
        }
    }
}

/// What one successful operation returned.
#[derive(Debug, Clone, PartialEq)]
pub enum OpResult {
    /// An insert: the new row's UUID.
    Inserted(Uuid),
    /// A select: the rows.
    Rows(Vec<Row>),
    /// An update, mutate or delete: how many rows matched.
    Count(u64),
    /// A wait or comment.
    Done,
}

impl OpResult {
    /// The new row's UUID, for an insert.
    pub fn uuid(&self) -> Option<&Uuid> {
        match self {
            Self::Inserted(uuid) => Some(uuid),
            _ => None,
        }
    }

    /// The rows, for a select.
    pub fn rows(&self) -> Option<&[Row]> {
        match self {
            Self::Rows(rows) => Some(rows),
            _ => None,
        }
    }

    /// The number of rows matched, for an update, mutate or delete.
    pub fn count(&self) -> Option<u64> {
        match self {
            Self::Count(count) => Some(*count),
            _ => None,
        }
    }

    fn from_json(value: &Value) -> Result<Self, NetovsError> {
        let bad = || NetovsError::Protocol(format!("not an operation result: {value}"));
        let Value::Object(fields) = value else {
            return Err(bad());
        };
        if let Some(uuid) = fields.get("uuid") {
            let uuid = Datum::from_json(uuid)?;
            return uuid
                .atoms()
                .first()
                .and_then(|a| a.as_uuid())
                .cloned()
                .map(Self::Inserted)
                .ok_or_else(bad);
        }
        if let Some(Value::Array(rows)) = fields.get("rows") {
            return rows
                .iter()
                .map(Row::from_json)
                .collect::<Result<_, _>>()
                .map(Self::Rows);
        }
        if let Some(count) = fields.get("count") {
            return count.as_u64().map(Self::Count).ok_or_else(bad);
        }
        Ok(Self::Done)
    }
}

/// Decodes `transact`'s result for `ops`. The server reports a failed operation in its place
/// (the others then have no effect), and a failure at commit (say, a reference to a row that
/// does not exist) as one more element after them.
pub(crate) fn decode_results(
    ops: &[Operation],
    result: &Value,
) -> Result<Vec<OpResult>, NetovsError> {
    let Value::Array(results) = result else {
        return Err(NetovsError::Protocol(format!(
            "transact result is not an array: {result}"
        )));
    };
    for (index, result) in results.iter().enumerate() {
        if result.get("error").is_none() {
            continue;
        }
        let method = match ops.get(index) {
            Some(op) => format!("transact op {index} ({})", op.describe()),
            None => "transact commit".to_owned(),
        };
        return Err(server_error(method, result));
    }
    if results.len() < ops.len() {
        return Err(NetovsError::Protocol(format!(
            "transact of {} operations returned {} results",
            ops.len(),
            results.len()
        )));
    }
    results
        .iter()
        .take(ops.len())
        .map(OpResult::from_json)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::Atom;

    const U: &str = "2940d6ad-9af7-454b-820d-3b793ef462ac";
    const V: &str = "afde72e1-3ac7-468a-96c8-b354c50ef091";

    fn uuid(text: &str) -> Uuid {
        text.parse().unwrap()
    }

    #[test]
    fn operations_in_rfc_7047_form() {
        let cases = [
            (
                Operation::insert_named("Port", "p", Row::new().with("name", "p1")),
                json!({"op": "insert", "table": "Port", "row": {"name": "p1"}, "uuid-name": "p"}),
            ),
            (
                Operation::select("Bridge", vec![Condition::equal("name", "br0")]),
                json!({"op": "select", "table": "Bridge", "where": [["name", "==", "br0"]]}),
            ),
            (
                Operation::update(
                    "Interface",
                    vec![Condition::uuid(&uuid(U))],
                    Row::new().with("mtu_request", 1400),
                ),
                json!({"op": "update", "table": "Interface", "where": [["_uuid", "==", ["uuid", U]]],
                       "row": {"mtu_request": 1400}}),
            ),
            (
                Operation::mutate(
                    "Bridge",
                    vec![],
                    vec![
                        Mutation::new(
                            "ports",
                            Mutator::Insert,
                            Datum::set([Atom::NamedUuid("p".into())]),
                        ),
                        Mutation::new("other_config", Mutator::Delete, Datum::set(["hwaddr"])),
                    ],
                ),
                json!({"op": "mutate", "table": "Bridge", "where": [], "mutations": [
                    ["ports", "insert", ["set", [["named-uuid", "p"]]]],
                    ["other_config", "delete", ["set", ["hwaddr"]]]]}),
            ),
            (
                Operation::delete(
                    "Port",
                    vec![Condition::new("tag", Function::GreaterOrEqual, 10)],
                ),
                json!({"op": "delete", "table": "Port", "where": [["tag", ">=", 10]]}),
            ),
            (
                Operation::unchanged("Bridge", &uuid(U), &uuid(V)),
                json!({"op": "wait", "table": "Bridge", "where": [["_uuid", "==", ["uuid", U]]],
                       "columns": ["_version"], "until": "==", "rows": [{"_version": ["uuid", V]}], "timeout": 0}),
            ),
            (
                Operation::comment("hi"),
                json!({"op": "comment", "comment": "hi"}),
            ),
        ];
        for (op, expected) in cases {
            assert_eq!(op.to_json(), expected, "{}", op.describe());
        }
    }

    #[test]
    fn results_by_kind() {
        let ops = [
            Operation::insert("Bridge", Row::new()),
            Operation::select("Bridge", vec![]),
            Operation::delete("Bridge", vec![]),
            Operation::comment("x"),
        ];
        let result = json!([{"uuid": ["uuid", U]}, {"rows": [{"name": "br0"}]}, {"count": 2}, {}]);
        let results = decode_results(&ops, &result).unwrap();
        assert_eq!(results[0].uuid(), Some(&uuid(U)));
        assert_eq!(
            results[1].rows(),
            Some(&[Row::new().with("name", "br0")][..])
        );
        assert_eq!(results[2].count(), Some(2));
        assert_eq!(results[3], OpResult::Done);
    }

    #[test]
    fn a_failed_operation_is_named_by_index_and_kind() {
        let ops = [
            Operation::comment("x"),
            Operation::unchanged("Bridge", &uuid(U), &uuid(V)),
            Operation::comment("y"),
        ];
        let result =
            json!([{}, {"error": "timed out", "details": "\"where\" clause test failed"}, null]);
        let err = decode_results(&ops, &result).unwrap_err();
        assert_eq!(
            err.to_string(),
            "OVSDB transact op 1 (wait Bridge): timed out: \"where\" clause test failed"
        );
    }

    #[test]
    fn a_failed_commit_is_the_extra_result() {
        let ops = [Operation::insert("Port", Row::new())];
        let result = json!([{"uuid": ["uuid", U]}, {"error": "referential integrity violation", "details": "..."}]);
        let err = decode_results(&ops, &result).unwrap_err();
        assert!(
            matches!(&err, NetovsError::Server { method, .. } if method == "transact commit"),
            "{err}"
        );
    }

    #[test]
    fn too_few_results_is_a_protocol_error() {
        let err = decode_results(&[Operation::comment("x")], &json!([])).unwrap_err();
        assert!(matches!(err, NetovsError::Protocol(_)), "{err}");
    }
}
