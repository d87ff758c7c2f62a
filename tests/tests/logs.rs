//! End to end: service logs through the shim — rotation, `--tail`, `--previous`, `-f`, and the
//! line-level timestamps and streams.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "tests; PIDs fit in u32"
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use cloudlet_tests::Cluster;

const T: Duration = Duration::from_secs(30);

#[test]
fn logs_rotate_and_read_back_in_order_across_files() {
    let c = Cluster::start();
    let mut events = c.events();
    // 3000 numbered lines into 4 KiB files, 3 kept: most lines rotate away, the newest stay.
    c.apply_ok(
        "chatty.yaml",
        &Cluster::workload_manifest(
            "chatty",
            &["--print", "3000"],
            "  logs: {maxSize: 4Ki, maxFiles: 3}\n",
        ),
    );
    events.wait_for("chatty", "Ready", T);
    c.wait_log("chatty", T, |l| l.starts_with("line 3000 "));
    let files: Vec<_> = std::fs::read_dir(c.data_dir().join("logs/chatty"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        assert!(f.metadata().unwrap().len() <= 4096);
    }
    let all = c.ctl_ok(&["logs", "chatty", "--details"]);
    let mut last_by_stream = std::collections::HashMap::new();
    for l in all.lines().filter(|l| l.contains(" line ")) {
        let w: Vec<&str> = l.split_whitespace().collect();
        let (stream, n): (&str, u64) = (w[1], w[4].parse().unwrap());
        if let Some(prev) = last_by_stream.insert(stream.to_owned(), n) {
            assert_eq!(
                n,
                prev + 1,
                "lines of {stream} out of order or lost within the kept files"
            );
        }
    }
    assert_eq!(last_by_stream.get("stdout"), Some(&3000));
    let tail = c.ctl_ok(&["logs", "chatty", "--tail", "5"]);
    assert_eq!(tail.lines().count(), 5);
}

#[test]
fn previous_shows_the_run_before_the_last_restart() {
    let c = Cluster::start();
    let mut events = c.events();
    c.apply_ok(
        "r.yaml",
        &Cluster::workload_manifest(
            "r",
            &[
                "--print", "3", "--stream", "both", "exit", "1", "--after", "100ms",
            ],
            "  restart: {policy: always, backoff: {initial: 100ms, max: 200ms}}\n",
        ),
    );
    for run in [2, 3] {
        events.wait(&format!("run {run}"), T, |e| {
            e["service"] == "r"
                && e["reason"] == "Started"
                && e["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("run {run} "))
        });
    }
    c.ctl_ok(&["stop", "r"]);
    events.wait_for("r", "Stopped", T);
    let status = c.service("r");
    let current = status["run"].as_u64().unwrap();
    let prev = c.ctl_ok(&["logs", "r", "--previous", "--details"]);
    let runs: std::collections::BTreeSet<u64> = prev
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        runs.into_iter().collect::<Vec<_>>(),
        vec![current - 1],
        "{prev}"
    );
    let stdout = prev
        .lines()
        .filter(|l| l.contains(" stdout ") && l.contains(" line "))
        .count();
    let stderr = prev
        .lines()
        .filter(|l| l.contains(" stderr ") && l.contains(" line "))
        .count();
    assert_eq!((stdout, stderr), (3, 3), "{prev}");
    let all = c.ctl_ok(&["logs", "r"]);
    assert!(
        all.lines().filter(|l| l.starts_with("line 1 ")).count() >= 6,
        "{all}"
    );
}

#[test]
fn follow_prints_new_lines_as_they_are_written() {
    let c = Cluster::start();
    let mut events = c.events();
    c.apply_ok(
        "f.yaml",
        &Cluster::workload_manifest("f", &["--print", "0", "--interval", "50ms"], ""),
    );
    events.wait_for("f", "Ready", T);
    let mut child = Command::new(cloudlet_tests::cloudlet_bin())
        .args(["ctl", "--data-dir"])
        .arg(c.data_dir())
        .args(["logs", "f", "-f", "--tail", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: u64 = lines
        .next()
        .unwrap()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    for k in 1..=10 {
        let n: u64 = lines
            .next()
            .unwrap()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(n, first + k);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A logs request's name becomes a path under `DIR/logs`: one that is not a service name
/// (`../pki`, a directory that exists) is refused, never read.
#[test]
fn a_logs_request_cannot_name_a_path() {
    let c = Cluster::start();
    assert!(c.data_dir().join("pki").is_dir());
    let out = c.ctl(&["logs", "../pki"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("service name \"../pki\""), "{err}");
}
