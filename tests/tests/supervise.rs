//! End to end: start order, restarts and backoff, stop escalation, operator verbs, no cascades.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "tests; PIDs fit in u32"
)]

use std::time::Duration;

use cloudlet_tests::{Cluster, alive, free_port, workload_bin};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn svc(name: &str, args: &[&str], extra: &str) -> String {
    Cluster::workload_manifest(name, args, extra)
}

fn pos(events: &[Value], service: &str, reason: &str) -> usize {
    events
        .iter()
        .position(|e| e["service"] == service && e["reason"] == reason)
        .unwrap_or_else(|| panic!("no {reason} of {service} in {events:#?}"))
}

#[test]
fn starts_in_dependency_order_only_after_readiness() {
    let c = Cluster::start();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let probe = |p: u16| {
        format!(
            "  readiness:\n    http: {{port: {p}, path: /ping, headers: {{User-Agent: kube-probe}}}}\n    periodSeconds: 1\n"
        )
    };
    // b and c refuse to start (exit 3) when their dependency does not answer; a takes 700 ms to
    // become ready. Applied in reverse order, in one file.
    let a = svc(
        "a",
        &[
            "serve",
            "--port",
            &pa.to_string(),
            "--ready-after",
            "700ms",
            "--ua",
            "kube-probe",
        ],
        &probe(pa),
    );
    let b = svc(
        "b",
        &[
            "--require",
            &format!("127.0.0.1:{pa}"),
            "serve",
            "--port",
            &pb.to_string(),
        ],
        &format!("  dependsOn: [a]\n{}", probe(pb)),
    );
    let cc = svc(
        "c",
        &[
            "--require",
            &format!("127.0.0.1:{pb}"),
            "serve",
            "--port",
            &pc.to_string(),
        ],
        &format!("  dependsOn: [b]\n{}", probe(pc)),
    );
    let mut events = c.events();
    c.apply_ok("stack.yaml", &format!("{cc}---\n{b}---\n{a}"));

    let waiting = c.service("c");
    assert_eq!(waiting["state"], "waiting", "{waiting}");
    assert_eq!(waiting["waitingFor"][0], "b (not ready)", "{waiting}");

    events.wait_for("c", "Ready", T);
    let seen = events.seen().to_vec();
    assert!(pos(&seen, "a", "Ready") < pos(&seen, "b", "Started"));
    assert!(pos(&seen, "b", "Ready") < pos(&seen, "c", "Started"));
    for s in c.services() {
        assert_eq!(
            s["restarts"], 0,
            "nothing crashed for lack of its dependency: {s}"
        );
        assert_eq!(s["state"], "running");
        assert_eq!(s["ready"], true);
    }
}

#[test]
fn independent_services_start_in_parallel() {
    let c = Cluster::start();
    // Four services with no dependencies, each ready 1 s after it starts: started together they
    // are all ready about 1 s after the first start, started one after the other about 4 s.
    let mut docs = Vec::new();
    for i in 0..4 {
        let port = free_port();
        docs.push(svc(
            &format!("p{i}"),
            &["serve", "--port", &port.to_string(), "--ready-after", "1s"],
            &format!("  readiness:\n    http: {{port: {port}}}\n"),
        ));
    }
    let mut events = c.events();
    c.apply_ok("p.yaml", &docs.join("---\n"));
    for i in 0..4 {
        events.wait_for(&format!("p{i}"), "Started", T);
    }
    let seen = events.seen().to_vec();
    let starts: Vec<usize> = (0..4)
        .map(|i| pos(&seen, &format!("p{i}"), "Started"))
        .collect();
    let first_ready = (0..4)
        .filter_map(|i| {
            seen.iter()
                .position(|e| e["service"] == format!("p{i}") && e["reason"] == "Ready")
        })
        .min();
    // Every service started before any of them became ready: none waited for another.
    if let Some(first_ready) = first_ready {
        assert!(starts.iter().all(|s| *s < first_ready), "{seen:#?}");
    }
}

#[test]
fn crash_restarts_with_growing_backoff_that_resets_after_a_healthy_run() {
    let c = Cluster::start();
    let mut events = c.events();
    // Exits at once: every restart backs off, doubling from 100 ms up to the 800 ms cap.
    c.apply_ok(
        "crash.yaml",
        &svc(
            "crash",
            &["exit", "1"],
            "  restart: {policy: always, backoff: {initial: 100ms, max: 800ms}, resetAfter: 1m}\n",
        ),
    );
    let mut delays = Vec::new();
    for _ in 0..6 {
        let ev = events.wait_for("crash", "BackOff", T);
        let ms: u64 = ev["message"]
            .as_str()
            .unwrap()
            .trim_start_matches("restarting in ")
            .trim_end_matches("ms")
            .parse()
            .unwrap();
        delays.push(ms);
    }
    assert_eq!(delays[0], 100, "first delay is the initial one: {delays:?}");
    for w in delays.windows(2) {
        // Equal jitter: step n lies in [2^n*100/2, 2^n*100], so it never drops below half the
        // previous step's ceiling.
        assert!(w[1] * 2 >= w[0], "{delays:?}");
    }
    assert!(delays.iter().all(|d| *d >= 100 && *d <= 800), "{delays:?}");
    assert!(
        delays[4] >= 400 && delays[5] >= 400,
        "capped steps reach the upper half: {delays:?}"
    );
    let s = c.service("crash");
    assert!(s["restarts"].as_u64().unwrap() >= 5, "{s}");
    assert_eq!(s["lastExit"]["code"], 1);

    // Runs 600 ms, longer than resetAfter (300 ms): the restart after it is immediate.
    c.apply_ok(
        "healthy.yaml",
        &svc(
            "healthy",
            &["exit", "1", "--after", "600ms"],
            "  restart: {policy: always, backoff: {initial: 5s, max: 10s}, resetAfter: 300ms}\n",
        ),
    );
    events.wait_for("healthy", "Exited", T);
    events.wait("run 2 of healthy", T, |e| {
        e["service"] == "healthy"
            && e["reason"] == "Started"
            && e["message"].as_str().unwrap().starts_with("run 2")
    });
    let no_backoff = events
        .seen()
        .iter()
        .all(|e| !(e["service"] == "healthy" && e["reason"] == "BackOff"));
    assert!(
        no_backoff,
        "a run longer than resetAfter restarts at once: {:#?}",
        events.seen()
    );
}

#[test]
fn restart_policies_on_failure_and_never() {
    let c = Cluster::start();
    let mut events = c.events();
    c.apply_ok(
        "p.yaml",
        &[
            svc(
                "ok-once",
                &["exit", "0"],
                "  restart: {policy: on-failure}\n",
            ),
            svc("fail-once", &["exit", "2"], "  restart: {policy: never}\n"),
        ]
        .join("---\n"),
    );
    events.wait_for("ok-once", "Stopped", T);
    events.wait_for("fail-once", "Failed", T);
    let ok = c.service("ok-once");
    assert_eq!(
        (ok["state"].as_str(), ok["restarts"].as_u64()),
        (Some("stopped"), Some(0)),
        "{ok}"
    );
    assert_eq!(ok["lastExit"]["reason"], "Completed");
    let failed = c.service("fail-once");
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["lastExit"]["code"], 2);
    assert_eq!(failed["pid"], Value::Null);

    // An operator's start runs it again.
    c.ctl_ok(&["start", "fail-once"]);
    events.wait("second run of fail-once", T, |e| {
        e["service"] == "fail-once"
            && e["reason"] == "Started"
            && e["message"].as_str().unwrap().starts_with("run 2")
    });
}

#[test]
fn stop_sends_the_signal_then_sigkill_after_the_grace_period() {
    let c = Cluster::start();
    let mut events = c.events();
    c.apply_ok(
        "stubborn.yaml",
        &svc(
            "stubborn",
            &["--ignore-term"],
            "  stop: {signal: SIGTERM, gracePeriod: 500ms}\n",
        ),
    );
    events.wait_for("stubborn", "Ready", T);
    let pid = c.service("stubborn")["pid"].as_u64().unwrap() as u32;
    c.ctl_ok(&["stop", "stubborn"]);
    let exited = events.wait_for("stubborn", "Exited", T);
    assert_eq!(exited["exit"]["signal"], "SIGKILL", "{exited}");
    events.wait_for("stubborn", "Stopped", T);
    assert!(!alive(pid));
    let s = c.service("stubborn");
    assert_eq!(
        (s["state"].as_str(), s["desired"].as_str()),
        (Some("stopped"), Some("stopped"))
    );
    assert_eq!(s["restarts"], 0, "a stop is not a crash");
    let log = c.ctl_ok(&["logs", "stubborn"]);
    assert!(
        log.contains("SIGTERM received, ignoring it"),
        "the service saw SIGTERM first: {log}"
    );

    // A graceful service stops on SIGTERM alone.
    c.apply_ok(
        "polite.yaml",
        &svc(
            "polite",
            &["--term-exit", "0"],
            "  stop: {gracePeriod: 30s}\n",
        ),
    );
    events.wait_for("polite", "Ready", T);
    c.ctl_ok(&["stop", "polite"]);
    let exited = events.wait_for("polite", "Exited", T);
    assert_eq!(exited["exit"]["code"], 0, "{exited}");
}

#[test]
fn stop_start_restart_delete_and_stopped_survives_a_server_restart() {
    let mut c = Cluster::start();
    let mut events = c.events();
    c.apply_ok("w.yaml", &svc("w", &[], ""));
    events.wait_for("w", "Ready", T);
    let pid1 = c.service("w")["pid"].as_u64().unwrap();

    c.ctl_ok(&["restart", "w"]);
    events.wait("run 2", T, |e| {
        e["service"] == "w"
            && e["reason"] == "Started"
            && e["message"].as_str().unwrap().contains("run 2")
    });
    let s = c.service("w");
    assert_ne!(s["pid"].as_u64().unwrap(), pid1);
    assert_eq!(s["restarts"], 0, "an operator's restart is not counted");

    c.ctl_ok(&["stop", "w"]);
    events.wait_for("w", "Stopped", T);
    drop(events);
    c.stop_server();
    c.start_server();
    let s = c.service("w");
    assert_eq!(
        s["state"], "stopped",
        "stays stopped across a server restart: {s}"
    );

    let mut events = c.events();
    c.ctl_ok(&["start", "w"]);
    events.wait("run 3", T, |e| {
        e["service"] == "w"
            && e["reason"] == "Started"
            && e["message"].as_str().unwrap().contains("run 3")
    });

    c.ctl_ok(&["delete", "service", "w"]);
    events.wait_for("w", "Deleted", T);
    assert!(c.services().is_empty());
    // Its logs stay.
    assert!(
        c.ctl_ok(&["logs", "w"]).contains("running until signalled"),
        "logs of a deleted service remain"
    );
    let out = c.ctl(&["restart", "w"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn an_unready_dependency_never_stops_its_dependants() {
    let c = Cluster::start();
    let mut events = c.events();
    let port = free_port();
    c.apply_ok(
        "s.yaml",
        &[
            svc("base", &["serve", "--port", &port.to_string()], &format!("  readiness:\n    tcp: {{port: {port}}}\n    periodSeconds: 1\n    failureThreshold: 1\n  restart: {{policy: never}}\n")),
            svc("top", &[], "  dependsOn: [base]\n"),
        ]
        .join("---\n"),
    );
    events.wait_for("top", "Ready", T);
    let top_pid = c.service("top")["pid"].as_u64().unwrap();
    let base_pid = c.service("base")["pid"].as_u64().unwrap();
    cloudlet_tests::signal(base_pid as u32, nix::sys::signal::Signal::SIGKILL);
    events.wait_for("base", "Failed", T);
    let top = c.service("top");
    assert_eq!(top["pid"].as_u64().unwrap(), top_pid, "no cascade: {top}");
    assert_eq!(top["state"], "running");
    assert!(alive(top_pid as u32));
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let c = Cluster::start();
    let out = std::process::Command::new(cloudlet_tests::cloudlet_bin())
        .args(["server", "--data-dir"])
        .arg(c.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another cloudlet server (pid"), "{err}");
    assert!(err.contains(&c.data_dir().display().to_string()), "{err}");
}

#[test]
fn a_missing_program_backs_off_and_says_why() {
    let c = Cluster::start();
    let mut events = c.events();
    c.apply_ok(
        "m.yaml",
        "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: missing}\nspec:\n  command: [/nonexistent/program]\n",
    );
    let ev = events.wait_for("missing", "StartFailed", T);
    assert!(
        ev["message"].as_str().unwrap().contains("No such file"),
        "{ev}"
    );
    events.wait_for("missing", "BackOff", T);
    let s = c.service("missing");
    assert_eq!(s["lastExit"]["reason"], "StartError", "{s}");
    let _ = workload_bin();
}

#[test]
fn a_changed_command_restarts_the_service_with_it_and_an_unchanged_apply_does_not() {
    let c = Cluster::start();
    let mut events = c.events();
    c.apply_ok("v.yaml", &svc("v", &["--print", "1"], ""));
    events.wait_for("v", "Ready", T);
    let pid1 = c.service("v")["pid"].as_u64().unwrap();
    c.apply_ok("v.yaml", &svc("v", &["--print", "1"], ""));
    assert_eq!(
        c.service("v")["pid"].as_u64().unwrap(),
        pid1,
        "unchanged apply kept the run"
    );

    c.apply_ok("v.yaml", &svc("v", &["--print", "2"], ""));
    events.wait("run 2 with the new command", T, |e| {
        e["service"] == "v"
            && e["reason"] == "Started"
            && e["message"].as_str().unwrap().starts_with("run 2 ")
    });
    let log = c.ctl_ok(&["logs", "v", "--details"]);
    assert!(
        log.contains(" event 2 started pid ") && log.contains("--print 2"),
        "{log}"
    );
    let s = c.service("v");
    assert_ne!(s["pid"].as_u64().unwrap(), pid1);
    assert_eq!(s["restarts"], 0, "a new version is not a crash: {s}");
}

#[test]
fn declared_files_are_in_place_before_the_start_and_a_changed_one_restarts_the_service() {
    let c = Cluster::start();
    let conf = c.path("etc/app/app.conf");
    let manifest = |content: &str| {
        format!(
            "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {{name: app}}\nspec:\n  command: [/bin/sh, -c, 'echo \"config: $(cat {conf})\"; exec sleep 1000']\n  files:\n    - {{path: {conf}, content: \"{content}\", mode: \"0600\"}}\n",
            conf = conf.display()
        )
    };
    c.apply_ok("app.yaml", &manifest("first"));
    c.wait_log("app", Duration::from_secs(10), |l| {
        l.contains("config: first")
    });
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&conf).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o600);
    let (pid, _) = c.pids_and_restarts()["app"];
    c.apply_ok("app.yaml", &manifest("second"));
    c.wait_log("app", Duration::from_secs(10), |l| {
        l.contains("config: second")
    });
    assert_ne!(
        c.pids_and_restarts()["app"].0,
        pid,
        "the service kept its old config"
    );
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "second");
}

/// The data dir holds the store, the keys and the programs cloudlet runs: a declared file there
/// (a typo in a config dir, a hostile manifest) is refused and holds its service back; its `etc/`
/// is the one place in it meant for services' files.
#[test]
fn a_declared_file_inside_the_data_dir_is_refused_but_under_its_etc() {
    let c = Cluster::start();
    let store = c.data_dir().join("store.redb");
    let before = std::fs::metadata(&store).unwrap().len();
    let manifest = |name: &str, path: &std::path::Path| {
        format!(
            "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  command: [/bin/sleep, '1000']\n  files:\n    - {{path: {}, content: x}}\n",
            path.display()
        )
    };
    c.apply_ok("bad.yaml", &manifest("bad", &store));
    c.apply_ok(
        "good.yaml",
        &manifest("good", &c.data_dir().join("etc/good.conf")),
    );
    c.wait_until(
        "bad held back, good running",
        Duration::from_secs(10),
        |c| c.service("bad")["state"] == "invalid" && c.service("good")["state"] == "running",
    );
    let message = c.service("bad")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("inside the data dir"), "{message}");
    assert!(std::fs::metadata(&store).unwrap().len() >= before);
    assert_ne!(
        std::fs::read(&store).unwrap(),
        b"x",
        "the store was overwritten"
    );
    assert_eq!(
        std::fs::read_to_string(c.data_dir().join("etc/good.conf")).unwrap(),
        "x"
    );
    // The server still reads its store: it answers, and the refused service can be deleted.
    c.ctl_ok(&["delete", "services", "bad"]);
}

/// A file that cannot be written holds its service back (shown `invalid`, the error in its
/// message, not started; a run already going keeps its files and its pid) until a retry
/// succeeds. It used to be logged and the service started without its configuration.
#[test]
fn a_file_that_cannot_be_written_holds_the_service_back_until_it_can() {
    let c = Cluster::start();
    let real = c.path("etc/real");
    std::fs::create_dir_all(&real).unwrap();
    let linked = c.path("etc/linked");
    std::os::unix::fs::symlink(&real, &linked).unwrap();
    let conf = linked.join("app.conf");
    let manifest = |name: &str, content: &str| {
        format!(
            "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  command: [/bin/sh, -c, 'echo \"config: $(cat {conf})\"; exec sleep 1000']\n  files:\n    - {{path: {conf}, content: \"{content}\"}}\n",
            conf = conf.display()
        )
    };
    c.apply_ok("app.yaml", &manifest("app", "first"));
    c.wait_until("app held back", Duration::from_secs(10), |c| {
        c.service("app")["state"] == "invalid"
    });
    let app = c.service("app");
    assert!(app["pid"].is_null(), "{app}");
    let message = app["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.files") && message.contains("is a symlink"),
        "{message}"
    );
    assert!(
        !real.join("app.conf").exists(),
        "written through the symlink"
    );

    // The directory becomes real: the retry writes the file and the service starts with it.
    std::fs::remove_file(&linked).unwrap();
    std::fs::create_dir(&linked).unwrap();
    c.wait_log("app", Duration::from_secs(30), |l| {
        l.contains("config: first")
    });
    let (pid, _) = c.pids_and_restarts()["app"];

    // A change that cannot be written leaves the running service alone.
    std::fs::remove_dir_all(&linked).unwrap();
    std::fs::write(&linked, "a file where a directory was").unwrap();
    c.apply_ok("app.yaml", &manifest("app", "second"));
    c.wait_until("the change held back", Duration::from_secs(10), |c| {
        c.service("app")["state"] == "invalid"
    });
    assert_eq!(
        c.pids_and_restarts()["app"].0,
        pid,
        "restarted without its file"
    );
}
