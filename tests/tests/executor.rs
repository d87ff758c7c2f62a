//! End to end: the executor — transient services that outlive the service that asked for them,
//! and host commands run to completion with their output and exit code.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "tests; PIDs fit in u32"
)]

use std::time::{Duration, Instant};

use cloudlet_tests::{Cluster, alive, cloudlet_bin, workload_bin};

const T: Duration = Duration::from_secs(30);

#[test]
fn a_daemon_started_through_the_executor_outlives_its_callers_restart_and_deletion() {
    let c = Cluster::start();
    let mut events = c.events();
    let (cl, wl) = (
        cloudlet_bin().display().to_string(),
        workload_bin().display().to_string(),
    );
    let script = format!(
        "\"{cl}\" ctl --socket \"$CLOUDLET_EXECUTOR\" run --name vm-1 --group vms --memory 64Mi -- \"{wl}\" sleep || true; exec \"{wl}\" sleep"
    );
    let manifest = format!(
        "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {{name: caller}}\nspec:\n  command: [/bin/sh, -c, {}]\n  executor: true\n",
        serde_json::to_string(&script).unwrap()
    );
    c.apply_ok("caller.yaml", &manifest);
    let run = events.wait("vm-1 started", T, |e| {
        e["service"] == "vm-1" && e["reason"] == "Ready"
    });
    let _ = run;
    let vm = c.service("vm-1");
    assert_eq!(vm["owner"], "caller", "{vm}");
    assert_eq!(vm["group"], "vms", "{vm}");
    let vm_pid = vm["pid"].as_u64().unwrap() as u32;
    let ran = events.wait("the Run event", T, |e| e["reason"] == "Run");
    assert!(
        ran["message"]
            .as_str()
            .unwrap()
            .contains("started for caller"),
        "{ran}"
    );

    c.ctl_ok(&["restart", "caller"]);
    events.wait("caller run 2", T, |e| {
        e["service"] == "caller"
            && e["reason"] == "Started"
            && e["message"].as_str().unwrap().starts_with("run 2 ")
    });
    c.ctl_ok(&["delete", "service", "caller"]);
    events.wait_for("caller", "Deleted", T);
    let vm = c.service("vm-1");
    assert_eq!(
        vm["pid"].as_u64().unwrap() as u32,
        vm_pid,
        "vm-1 kept running: {vm}"
    );
    assert!(alive(vm_pid));

    // Only an explicit stop or delete ends it.
    c.ctl_ok(&["delete", "service", "vm-1"]);
    events.wait_for("vm-1", "Deleted", T);
    assert!(!alive(vm_pid));
}

#[test]
fn exec_streams_output_and_passes_the_exit_code_on() {
    let c = Cluster::start();
    let out = c.ctl(&[
        "exec",
        "--",
        "/bin/sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"));

    let ok = c.ctl(&[
        "exec",
        "--env",
        "GREETING=hi",
        "--",
        "/bin/sh",
        "-c",
        "echo $GREETING",
    ]);
    assert!(ok.status.success());
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "hi\n");

    let started = Instant::now();
    let slow = c.ctl(&["exec", "--timeout", "300ms", "--", "/bin/sleep", "30"]);
    assert!(!slow.status.success());
    assert!(
        String::from_utf8_lossy(&slow.stderr).contains("timeout"),
        "{slow:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let mut events = c.events();
    let execs: Vec<_> = (0..3)
        .map(|_| events.wait("an Exec event", T, |e| e["reason"] == "Exec"))
        .collect();
    assert!(
        execs[0]["message"]
            .as_str()
            .unwrap()
            .contains("operator ran `/bin/sh -c echo out; echo err >&2; exit 3`: exit code 3"),
        "{:?}",
        execs[0]
    );
}
