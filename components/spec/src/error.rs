//! [`SpecError`] and [`Problem`]: every rejection names the file, the document, the field path
//! and what is expected. This module only formats; it never decides what is wrong.

use std::fmt;

use crate::manifest::Source;

/// Why manifests (or a single value) were rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// One or more manifests are invalid; the message has one line per problem.
    #[error("{}", lines(.0))]
    Invalid(Vec<Problem>),
    /// A value given outside a manifest (for example `--since 5m`) is malformed.
    #[error("{0}")]
    InvalidValue(String),
}

impl SpecError {
    /// The individual problems; empty for [`SpecError::InvalidValue`], which has no place.
    pub fn problems(&self) -> &[Problem] {
        match self {
            SpecError::Invalid(problems) => problems,
            SpecError::InvalidValue(_) => &[],
        }
    }
}

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One rejection: `file: document N: field.path: message (line L, column C)`; every part but the
/// message may be absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// File name as the caller gave it.
    pub file: Option<String>,
    /// 1-based document number in the file.
    pub document: Option<usize>,
    /// Field path such as `spec.restart.backoff.max` or `spec.dependsOn[0]`.
    pub path: Option<String>,
    /// What is wrong and what is expected.
    pub message: String,
    /// Line and column (1-based) in the file, when the YAML parser knows them.
    pub line_column: Option<(u64, u64)>,
}

impl Problem {
    /// A problem about a manifest from `source` (or an unsourced one, such as a stored manifest).
    pub(crate) fn at(source: Option<&Source>, path: Option<String>, message: String) -> Self {
        Self {
            file: source.map(|s| s.file.clone()),
            document: source.map(|s| s.document),
            path,
            message,
            line_column: None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        if let Some(document) = self.document {
            write!(f, "document {document}: ")?;
        }
        if let Some(path) = &self.path {
            write!(f, "{path}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some((line, column)) = self.line_column {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}
