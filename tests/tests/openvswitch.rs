//! The Open vSwitch daemons as cloudlet services: the embedded manifests run the distro's
//! ovsdb-server and ovs-vswitchd (paths moved into the test's dir), in order, with readiness,
//! restarted when they die — all inside a network namespace the test made.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests"
)]

use std::process::Command;
use std::time::Duration;

use cloudlet_tests::fleet::Fleet;

fn ready(fleet: &Fleet, service: &str) -> Option<u64> {
    fleet
        .services()
        .into_iter()
        .find(|s| s["name"] == service && s["state"] == "running" && s["ready"] == true)
        .and_then(|s| s["pid"].as_u64())
}

#[test]
fn the_embedded_openvswitch_manifests_run_the_daemons_in_order_and_restart_them() {
    let mut fleet = Fleet::new("ovs");
    fleet.start_server("s", &[]);
    let run = fleet.path("ovs-run");
    let manifests = fleet.ctl_ok(&["manifests", "show", "openvswitch"]);
    assert!(
        manifests.contains("name: openvswitch-db")
            && manifests.contains("name: openvswitch-switch")
    );
    let moved = manifests
        .replace("/var/run/openvswitch", run.to_str().unwrap())
        .replace("/etc/openvswitch", fleet.path("ovs-db").to_str().unwrap())
        .replace(
            "/var/log/openvswitch",
            fleet.path("ovs-log").to_str().unwrap(),
        );
    fleet.apply("ovs.yaml", &moved);
    fleet.wait_for("both daemons ready", Duration::from_secs(30), |f| {
        ready(f, "openvswitch-db").is_some() && ready(f, "openvswitch-switch").is_some()
    });
    // The switch waited for the database: its first start comes after the database was ready.
    let events = fleet.ctl_ok(&["events", "-o", "json"]);
    let position = |service: &str, reason: &str| {
        events
            .lines()
            .position(|l| {
                l.contains(&format!("\"service\":\"{service}\""))
                    && l.contains(&format!("\"reason\":\"{reason}\""))
            })
            .unwrap_or_else(|| panic!("no {reason} of {service} in\n{events}"))
    };
    assert!(position("openvswitch-db", "Ready") < position("openvswitch-switch", "Started"));
    // The database is the distro's, created from its schema, and the switch serves it.
    let db = format!("unix:{}", run.join("db.sock").display());
    let show = Command::new("ovs-vsctl")
        .args(["--db", &db, "--timeout=5", "show"])
        .output()
        .unwrap();
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );

    // Kill the database: cloudlet restarts it, and both are ready again.
    let db_pid = ready(&fleet, "openvswitch-db").unwrap();
    cloudlet_tests::signal(
        u32::try_from(db_pid).unwrap(),
        nix::sys::signal::Signal::SIGKILL,
    );
    fleet.wait_for("the database back", Duration::from_secs(30), |f| {
        ready(f, "openvswitch-db").is_some_and(|p| p != db_pid)
    });
    let show = Command::new("ovs-vsctl")
        .args(["--db", &db, "--timeout=5", "show"])
        .output()
        .unwrap();
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
}
