//! Parsing a YAML file with several documents into [`Manifest`]s, with errors that name the file,
//! the document, the field path and the line.
//!
//! The text is split at document markers first, and each document is parsed on its own: a broken
//! document does not hide the errors of the others, and its number is always known. Each document
//! goes through serde-saphyr wrapped in `serde_path_to_error` (for the field path), then through
//! `validate`. This module never reads files: callers pass the file name and its text.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_saphyr::MessageFormatter;

use crate::error::{Problem, SpecError};
use crate::manifest::{ApiVersion, Kind, Manifest, ServiceManifest, Source};

/// Parses every document of `file` (whose contents are `text`).
///
/// Empty documents (only comments, or nothing between two `---`) are skipped but still counted
/// when numbering documents. If any document is invalid, nothing is returned: the error lists the
/// first problem of each broken document (and every semantic problem), one per line.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Manifest>, SpecError> {
    let mut manifests = Vec::new();
    let mut problems = Vec::new();
    let documents = split_documents(text);
    if documents.len() > MAX_DOCUMENTS {
        return Err(SpecError::Invalid(vec![Problem {
            file: Some(file.to_owned()),
            document: None,
            path: None,
            message: format!(
                "{} YAML documents, at most {MAX_DOCUMENTS} in one file: split it",
                documents.len()
            ),
            line_column: None,
        }]));
    }
    for (index, document) in documents.iter().enumerate() {
        let source = Source {
            file: file.to_owned(),
            document: index + 1,
        };
        match parse_document(&source, document.text) {
            Ok(Some(manifest)) => manifests.push(manifest),
            Ok(None) => {}
            Err(found) => problems.extend(found.into_iter().map(|p| document.in_file(p))),
        }
    }
    if problems.is_empty() {
        Ok(manifests)
    } else {
        Err(SpecError::Invalid(problems))
    }
}

/// Parses a one-document configuration file (such as a node's network config) into `T`, with
/// the same errors as manifests: `file: field.path: what is expected (line, column)`. `T` does
/// its own semantic checks (e.g. through `#[serde(try_from)]`).
pub fn parse_config<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, SpecError> {
    let documents = split_documents(text);
    let [document] = documents.as_slice() else {
        return Err(SpecError::Invalid(vec![Problem {
            file: Some(file.to_owned()),
            document: None,
            path: None,
            message: format!(
                "expected exactly one YAML document, found {}",
                documents.len()
            ),
            line_column: None,
        }]));
    };
    deserialize::<T>(document.text).map_err(|problem| {
        let mut problem = document.in_file(problem);
        problem.file = Some(file.to_owned());
        SpecError::Invalid(vec![problem])
    })
}

/// The most YAML documents one file may hold: the largest set cloudlet renders (a whole
/// Cloudpods cluster) is under a hundred.
pub const MAX_DOCUMENTS: usize = 1_000;

/// One document of a file: its text and the 0-based line it starts on.
#[derive(Debug, PartialEq, Eq)]
struct Document<'a> {
    first_line: usize,
    text: &'a str,
}

impl Document<'_> {
    /// `problem`, whose line is counted in this document, with its line in the whole file.
    /// (Documents were once parsed padded with a newline per line before them: 20,000 empty
    /// documents took 18 s, every worker of the server busy with them.)
    fn in_file(&self, mut problem: Problem) -> Problem {
        if let Some((line, column)) = problem.line_column {
            let before = u64::try_from(self.first_line).unwrap_or(u64::MAX);
            problem.line_column = Some((line.saturating_add(before), column));
        }
        problem
    }
}

/// Whether `line` is the document marker `marker` (`---` or `...`), alone or followed by space.
fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// Whether `text` holds anything but blank lines, comments and directives (`%YAML`).
fn has_content(text: &str) -> bool {
    text.lines().any(|line| {
        let trimmed = line.trim_start_matches('\u{feff}').trim();
        !(trimmed.is_empty() || trimmed.starts_with('#') || line.starts_with('%'))
    })
}

/// Splits `text` into documents.
///
/// YAML forbids a line starting with `---` or `...` (followed by a space or the line end) inside
/// any scalar, so such a line is always a document marker and splitting by lines is exact.
/// Comments and directives before the first `---` belong to the document that `---` starts; an
/// explicit `---` always starts a document, even an empty one.
fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut first_line = 0;
    let mut explicit = false;
    let mut offset = 0;
    // Offsets are always just after a '\n' (or 0 or the end), so slicing at them is safe.
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let bare = if number == 0 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        if is_marker(bare, "---") {
            let current = &text[start..offset];
            if explicit || has_content(current) {
                documents.push(Document {
                    first_line,
                    text: current,
                });
                start = offset;
                first_line = number;
            }
            explicit = true;
        }
        offset += line.len();
        if is_marker(bare, "...") {
            let current = &text[start..offset];
            if explicit || has_content(current) {
                documents.push(Document {
                    first_line,
                    text: current,
                });
            }
            start = offset;
            first_line = number + 1;
            explicit = false;
        }
    }
    let rest = &text[start..];
    if explicit || has_content(rest) {
        documents.push(Document {
            first_line,
            text: rest,
        });
    }
    documents
}

/// What every manifest starts with; read first to know which type to parse the document as.
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    expecting = "a manifest (a mapping with apiVersion, kind, metadata and spec)"
)]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
}

/// Parses one document; `Ok(None)` if it is empty.
fn parse_document(source: &Source, text: &str) -> Result<Option<Manifest>, Vec<Problem>> {
    let located = |mut problem: Problem| {
        problem.file = Some(source.file.clone());
        problem.document = Some(source.document);
        vec![problem]
    };
    let Some(header) = deserialize::<Option<Header>>(text).map_err(located)? else {
        return Ok(None);
    };
    let mut problems = Vec::new();
    let mut problem = |path: &str, message: String| {
        problems.push(Problem::at(Some(source), Some(path.to_owned()), message));
    };
    let v1 = ApiVersion::V1.as_str();
    match header.api_version.as_deref() {
        Some(version) if version == v1 => {}
        Some(version) => problem(
            "apiVersion",
            format!("unsupported version {version:?}, expected {v1}"),
        ),
        None => problem("apiVersion", format!("is required, expected {v1}")),
    }
    let kinds = Kind::ALL.map(Kind::as_str).join(", ");
    let kind = match header.kind.as_deref() {
        Some(kind) => {
            let found = Kind::ALL.into_iter().find(|k| k.as_str() == kind);
            if found.is_none() {
                problem(
                    "kind",
                    format!("unsupported kind {kind:?}, expected one of {kinds}"),
                );
            }
            found
        }
        None => {
            problem("kind", format!("is required, expected one of {kinds}"));
            None
        }
    };
    match kind {
        Some(Kind::Service) if problems.is_empty() => {
            let mut service = deserialize::<ServiceManifest>(text).map_err(located)?;
            service.set_source(source.clone());
            service.validate().map_err(|e| e.problems().to_vec())?;
            Ok(Some(Manifest::Service(service)))
        }
        _ => Err(problems),
    }
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // `yes`, `on` and friends stay strings: only true/false are booleans.
        strict_booleans: true,
        with_snippet: false,
    }
}

/// Deserialises one document (`text` holds exactly one) into `T`; the problem has no file yet.
fn deserialize<T: DeserializeOwned>(text: &str) -> Result<T, Problem> {
    // The path-tracking result is kept outside the closure: after a failure in the middle of a
    // document, serde-saphyr also complains about the unread rest, and that must not hide it.
    let mut result = None;
    let outer = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        result = Some(serde_path_to_error::deserialize::<_, T>(de));
        Ok(())
    });
    match (result, outer) {
        (Some(Err(err)), _) => {
            let path = render_path(err.path());
            Err(problem_from(path, err.inner()))
        }
        (Some(Ok(value)), Ok(())) => Ok(value),
        (_, Err(err)) => Err(problem_from(Vec::new(), &err)),
        // serde-saphyr calls the closure unless it fails first.
        (None, Ok(())) => Err(Problem::at(None, None, "the document was not read".into())),
    }
}

/// The path segments up to the first one serde could not name.
fn render_path(path: &serde_path_to_error::Path) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => match out.last_mut() {
                Some(last) => last.push_str(&format!("[{index}]")),
                None => out.push(format!("[{index}]")),
            },
            Segment::Map { key } => out.push(key.clone()),
            Segment::Enum { variant } => out.push(variant.clone()),
            Segment::Unknown => break,
        }
    }
    out
}

/// Turns a serde-saphyr error at `path` into a problem with our wording and its line.
fn problem_from(mut path: Vec<String>, err: &serde_saphyr::Error) -> Problem {
    use serde_saphyr::Error as E;
    let err = err.without_snippet();
    let message = match err {
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            format!(
                "unknown field {field:?}, expected one of {}",
                expected.join(", ")
            )
        }
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => format!(
            "unknown value {variant:?}, expected one of {}",
            expected.join(", ")
        ),
        E::SerdeMissingField { field, .. } => {
            path.push((*field).to_owned());
            "is required".to_owned()
        }
        E::DuplicateMappingKey { key: Some(key), .. } => format!("duplicate key {key:?}"),
        E::Unexpected { expected, .. } => match *expected {
            "sequence start" => "expected a list".to_owned(),
            "mapping start" if path.is_empty() => {
                "expected a manifest (a mapping with apiVersion, kind, metadata and spec)"
                    .to_owned()
            }
            "mapping start" => "expected a mapping".to_owned(),
            "string scalar" => "expected a string".to_owned(),
            other => format!("expected {other}"),
        },
        E::InvalidScalar { ty, .. } => format!("invalid value, expected {}", describe_type(ty)),
        E::Message { msg, .. } => msg.clone(),
        other => serde_saphyr::UserMessageFormatter
            .format_message(other)
            .into_owned(),
    };
    Problem {
        file: None,
        document: None,
        path: (!path.is_empty()).then(|| path.join(".")),
        message,
        line_column: err
            .location()
            .filter(|l| l.line() > 0)
            .map(|l| (l.line(), l.column())),
    }
}

/// Words for a Rust scalar type named in a serde-saphyr error.
fn describe_type(ty: &str) -> Cow<'static, str> {
    match ty {
        "u8" => "a whole number from 0 to 255".into(),
        // Every u16 in the manifest is a port.
        "u16" => "a port number from 1 to 65535".into(),
        "u32" => "a whole number from 0 to 4294967295".into(),
        "u64" | "usize" => "a whole number from 0".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "bool" => "true or false".into(),
        other => Cow::Owned(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<(usize, &str)> {
        split_documents(text)
            .into_iter()
            .map(|d| (d.first_line, d.text))
            .collect()
    }

    #[test]
    fn splits_documents() {
        let cases: &[(&str, &[(usize, &str)])] = &[
            ("", &[]),
            ("# only a comment\n\n", &[]),
            ("a: 1\n", &[(0, "a: 1\n")]),
            ("a: 1\n---\nb: 2\n", &[(0, "a: 1\n"), (1, "---\nb: 2\n")]),
            // Comments before the first marker belong to the first document.
            ("# head\n---\na: 1\n", &[(0, "# head\n---\na: 1\n")]),
            // An explicit empty document counts.
            (
                "---\n# empty\n---\na: 1",
                &[(0, "---\n# empty\n"), (2, "---\na: 1")],
            ),
            (
                "--- {a: 1}\n--- {b: 2}\n",
                &[(0, "--- {a: 1}\n"), (1, "--- {b: 2}\n")],
            ),
            ("a: 1\n...\n# tail\n", &[(0, "a: 1\n...\n")]),
            ("%YAML 1.2\n---\na: 1\n", &[(0, "%YAML 1.2\n---\na: 1\n")]),
            // Not markers: indented, or followed by something other than a space.
            ("a: |\n  ---\nb: ---x\n", &[(0, "a: |\n  ---\nb: ---x\n")]),
            ("\u{feff}---\na: 1\n", &[(0, "\u{feff}---\na: 1\n")]),
        ];
        for (text, want) in cases {
            assert_eq!(split(text), *want, "{text:?}");
        }
    }

    #[test]
    fn problems_name_lines_of_the_file() {
        let err = parse_file("f.yaml", "a: 1\n---\nb: [\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("f.yaml: document 2"), "{err}");
        assert!(
            err.contains("(line 3,") || err.contains("(line 4,"),
            "{err}"
        );
    }

    /// 20,000 empty documents once took 18 s (each parsed padded with a newline per line before
    /// it): now refused by count.
    #[test]
    fn many_documents_are_refused_by_count_not_by_time() {
        let err = parse_file("f.yaml", &"---\n".repeat(20_000))
            .unwrap_err()
            .to_string();
        assert!(err.contains("20000 YAML documents, at most 1000"), "{err}");
        assert!(parse_file("f.yaml", &"---\n".repeat(MAX_DOCUMENTS)).is_ok());
    }
}
