//! A fake cgroupfs for unit tests: a temporary directory whose cgroups are directories pre-seeded
//! with the interface files the code reads and writes. It does not emulate the kernel (writes
//! simply replace a file's content), so tests assert exactly what was written.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A temporary cgroup2 mount.
pub(crate) struct FakeRoot {
    dir: TempDir,
}

impl FakeRoot {
    pub(crate) fn new() -> FakeRoot {
        FakeRoot {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The mount point.
    pub(crate) fn mount(&self) -> &Path {
        self.dir.path()
    }

    /// Creates (or refills) the cgroup `rel` with `cgroup.controllers` listing `controllers`, an
    /// empty `cgroup.subtree_control`, `cgroup.procs`, `cgroup.events`, `cgroup.kill`, and each
    /// controller's limit file at its default.
    pub(crate) fn cgroup(&self, rel: &str, controllers: &[&str]) -> PathBuf {
        let dir = self.dir.path().join(rel);
        fs::create_dir_all(&dir).unwrap();
        self.file(
            rel,
            "cgroup.controllers",
            &format!("{}\n", controllers.join(" ")),
        );
        self.file(rel, "cgroup.subtree_control", "");
        self.file(rel, "cgroup.procs", "");
        self.file(rel, "cgroup.events", "populated 0\nfrozen 0\n");
        self.file(rel, "cgroup.kill", "");
        for c in controllers {
            match *c {
                "cpu" => self.file(rel, "cpu.max", "max 100000\n"),
                "memory" => self.file(rel, "memory.max", "max\n"),
                "pids" => self.file(rel, "pids.max", "max\n"),
                "io" => self.file(rel, "io.max", ""),
                _ => {}
            }
        }
        dir
    }

    /// Writes `content` to `rel/name`.
    pub(crate) fn file(&self, rel: &str, name: &str, content: &str) {
        fs::write(self.dir.path().join(rel).join(name), content).unwrap();
    }

    /// Reads `rel/name`.
    pub(crate) fn read(&self, rel: &str, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(rel).join(name)).unwrap()
    }
}
