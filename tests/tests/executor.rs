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

#[test]
fn the_executor_knows_its_caller_by_cgroup_and_serves_only_what_it_is_for() {
    let c = Cluster::start();
    let mut events = c.events();
    let (cl, wl) = (
        cloudlet_bin().display().to_string(),
        workload_bin().display().to_string(),
    );
    c.apply_ok(
        "victim.yaml",
        &Cluster::workload_manifest("victim", &["sleep"], ""),
    );
    events.wait_for("victim", "Ready", T);
    // A script named `shim`, run as `/bin/sh shim --name victim`: a command line that says
    // "the shim of victim" to anyone who believes command lines.
    let dir = c.path("mallory");
    std::fs::create_dir(&dir).unwrap();
    let script = format!(
        r#"s="$CLOUDLET_EXECUTOR"
"{cl}" ctl --socket "$s" run --name vm-spoof -- "{wl}" sleep; echo "run: $?"
"{cl}" ctl --socket "$s" apply -f /dev/null; echo "apply: $?"
"{cl}" ctl --socket "$s" stop victim; echo "stop victim: $?"
"{cl}" ctl --socket "$s" get services -o json > list.json; echo "list: $?"
"{cl}" ctl --socket "$s" stop vm-spoof; echo "stop own: $?"
exec "{wl}" sleep
"#
    );
    std::fs::write(dir.join("shim"), script).unwrap();
    let manifest = format!(
        "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {{name: mallory}}\nspec:\n  \
         command: [/bin/sh, shim, --name, victim]\n  workingDir: {}\n  executor: true\n",
        dir.display()
    );
    c.apply_ok("mallory.yaml", &manifest);
    c.wait_log("mallory", T, |l| l.starts_with("stop own: "));
    let logs = String::from_utf8_lossy(&c.ctl(&["logs", "mallory"]).stdout).into_owned();

    // Its transient service is its own, whatever its command line says.
    assert!(logs.contains("run: 0"), "{logs}");
    assert_eq!(c.service("vm-spoof")["owner"], "mallory");
    let ran = events.wait("the Run event", T, |e| e["reason"] == "Run");
    assert!(
        ran["message"]
            .as_str()
            .unwrap()
            .contains("started for mallory"),
        "{ran}"
    );
    // Only what the executor is for: no apply, no stopping another's service.
    assert!(logs.contains("not served on the executor socket"), "{logs}");
    assert!(!logs.contains("apply: 0"), "{logs}");
    assert!(logs.contains("was not started by mallory"), "{logs}");
    assert!(!logs.contains("stop victim: 0"), "{logs}");
    assert_eq!(c.service("victim")["state"], "running");
    // It lists only its own, and may stop those.
    assert!(
        logs.contains("list: 0") && logs.contains("stop own: 0"),
        "{logs}"
    );
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("list.json")).unwrap()).unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["vm-spoof"]);
}
