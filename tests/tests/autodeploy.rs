//! End to end: the auto-deploy directory `DATA/manifests`. Files there are applied at start and
//! when they change; a service a file no longer declares, or whose file is removed, is deleted
//! (dependants first); services an operator applied from elsewhere are never touched; a broken
//! file is reported and does not stop the others; a release a rollout rolled back is not
//! repeated at the next start.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cloudlet_tests::Cluster;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// The cluster's auto-deploy directory, made if the server has not made it yet.
fn manifests(c: &Cluster) -> PathBuf {
    let dir = c.data_dir().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn svc(name: &str) -> String {
    Cluster::workload_manifest(name, &["sleep"], "")
}

fn write(path: &Path, docs: &[String]) {
    std::fs::write(path, docs.join("---\n")).unwrap();
}

/// Waits until the service rows satisfy `pred`; returns them.
fn wait_services(c: &Cluster, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut rows = Vec::new();
    c.wait_until(what, T, |c| {
        rows = c.services();
        pred(&rows)
    });
    rows
}

/// The pid of `name` if it is running.
fn running(rows: &[Value], name: &str) -> Option<u64> {
    rows.iter()
        .find(|r| r["name"] == name && r["state"] == "running")
        .and_then(|r| r["pid"].as_u64())
}

fn names(rows: &[Value]) -> BTreeSet<String> {
    rows.iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect()
}

/// The position of the first event with `reason` on `service` among all events so far.
fn position(events: &[Value], service: &str, reason: &str) -> usize {
    events
        .iter()
        .position(|e| e["service"] == service && e["reason"] == reason)
        .unwrap_or_else(|| panic!("no {reason} of {service} in {events:#?}"))
}

#[test]
fn a_file_present_at_start_is_applied_under_its_absolute_path() {
    let mut c = Cluster::unstarted(None, &[]);
    let dir = manifests(&c);
    let file = dir.join("web.yaml");
    write(&file, &[svc("web"), svc("db")]);
    c.start_server();
    wait_services(&c, "web and db running", |r| {
        running(r, "web").is_some() && running(r, "db").is_some()
    });
    let events = c.all_events();
    let applied = &events[position(&events, "web", "Applied")];
    assert_eq!(
        applied["message"],
        format!("created from {}", file.display()),
        "{applied}"
    );
}

#[test]
fn a_file_written_later_is_applied_within_seconds() {
    let c = Cluster::start();
    // The server makes the directory, private, at start (the task runs beside the API).
    let dir = c.data_dir().join("manifests");
    let deadline = Instant::now() + T;
    while !dir.is_dir() {
        assert!(Instant::now() < deadline, "{} not made", dir.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    // A directory removed and made again after start works as well.
    std::fs::remove_dir(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();

    let written = Instant::now();
    write(&dir.join("later.yml"), &[svc("later")]);
    wait_services(&c, "later running", |r| running(r, "later").is_some());
    let took = written.elapsed();
    eprintln!("applied and running {took:?} after the file was written");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_changed_file_restarts_what_changed_and_deletes_what_it_no_longer_declares() {
    let c = Cluster::start();
    let file = manifests(&c).join("app.yaml");
    write(&file, &[svc("keep"), svc("change"), svc("gone")]);
    let rows = wait_services(&c, "keep, change and gone running", |r| {
        ["keep", "change", "gone"]
            .iter()
            .all(|n| running(r, n).is_some())
    });
    let keep = running(&rows, "keep").unwrap();
    let old = running(&rows, "change").unwrap();

    let pidfile = c.path("change.pid");
    let changed = Cluster::workload_manifest(
        "change",
        &["--pidfile", pidfile.to_str().unwrap(), "sleep"],
        "",
    );
    let mut events = c.events();
    write(&file, &[svc("keep"), changed]);
    let rows = wait_services(&c, "change restarted and gone deleted", |r| {
        running(r, "change").is_some_and(|p| p != old) && !names(r).contains("gone")
    });
    // The new run is the new command: it wrote its pid where only the new command says.
    let new = running(&rows, "change").unwrap();
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        new.to_string()
    );
    assert_eq!(
        running(&rows, "keep"),
        Some(keep),
        "unchanged: not restarted"
    );
    let removed = events.wait_for("gone", "AutoDeployRemoved", T);
    let message = removed["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{} no longer declares it", file.display())),
        "{message}"
    );
}

#[test]
fn removing_a_file_deletes_its_services_dependants_first_and_never_an_operators() {
    let c = Cluster::start();
    c.apply_ok("mine.yaml", &svc("mine"));
    let file = manifests(&c).join("stack.yaml");
    write(
        &file,
        &[
            svc("db"),
            Cluster::workload_manifest("web", &["sleep"], "  dependsOn: [db]\n"),
        ],
    );
    let rows = wait_services(&c, "mine, db and web running", |r| {
        ["mine", "db", "web"]
            .iter()
            .all(|n| running(r, n).is_some())
    });
    let mine = running(&rows, "mine").unwrap();

    let mut events = c.events();
    std::fs::remove_file(&file).unwrap();
    events.wait_for("db", "AutoDeployRemoved", T);
    let rows = wait_services(&c, "only mine left", |r| {
        names(r) == BTreeSet::from(["mine".to_owned()])
    });
    assert_eq!(running(&rows, "mine"), Some(mine), "the operator's service");
    let all = c.all_events();
    assert!(
        position(&all, "web", "AutoDeployRemoved") < position(&all, "db", "AutoDeployRemoved"),
        "web depends on db: it goes first"
    );
    assert!(
        !all.iter()
            .any(|e| e["service"] == "mine" && e["reason"] == "AutoDeployRemoved"),
        "{all:#?}"
    );
}

#[test]
fn a_broken_file_is_reported_with_its_field_and_does_not_stop_a_good_one() {
    let mut c = Cluster::unstarted(None, &[]);
    let dir = manifests(&c);
    let bad = dir.join("bad.yaml");
    let broken = "apiVersion: cloudlet/v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  \
                  command: [/bin/sleep, '1000']\n  restart: {policy: sometimes}\n";
    std::fs::write(&bad, broken).unwrap();
    write(&dir.join("good.yaml"), &[svc("good")]);
    c.start_server();
    let mut events = c.events();
    let failed = events.wait("AutoDeployFailed naming bad.yaml", T, |e| {
        e["reason"] == "AutoDeployFailed"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains(&bad.display().to_string()))
    });
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("document 1: spec.restart.policy"),
        "{message}"
    );
    let rows = wait_services(&c, "good running", |r| running(r, "good").is_some());
    assert!(!names(&rows).contains("bad"), "{rows:#?}");

    // Fixed, it is applied: the broken contents are tried again only once they change.
    write(&bad, &[svc("bad")]);
    wait_services(&c, "bad running once fixed", |r| {
        running(r, "bad").is_some()
    });
    let reports = c
        .all_events()
        .into_iter()
        .filter(|e| e["reason"] == "AutoDeployFailed")
        .count();
    assert_eq!(reports, 1, "reported once, not at every look");
}

#[test]
fn a_file_removed_while_the_server_was_down_is_cleaned_up_at_start() {
    let mut c = Cluster::start();
    let file = manifests(&c).join("old.yaml");
    write(&file, &[svc("old")]);
    wait_services(&c, "old running", |r| running(r, "old").is_some());
    c.kill_server();
    std::fs::remove_file(&file).unwrap();
    c.start_server();
    wait_services(&c, "old deleted", |r| !names(r).contains("old"));
    let events = c.all_events();
    let removed = &events[position(&events, "old", "AutoDeployRemoved")];
    assert!(
        removed["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("{} was removed", file.display()))),
        "{removed}"
    );
}

/// `ctl rollout status web -o json` (null while web is not applied yet).
fn rollout(c: &Cluster) -> Value {
    let out = c.ctl(&["rollout", "status", "web", "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Waits until web's rollout `number` is in `state`; returns it.
fn wait_rollout(c: &Cluster, number: u64, state: &str) -> Value {
    let mut r = Value::Null;
    c.wait_until(&format!("rollout {number} of web {state}"), T, |c| {
        r = rollout(c);
        r["number"] == number && r["state"] == state
    });
    r
}

/// The digest of the manifest web's current run started with.
fn web_digest(rows: &[Value]) -> Option<&str> {
    rows.iter()
        .find(|r| r["name"] == "web")
        .and_then(|r| r["specDigest"].as_str())
}

/// A release from a file that rolled back is not repeated by the apply every start makes: the
/// service is held on the manifest it was rolled back to (event `Held`), and a change to the
/// file rolls out again.
#[test]
fn a_rolled_back_release_is_held_across_a_restart_until_the_file_changes() {
    let mut c = Cluster::unstarted(None, &[]);
    let file = manifests(&c).join("web.yaml");
    let web = |probe: &str, tag: &str| {
        Cluster::workload_manifest(
            "web",
            &["sleep"],
            &format!(
                "  env: {{TAG: {tag}}}\n  readiness:\n    exec: {{command: [{probe}]}}\n    \
                 periodSeconds: 1\n  rollout: {{progressDeadline: 3s}}\n"
            ),
        )
    };
    write(&file, &[web("/bin/true", "v1")]);
    c.start_server();
    let v1 = wait_rollout(&c, 1, "complete")["to"]
        .as_str()
        .unwrap()
        .to_owned();
    // v2 never becomes ready: rolled back to v1 after 3 s.
    write(&file, &[web("/bin/false", "v2")]);
    let failed = wait_rollout(&c, 2, "rolledBack");
    assert_eq!(failed["from"], v1.as_str(), "{failed:#}");
    wait_services(&c, "web back on v1", |r| web_digest(r) == Some(&v1));

    // A restart applies the file again: web is held, no third rollout, v1 keeps running.
    c.stop_server();
    c.start_server();
    let mut events = c.events();
    let held = events.wait_for("web", "Held", T);
    assert!(
        held["message"]
            .as_str()
            .unwrap()
            .contains("rollout 2 rolled it back from this manifest"),
        "{held}"
    );
    let r = rollout(&c);
    assert_eq!(
        (&r["number"], &r["state"]),
        (&2.into(), &"rolledBack".into())
    );
    assert_eq!(web_digest(&c.services()), Some(v1.as_str()));

    // A changed file is a new release.
    write(&file, &[web("/bin/true", "v3")]);
    let v3 = wait_rollout(&c, 3, "complete")["to"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_services(&c, "web on v3", |r| web_digest(r) == Some(&v3));
}
