//! Test-only: a fake host root in a temp dir, seeded with the files a test names. It owns nothing
//! outside the temp dir it creates and must never write anywhere else.

use std::fs;
use std::path::Path;

use tempfile::TempDir;

use crate::HostPaths;

/// A temp dir laid out like `/`, with `files` (paths relative to the root) written into it.
pub(crate) fn host(files: &[(&str, &str)]) -> (TempDir, HostPaths) {
    let root = tempfile::tempdir().unwrap();
    for (path, content) in files {
        write(root.path(), path, content);
    }
    let paths = HostPaths::under(root.path());
    (root, paths)
}

/// Writes `content` to `root/path`, creating the directories on the way.
pub(crate) fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}
