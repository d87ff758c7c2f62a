//! End to end: `type: oneshot` steps. A step is retried with backoff while it fails (its last
//! output shown as the why), is done for its dependants once it exits 0, stays done across a
//! SIGKILL of the server, and runs again only when its manifest changes.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::Duration;

use cloudlet_tests::Cluster;

const T: Duration = Duration::from_secs(30);

/// A step that fails (printing why) until `flag` exists, then succeeds.
fn step(flag: &str, note: &str) -> String {
    let script = format!(
        "test -e {flag} || {{ echo \"no {flag} yet\" >&2; exit 4; }}; echo \"step done: {note}\""
    );
    let cmd = serde_json::to_string(&["/bin/sh", "-c", &script]).unwrap();
    format!(
        "apiVersion: cloudlet/v1\nkind: Service\nmetadata:\n  name: step\nspec:\n  type: oneshot\n  \
         command: {cmd}\n  restart: {{backoff: {{initial: 100ms, max: 400ms}}}}\n"
    )
}

#[test]
fn a_oneshot_step_retries_until_it_succeeds_then_its_dependant_starts_and_it_stays_done() {
    let mut c = Cluster::start();
    let flag = c.path("flag");
    let flag = flag.to_str().unwrap();
    let app = Cluster::workload_manifest("app", &["sleep"], "  dependsOn: [step]\n");
    let mut events = c.events();
    c.apply_ok("steps.yaml", &format!("{}---\n{app}", step(flag, "v1")));

    // Failing: retried with backoff, and the why is its own last output.
    let failed = events.wait_for("step", "StepFailed", T);
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains(&format!("no {flag} yet")), "{failed}");
    events.wait_for("step", "BackOff", T);
    c.wait_until("describe shows why", T, |c| {
        let s = c.service("step");
        s["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("no {flag} yet")))
    });
    let app_now = c.service("app");
    assert_eq!(app_now["state"], "waiting", "{app_now}");
    assert_eq!(app_now["waitingFor"][0], "step (not ready)", "{app_now}");

    // It succeeds: done, ready, and the dependant starts.
    std::fs::write(flag, "").unwrap();
    events.wait_for("step", "Completed", T);
    events.wait_for("app", "Ready", T);
    let done = c.service("step");
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["ready"], true, "{done}");
    assert!(done["pid"].is_null(), "{done}");
    assert!(
        done["run"].as_u64().unwrap() >= 2,
        "it failed at least once: {done}"
    );
    let runs = done["run"].as_u64().unwrap();
    let app_pid = c.service("app")["pid"].as_u64().unwrap();
    c.wait_log("step", T, |line| line.contains("step done: v1"));

    // A SIGKILL of the server: the next one adopts the finished step as done, runs nothing.
    c.kill_server();
    c.start_server();
    c.wait_until("the step adopted as done", T, |c| {
        let s = c.service("step");
        s["state"] == "completed" && s["ready"] == true
    });
    let after = c.service("step");
    assert_eq!(after["run"].as_u64(), Some(runs), "not run again: {after}");
    assert_eq!(c.service("app")["pid"].as_u64(), Some(app_pid));

    // The same manifest again changes nothing; a changed one runs again, and the running
    // dependant is left alone (no cascade).
    c.apply_ok("steps.yaml", &format!("{}---\n{app}", step(flag, "v1")));
    assert_eq!(c.service("step")["run"].as_u64(), Some(runs));
    let mut events = c.events();
    c.apply_ok("steps.yaml", &format!("{}---\n{app}", step(flag, "v2")));
    events.wait_for("step", "Completed", T);
    c.wait_log("step", T, |line| line.contains("step done: v2"));
    let rerun = c.service("step");
    assert_eq!(rerun["run"].as_u64(), Some(runs + 1), "{rerun}");
    assert_eq!(rerun["state"], "completed");
    let app_after = c.service("app");
    assert_eq!(app_after["pid"].as_u64(), Some(app_pid), "{app_after}");
    assert_eq!(app_after["restarts"], 0, "{app_after}");
}

#[test]
fn a_oneshot_step_cannot_have_a_probe_or_be_restarted_always() {
    let c = Cluster::start();
    let yaml = "apiVersion: cloudlet/v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  type: oneshot\n  \
                command: [/bin/true]\n  readiness: {tcp: {port: 1}}\n  restart: {policy: always}\n";
    let out = c.apply("bad.yaml", yaml);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.readiness") && err.contains("cannot have a readiness probe"),
        "{err}"
    );
    assert!(
        err.contains("spec.restart.policy") && err.contains("use on-failure"),
        "{err}"
    );
}
