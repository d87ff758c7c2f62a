//! End to end: `ctl apply` rejects bad manifests with the file, document and field path, and
//! nothing of a rejected apply reaches the store.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "tests; PIDs fit in u32"
)]

use cloudlet_tests::Cluster;

const GOOD: &str = "apiVersion: cloudlet/v1
kind: Service
metadata:
  name: ok
spec:
  command: [/bin/sleep, '1000']
";

/// Applies `yaml` as `services.yaml` and returns the error text; asserts the apply failed and
/// stored nothing.
fn rejected(c: &Cluster, yaml: &str) -> String {
    let out = c.apply("services.yaml", yaml);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "accepted:\n{yaml}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(c.services().is_empty(), "a rejected apply stored something");
    err
}

#[test]
fn every_rejection_names_file_document_and_field() {
    let c = Cluster::start();
    let cases: &[(&str, &str)] = &[
        (
            "spec:\n  command: [x]\n  restart: {backoff: {max: 30x}}\n",
            "services.yaml: document 2: spec.restart.backoff.max",
        ),
        (
            "spec:\n  command: [x]\n  restart: {backoff: {maxx: 1s}}\n",
            "services.yaml: document 2: spec.restart.backoff.maxx: unknown field",
        ),
        (
            "spec:\n  command: [x]\n  resources: {limits: {memory: 12Zi}}\n",
            "services.yaml: document 2: spec.resources.limits.memory",
        ),
        (
            "spec:\n  command: [x]\n  resources: {requests: {cpu: lots}}\n",
            "services.yaml: document 2: spec.resources.requests.cpu",
        ),
        (
            "spec:\n  command: []\n",
            "services.yaml: document 2: spec.command: must not be empty",
        ),
        (
            "spec:\n  command: [x]\n  dependsOn: [db]\n",
            "services.yaml: document 2: spec.dependsOn[0]: service \"db\" does not exist",
        ),
        (
            "spec:\n  command: [x]\n  restart: {policy: sometimes}\n",
            "services.yaml: document 2: spec.restart.policy",
        ),
    ];
    for (spec, want) in cases {
        let yaml = format!(
            "{GOOD}---\napiVersion: cloudlet/v1\nkind: Service\nmetadata:\n  name: bad\n{spec}"
        );
        let err = rejected(&c, &yaml);
        assert!(err.contains(want), "want {want:?} in:\n{err}");
    }
}

#[test]
fn a_dependency_cycle_is_named() {
    let c = Cluster::start();
    let doc = |name: &str, dep: &str| {
        format!(
            "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  command: [x]\n  dependsOn: [{dep}]\n"
        )
    };
    let yaml = [doc("a", "b"), doc("b", "c"), doc("c", "a")].join("---\n");
    let err = rejected(&c, &yaml);
    assert!(err.contains("dependency cycle: a -> b -> c -> a"), "{err}");
}

#[test]
fn the_issue_example_is_accepted_and_a_directory_applies_all_or_nothing() {
    let c = Cluster::start();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/stack.yaml"
    ))
    .unwrap();
    // The issue's exact example is the `web` document of the example stack.
    assert!(example.contains("headers: {User-Agent: kube-probe}"));
    let dir = c.path("to-apply");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), GOOD).unwrap();
    std::fs::write(dir.join("b.yaml"), "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: b}\nspec: {command: [x], bogus: 1}\n").unwrap();
    let out = c.ctl(&["apply", "-f", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("b.yaml: document 1: spec.bogus"));
    assert!(c.services().is_empty(), "nothing from a.yaml either");

    std::fs::remove_file(dir.join("b.yaml")).unwrap();
    std::fs::write(dir.join("stack.yml"), &example).unwrap();
    let out = c.ctl_ok(&["apply", "-f", dir.to_str().unwrap()]);
    assert!(out.contains("service/web created"), "{out}");
    let again = c.ctl_ok(&["apply", "-f", dir.to_str().unwrap()]);
    assert!(again.contains("service/web unchanged"), "{again}");
    let names: Vec<String> = c
        .services()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["api", "db", "ok", "web"]);
}

#[test]
fn json_status_has_every_documented_field_and_yaml_works() {
    let c = Cluster::start();
    c.apply_ok("ok.yaml", GOOD);
    let s = c.service("ok");
    for key in [
        "name",
        "node",
        "state",
        "ready",
        "pid",
        "restarts",
        "lastExit",
        "since",
        "waitingFor",
    ] {
        assert!(s.get(key).is_some(), "{key} missing in {s}");
    }
    assert_eq!(s["node"], "test-node");
    let yaml = c.ctl_ok(&["get", "services", "-o", "yaml"]);
    assert!(yaml.contains("name: ok"), "{yaml}");
    let table = c.ctl_ok(&["get", "services"]);
    assert!(table.starts_with("NAME"), "{table}");
    let described = c.ctl_ok(&["describe", "service", "ok"]);
    assert!(
        described.contains("Name:        ok") && described.contains("Manifest:"),
        "{described}"
    );
}

#[test]
fn errors_are_one_line_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(cloudlet_tests::cloudlet_bin())
        .args(["ctl", "--data-dir"])
        .arg(dir.path())
        .args(["get", "services"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is 'cloudlet server --data-dir"), "{err}");
}
