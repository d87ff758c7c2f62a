//! Releases rolling over a server and two agents (network-namespace nodes): a cluster YAML
//! whose `host` component (on every compute node) changes version. A good version moves one node
//! at a time, each admitted only when the one before runs it ready; a version that never becomes
//! ready rolls back by itself after `progressDeadline` and the nodes never admitted keep their
//! process; pause holds the rollout, resume continues it, undo goes back; the rolled-back YAML
//! applied again is held (no second failed release) until `--retry`. A node lost meanwhile
//! holds nothing up and takes the release when it is back.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "tests"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cloudlet_tests::fleet::{Fleet, s};
use serde_json::Value;

/// The fixture `host`: the workload serving `/ping` on 8885 to the whitelisted User-Agent, except
/// for version `v-bad`, which runs but never answers (never ready).
fn fixture_bin_dir(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let workload = cloudlet_tests::workload_bin();
    let path = dir.join("host");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$CLOUDPODS_VERSION\" = v-bad ] && exec {w} sleep\nexec {w} serve --port 8885 --ua kube-probe\n",
            w = workload.display()
        ),
    )
    .unwrap();
    let status = std::process::Command::new("chmod")
        .arg("755")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The cluster YAML: profile compute with only `host`, at `version`.
fn cluster_yaml(fleet: &Fleet, version: &str) -> String {
    let (bin, conf, work) = (
        fleet.path("yunion-bin"),
        fleet.path("etc"),
        fleet.path("opt-cloud"),
    );
    let mut components = String::new();
    for (name, _) in cloudlet_spec::COMPONENTS {
        let line = if *name == "host" {
            format!(
                "{{workingDir: {}, resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}}}",
                work.display()
            )
        } else {
            "{disable: true}".to_owned()
        };
        components.push_str(&format!("    {name}: {line}\n"));
    }
    format!(
        "apiVersion: cloudlet/v1\nkind: Cluster\nmetadata: {{name: lab}}\nspec:\n  version: {version}\n  \
         profile: compute\n  binDir: {}\n  configDir: {}\n  disableTls: true\n  disableBootstrap: true\n  \
         rollout: {{progressDeadline: 25s}}\n  \
         components:\n{components}",
        bin.display(),
        conf.display()
    )
}

fn apply(fleet: &Fleet, version: &str) -> String {
    apply_with(fleet, version, &[])
}

/// `ctl cluster apply` of the YAML at `version`, with `extra` arguments.
fn apply_with(fleet: &Fleet, version: &str, extra: &[&str]) -> String {
    let file = fleet.path(&format!("cluster-{version}.yaml"));
    std::fs::write(&file, cluster_yaml(fleet, version)).unwrap();
    let mut args = vec!["cluster", "apply", "-f", s(&file)];
    args.extend_from_slice(extra);
    fleet.ctl_ok(&args)
}

/// `ctl rollout status host -o json`.
fn status(fleet: &Fleet) -> Value {
    serde_json::from_str(&fleet.ctl_ok(&["rollout", "status", "host", "-o", "json"])).unwrap()
}

/// Each node's `host` row: (pid, version label, ready, spec digest).
fn hosts(fleet: &Fleet) -> BTreeMap<String, (u64, String, bool, String)> {
    fleet
        .services()
        .iter()
        .filter(|r| r["name"] == "host")
        .map(|r| {
            (
                r["node"].as_str().unwrap_or_default().to_owned(),
                (
                    r["pid"].as_u64().unwrap_or(0),
                    r["labels"]["version"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    r["ready"] == true,
                    r["specDigest"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}

/// Waits until every node runs `host` at `version`, ready.
fn wait_all_on(fleet: &Fleet, version: &str) -> BTreeMap<String, (u64, String, bool, String)> {
    fleet.wait_for(
        &format!("host {version} ready on s, n1 and n2"),
        Duration::from_secs(90),
        |f| {
            let h = hosts(f);
            h.len() == 3 && h.values().all(|(_, v, ready, _)| v == version && *ready)
        },
    );
    hosts(fleet)
}

fn wait_state(fleet: &Fleet, number: u64, state: &str) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    let seen = || format!("{:#}", last.borrow());
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fleet.wait_for(
            &format!("rollout {number} of host {state}"),
            Duration::from_secs(120),
            |f| {
                let st = status(f);
                let done = st["number"] == number && st["state"] == state;
                *last.borrow_mut() = st;
                done
            },
        )
    }));
    if let Err(panic) = waited {
        eprintln!("last rollout status: {}", seen());
        std::panic::resume_unwind(panic);
    }
    status(fleet)
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

/// A server `s` (with `server_args`) and two compute agents `n1`, `n2`, with the fixture `host`.
fn three_nodes(name: &str, server_args: &[&str]) -> Fleet {
    let mut fleet = Fleet::new(name);
    fleet.start_server("s", server_args);
    let token = fleet.token(&["--role", "compute"]);
    fleet.join("n1", &token, &[]);
    fleet.join("n2", &token, &[]);
    fixture_bin_dir(&fleet.path("yunion-bin"));
    std::fs::create_dir_all(fleet.path("opt-cloud")).unwrap();
    fleet
}

#[test]
fn releases_roll_node_by_node_and_a_bad_one_rolls_back_by_itself() {
    let fleet = three_nodes("rollout", &[]);

    // v1: a new service reaches every node at once (rollout 1 has nothing to move).
    apply(&fleet, "v1");
    let v1 = wait_all_on(&fleet, "v1");
    assert_eq!(wait_state(&fleet, 1, "complete")["from"], Value::Null);

    // v2: one node at a time, in name order, each admitted after the one before was ready.
    apply(&fleet, "v2");
    let done = wait_state(&fleet, 2, "complete");
    let v2 = wait_all_on(&fleet, "v2");
    let nodes = done["nodes"].as_array().unwrap();
    let order: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(order, ["n1", "n2", "s"], "{done:#}");
    for pair in nodes.windows(2) {
        assert!(
            ts(&pair[1]["admittedAt"]) >= ts(&pair[0]["readyAt"]),
            "{} admitted before {} was ready: {done:#}",
            pair[1]["node"],
            pair[0]["node"]
        );
    }
    eprintln!(
        "rollout 2 over 3 nodes took {:.1} s",
        ts(&done["finishedAt"])
            .duration_since(ts(&done["startedAt"]))
            .as_secs_f64()
    );
    let digest2 = done["to"].as_str().unwrap().to_owned();
    for (node, (pid, _, _, digest)) in &v2 {
        assert_ne!(*pid, v1[node].0, "{node} was not restarted for v2");
        assert_eq!(*digest, digest2, "{node}");
    }

    // v-bad: the first node never becomes ready; after progressDeadline the service rolls back
    // by itself, and the two nodes never admitted never restarted.
    apply(&fleet, "v-bad");
    let failed = wait_state(&fleet, 3, "rolledBack");
    let admitted: Vec<&str> = failed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| !n["admittedAt"].is_null())
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(admitted, ["n1"], "{failed:#}");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("not ready within progressDeadline 25s on n1"),
        "{message}"
    );
    let back = wait_all_on(&fleet, "v2");
    for node in ["n2", "s"] {
        assert_eq!(
            back[node].0, v2[node].0,
            "{node} restarted during the bad rollout"
        );
        assert_eq!(back[node].3, digest2, "{node}");
    }
    assert_ne!(back["n1"].0, v2["n1"].0, "n1 runs a new v2 process");
    let events = fleet.ctl_ok(&["events", "-o", "json"]);
    for reason in [
        "RolloutStarted",
        "RolloutStep",
        "RolloutFailed",
        "RolledBack",
    ] {
        assert!(
            events.contains(&format!("\"reason\":\"{reason}\"")),
            "no {reason} event: {events}"
        );
    }
    // `--watch` on a rolled-back rollout fails, naming why.
    let watched = fleet.ctl(&["rollout", "status", "host", "--watch"]);
    assert!(!watched.status.success());
    assert!(String::from_utf8_lossy(&watched.stderr).contains("rolled back"));
    let history = fleet.ctl_ok(&["rollout", "history", "host", "-o", "json"]);
    let states: Vec<String> = serde_json::from_str::<Vec<Value>>(&history)
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, ["complete", "complete", "rolledBack"]);

    // Pause holds the rollout after its step under way; resume finishes it.
    apply(&fleet, "v3");
    fleet.ctl_ok(&["rollout", "pause", "host"]);
    let paused = wait_state(&fleet, 4, "paused");
    assert_eq!(
        paused["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| !n["admittedAt"].is_null())
            .count(),
        1,
        "{paused:#}"
    );
    fleet.wait_for("the admitted node runs v3", Duration::from_secs(60), |f| {
        hosts(f)["n1"].1 == "v3" && hosts(f)["n1"].2
    });
    // Three heartbeats long, nothing else moves while paused.
    let watch_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < watch_until {
        let h = hosts(&fleet);
        assert_eq!(
            (h["n2"].1.as_str(), h["s"].1.as_str()),
            ("v2", "v2"),
            "moved while paused"
        );
        assert_eq!(status(&fleet)["state"], "paused");
    }
    fleet.ctl_ok(&["rollout", "resume", "host"]);
    wait_state(&fleet, 4, "complete");
    wait_all_on(&fleet, "v3");

    // Undo after it finished: a new rollout back to v2, node by node.
    fleet.ctl_ok(&["rollout", "undo", "host"]);
    wait_state(&fleet, 5, "complete");
    wait_all_on(&fleet, "v2");

    // Undo while under way: every node back at once, rolled back by the operator.
    apply(&fleet, "v4");
    let undone = fleet.ctl_ok(&["rollout", "undo", "host"]);
    assert!(undone.contains("rolledBack"), "{undone}");
    assert!(
        status(&fleet)["message"]
            .as_str()
            .unwrap()
            .contains("undone by")
    );
    wait_all_on(&fleet, "v2");

    // The rolled-back YAML applied again holds host where it was rolled back to: no new
    // rollout, no revision (a restart's auto-deploy or a routine re-apply must not repeat a
    // failed release); diff says the same. `--retry` rolls it out again, as a new revision.
    let again = apply(&fleet, "v4");
    assert!(
        again.contains("unchanged: the same as the current revision; held at the manifest a rollout rolled back to: host"),
        "{again}"
    );
    assert!(
        again
            .lines()
            .any(|l| l.starts_with("host ") && l.contains(" held ")),
        "{again}"
    );
    let file = fleet.path("cluster-v4.yaml");
    let diff = fleet.ctl_ok(&["cluster", "diff", "-f", s(&file)]);
    assert!(
        diff.lines()
            .any(|l| l.contains(" host ") && l.contains(" held ")),
        "{diff}"
    );
    let st = status(&fleet);
    assert_eq!(
        (&st["number"], &st["state"]),
        (&6.into(), &"rolledBack".into())
    );
    assert_eq!(hosts(&fleet)["n1"].1, "v2");
    let retried = apply_with(&fleet, "v4", &["--retry"]);
    assert!(retried.contains("host brought back to it"), "{retried}");
    wait_state(&fleet, 7, "complete");
    wait_all_on(&fleet, "v4");
}

/// A node lost during a release is neither admitted nor waited for: the rollout completes on the
/// others, and the node takes the new version when it is back.
#[test]
fn a_lost_node_does_not_hold_a_release_and_takes_it_when_back() {
    let mut fleet = three_nodes("rolllost", &["--node-lost-after", "3s"]);
    apply(&fleet, "v1");
    wait_all_on(&fleet, "v1");

    // n2's agent dies (its host keeps running); once it is lost, v2 is released.
    fleet.kill("n2");
    fleet.wait_node_state("n2", "Lost", Duration::from_secs(20));
    apply(&fleet, "v2");
    let done = wait_state(&fleet, 2, "complete");
    let step = |node: &str| {
        done["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == node)
            .map(|n| {
                (
                    n["state"].as_str().unwrap().to_owned(),
                    n["admittedAt"].is_null(),
                )
            })
    };
    assert_eq!(step("n2"), Some(("lost".to_owned(), true)), "{done:#}");
    assert_eq!(
        step("n1").map(|s| s.0),
        Some("updated".to_owned()),
        "{done:#}"
    );
    assert_eq!(
        step("s").map(|s| s.0),
        Some("updated".to_owned()),
        "{done:#}"
    );

    // Back: it gets v2 at once, the rollout being over.
    fleet.start_agent("n2", None, &[]);
    fleet.wait_node_state("n2", "Ready", Duration::from_secs(20));
    wait_all_on(&fleet, "v2");
}

/// A version the nodes refuse (`invalid`: here a declared file under a path that is a regular
/// file, so it cannot be written on any node) fails its rollout at the first node that shows it,
/// naming the node and the reason, long before its progressDeadline; the nodes keep the old run.
#[test]
fn a_version_the_nodes_refuse_rolls_back_at_once() {
    let mut fleet = Fleet::new("refuse");
    fleet.start_server("s", &[]);
    let token = fleet.token(&[]);
    fleet.join("n1", &token, &["--heartbeat", "1s"]);
    let blocker = fleet.path("blocker");
    std::fs::write(&blocker, "a file, not a directory").unwrap();
    let manifest = |version: &str, files: &str| {
        format!(
            "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {{name: web, labels: {{version: {version}}}}}\nspec:\n  command: [/bin/sleep, '100000']\n  placement: {{everyNode: true}}\n  rollout: {{progressDeadline: 10m}}\n{files}"
        )
    };
    fleet.apply("web.yaml", &manifest("v1", ""));
    fleet.wait_for("web on s and n1", Duration::from_secs(30), |f| {
        f.running_on("web") == ["n1", "s"]
    });
    let pids = |f: &Fleet| -> BTreeMap<String, u64> {
        f.services()
            .iter()
            .filter(|r| r["name"] == "web")
            .map(|r| (s_of(&r["node"]), r["pid"].as_u64().unwrap_or(0)))
            .collect()
    };
    let before = pids(&fleet);
    fleet.apply(
        "web.yaml",
        &manifest(
            "v2",
            &format!(
                "  files:\n    - {{path: {}/web.conf, content: x}}\n",
                blocker.display()
            ),
        ),
    );
    // Within a minute: the progressDeadline is ten.
    let mut last = Value::Null;
    fleet.wait_for(
        "rollout 2 of web rolled back",
        Duration::from_secs(60),
        |f| {
            last = serde_json::from_str(&f.ctl_ok(&["rollout", "status", "web", "-o", "json"]))
                .unwrap_or(Value::Null);
            last["number"] == 2 && last["state"] == "rolledBack"
        },
    );
    let message = last.to_string();
    assert!(message.contains("refused on"), "{message}");
    assert!(
        message.contains("Not a directory") || message.contains("not a directory"),
        "{message}"
    );
    fleet.wait_for(
        "v1 back everywhere, same processes",
        Duration::from_secs(30),
        |f| pids(f) == before,
    );
}

fn s_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}
