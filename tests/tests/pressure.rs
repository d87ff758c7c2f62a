//! End to end: no eviction. A filling filesystem raises DiskPressure as a warning and then as
//! critical, and nothing is stopped; a full store refuses writes with a clear error while reads and
//! supervision go on, and accepts writes again once space returns.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "tests; PIDs fit in u32"
)]

use std::time::{Duration, Instant};

use cloudlet_tests::{Cluster, fill};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn disk_condition(c: &Cluster) -> Value {
    let nodes: Value = serde_json::from_str(&c.ctl_ok(&["get", "nodes", "-o", "json"])).unwrap();
    nodes[0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == "DiskPressure")
        .cloned()
        .unwrap()
}

#[test]
fn a_filling_disk_raises_disk_pressure_and_stops_nothing() {
    // The data dir is watched too: it gets a roomy filesystem of its own, so that how full the
    // machine's disk is (a CI runner's may be past 85%) cannot raise the condition first.
    let mut c = Cluster::unstarted(Some("data"), &[]);
    c.mount_tmpfs("data", "256m");
    let fs = c.mount_tmpfs("fill", "4m");
    let fs_arg = fs.display().to_string();
    // The server watches the small filesystem besides its data dir.
    c.add_server_args(&["--disk-path", &fs_arg, "--monitor-interval", "200ms"]);
    c.start_server();
    let mut events = c.events();
    c.apply_ok(
        "two.yaml",
        &[
            Cluster::workload_manifest("a", &[], ""),
            Cluster::workload_manifest("b", &[], ""),
        ]
        .join("---\n"),
    );
    events.wait_for("a", "Ready", T);
    events.wait_for("b", "Ready", T);
    let before = c.pids_and_restarts();
    assert_eq!(disk_condition(&c)["status"], false);

    // 87.5% used: under 15% free is a warning.
    fill(&fs.join("big"), 3584 * 1024);
    events.wait("DiskPressure warning", T, |e| {
        e["reason"] == "DiskPressure" && e["message"].as_str().unwrap().starts_with("warning")
    });
    // 97.5% used: under 5% free is critical.
    fill(&fs.join("big"), 400 * 1024);
    let critical = events.wait("DiskPressure critical", T, |e| {
        e["reason"] == "DiskPressure" && e["message"].as_str().unwrap().starts_with("critical")
    });
    assert!(
        critical["message"].as_str().unwrap().contains(&fs_arg),
        "names the disk: {critical}"
    );
    let cond = disk_condition(&c);
    assert_eq!(
        (cond["status"].as_bool(), cond["severity"].as_str()),
        (Some(true), Some("critical")),
        "{cond}"
    );

    // Nothing was stopped, throttled or restarted.
    assert_eq!(c.pids_and_restarts(), before);
    for s in c.services() {
        assert_eq!(s["state"], "running", "{s}");
    }
    let stops = events
        .seen()
        .iter()
        .filter(|e| e["reason"] == "Stopping" || e["reason"] == "Exited")
        .count();
    assert_eq!(stops, 0, "{:#?}", events.seen());

    std::fs::remove_file(fs.join("big")).unwrap();
    events.wait("DiskPressure cleared", T, |e| {
        e["reason"] == "DiskPressure" && e["message"].as_str().unwrap().starts_with("cleared")
    });
    assert_eq!(disk_condition(&c)["status"], false);
}

#[test]
fn a_full_store_refuses_writes_clearly_while_reads_and_supervision_go_on() {
    let mut c = Cluster::unstarted(Some("data"), &[]);
    c.mount_tmpfs("data", "24m");
    c.start_server();
    let mut events = c.events();
    c.apply_ok(
        "a.yaml",
        &Cluster::workload_manifest("a", &["--print", "0", "--interval", "100ms"], ""),
    );
    events.wait_for("a", "Ready", T);
    let pid = c.service("a")["pid"].as_u64().unwrap();

    fill(&c.data_dir().join("filler"), 64 << 20);
    // The store may still have room inside its file: keep writing until the disk says no.
    let padding = "x".repeat(8192);
    let mut refused = None;
    for i in 0..500 {
        let extra = format!("  env: {{PAD: {padding}}}\n");
        let out = c.apply(
            &format!("b{i}.yaml"),
            &Cluster::workload_manifest(&format!("b{i}"), &["--print", "1"], &extra),
        );
        if !out.status.success() {
            refused = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            break;
        }
    }
    let err = refused.expect("the store never refused a write on a full disk");
    assert!(err.contains("disk full"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // Reads and supervision go on.
    let s = c.service("a");
    assert_eq!(
        (s["pid"].as_u64(), s["state"].as_str()),
        (Some(pid), Some("running")),
        "{s}"
    );
    c.ctl_ok(&["logs", "a", "--tail", "1"]);

    std::fs::remove_file(c.data_dir().join("filler")).unwrap();
    // The filler's pages are freed when its last descriptor closes, and a `ctl` another test
    // thread forked meanwhile may hold a copy until it execs: retry for a bounded moment.
    let deadline = Instant::now() + T;
    loop {
        let out = c.apply("z.yaml", &Cluster::workload_manifest("z", &[], ""));
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("disk full") && Instant::now() < deadline,
            "{err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    events.wait_for("z", "Ready", T);
}
