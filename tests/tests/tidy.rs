//! Repository policy, checked on every test run: every Rust file says what it owns in a `//!`
//! module doc, every script fails fast, and the README's two commands are the ones CI runs.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n != "target" && n != ".git")
            {
                files(&path, ext, out);
            }
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut rs = Vec::new();
    for dir in ["cmd", "components", "tests"] {
        files(&root().join(dir), "rs", &mut rs);
    }
    assert!(rs.len() > 20, "found only {} files", rs.len());
    let missing: Vec<_> = rs
        .iter()
        .filter(|p| {
            !std::fs::read_to_string(p)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! module doc: {missing:#?}"
    );
}

#[test]
fn every_script_fails_fast() {
    // The scripts a person or CI runs; scripts/vm/ holds busybox scenarios that run inside the
    // test VM and must go on after a failed check to report the next one.
    let mut sh: Vec<PathBuf> = std::fs::read_dir(root().join("scripts"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    sh.push(root().join(".ci/run"));
    for script in sh {
        let text = std::fs::read_to_string(&script).unwrap();
        assert!(
            text.contains("set -euo pipefail"),
            "{} lacks `set -euo pipefail`",
            script.display()
        );
    }
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let first_block: Vec<&str> = readme.split("```").nth(1).unwrap().lines().collect();
    assert!(
        first_block
            .iter()
            .any(|l| l.starts_with("./scripts/run.sh")),
        "{first_block:?}"
    );
    assert!(
        first_block
            .iter()
            .any(|l| l.starts_with("./scripts/test.sh")),
        "{first_block:?}"
    );
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(ci.contains("exec ./scripts/test.sh"), "{ci}");
}

#[test]
fn the_systemd_unit_never_stops_services_and_delegates_the_cgroup() {
    let out = std::process::Command::new(root().join("scripts/install.sh"))
        .arg("--print-unit")
        .output()
        .unwrap();
    assert!(out.status.success());
    let unit = String::from_utf8(out.stdout).unwrap();
    for line in [
        "KillMode=process",
        "Delegate=yes",
        "ExecStart=/usr/local/bin/cloudlet server",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "unit lacks {line}:\n{unit}"
        );
    }
}

#[test]
fn every_yaml_example_in_the_readme_is_valid() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert!(blocks.len() >= 2, "no yaml examples found");
    for block in blocks {
        if block.contains("kind: NodeNetwork") {
            cloudlet_netovs::network::parse("README.md", block)
                .unwrap_or_else(|e| panic!("README NodeNetwork example: {e}"));
        } else if block.contains("kind: Service") {
            let manifests = cloudlet_spec::parse_file("README.md", block)
                .unwrap_or_else(|e| panic!("README Service example: {e}"));
            // Its dependencies are not in the example: only the documents themselves are checked.
            assert!(!manifests.is_empty());
        } else if block.contains("kind: Cluster") {
            cloudlet_spec::ClusterManifest::parse("README.md", block)
                .unwrap_or_else(|e| panic!("README Cluster example: {e}"));
        }
    }
}
