//! The network-namespace harness itself, with real namespaces, links and `nc`/`ping` processes:
//! nodes reach each other over the hub's bridge, a partition cuts exactly one node off until it is
//! healed, every namespace is gone after the `Net` drops (also when the test panicked), and a
//! node's command runs in the node's netns but the test's own mount namespace.
//! Needs root, iproute2, netcat-openbsd and iputils-ping (scripts/install-deps.sh).
#![allow(clippy::unwrap_used, reason = "tests")]

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cloudlet_tests::netns::{Net, NodeNs};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long the network may take to carry a first packet (listener start, ARP, port up).
const T: Duration = Duration::from_secs(10);
const PORT: &str = "7000";

/// A process started in a node, stopped (SIGTERM, which `timeout` passes on) and reaped on drop,
/// so that a failed test leaves nothing running in a namespace it deleted.
struct Proc(Option<Child>);

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        Proc(Some(cmd.spawn().unwrap()))
    }

    fn is_running(&mut self) -> bool {
        self.0.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Waits for it to exit on its own (each listener runs under `timeout`, so this is bounded).
    fn output(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = kill(pid, Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

/// A TCP listener on `node`:`PORT` that exits within `secs` at the latest.
fn listener(node: &NodeNs, secs: &str, nc_flags: &str) -> Proc {
    Proc::spawn(
        node.command("timeout")
            .args([secs, "nc", nc_flags, PORT])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

/// One connection attempt from `from` to `to`:`PORT`, with a one-second connect timeout.
fn connects(from: &NodeNs, to: &NodeNs) -> bool {
    let status = from
        .command("nc")
        .args(["-z", "-w", "1", &to.addr.to_string(), PORT])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    status.success()
}

/// One ping from `from` to `to`, waiting one second for the answer.
fn pings(from: &NodeNs, to: &NodeNs) -> bool {
    let status = from
        .command("ping")
        .args(["-c", "1", "-W", "1", &to.addr.to_string()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    status.success()
}

/// Retries `attempt` until it succeeds; panics with `what` after `T`.
fn eventually(what: &str, mut attempt: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !attempt() {
        assert!(
            Instant::now() < deadline,
            "{what}: still failing after {T:?}"
        );
        // A refused connection comes back at once: don't spin the machine's two cores.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The namespaces `ip netns list` shows.
fn listed_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success(), "ip netns list: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn nodes_get_their_addresses_in_order_on_eth0() {
    let mut net = Net::new("nodes_get_their_addresses");
    net.add_node("a");
    net.add_node("b");
    let (a, b) = (net.node("a"), net.node("b"));
    assert_eq!(a.addr.to_string(), "10.77.0.1");
    assert_eq!(b.addr.to_string(), "10.77.0.2");
    assert_eq!(b.url(6443), "https://10.77.0.2:6443");

    let addrs = stdout_of(b.command("ip").args(["-o", "-4", "addr", "show"]));
    let addrs: Vec<String> = addrs
        .lines()
        .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        addrs,
        ["1: lo inet 127.0.0.1/8", "2: eth0 inet 10.77.0.2/24"],
        "b has exactly lo and eth0, each up with its address"
    );
    let links = stdout_of(b.command("ip").args(["-o", "link", "show", "up"]));
    assert_eq!(links.lines().count(), 2, "lo and eth0 up: {links}");
}

#[test]
fn a_node_reaches_a_listener_on_another_node() {
    let mut net = Net::new("a_node_reaches");
    net.add_node("a");
    net.add_node("b");
    let (a, b) = (net.node("a"), net.node("b"));
    // One connection, then nc exits: -n no DNS, -v says who connected.
    let server = listener(b, "10", "-nvl");

    eventually("a sends to b's listener", || {
        let mut client = a
            .command("nc")
            .args(["-N", "-w", "1", &b.addr.to_string(), PORT])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = client.stdin.take().unwrap();
        // A refused connection may exit before reading its stdin: a failed write is that failure.
        let wrote = stdin.write_all(b"hello from a\n").is_ok();
        drop(stdin);
        client.wait().unwrap().success() && wrote
    });

    let out = server.output();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from a\n");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(&format!("Connection received on {} ", a.addr)),
        "the connection came from a's address: {log}"
    );
}

#[test]
fn partition_cuts_exactly_one_node_until_healed() {
    let mut net = Net::new("partition_cuts");
    for n in ["a", "b", "c"] {
        net.add_node(n);
    }
    let (a, b, c) = (net.node("a"), net.node("b"), net.node("c"));
    let mut server = listener(b, "60", "-lk");
    eventually("a connects to b before the partition", || connects(a, b));

    net.partition("b");
    let started = Instant::now();
    assert!(!connects(a, b), "a still reaches b across the partition");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the connection should time out (dropped), not be refused: {:?}",
        started.elapsed()
    );
    assert!(server.is_running(), "b's listener is still there");
    assert!(!pings(b, a), "b still reaches a across the partition");
    assert!(pings(a, c), "the partition of b cut a off from c too");

    net.heal("b");
    eventually("a connects to b after heal", || connects(a, b));
    eventually("b pings a after heal", || pings(b, a));
}

#[test]
fn drop_deletes_every_namespace_even_when_the_test_panicked() {
    for panics in [false, true] {
        let mut made = Vec::new();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut net = Net::new("drop_deletes");
            net.add_node("a");
            net.add_node("b");
            made = vec![
                net.hub().to_owned(),
                net.node("a").ns.clone(),
                net.node("b").ns.clone(),
            ];
            let listed = listed_namespaces();
            for ns in &made {
                assert!(
                    listed.contains(ns),
                    "{ns} not in `ip netns list`: {listed:?}"
                );
            }
            assert!(!panics, "a test body that fails after making its nodes");
        }));
        assert_eq!(result.is_err(), panics);

        let listed = listed_namespaces();
        for ns in &made {
            assert!(
                !listed.contains(ns),
                "{ns} left after drop (panicked: {panics})"
            );
            assert!(!std::path::Path::new("/run/netns").join(ns).exists());
        }
    }
}

#[test]
fn command_runs_in_the_node_netns_and_the_test_mount_namespace() {
    let mut net = Net::new("command_runs");
    let a = net.add_node("a");
    let node_net = std::fs::metadata(format!("/run/netns/{}", a.ns))
        .unwrap()
        .ino();
    let own = |ns: &str| std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();

    let out = stdout_of(
        a.command("readlink")
            .args(["/proc/self/ns/net", "/proc/self/ns/mnt"]),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("net:[{node_net}]"),
        "the child is in a's netns"
    );
    assert_ne!(
        std::path::Path::new(lines[0]),
        own("net"),
        "not the test's netns"
    );
    assert_eq!(
        std::path::Path::new(lines[1]),
        own("mnt"),
        "the child shares the test's mount namespace (unlike `ip netns exec`)"
    );

    // What that is for: the cgroup2 mount the server needs stays visible (`ip netns exec`
    // remounts /sys, which hides it).
    let fs_type = |cmd: &mut Command| stdout_of(cmd.args(["-f", "-c", "%T", "/sys/fs/cgroup"]));
    assert_eq!(
        fs_type(&mut a.command("stat")),
        fs_type(&mut Command::new("stat"))
    );
}
