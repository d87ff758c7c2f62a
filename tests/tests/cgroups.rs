//! End to end on this host's cgroup v2 hierarchy: every service runs in a cgroup of its own, a
//! stop ends its whole tree (even a daemon that left the process group), and a host without v2
//! controllers says plainly that limits are not enforced. Limit enforcement itself is proven in
//! the VM (`make test-vm`).
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "tests; PIDs fit in u32"
)]

use std::time::{Duration, Instant};

use cloudlet_tests::{Cluster, alive};

const T: Duration = Duration::from_secs(30);

fn read_pid(path: &std::path::Path) -> u32 {
    let deadline = Instant::now() + T;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stop_ends_the_whole_cgroup_even_a_daemon_that_left_the_process_group() {
    let c = Cluster::start();
    let Some(cgroup) = c.cgroup_path("services/d") else {
        eprintln!("no cgroup v2 on this host: nothing to check here");
        return;
    };
    let mut events = c.events();
    let pidfile = c.path("daemon.pid");
    c.apply_ok(
        "d.yaml",
        &Cluster::workload_manifest("d", &["daemon", "--pidfile", pidfile.to_str().unwrap()], ""),
    );
    events.wait_for("d", "Ready", T);
    let daemon = read_pid(&pidfile);
    let main = c.service("d")["pid"].as_u64().unwrap() as u32;
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == main.to_string()),
        "main not in its cgroup: {procs}"
    );
    assert!(
        procs.lines().any(|l| l == daemon.to_string()),
        "daemon not in the cgroup: {procs}"
    );
    // The daemon is in a session of its own: a process-group kill would miss it.
    assert_ne!(
        nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(daemon.cast_signed())))
            .unwrap()
            .as_raw(),
        main.cast_signed()
    );

    c.ctl_ok(&["stop", "d"]);
    events.wait_for("d", "Stopped", T);
    assert!(
        cloudlet_tests::wait_exit(daemon, T),
        "the daemon {daemon} outlived its service's stop"
    );
    assert!(!alive(daemon));

    c.ctl_ok(&["delete", "service", "d"]);
    events.wait_for("d", "Deleted", T);
    assert!(!cgroup.exists(), "the cgroup is removed with the service");
}

#[test]
fn without_controllers_every_service_says_its_limits_are_not_enforced() {
    let c = Cluster::start();
    let mut events = c.events();
    c.apply_ok(
        "l.yaml",
        &Cluster::workload_manifest(
            "l",
            &[],
            "  resources:\n    limits: {memory: 64Mi, pids: 100}\n",
        ),
    );
    events.wait_for("l", "Ready", T);
    let s = c.service("l");
    let limits = s["limits"].as_str().unwrap();
    let controllers = c
        .cgroup_path("")
        .map(|base| std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default())
        .unwrap_or_default();
    if controllers.contains("memory") && controllers.contains("pids") {
        assert_eq!(limits, "enforced", "{s}");
    } else {
        assert!(limits.starts_with("not enforced ("), "{s}");
        assert!(
            limits.contains("memory") && limits.contains("pids"),
            "names what is missing: {s}"
        );
    }
}
