//! Host networking through Open vSwitch, end to end on the userspace datapath: each node is a
//! network namespace running a cloudlet server that runs the distro's OVS daemons (the embedded
//! manifests) and keeps its `--network` spec true — the uplink's address moved to the bridge
//! (checked, rolled back when the check fails), the firewall as OpenFlow rules, drift repaired.
//! Every namespace's iptables and nftables rulesets are the same after as before, and a
//! recording `iptables`/`nft` first on cloudlet's PATH is never called.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests"
)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use cloudlet_tests::fleet::Fleet;

/// Paths of one node's OVS daemons.
fn ovs_dir(fleet: &Fleet, node: &str) -> PathBuf {
    fleet.path(&format!("{node}-ovs"))
}

/// A recording `iptables` and `nft` first on PATH: any call leaves a line in `calls`.
fn recording_path(fleet: &mut Fleet) -> PathBuf {
    let bin = fleet.path("record-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = fleet.path("netfilter-calls");
    for tool in ["iptables", "ip6tables", "iptables-restore", "nft"] {
        let script = format!(
            "#!/bin/sh\necho \"{tool} $*\" >> {}\nexit 1\n",
            calls.display()
        );
        let path = bin.join(tool);
        std::fs::write(&path, script).unwrap();
        Command::new("chmod")
            .arg("755")
            .arg(&path)
            .status()
            .unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    fleet.set_env("PATH", &path);
    calls
}

/// `iptables-save` and `nft list ruleset` in `node`'s namespace (what exists of them).
fn netfilter(fleet: &Fleet, node: &str) -> String {
    let mut text = String::new();
    for (tool, args) in [("iptables-save", vec![]), ("nft", vec!["list", "ruleset"])] {
        if let Ok(out) = fleet.net().node(node).command(tool).args(&args).output() {
            let dump = String::from_utf8_lossy(&out.stdout);
            // iptables-save stamps its output with the time.
            text.extend(
                dump.lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| format!("{l}\n")),
            );
        }
    }
    text
}

/// Starts a server on `node` with `network` (YAML, `{OVS}` standing for its OVS dir) and the
/// OVS daemons as its services.
fn node_with_network(fleet: &mut Fleet, node: &str, network: &str) {
    let ovs = ovs_dir(fleet, node);
    let file = fleet.path(&format!("{node}-network.yaml"));
    std::fs::write(&file, network.replace("{OVS}", ovs.to_str().unwrap())).unwrap();
    fleet.start_server(node, &["--network", file.to_str().unwrap()]);
    fleet.net().tx_offload_off(node);
    let manifests = String::from_utf8(
        fleet
            .local_ctl(node, &["manifests", "show", "openvswitch"])
            .stdout,
    )
    .unwrap();
    let moved = manifests
        .replace("/var/run/openvswitch", ovs.join("run").to_str().unwrap())
        .replace("/etc/openvswitch", ovs.join("db").to_str().unwrap())
        .replace("/var/log/openvswitch", ovs.join("log").to_str().unwrap());
    let path = fleet.path(&format!("{node}-ovs.yaml"));
    std::fs::write(&path, moved).unwrap();
    let out = fleet.local_ctl(node, &["apply", "-f", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn events(fleet: &Fleet, node: &str) -> String {
    String::from_utf8_lossy(&fleet.local_ctl(node, &["events"]).stdout).into_owned()
}

fn addresses(fleet: &Fleet, node: &str, dev: &str) -> String {
    let out = fleet
        .net()
        .node(node)
        .command("ip")
        .args(["-4", "-o", "addr", "show", "dev", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ping(fleet: &Fleet, from: &str, to: &str) -> bool {
    let addr = fleet.net().node(to).addr.to_string();
    fleet
        .net()
        .node(from)
        .command("ping")
        .args(["-c", "1", "-W", "2", "-n", &addr])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ovs_vsctl(fleet: &Fleet, node: &str, args: &[&str]) -> Output {
    let db = format!(
        "unix:{}",
        ovs_dir(fleet, node).join("run/db.sock").display()
    );
    Command::new("ovs-vsctl")
        .arg(format!("--db={db}"))
        .arg("--timeout=5")
        .args(args)
        .output()
        .unwrap()
}

const UPLINK: &str = "\
apiVersion: cloudlet/v1
kind: NodeNetwork
spec:
  ovsdb: unix:{OVS}/run/db.sock
  bridges:
    - name: br0
      datapathType: netdev
      uplink: {nic: eth0, check: {ping: PEER, timeout: 5s}}
";

#[test]
fn uplink_addresses_move_to_the_bridge_nodes_ping_through_it_and_a_failed_check_rolls_back() {
    let mut fleet = Fleet::new("uplink");
    let calls = recording_path(&mut fleet);
    // Every namespace exists before the first server starts: each check pings its peer.
    for n in ["a", "b", "c"] {
        fleet.add_node(n);
    }
    let before: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| netfilter(&fleet, n))
        .collect();
    let addrs: std::collections::BTreeMap<String, String> = ["a", "b", "c"]
        .iter()
        .map(|n| ((*n).to_owned(), fleet.net().node(n).addr.to_string()))
        .collect();
    let addr = |n: &str| addrs[n].clone();
    let (a_net, b_net) = (
        UPLINK.replace("PEER", &addr("b")),
        UPLINK.replace("PEER", &addr("a")),
    );
    // c's check pings an address nobody has: its move must be rolled back.
    let c_net = UPLINK
        .replace("PEER", "10.77.0.250")
        .replace("timeout: 5s", "timeout: 2s");
    node_with_network(&mut fleet, "a", &a_net);
    node_with_network(&mut fleet, "b", &b_net);
    node_with_network(&mut fleet, "c", &c_net);

    for n in ["a", "b"] {
        fleet.wait_for(
            &format!("{n}: address on br0"),
            Duration::from_secs(60),
            |f| addresses(f, n, "br0").contains(&addr(n)) && events(f, n).contains("UplinkMoved"),
        );
        assert!(
            !addresses(&fleet, n, "eth0").contains(&addr(n)),
            "{n}: eth0 kept its address"
        );
    }
    fleet.wait_for(
        "a and b ping each other through their bridges",
        Duration::from_secs(10),
        |f| ping(f, "a", "b") && ping(f, "b", "a"),
    );
    let net =
        String::from_utf8_lossy(&fleet.local_ctl("a", &["get", "network"]).stdout).into_owned();
    assert!(
        net.contains("br0") && net.contains("eth0 (addresses moved)"),
        "{net}"
    );

    fleet.wait_for("c rolled back", Duration::from_secs(60), |f| {
        events(f, "c").contains("UplinkRolledBack")
    });
    assert!(
        addresses(&fleet, "c", "eth0").contains(&addr("c")),
        "c's address is not back on eth0"
    );
    let ports = ovs_vsctl(&fleet, "c", &["list-ports", "br0"]);
    assert!(
        !String::from_utf8_lossy(&ports.stdout).contains("eth0"),
        "eth0 is still on c's bridge"
    );
    assert!(
        ping(&fleet, "c", "a"),
        "c lost its network after the rollback"
    );

    let after: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| netfilter(&fleet, n))
        .collect();
    assert_eq!(before, after, "a netfilter ruleset changed");
    assert!(
        !calls.exists(),
        "iptables/nft was called: {}",
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
}

const FIREWALL: &str = "\
apiVersion: cloudlet/v1
kind: NodeNetwork
spec:
  ovsdb: unix:{OVS}/run/db.sock
  bridges:
    - name: br0
      datapathType: netdev
      uplink: {nic: eth0}
      ports:
        - {name: p1, tag: 10}
  firewall:
    bridge: br0
    default: deny
    stateful: true
    rules:
      - {name: web, direction: in, action: allow, protocol: tcp, ports: 8080}
      - {name: out, direction: out, action: allow}
";

fn http_server(port: u16) -> String {
    format!(
        "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {{name: web{port}}}\nspec:\n  command: [python3, -m, http.server, --bind, 0.0.0.0, \"{port}\"]\n  workingDir: /tmp\n  readiness: {{tcp: {{port: {port}}}}}\n"
    )
}

/// Whether `client` gets an HTTP answer from `node`:`port` within 2 s.
fn http_ok(fleet: &Fleet, client: &str, node: &str, port: u16) -> bool {
    let url = format!("http://{}:{port}/", fleet.net().node(node).addr);
    fleet
        .net()
        .node(client)
        .command("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "2", &url])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_firewall_admits_only_what_it_allows_replies_come_back_and_drift_is_repaired() {
    let mut fleet = Fleet::new("firewall");
    let calls = recording_path(&mut fleet);
    fleet.add_node("s");
    let before = netfilter(&fleet, "s");
    node_with_network(&mut fleet, "s", FIREWALL);
    fleet.net().tx_offload_off("client");
    for port in [8080, 9090] {
        let path = fleet.path(&format!("web{port}.yaml"));
        std::fs::write(&path, http_server(port)).unwrap();
        assert!(
            fleet
                .local_ctl("s", &["apply", "-f", path.to_str().unwrap()])
                .status
                .success()
        );
    }
    fleet.wait_for("firewall applied", Duration::from_secs(60), |f| {
        events(f, "s").contains("FirewallApplied")
    });
    fleet.wait_for("8080 answers", Duration::from_secs(20), |f| {
        http_ok(f, "client", "s", 8080)
    });
    assert!(
        !http_ok(&fleet, "client", "s", 9090),
        "9090 is not allowed in, yet answered"
    );

    // Stateful: the node's own connection out gets its replies back through default deny.
    let listener = fleet
        .net()
        .node("client")
        .command("python3")
        .args(["-m", "http.server", "--bind", "0.0.0.0", "7000"])
        .current_dir("/tmp")
        .spawn()
        .unwrap();
    let mut listener = KillOnDrop(listener);
    fleet.wait_for("s reaches the client", Duration::from_secs(10), |f| {
        http_ok(f, "s", "client", 7000)
    });
    listener.0.kill().ok();

    // Drift: a port deleted by hand comes back within seconds, and the firewall's flows too.
    assert!(
        ovs_vsctl(&fleet, "s", &["del-port", "br0", "p1"])
            .status
            .success()
    );
    let took = fleet.wait_for("p1 back", Duration::from_secs(5), |f| {
        String::from_utf8_lossy(&ovs_vsctl(f, "s", &["list-ports", "br0"]).stdout).contains("p1")
    });
    eprintln!("a deleted port came back after {took:?}");
    let mgmt = format!(
        "unix:{}",
        ovs_dir(&fleet, "s").join("run/br0.mgmt").display()
    );
    // Someone removes cloudlet's flows (only those: the bridge's own NORMAL flow stays).
    let ours = "cookie=0x0c10d1e700000000/0xffffffff00000000";
    assert!(
        Command::new("ovs-ofctl")
            .args(["del-flows", &mgmt, ours])
            .status()
            .unwrap()
            .success()
    );
    let took = fleet.wait_for("the firewall repaired", Duration::from_secs(10), |f| {
        events(f, "s").contains("FirewallRepaired")
    });
    eprintln!("deleted flows came back after {took:?}");
    assert!(
        !http_ok(&fleet, "client", "s", 9090),
        "9090 answered after the repair"
    );
    assert!(http_ok(&fleet, "client", "s", 8080));
    let ev = events(&fleet, "s");
    assert!(ev.contains("NetworkRepaired"), "{ev}");

    // The database restarts (cloudlet restarts it): the client reconnects and keeps repairing.
    let pid: u32 = std::fs::read_to_string(ovs_dir(&fleet, "s").join("run/ovsdb-server.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    cloudlet_tests::signal(pid, nix::sys::signal::Signal::SIGKILL);
    fleet.wait_for("ovsdb back", Duration::from_secs(20), |f| {
        ovs_vsctl(f, "s", &["list-br"]).status.success()
    });
    assert!(
        ovs_vsctl(&fleet, "s", &["del-port", "br0", "p1"])
            .status
            .success()
    );
    fleet.wait_for("p1 back after the restart", Duration::from_secs(10), |f| {
        String::from_utf8_lossy(&ovs_vsctl(f, "s", &["list-ports", "br0"]).stdout).contains("p1")
    });

    assert_eq!(
        before,
        netfilter(&fleet, "s"),
        "the node's netfilter ruleset changed"
    );
    assert!(
        !calls.exists(),
        "iptables/nft was called: {}",
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
