//! The cluster end to end: a server and agents, each a real `cloudlet` in a network namespace of
//! its own, managed with `cloudlet ctl --config admin.conf` from yet another namespace.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests"
)]

use std::time::Duration;

use cloudlet_tests::Cluster;
use cloudlet_tests::fleet::Fleet;

/// A service that runs until stopped.
fn sleeper(name: &str, placement: &str) -> String {
    Cluster::workload_manifest(name, &["sleep"], &format!("  placement: {placement}\n"))
}

#[test]
fn only_a_valid_token_joins_and_a_wrong_ca_never_gets_the_secret() {
    let mut fleet = Fleet::new("join");
    fleet.start_server("s", &[]);
    let valid = fleet.token(&["--ttl", "1h"]);
    let expired = fleet.token(&["--ttl", "1s"]);
    let revoked = fleet.token(&["--ttl", "1h", "--description", "to revoke"]);
    let revoked_id = revoked
        .split("::")
        .nth(1)
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    fleet.ctl_ok(&["token", "revoke", &revoked_id]);

    // A token of another cluster: its server's CA is not this one's.
    let mut other = Fleet::new("joinother");
    other.start_server("s", &[]);
    let foreign = other.token(&["--ttl", "1h"]);

    fleet.join("good", &valid, &[]);

    // The expired token: wait until its expiry has passed (a time, not an event).
    let tokens: serde_json::Value =
        serde_json::from_str(&fleet.ctl_ok(&["token", "list", "-o", "json"])).unwrap();
    let expires: jiff::Timestamp = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| expired.contains(t["id"].as_str().unwrap()))
        .and_then(|t| t["expiresAt"].as_str())
        .unwrap()
        .parse()
        .unwrap();
    let left = expires.duration_since(jiff::Timestamp::now());
    if left.is_positive() {
        std::thread::sleep(left.unsigned_abs() + Duration::from_millis(100));
    }

    for (node, token, why) in [
        ("late", expired.as_str(), "expired at"),
        ("banned", revoked.as_str(), "is unknown or was revoked"),
        (
            "stranger",
            foreign.as_str(),
            "does not have the CA the token names",
        ),
    ] {
        fleet.start_agent(node, Some(token), &[]);
        let (status, log) = fleet.wait_exit(node, Duration::from_secs(20));
        assert!(!status.success(), "{node} joined with a bad token:\n{log}");
        assert!(log.contains(why), "{node}: expected {why:?} in:\n{log}");
    }

    let names: Vec<String> = fleet
        .nodes()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["good", "s"]);
    // The stranger checked the CA before sending anything: the other server never saw a join.
    let other_tokens = other.ctl_ok(&["token", "list", "-o", "json"]);
    assert!(other_tokens.contains("\"uses\": 0"), "{other_tokens}");
    let events = fleet.ctl_ok(&["events"]);
    assert!(events.contains("NodeJoined"), "{events}");
    assert!(
        !events.contains("stranger") && !events.contains("late"),
        "{events}"
    );
}

#[test]
fn every_node_services_reach_late_nodes_and_replicas_spread() {
    let mut fleet = Fleet::new("place");
    fleet.start_server("s", &[]);
    let token = fleet.token(&[]);
    fleet.join("n1", &token, &["--heartbeat", "1s"]);
    fleet.join("n2", &token, &["--heartbeat", "1s"]);
    fleet.apply(
        "svc.yaml",
        &[
            sleeper("daemon", "{everyNode: true}"),
            sleeper("pair", "{replicas: 2, nodeSelector: {roles: [compute]}}"),
        ]
        .join("---\n"),
    );
    fleet.wait_for("daemon on s, n1, n2", Duration::from_secs(15), |f| {
        f.running_on("daemon") == ["n1", "n2", "s"]
    });
    fleet.wait_for("two pairs", Duration::from_secs(15), |f| {
        f.running_on("pair").len() == 2
    });
    let pairs = fleet.running_on("pair");
    assert_ne!(pairs[0], pairs[1], "replicas on one node: {pairs:?}");

    fleet.join("n3", &token, &["--heartbeat", "1s"]);
    let took = fleet.wait_for("daemon reaches n3", Duration::from_secs(10), |f| {
        f.running_on("daemon").contains(&"n3".to_owned())
    });
    eprintln!("everyNode service reached the new node {took:?} after it was Ready");
    // Nothing else moved.
    assert_eq!(fleet.running_on("pair"), pairs);
}

/// A server and agents n1, n2 (lost after 3 s of silence), with `mover` (relocatable) and
/// `stayer` (not) placed on n1: the other nodes are cordoned while they are placed.
fn two_services_on_n1(test: &str) -> Fleet {
    let mut fleet = Fleet::new(test);
    fleet.start_server("s", &["--node-lost-after", "3s"]);
    let token = fleet.token(&[]);
    fleet.join("n1", &token, &["--heartbeat", "500ms"]);
    fleet.join("n2", &token, &["--heartbeat", "500ms"]);
    fleet.ctl_ok(&["cordon", "s"]);
    fleet.ctl_ok(&["cordon", "n2"]);
    fleet.apply(
        "svc.yaml",
        &[
            sleeper("mover", "{replicas: 1, relocate: true}"),
            sleeper("stayer", "{replicas: 1}"),
        ]
        .join("---\n"),
    );
    fleet.wait_for("both on n1", Duration::from_secs(15), |f| {
        f.running_on("mover") == ["n1"] && f.running_on("stayer") == ["n1"]
    });
    fleet.ctl_ok(&["uncordon", "s"]);
    fleet.ctl_ok(&["uncordon", "n2"]);
    fleet
}

/// The pid of `service` as `node`'s own agent sees it.
fn local_pid(fleet: &Fleet, node: &str, service: &str) -> Option<u64> {
    let out = fleet.local_ctl(node, &["get", "services", "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    rows.as_array()?
        .iter()
        .find(|r| r["name"] == service && r["state"] == "running")
        .and_then(|r| r["pid"].as_u64())
}

#[test]
fn a_killed_agent_loses_only_its_relocatable_service_to_another_node() {
    let mut fleet = two_services_on_n1("lost");
    let stayer_pid = local_pid(&fleet, "n1", "stayer").unwrap();
    fleet.kill("n1");
    let took = fleet.wait_for("mover running elsewhere", Duration::from_secs(3 + 5), |f| {
        let on = f.running_on("mover");
        on.len() == 1 && on[0] != "n1"
    });
    eprintln!("relocated {took:?} after the agent was killed (nodeLostAfter 3s)");
    fleet.wait_node_state("n1", "Lost", Duration::from_secs(5));
    // The non-relocatable one waits for its node: unknown there, and nowhere else.
    let rows = fleet.services();
    let stayers: Vec<_> = rows.iter().filter(|r| r["name"] == "stayer").collect();
    assert_eq!(stayers.len(), 1, "{rows:?}");
    assert_eq!(stayers[0]["node"], "n1");
    assert_eq!(stayers[0]["state"], "unknown");
    // Its process never stopped: the agent died, not the service.
    assert!(cloudlet_tests::alive(u32::try_from(stayer_pid).unwrap()));

    // The agent comes back without a token: nothing that runs changes, the stale mover stops.
    fleet.start_agent("n1", None, &["--heartbeat", "500ms"]);
    fleet.wait_node_state("n1", "Ready", Duration::from_secs(15));
    fleet.wait_for("one mover, and not on n1", Duration::from_secs(10), |f| {
        local_pid(f, "n1", "mover").is_none() && f.running_on("mover").len() == 1
    });
    assert_eq!(local_pid(&fleet, "n1", "stayer"), Some(stayer_pid));
    let events = fleet.ctl_ok(&["events"]);
    assert!(
        events.contains("Relocated") && events.contains("Unassigned"),
        "{events}"
    );
}

#[test]
fn a_partitioned_agent_keeps_running_and_after_healing_no_duplicate_is_left() {
    let fleet = two_services_on_n1("partition");
    let mover_pid = local_pid(&fleet, "n1", "mover").unwrap();
    let stayer_pid = local_pid(&fleet, "n1", "stayer").unwrap();
    fleet.net().partition("n1");
    fleet.wait_for("mover relocated", Duration::from_secs(3 + 5), |f| {
        f.running_on("mover").iter().any(|n| n != "n1")
    });
    // Cut off, n1 runs what it ran: the agent never stops a service for lack of a server.
    assert_eq!(local_pid(&fleet, "n1", "mover"), Some(mover_pid));
    assert_eq!(local_pid(&fleet, "n1", "stayer"), Some(stayer_pid));
    fleet.net().heal("n1");
    fleet.wait_node_state("n1", "Ready", Duration::from_secs(15));
    fleet.wait_for("the stale mover stopped", Duration::from_secs(10), |f| {
        local_pid(f, "n1", "mover").is_none()
    });
    // The server hears of it with n1's next heartbeat.
    fleet.wait_for(
        "one mover, not on n1, in the server's view",
        Duration::from_secs(5),
        |f| {
            let movers = f.running_on("mover");
            movers.len() == 1 && movers[0] != "n1"
        },
    );
    assert_eq!(fleet.running_on("stayer"), ["n1"]);
    assert_eq!(local_pid(&fleet, "n1", "stayer"), Some(stayer_pid));
}

/// PEM files of one identity for curl.
struct Identity {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn identity_from_admin_conf(fleet: &Fleet, conf: &std::path::Path, name: &str) -> Identity {
    let admin = cloudlet_api::AdminConfig::load(conf).unwrap();
    let (cert, key) = (
        fleet.path(&format!("{name}.crt")),
        fleet.path(&format!("{name}.key")),
    );
    std::fs::write(&cert, admin.cert).unwrap();
    std::fs::write(&key, admin.key).unwrap();
    Identity { cert, key }
}

/// `curl` from the operator's namespace: the HTTP status, or 0 when TLS refused the connection.
fn curl(
    fleet: &Fleet,
    ca: &std::path::Path,
    who: Option<&Identity>,
    method: &str,
    path: &str,
) -> u16 {
    let mut cmd = fleet.net().node("client").command("curl");
    cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
        .arg("--cacert")
        .arg(ca);
    if let Some(id) = who {
        cmd.arg("--cert").arg(&id.cert).arg("--key").arg(&id.key);
    }
    if method == "POST" {
        cmd.args(["-H", "content-type: application/json", "--data", "[]"]);
    }
    let out = cmd
        .arg(format!("{}{path}", fleet.server_url()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn the_authorization_matrix_over_mutual_tls() {
    let mut fleet = Fleet::new("authz");
    fleet.start_server("s", &[]);
    let token = fleet.token(&[]);
    fleet.join("n1", &token, &[]);
    fleet.join("n2", &token, &[]);
    let ca = fleet.data_dir("s").join("pki/ca.crt");
    let admin = identity_from_admin_conf(&fleet, &fleet.admin_conf(), "admin");
    let n1 = Identity {
        cert: fleet.data_dir("n1").join("pki/node.crt"),
        key: fleet.data_dir("n1").join("pki/node.key"),
    };
    let mut other = Fleet::new("authzother");
    other.start_server("s", &[]);
    let stranger = identity_from_admin_conf(&fleet, &other.admin_conf(), "stranger");

    let cases: &[(&str, Option<&Identity>, &str, &str, u16)] = &[
        ("admin", Some(&admin), "GET", "/v1/services", 200),
        (
            "admin",
            Some(&admin),
            "GET",
            "/v1/nodes/n2/assignments",
            200,
        ),
        (
            "own node",
            Some(&n1),
            "GET",
            "/v1/nodes/n1/assignments",
            200,
        ),
        ("own node", Some(&n1), "POST", "/v1/nodes/n1/events", 200),
        (
            "other node",
            Some(&n1),
            "GET",
            "/v1/nodes/n2/assignments",
            403,
        ),
        ("other node", Some(&n1), "POST", "/v1/nodes/n2/events", 403),
        (
            "other node",
            Some(&n1),
            "POST",
            "/v1/nodes/n2/heartbeat",
            403,
        ),
        (
            "a node, cluster-wide",
            Some(&n1),
            "GET",
            "/v1/services",
            403,
        ),
        ("a node, tokens", Some(&n1), "POST", "/v1/tokens", 403),
        ("no certificate", None, "GET", "/v1/services", 401),
        (
            "no certificate",
            None,
            "GET",
            "/v1/nodes/n1/assignments",
            401,
        ),
        ("no certificate", None, "GET", "/v1/cacerts", 200),
        ("another CA", Some(&stranger), "GET", "/v1/services", 0),
    ];
    let mut wrong = Vec::new();
    for (who, id, method, path, want) in cases {
        let got = curl(&fleet, &ca, *id, method, path);
        if got != *want {
            wrong.push(format!("{who}: {method} {path}: got {got}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn sixty_second_certificates_renew_for_five_minutes_without_one_failed_call() {
    let mut fleet = Fleet::new("renew");
    fleet.start_server("s", &["--cert-lifetime", "60s"]);
    let token = fleet.token(&[]);
    fleet.join("n1", &token, &["--heartbeat", "1s"]);
    fleet.join("n2", &token, &["--heartbeat", "1s"]);
    let ca = fleet.data_dir("s").join("pki/ca.crt");
    // n1's first certificate, kept to try once it expired.
    let first = Identity {
        cert: fleet.path("first.crt"),
        key: fleet.path("first.key"),
    };
    std::fs::copy(fleet.data_dir("n1").join("pki/node.crt"), &first.cert).unwrap();
    std::fs::copy(fleet.data_dir("n1").join("pki/node.key"), &first.key).unwrap();
    assert_eq!(
        curl(&fleet, &ca, Some(&first), "GET", "/v1/nodes/n1/assignments"),
        200
    );

    let start = std::time::Instant::now();
    let (mut calls, mut failures) = (0u32, Vec::new());
    let mut expiries: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    let mut expired_refused = None;
    while start.elapsed() < Duration::from_secs(300) {
        calls += 1;
        let out = fleet.ctl(&["get", "nodes", "-o", "json"]);
        if !out.status.success() {
            failures.push(format!(
                "{:?}: {}",
                start.elapsed(),
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for n in nodes.as_array().unwrap() {
            let name = n["name"].as_str().unwrap().to_owned();
            if n["state"] != "Ready" {
                failures.push(format!(
                    "{:?}: node {name} is {}",
                    start.elapsed(),
                    n["state"]
                ));
            }
            if let Some(at) = n["certNotAfter"].as_str() {
                expiries.entry(name).or_default().insert(at.to_owned());
            }
        }
        if expired_refused.is_none() && start.elapsed() > Duration::from_secs(75) {
            expired_refused = Some(curl(
                &fleet,
                &ca,
                Some(&first),
                "GET",
                "/v1/nodes/n1/assignments",
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        expired_refused,
        Some(0),
        "an expired certificate must fail the handshake"
    );
    for node in ["s", "n1", "n2"] {
        let seen = expiries
            .get(node)
            .map_or(0, std::collections::BTreeSet::len);
        assert!(
            seen >= 5,
            "{node}: only {seen} certificates in 5 minutes: {expiries:?}"
        );
    }
    for node in ["n1", "n2"] {
        let log = fleet.log(node);
        let warned: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("agent"))
            .collect();
        assert!(
            warned.is_empty(),
            "{node}: the agent warned while certificates renewed:\n{}",
            warned.join("\n")
        );
        let renewals = log.matches("certificate renewed").count();
        assert!(renewals >= 5, "{node}: {renewals} renewals in 5 minutes");
    }
    eprintln!(
        "{calls} ctl calls, 0 failed; certificates seen: {:?}",
        expiries
            .values()
            .map(std::collections::BTreeSet::len)
            .collect::<Vec<_>>()
    );
}

#[test]
fn drain_moves_only_relocatable_services_unless_forced_and_labels_steer_placement() {
    let fleet = two_services_on_n1("drain");
    fleet.ctl_ok(&["drain", "n1"]);
    fleet.wait_for("mover off n1", Duration::from_secs(10), |f| {
        let on = f.running_on("mover");
        on.len() == 1 && on[0] != "n1"
    });
    assert_eq!(
        fleet.running_on("stayer"),
        ["n1"],
        "drain without --force moved it"
    );
    let n1 = fleet
        .nodes()
        .into_iter()
        .find(|n| n["name"] == "n1")
        .unwrap();
    assert_eq!(n1["draining"], true);
    fleet.ctl_ok(&["drain", "n1", "--force"]);
    fleet.wait_for("stayer off n1", Duration::from_secs(10), |f| {
        let on = f.running_on("stayer");
        on.len() == 1 && on[0] != "n1"
    });
    fleet.ctl_ok(&["uncordon", "n1"]);

    // Labels: a selector follows them; taking the label away takes the service away.
    fleet.ctl_ok(&["label", "node", "n2", "disk=ssd"]);
    fleet.apply(
        "ssd.yaml",
        &sleeper("fast", "{replicas: 1, nodeSelector: {labels: {disk: ssd}}}"),
    );
    fleet.wait_for("fast on n2", Duration::from_secs(10), |f| {
        f.running_on("fast") == ["n2"]
    });
    fleet.ctl_ok(&["label", "node", "n2", "disk-"]);
    fleet.wait_for("fast unplaced", Duration::from_secs(10), |f| {
        f.running_on("fast").is_empty()
            && f.services().iter().any(|s| {
                s["name"] == "fast"
                    && s["state"] == "pending"
                    && s["message"].as_str().is_some_and(|m| m.contains("disk"))
            })
    });
}

#[test]
fn logs_exec_and_restart_reach_the_node_that_runs_the_service() {
    let mut fleet = Fleet::new("nodeverbs");
    fleet.start_server("s", &[]);
    let token = fleet.token(&[]);
    fleet.join("n1", &token, &[]);
    // Everything new goes to n1: logs and restart then go through its agent.
    fleet.ctl_ok(&["cordon", "s"]);
    fleet.apply(
        "talk.yaml",
        &Cluster::workload_manifest(
            "talker",
            &["--print", "3", "sleep"],
            "  placement: {replicas: 1, nodeSelector: {roles: [compute]}, relocate: true}\n",
        ),
    );
    fleet.wait_for("talker running on n1", Duration::from_secs(10), |f| {
        f.running_on("talker") == ["n1"]
    });
    let node = "n1".to_owned();
    let logs = fleet.ctl_ok(&["logs", "talker", "--node", &node]);
    assert!(logs.contains("line 1 pid"), "{logs}");
    // exec runs in the node's own network namespace: its eth0 has the node's address.
    let addr = fleet.net().node("n1").addr.to_string();
    let out = fleet.ctl_ok(&[
        "exec", "--node", "n1", "--", "ip", "-4", "-o", "addr", "show", "eth0",
    ]);
    assert!(out.contains(&addr), "{out}");
    let failing = fleet.ctl(&["exec", "--node", "n1", "--", "sh", "-c", "exit 7"]);
    assert_eq!(failing.status.code(), Some(7));
    let before: Vec<serde_json::Value> = fleet.services();
    let run = |rows: &[serde_json::Value]| {
        rows.iter()
            .find(|r| r["name"] == "talker" && r["state"] == "running")
            .and_then(|r| r["run"].as_u64())
    };
    let first = run(&before).unwrap();
    fleet.ctl_ok(&["restart", "talker", "--node", &node]);
    fleet.wait_for("a new run", Duration::from_secs(10), |f| {
        run(&f.services()).is_some_and(|r| r > first)
    });
}

#[test]
fn a_ca_rotation_moves_every_node_to_the_new_ca_without_losing_one() {
    let mut fleet = Fleet::new("rotate");
    fleet.start_server("s", &[]);
    let old_token = fleet.token(&[]);
    fleet.join("n1", &old_token, &["--heartbeat", "500ms"]);
    let node_cert = fleet.data_dir("n1").join("pki/node.crt");
    let before = std::fs::read_to_string(&node_cert).unwrap();
    let old_pin = old_token.split("::").next().unwrap().to_owned();

    fleet.ctl_ok(&["ca", "rotate"]);
    // n1 learns of the new bundle from a heartbeat answer, fetches it and renews.
    fleet.wait_for("n1 renewed with the new CA", Duration::from_secs(15), |f| {
        std::fs::read_to_string(&node_cert).is_ok_and(|now| now != before)
            && std::fs::read_to_string(f.data_dir("n1").join("pki/ca.crt"))
                .is_ok_and(|b| b.matches("BEGIN CERTIFICATE").count() == 2)
    });
    let new_token = fleet.token(&[]);
    assert_ne!(new_token.split("::").next().unwrap(), old_pin);
    fleet.join("n2", &new_token, &["--heartbeat", "500ms"]);
    // Until the rotation is finished, a token made before it still joins: its agent verifies
    // the server through the cross-signed chain.
    fleet.join("n4", &old_token, &["--heartbeat", "500ms"]);

    fleet.ctl_ok(&["ca", "rotate", "--finish"]);
    // Every node keeps beating, and the server still reaches each agent.
    let beat = |f: &Fleet, node: &str| {
        f.nodes()
            .into_iter()
            .find(|n| n["name"] == node)
            .and_then(|n| n["lastHeartbeat"].as_str().map(str::to_owned))
    };
    for node in ["n1", "n2", "n4"] {
        let last = beat(&fleet, node);
        fleet.wait_for(
            &format!("{node} beats after the finish"),
            Duration::from_secs(10),
            |f| beat(f, node) != last,
        );
        let out = fleet.ctl_ok(&["exec", "--node", node, "--", "true"]);
        assert!(out.is_empty(), "{out}");
    }
    fleet.wait_node_state("n1", "Ready", Duration::from_secs(5));
    // The old token pins a CA nobody trusts any more.
    fleet.start_agent("n3", Some(&old_token), &[]);
    let (status, log) = fleet.wait_exit("n3", Duration::from_secs(20));
    assert!(!status.success(), "{log}");
}

#[test]
fn a_server_without_its_own_node_places_on_agents_and_forgets_a_deleted_node() {
    let mut fleet = Fleet::new("noagent");
    fleet.start_server("s", &["--disable-agent"]);
    let token = fleet.token(&["--role", "control"]);
    fleet.join("n1", &token, &[]);
    let nodes = fleet.nodes();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["roles"], serde_json::json!(["control"]));
    fleet.apply(
        "one.yaml",
        &sleeper("one", "{replicas: 1, nodeSelector: {roles: [control]}}"),
    );
    fleet.wait_for("one on n1", Duration::from_secs(10), |f| {
        f.running_on("one") == ["n1"]
    });
    // Nowhere else to go: a second replica cannot be placed, and apply says why.
    std::fs::write(fleet.path("two.yaml"), sleeper("two", "{replicas: 2}")).unwrap();
    let out = fleet.ctl(&["apply", "-f", fleet.path("two.yaml").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "two replicas on one node were accepted"
    );
    assert!(
        err.contains("two.yaml: document 1: cannot be placed: two: 1 of 2 replicas placed"),
        "{err}"
    );
    assert!(err.contains("node n1: already runs a copy"), "{err}");

    let out = fleet.ctl_ok(&["delete", "node", "n1"]);
    assert!(out.contains("deleted"), "{out}");
    assert!(fleet.nodes().is_empty());
    // The forgotten node keeps running what it ran: nothing stops a service for lack of a server.
    assert!(fleet.local_ctl("n1", &["get", "services"]).status.success());
    let local =
        String::from_utf8_lossy(&fleet.local_ctl("n1", &["get", "services"]).stdout).into_owned();
    assert!(
        local.contains("one") && local.contains("running"),
        "{local}"
    );
}

/// A node name is bound to the secret its node first joined with (k3s' node password): the same
/// node, its certificate lost, joins again as itself; another machine under the name, with any
/// valid token, is refused (before the token is spent) until the node is deleted.
#[test]
fn a_join_under_an_existing_name_needs_that_nodes_secret() {
    let mut fleet = Fleet::new("claim");
    fleet.start_server("s", &[]);
    let token = fleet.token(&["--ttl", "1h"]);
    fleet.join("n1", &token, &[]);
    fleet.kill("n1");
    let pki = fleet.data_dir("n1").join("pki");
    std::fs::remove_file(pki.join("node.crt")).unwrap();
    fleet.start_agent("n1", Some(&token), &[]);
    fleet.wait_for("n1 joins again as itself", Duration::from_secs(20), |f| {
        f.ctl_ok(&["events"]).contains("NodeRejoined")
    });
    fleet.kill("n1");

    std::fs::remove_dir_all(&pki).unwrap();
    fleet.start_agent("n1", Some(&token), &[]);
    let (status, log) = fleet.wait_exit("n1", Duration::from_secs(20));
    assert!(!status.success(), "a second machine took node n1:\n{log}");
    assert!(log.contains("cloudlet ctl delete node n1"), "{log}");

    fleet.ctl_ok(&["delete", "node", "n1"]);
    fleet.join("n1", &token, &[]);
}

/// The DNS and IP SANs of a PEM certificate, as `dns:NAME` / `ip:ADDR`.
fn sans_of(pem: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(pem).unwrap();
    let (_, block) = x509_parser::pem::parse_x509_pem(text.as_bytes()).unwrap();
    let cert = block.parse_x509().unwrap();
    let ext = cert.subject_alternative_name().unwrap().unwrap();
    ext.value
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => format!("dns:{d}"),
            x509_parser::extensions::GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Copies `node`'s current certificate and key aside, as `as_name`.
fn keep_identity(fleet: &Fleet, node: &str, as_name: &str) -> (Identity, String) {
    let pki = fleet.data_dir(node).join("pki");
    let kept = Identity {
        cert: fleet.path(&format!("{as_name}.crt")),
        key: fleet.path(&format!("{as_name}.key")),
    };
    std::fs::copy(pki.join("node.crt"), &kept.cert).unwrap();
    std::fs::copy(pki.join("node.key"), &kept.key).unwrap();
    let pem = std::fs::read_to_string(&kept.cert).unwrap();
    let serial = cloudlet_pki::Identity::from_pem(&pem).unwrap().serial;
    (kept, serial)
}

/// A node certificate names its node and nothing the joiner chose; a node that joins again
/// (with its secret) and a deleted node lose their old certificates at once, not at expiry;
/// `ctl get nodes -o wide` shows the serial in force.
#[test]
fn certificates_name_only_their_node_and_are_revoked_on_rejoin_and_delete() {
    let mut fleet = Fleet::new("revoke");
    fleet.start_server("s", &[]);
    let token = fleet.token(&["--ttl", "1h"]);
    fleet.join("n1", &token, &[]);
    let ca = fleet.data_dir("s").join("pki/ca.crt");
    let pki = fleet.data_dir("n1").join("pki");
    assert_eq!(sans_of(&pki.join("node.crt")), ["dns:n1"]);
    let (first, first_serial) = keep_identity(&fleet, "n1", "first");
    let assignments = "/v1/nodes/n1/assignments";
    assert_eq!(curl(&fleet, &ca, Some(&first), "GET", assignments), 200);
    let wide = fleet.ctl_ok(&["get", "nodes", "-o", "wide"]);
    assert!(wide.contains(&first_serial), "{wide}");

    // The same node joins again with its secret: a new certificate, the first one refused.
    fleet.kill("n1");
    std::fs::remove_file(pki.join("node.crt")).unwrap();
    fleet.start_agent("n1", Some(&token), &[]);
    fleet.wait_for("n1 joins again", Duration::from_secs(20), |f| {
        f.ctl_ok(&["events"]).contains("NodeRejoined")
    });
    fleet.wait_node_state("n1", "Ready", Duration::from_secs(20));
    let (second, second_serial) = keep_identity(&fleet, "n1", "second");
    assert_ne!(first_serial, second_serial);
    assert_eq!(curl(&fleet, &ca, Some(&first), "GET", assignments), 401);
    assert_eq!(curl(&fleet, &ca, Some(&second), "GET", assignments), 200);
    let wide = fleet.ctl_ok(&["get", "nodes", "-o", "wide"]);
    assert!(wide.contains(&second_serial), "{wide}");

    // Deleted: its certificate, valid for an hour more, is refused on the next request.
    fleet.kill("n1");
    fleet.ctl_ok(&["delete", "node", "n1"]);
    assert_eq!(curl(&fleet, &ca, Some(&second), "GET", assignments), 401);
    // It may still join (anonymous routes stay open to it) and gets a working certificate.
    std::fs::remove_file(pki.join("node.crt")).unwrap();
    fleet.join("n1", &token, &[]);
    let (third, _) = keep_identity(&fleet, "n1", "third");
    assert_eq!(curl(&fleet, &ca, Some(&third), "GET", assignments), 200);
    assert_eq!(curl(&fleet, &ca, Some(&second), "GET", assignments), 401);
}

#[test]
fn get_network_and_restart_ask_every_node_at_once_under_one_deadline() {
    let mut fleet = Fleet::new("fanout");
    fleet.start_server("s", &[]);
    let token = fleet.token(&[]);
    fleet.join("n1", &token, &[]);
    fleet.join("n2", &token, &[]);
    fleet.apply("daemon.yaml", &sleeper("daemon", "{everyNode: true}"));
    fleet.wait_for("daemon on s, n1, n2", Duration::from_secs(20), |f| {
        f.running_on("daemon") == ["n1", "n2", "s"]
    });
    // Once while all answer: the server keeps a connection to each agent.
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&fleet.ctl_ok(&["get", "network", "-o", "json"])).unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");

    // Both agents frozen: their kernels still take the request, nobody answers it.
    let frozen: Vec<i32> = ["n1", "n2"]
        .iter()
        .map(|n| i32::try_from(fleet.process(n).id()).unwrap())
        .collect();
    let signal_all = |signal| {
        for pid in &frozen {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), signal).unwrap();
        }
    };
    signal_all(nix::sys::signal::Signal::SIGSTOP);
    let timed = |args: &[&str]| {
        let started = std::time::Instant::now();
        let out = fleet.ctl(args);
        (out, started.elapsed())
    };
    // The restart first, while the server holds a connection to each agent (a call that times
    // out drops its connection; the next call connects anew, bounded on its own).
    let (restart, restart_took) = timed(&["restart", "daemon"]);
    let (network, network_took) = timed(&["get", "network", "-o", "json"]);
    signal_all(nix::sys::signal::Signal::SIGCONT);

    // The server's `FAN_OUT_TIMEOUT`: one deadline for both nodes, not one each.
    let deadline = Duration::from_secs(10);
    println!("with two frozen agents: get network took {network_took:?}, restart {restart_took:?}");
    assert!(network.status.success(), "{network:?}");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&network.stdout).unwrap();
    assert!(
        network_took >= deadline && network_took < deadline + Duration::from_secs(5),
        "{network_took:?}"
    );
    for node in ["n1", "n2"] {
        let row = rows.iter().find(|r| r["node"] == node).unwrap();
        assert!(!row["problem"].as_str().unwrap().is_empty(), "{row}");
    }
    assert!(rows.iter().any(|r| r["node"] == "s"), "{rows:?}");
    // A restart on every node says which one did not answer, after the one deadline.
    assert!(!restart.status.success(), "{restart:?}");
    let said = String::from_utf8_lossy(&restart.stderr);
    assert!(said.contains("did not answer within"), "{said}");
    assert!(
        restart_took >= deadline && restart_took < deadline + Duration::from_secs(5),
        "{restart_took:?}"
    );
}
