//! Nodes as network namespaces, for multi-node tests: a [`Net`] is a hub namespace holding a Linux
//! bridge, and every node is a namespace of its own wired to that bridge by a veth pair, with
//! address `10.77.0.<n>/24`. Cutting a node's hub-side veth is a network partition.
//!
//! It owns the namespaces it creates (all named with a prefix unique to the process and the
//! [`Net`]) and deletes them when the [`Net`] drops, even when the test panicked. It never touches
//! the host's interfaces, addresses or firewall: every link is created inside a namespace of its
//! own, and the host namespace gets nothing. It never kills processes: whoever started processes in
//! a node stops them before the [`Net`] drops. Needs root and iproute2 (`ip`).

use std::ffi::OsStr;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

/// Where `ip netns add` puts the namespace handles.
const NETNS_DIR: &str = "/run/netns";

/// Whether this process can build a [`Net`]: it runs as root and iproute2's `ip` is installed.
pub fn netns_available() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// A test's network: a hub namespace with bridge `br0`, and the nodes wired to it.
#[derive(Debug)]
pub struct Net {
    prefix: String,
    hub: String,
    nodes: Vec<NodeNs>,
}

/// One node: a network namespace with `lo` and `eth0` up, `eth0` on the hub's bridge.
#[derive(Debug)]
pub struct NodeNs {
    /// The name the test gave it.
    pub name: String,
    /// Its namespace, as `ip netns list` shows it (`/run/netns/<ns>`).
    pub ns: String,
    /// Its address on `eth0` (`10.77.0.<n>/24`, n = 1, 2, ... in the order nodes were added).
    pub addr: Ipv4Addr,
    /// The hub-side end of its veth pair (the link [`Net::partition`] cuts).
    port: String,
}

impl Net {
    /// A hub namespace with bridge `br0` up and no nodes yet. `test` (its ASCII letters and
    /// digits) goes into the namespace names, so a leftover says which test made it.
    ///
    /// Panics when the namespace cannot be made (not root, no `ip`), naming the failed command.
    pub fn new(test: &str) -> Net {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        assert!(
            netns_available(),
            "network namespace tests need root and iproute2 (`ip`)"
        );
        let label: String = test
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(20)
            .collect();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("cl{}-{n}-{label}", std::process::id());
        let net = Net {
            hub: format!("{prefix}-hub"),
            prefix,
            nodes: Vec::new(),
        };
        // From here on a panic drops `net`, which deletes whatever was made.
        ip(&["netns", "add", &net.hub]);
        ip(&["-n", &net.hub, "link", "set", "lo", "up"]);
        ip(&["-n", &net.hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &net.hub, "link", "set", "br0", "up"]);
        net
    }

    /// Adds node `name` (ASCII letters, digits and `-`; unique; not `hub`): its namespace
    /// `<prefix>-<name>`, a veth pair from the hub's bridge to its `eth0`, and the next address.
    pub fn add_node(&mut self, name: &str) -> &NodeNs {
        assert!(
            !name.is_empty()
                && name != "hub"
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "bad node name {name:?}: use ASCII letters, digits and '-', and not \"hub\""
        );
        assert!(
            self.nodes.iter().all(|n| n.name != name),
            "node {name:?} added twice"
        );
        let n = u8::try_from(self.nodes.len() + 1)
            .ok()
            .filter(|n| *n < 255)
            .expect("at most 254 nodes in a net");
        let ns = format!("{}-{name}", self.prefix);
        let port = format!("veth{n}");
        let addr = Ipv4Addr::new(10, 77, 0, n);
        let cidr = format!("{addr}/24");
        let hub = self.hub.as_str();
        ip(&["netns", "add", &ns]);
        // Recorded before anything else can fail, so that Drop deletes it.
        self.nodes.push(NodeNs {
            name: name.to_owned(),
            ns: ns.clone(),
            addr,
            port: port.clone(),
        });
        // Made inside the hub with its peer born in the node: never a link in the host's netns.
        ip(&[
            "-n", hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["-n", hub, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        self.nodes.last().expect("just pushed")
    }

    /// The node named `name`; panics if there is none.
    pub fn node(&self, name: &str) -> &NodeNs {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name:?} in net {}", self.prefix))
    }

    /// The node named `name`, if it was added.
    pub fn try_node(&self, name: &str) -> Option<&NodeNs> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The hub namespace (holding bridge `br0`).
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// Cuts node `name` off the network: its hub-side veth goes down, so nothing reaches it and
    /// nothing it sends leaves (its own `eth0` stays configured and loses carrier).
    pub fn partition(&self, name: &str) {
        let port = &self.node(name).port;
        ip(&["-n", &self.hub, "link", "set", port, "down"]);
    }

    /// Turns TX checksum offload off on both ends of node `name`'s veth: Open vSwitch's
    /// userspace datapath does not fill in the checksums a veth leaves to offload, so TCP
    /// through a `netdev` bridge needs this (testing.md).
    pub fn tx_offload_off(&self, name: &str) {
        let node = self.node(name);
        for (ns, dev) in [
            (node.ns.as_str(), "eth0"),
            (self.hub.as_str(), node.port.as_str()),
        ] {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"])
                .output()
                .unwrap_or_else(|e| panic!("ethtool in {ns}: {e}"));
            assert!(
                out.status.success(),
                "ethtool -K {dev} tx off in {ns}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }

    /// Undoes [`Net::partition`]: the hub-side veth of node `name` comes up again.
    pub fn heal(&self, name: &str) {
        let port = &self.node(name).port;
        ip(&["-n", &self.hub, "link", "set", port, "up"]);
    }
}

impl Drop for Net {
    /// Deletes every node namespace (which takes its veth pair along), then the hub. Failures are
    /// reported, not raised: this also runs while a failed test unwinds.
    fn drop(&mut self) {
        let names = self.nodes.iter().map(|n| n.ns.as_str());
        for ns in names.chain([self.hub.as_str()]) {
            match Command::new("ip").args(["netns", "del", ns]).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "netns: `ip netns del {ns}` failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("netns: `ip netns del {ns}`: {e}"),
            }
        }
    }
}

impl NodeNs {
    /// A command that runs `program` inside this node's network namespace, and in every other
    /// namespace (mounts included, so the cgroup2 mount stays visible) of the test process.
    ///
    /// Not `ip netns exec`: that also unshares the mount namespace and remounts `/sys`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let path = format!("{NETNS_DIR}/{}", self.ns);
        // Opened here, in the parent: the child only has to call setns(2) on it. The closure owns
        // it, so it stays open as long as the Command; O_CLOEXEC keeps it out of the program.
        let handle = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        let mut cmd = Command::new(program);
        // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe work
        // is allowed. It makes one setns(2) system call on an fd that is already open and maps a
        // failure to an io::Error from the raw errno (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || {
                setns(&handle, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        cmd
    }

    /// `https://<addr>:<port>`: a URL of a server this node runs.
    pub fn url(&self, port: u16) -> String {
        format!("https://{}:{port}", self.addr)
    }
}

/// Runs `ip <args>` and panics with the command and its stderr when it fails.
fn ip(args: &[&str]) {
    let cmd = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`{cmd}`: {e}"));
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
