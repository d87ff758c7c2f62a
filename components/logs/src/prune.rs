//! Removing the log directories of services that no longer exist. It must never remove a
//! directory the caller keeps, one written to recently, or anything that is not a directory
//! directly under the given root.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::LogsError;

/// What [`prune`] did.
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Names of the directories removed.
    pub removed: Vec<String>,
    /// Directories that could not be looked at or removed; the others were still pruned.
    pub failed: Vec<LogsError>,
}

/// Removes every directory directly under `root` whose name `keep` rejects and whose newest file
/// (or the directory itself, if empty) was modified more than `older_than` ago. A `root` that
/// does not exist has nothing to prune. Symbolic links and plain files under `root` are left
/// alone. Blocking.
pub fn prune(
    root: &Path,
    keep: &dyn Fn(&str) -> bool,
    older_than: Duration,
) -> Result<PruneReport, LogsError> {
    let mut report = PruneReport::default();
    let list_error = |source| LogsError::Read {
        path: root.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(list_error(e)),
    };
    let now = SystemTime::now();
    for entry in entries {
        let entry = entry.map_err(list_error)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => {}
            Ok(_) => continue,
            Err(source) => {
                report.failed.push(LogsError::Read { path, source });
                continue;
            }
        }
        if keep(&name) {
            continue;
        }
        let newest = match newest_change(&path) {
            Ok(newest) => newest,
            Err(e) => {
                report.failed.push(e);
                continue;
            }
        };
        // A time in the future (clock stepped back) counts as fresh.
        if now.duration_since(newest).is_ok_and(|age| age > older_than) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => report.removed.push(name),
                Err(source) => report.failed.push(LogsError::Remove { path, source }),
            }
        }
    }
    report.removed.sort();
    Ok(report)
}

/// The latest modification time of the files in `dir`, or of `dir` itself if it has none.
fn newest_change(dir: &Path) -> Result<SystemTime, LogsError> {
    let read_error = |source| LogsError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut newest = None;
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let modified = entry.and_then(|e| e.metadata()).and_then(|m| m.modified());
        let modified = modified.map_err(read_error)?;
        newest = newest.max(Some(modified));
    }
    match newest {
        Some(t) => Ok(t),
        None => std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .map_err(read_error),
    }
}
