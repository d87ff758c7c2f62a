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
    // Per node: the node's row names the service, the change and its fields.
    let nodes: serde_json::Value =
        serde_json::from_str(&c.ctl_ok(&["get", "nodes", "-o", "json"])).unwrap();
    let node = nodes[0]["name"].as_str().unwrap().to_owned();
    assert!(diff.contains("NODE"), "{diff}");
    assert!(
        diff.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() >= 4
                && cols[0] == node
                && cols[1] == "openvswitch-db"
                && cols[2] == "changed"
                && l.contains("spec.files")
        }),
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
    assert!(
        exported_back.contains("version: v3.11.9"),
        "{exported_back}"
    );
    assert!(!exported_back.contains("log_level"), "{exported_back}");
    // Revision 1's YAML, written out again, is no change against the rollback.
    let first_again = write(&c, "first-again.yaml", &cluster_yaml(&c, "v3.11.9", ""));
    let d = c.ctl_ok(&["cluster", "diff", "-f", &first_again]);
    assert!(d.contains("no field changes"), "{d}");

    // A revision that does not exist says so.
    let out = c.ctl(&["cluster", "rollback", "--to", "9"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no revision 9"));
}

/// A fixture `binDir`: the workload under each Cloudpods binary's name, serving `/ping` only to
/// the whitelisted User-Agent on the service's port (after `$DELAY` seconds, on `$BIND`), and
/// refusing to start (exit 3) until its dependency answers; the socket services make their
/// socket.
fn fixture_bin_dir(dir: &std::path::Path) {
    let workload = cloudlet_tests::workload_bin();
    std::fs::create_dir_all(dir).unwrap();
    // binary, port it serves, ports it needs first
    let http: &[(&str, u16, &[u16])] = &[
        ("keystone", 30500, &[]),
        ("region", 30888, &[30500]),
        ("scheduler", 30887, &[30888]),
        ("glance", 30292, &[30500]),
        ("webconsole", 30899, &[30500]),
        ("apigateway", 30300, &[30888]),
        ("logger", 30999, &[30500]),
        ("yunionconf", 30889, &[30500]),
        ("kube-server", 30442, &[30500]),
        ("monitor", 30093, &[30888]),
        ("cloudmon", 30931, &[30500]),
        ("notify", 30777, &[30500]),
        ("esxi-agent", 30883, &[30888]),
        ("host", 8885, &[30888]),
        ("host-image", 48885, &[8885]),
    ];
    let write = |name: &str, body: String| {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::process::Command::new("chmod")
            .arg("755")
            .arg(&path)
            .status()
            .unwrap();
    };
    for (name, port, needs) in http {
        // host needs region: on this node (edge), or at REGION_ADDR (full: region runs on
        // another node, listening on its namespace's addresses with BIND=0.0.0.0).
        let requires: String = if *name == "host" {
            " --require ${REGION_ADDR:-127.0.0.1:30888}".to_owned()
        } else {
            needs
                .iter()
                .map(|p| format!(" --require 127.0.0.1:{p}"))
                .collect()
        };
        write(
            name,
            format!(
                "sleep ${{DELAY:-0}}\nexec {}{requires} serve --port {port} --bind ${{BIND:-127.0.0.1}} --ua kube-probe",
                workload.display()
            ),
        );
    }
    write(
        "host-health",
        format!("exec {} --require 127.0.0.1:8885 sleep", workload.display()),
    );
    for (name, socket) in [
        ("host-deployer", "deploy.sock"),
        ("sdnagent", "sdnagent.sock"),
    ] {
        write(
            name,
            format!(
                "exec python3 -c 'import os, socket, time\np = os.environ[\"ONECLOUD_RUN_DIR\"] + \"/{socket}\"\nos.makedirs(os.path.dirname(p), exist_ok=True)\nos.path.exists(p) and os.unlink(p)\ns = socket.socket(socket.AF_UNIX)\ns.bind(p)\ns.listen()\ntime.sleep(1e9)'"
            ),
        );
    }
}

#[test]
fn the_edge_profile_brings_up_every_cloudpods_service_in_dependency_order_on_one_node() {
    let mut fleet = cloudlet_tests::fleet::Fleet::new("edge");
    fleet.start_server("s", &[]);
    let bin = fleet.path("yunion-bin");
    fixture_bin_dir(&bin);
    let (conf, run, ovs, work) = (
        fleet.path("etc"),
        fleet.path("onecloud"),
        fleet.path("ovs"),
        fleet.path("opt-cloud"),
    );
    std::fs::create_dir_all(&work).unwrap();
    // Small requests: this test machine has two cores; the templates ask for a real node's.
    let mut components = String::new();
    for (name, _) in cloudlet_spec::COMPONENTS {
        let mut extra = vec!["resources: {requests: {cpu: 10m, memory: 8Mi}}".to_owned()];
        match *name {
            "baremetal-agent" => extra = vec!["disable: true".to_owned()],
            "host" => extra.push(format!("workingDir: {}", work.display())),
            "host-deployer" | "sdnagent" => {
                extra.push(format!("env: {{ONECLOUD_RUN_DIR: {}}}", run.display()))
            }
            "openvswitch-db" | "openvswitch-switch" => extra.push(format!(
                "env: {{OVS_RUNDIR: {o}/run, OVS_DBDIR: {o}/db, OVS_LOGDIR: {o}/log}}",
                o = ovs.display()
            )),
            _ => {}
        }
        components.push_str(&format!("    {name}: {{{}}}\n", extra.join(", ")));
    }
    let yaml = format!(
        "apiVersion: cloudlet/v1\nkind: Cluster\nmetadata: {{name: edge}}\nspec:\n  version: v3.11.9\n  profile: edge\n  \
         binDir: {}\n  configDir: {}\n  disableTls: true\n  disableBootstrap: true\n  commonConfig: {{region: region0}}\n  \
         components:\n{components}",
        bin.display(),
        conf.display()
    );
    let file = fleet.path("cluster.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = fleet.ctl_ok(&["cluster", "apply", "-f", file.to_str().unwrap()]);
    assert!(out.contains("revision 1"), "{out}");

    let expected: Vec<&str> = cloudlet_spec::COMPONENTS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !["baremetal-agent", "mysql", "etcd"].contains(n))
        .collect();
    fleet.wait_for(
        "every Cloudpods service ready",
        Duration::from_secs(90),
        |f| {
            let rows = f.services();
            expected.iter().all(|name| {
                rows.iter()
                    .any(|r| r["name"] == *name && r["state"] == "running" && r["ready"] == true)
            })
        },
    );
    // In order: each service started only after what it depends on was ready, and none of the
    // fixtures ever found its dependency missing (they exit 3 then).
    let events: Vec<serde_json::Value> = fleet
        .ctl_ok(&["events", "-o", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |service: &str, reason: &str| {
        events
            .iter()
            .position(|e| e["service"] == service && e["reason"] == reason)
            .unwrap_or_else(|| panic!("no {reason} of {service}"))
    };
    for (service, dependency) in [
        ("region", "keystone"),
        ("scheduler", "region"),
        ("apigateway", "region"),
        ("glance", "keystone"),
        ("host", "region"),
        ("host", "host-deployer"),
        ("host", "openvswitch-switch"),
        ("host-image", "host"),
        ("sdnagent", "host"),
        ("openvswitch-switch", "openvswitch-db"),
    ] {
        assert!(
            at(dependency, "Ready") < at(service, "Started"),
            "{service} started before {dependency} was ready"
        );
    }
    let exits: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["reason"] == "Exited").collect();
    assert!(exits.is_empty(), "a fixture exited: {exits:?}");
    // The node wrote the cluster's common.conf (before host and its kin started).
    let common = conf.join("common/common.conf");
    assert_eq!(
        std::fs::read_to_string(&common).unwrap(),
        "region: region0\n",
        "{}",
        common.display()
    );
}

#[test]
fn the_full_profile_runs_control_services_on_control_nodes_and_compute_services_on_every_compute_node()
 {
    let mut fleet = cloudlet_tests::fleet::Fleet::new("full");
    fleet.start_server("s", &[]);
    let token = fleet.token(&["--role", "compute"]);
    fleet.join("n1", &token, &[]);
    fleet.join("n2", &token, &[]);
    let bin = fleet.path("yunion-bin");
    fixture_bin_dir(&bin);
    let (conf, work) = (fleet.path("etc"), fleet.path("opt-cloud"));
    std::fs::create_dir_all(&work).unwrap();
    // region runs on the server's node; host on every node asks for it there.
    let region = fleet.net().node("s").addr;
    // Node-local sockets and OVS directories would be one path for three nodes on this one
    // filesystem: those components are left out here (the edge test runs them).
    let left_out = [
        "baremetal-agent",
        "host-deployer",
        "sdnagent",
        "openvswitch-db",
        "openvswitch-switch",
    ];
    let mut components = String::new();
    for (name, _) in cloudlet_spec::COMPONENTS {
        let mut extra = vec!["resources: {requests: {cpu: 10m, memory: 8Mi}}".to_owned()];
        if left_out.contains(name) {
            extra = vec!["disable: true".to_owned()];
        } else if *name == "host" {
            extra.push(format!("workingDir: {}", work.display()));
            extra.push(format!("env: {{REGION_ADDR: \"{region}:30888\"}}"));
        } else if *name == "region" {
            // Listening late: a host started before region is ready would find nothing.
            extra.push("env: {BIND: 0.0.0.0, DELAY: \"4\"}".to_owned());
        }
        components.push_str(&format!("    {name}: {{{}}}\n", extra.join(", ")));
    }
    let yaml = format!(
        "apiVersion: cloudlet/v1\nkind: Cluster\nmetadata: {{name: full}}\nspec:\n  version: v3.11.9\n  profile: full\n  \
         binDir: {}\n  configDir: {}\n  disableTls: true\n  disableBootstrap: true\n  components:\n{components}",
        bin.display(),
        conf.display()
    );
    let file = fleet.path("cluster.yaml");
    std::fs::write(&file, yaml).unwrap();
    fleet.ctl_ok(&["cluster", "apply", "-f", file.to_str().unwrap()]);

    let control: Vec<&str> = cloudlet_spec::COMPONENTS
        .iter()
        .filter(|(n, r)| {
            *r == cloudlet_spec::NodeRole::Control
                && !left_out.contains(n)
                && !["mysql", "etcd"].contains(n)
        })
        .map(|(n, _)| *n)
        .collect();
    let compute = ["host", "host-image", "host-health"];
    fleet.wait_for(
        "control on s, compute on s, n1 and n2",
        Duration::from_secs(90),
        |f| {
            control.iter().all(|c| f.running_on(c) == ["s"])
                && compute.iter().all(|c| f.running_on(c) == ["n1", "n2", "s"])
        },
    );
    // Start order across nodes: host went to n1 and n2 only once region was ready on s, so its
    // first run there found region and never exited (the fixture exits 3 without it).
    for row in fleet.services().iter().filter(|r| r["name"] == "host") {
        assert_eq!(
            (row["run"].as_u64(), row["restarts"].as_u64()),
            (Some(1), Some(0)),
            "host on {}: {row}",
            row["node"]
        );
    }
    let events = fleet.ctl_ok(&["events", "--service", "host", "-o", "json"]);
    assert!(
        events.contains("waits for region to be ready on another node before it starts on n1, n2"),
        "{events}"
    );
}
