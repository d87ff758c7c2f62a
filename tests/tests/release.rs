//! The cluster YAML end to end: every apply a numbered revision, diff against the current one,
//! rollback to any, and an export that round-trips byte for byte.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests"
)]

use std::time::Duration;

use cloudlet_tests::Cluster;

/// A cluster YAML running only the Open vSwitch daemons (compute profile), everything under the
/// test's dir.
fn cluster_yaml(c: &Cluster, version: &str, extra: &str) -> String {
    let dir = c.path("ovs");
    let env = format!(
        "{{OVS_RUNDIR: {d}/run, OVS_DBDIR: {d}/db, OVS_LOGDIR: {d}/log}}",
        d = dir.display()
    );
    format!(
        "apiVersion: cloudlet/v1\nkind: Cluster\nmetadata: {{name: lab}}\nspec:\n  version: {version}\n  \
         profile: compute\n  configDir: {conf}\n  components:\n    host: {{disable: true}}\n    \
         host-deployer: {{disable: true}}\n    host-image: {{disable: true}}\n    host-health: {{disable: true}}\n    \
         sdnagent: {{disable: true}}\n    openvswitch-db: {{env: {env}{extra}}}\n    openvswitch-switch: {{env: {env}}}\n",
        conf = c.path("etc").display()
    )
}

fn write(c: &Cluster, name: &str, text: &str) -> String {
    let path = c.path(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn history_diff_rollback_and_export_round_trip() {
    let c = Cluster::start();
    let first = write(&c, "c1.yaml", &cluster_yaml(&c, "v3.11.9", ""));
    let out = c.ctl_ok(&["cluster", "apply", "-f", &first]);
    assert!(out.contains("revision 1: first revision"), "{out}");
    c.wait_log("openvswitch-switch", Duration::from_secs(20), |l| {
        !l.is_empty()
    });

    // A config change: a new revision, the database's config file rendered, the diff names it.
    let second_text = cluster_yaml(&c, "v3.11.10", ", config: {log_level: debug}");
    let second = write(&c, "c2.yaml", &second_text);
    let diff = c.ctl_ok(&["cluster", "diff", "-f", &second]);
    assert!(diff.contains("spec.version: v3.11.9 -> v3.11.10"), "{diff}");
    assert!(
        diff.contains("spec.components.openvswitch-db.config.log_level: (unset) -> debug"),
        "{diff}"
    );
    assert!(
        diff.contains("openvswitch-db") && diff.contains("changed") && diff.contains("spec.files"),
        "{diff}"
    );
    let out = c.ctl_ok(&["cluster", "apply", "-f", &second]);
    assert!(out.starts_with("revision 2:"), "{out}");
    // The node writes the file as it takes the new revision (no event to await: a bounded poll).
    let conf = c.path("etc/openvswitch-db.conf");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&conf).ok().as_deref() != Some("log_level: debug\n") {
        assert!(
            std::time::Instant::now() < deadline,
            "{} was not written",
            conf.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Applying the same again is no new revision.
    let out = c.ctl_ok(&["cluster", "apply", "-f", &second]);
    assert!(out.starts_with("revision 2: unchanged"), "{out}");

    // Export is canonical: export -> apply -> export is identical, and it is what was applied.
    let exported = c.ctl_ok(&["cluster", "export"]);
    let again = write(&c, "exported.yaml", &exported);
    let out = c.ctl_ok(&["cluster", "apply", "-f", &again]);
    assert!(out.starts_with("revision 2: unchanged"), "{out}");
    assert_eq!(c.ctl_ok(&["cluster", "export"]), exported);

    // Rollback to 1 is revision 3 with revision 1's YAML.
    let out = c.ctl_ok(&["cluster", "rollback", "--to", "1"]);
    assert!(out.starts_with("revision 3:"), "{out}");
    let history = c.ctl_ok(&["cluster", "history", "-o", "json"]);
    let revisions: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(revisions.as_array().unwrap().len(), 3);
    let exported_back = c.ctl_ok(&["cluster", "export"]);
    let first_export = {
        let parsed = write(&c, "first-again.yaml", &cluster_yaml(&c, "v3.11.9", ""));
        let d = c.ctl_ok(&["cluster", "diff", "-f", &parsed]);
        assert!(d.contains("no field changes"), "{d}");
        exported_back.clone()
    };
    assert!(first_export.contains("version: v3.11.9"));
    assert!(!first_export.contains("log_level"));

    // A revision that does not exist says so.
    let out = c.ctl(&["cluster", "rollback", "--to", "9"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no revision 9"));
}
