//! A lab for the firewall's integration tests: Open vSwitch on the userspace datapath (no kernel
//! module) in network namespaces of the test's own, with a client on the other end of a veth.
//!
//! ```text
//!   namespace <p>-host                                   namespace <p>-client
//!   ovsdb-server, ovs-vswitchd (datapath_type=netdev)
//!   br0 (LOCAL) 10.88.0.1/24 -- bridge br0 -- up0 <== veth ==> eth0 10.88.0.2/24
//! ```
//!
//! It owns everything it makes: a temp dir for the database, sockets and logs, the two
//! namespaces (named with a prefix unique to the process), the two daemons (its children, never
//! detached) and the servers it starts. Dropping the [`Lab`] (also while a failed test unwinds)
//! kills the daemons and deletes the namespaces. It never touches the host's namespace, the
//! host's Open vSwitch or any firewall: OVS is reached only through the lab's own sockets.
//! Needs root, iproute2, ethtool and openvswitch-switch.

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cloudlet_netovs::firewall::{HostPort, Scope, TableRange};
use cloudlet_netovs::ofctl::Ofctl;
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The host's address on br0.
pub const HOST: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
/// The client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
/// How long a connection that should work may take to work.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long a connection attempt that should be dropped is given (after a positive control).
const BLOCKED_AFTER: Duration = Duration::from_secs(1);

/// A network namespace made with `ip netns add`.
#[derive(Debug, Clone)]
pub struct Ns {
    /// Its name in `/run/netns`.
    pub name: String,
}

impl Ns {
    /// Runs `f` on a thread of its own that has joined this namespace: sockets it creates and
    /// processes it spawns live in the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        let handle = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        std::thread::spawn(move || {
            setns(&handle, CloneFlags::CLONE_NEWNET).expect("setns into the lab's namespace");
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// Spawns `cmd` inside the namespace.
    pub fn spawn(&self, mut cmd: Command) -> Child {
        let what = format!("{cmd:?}");
        self.run(move || cmd.spawn())
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"))
    }

    /// Runs `program args` inside the namespace and returns what it did.
    pub fn output(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(program);
        cmd.args(args);
        let what = format!("{cmd:?}");
        self.run(move || cmd.output())
            .unwrap_or_else(|e| panic!("run {what}: {e}"))
    }

    /// Runs `program args` inside the namespace; panics when it fails.
    pub fn must(&self, program: &str, args: &[&str]) -> String {
        let out = self.output(program, args);
        assert!(
            out.status.success(),
            "`{program} {}` in {} failed ({}): {}",
            args.join(" "),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A TCP server on `addr:port` in the namespace that answers every connection with
    /// `hello <port>` and closes it.
    pub fn serve(&self, addr: Ipv4Addr, port: u16) -> Server {
        let at = SocketAddr::V4(SocketAddrV4::new(addr, port));
        let listener = self
            .run(move || TcpListener::bind(at))
            .unwrap_or_else(|e| panic!("bind {at} in {}: {e}", self.name));
        let listener = Arc::new(listener);
        let accepting = Arc::clone(&listener);
        let thread = std::thread::spawn(move || {
            // Ends when Server::drop shuts the listener down (accept then fails).
            for stream in accepting.incoming() {
                let Ok(mut stream) = stream else { break };
                let _ = writeln!(stream, "hello {port}");
            }
        });
        Server {
            listener,
            thread: Some(thread),
        }
    }

    /// Connects to `addr:port` from the namespace, giving up after `timeout`, and reads the
    /// server's greeting.
    pub fn connect(&self, addr: Ipv4Addr, port: u16, timeout: Duration) -> io::Result<String> {
        let at = SocketAddr::V4(SocketAddrV4::new(addr, port));
        self.run(move || {
            let mut stream = TcpStream::connect_timeout(&at, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply)?;
            Ok(reply)
        })
    }

    /// Asserts that `addr:port` answers from this namespace within the deadline (retrying).
    pub fn assert_connects(&self, addr: Ipv4Addr, port: u16) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.connect(addr, port, Duration::from_secs(1)) {
                Ok(reply) => {
                    assert_eq!(reply, format!("hello {port}\n"));
                    return;
                }
                Err(e) if Instant::now() > deadline => {
                    panic!("{} cannot connect to {addr}:{port}: {e}", self.name)
                }
                Err(_) => {}
            }
        }
    }

    /// Asserts that a connection to `addr:port` from this namespace times out: its packets are
    /// dropped (a refused connection would mean they got through to a closed port).
    pub fn assert_blocked(&self, addr: Ipv4Addr, port: u16) {
        match self.connect(addr, port, BLOCKED_AFTER) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            other => panic!(
                "{} to {addr}:{port} should time out, got {other:?}",
                self.name
            ),
        }
    }

    /// Whether one ping to `addr` from this namespace gets an answer within a second.
    pub fn ping(&self, addr: Ipv4Addr) -> bool {
        self.output("ping", &["-c", "1", "-W", "1", &addr.to_string()])
            .status
            .success()
    }
}

/// A TCP server started by [`Ns::serve`]; stops when dropped.
#[derive(Debug)]
pub struct Server {
    listener: Arc<TcpListener>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Wakes the accept loop, which then drops (closes) the listener.
        // The listener is still open (this Arc holds it), so its fd is still its own.
        let fd = self.listener.as_raw_fd();
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What iptables and nftables hold in a namespace (`None`: the tool is not installed).
#[derive(Debug, PartialEq, Eq)]
struct Netfilter {
    iptables: Option<String>,
    nft: Option<String>,
}

/// The lab: see the module docs.
#[derive(Debug)]
pub struct Lab {
    dir: tempfile::TempDir,
    /// The namespace of the bridge, the daemons and the host's address.
    pub host: Ns,
    /// The client's namespace.
    pub client: Ns,
    made: Vec<Ns>,
    daemons: Vec<(&'static str, Child)>,
    netfilter: Vec<Netfilter>,
}

impl Lab {
    /// Builds the lab (see the module docs); `test` goes into the namespace names.
    pub fn new(test: &str) -> Lab {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        assert!(
            nix::unistd::geteuid().is_root(),
            "the firewall tests need root (network namespaces, Open vSwitch)"
        );
        let label: String = test
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(16)
            .collect();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("clfw{}-{n}-{label}", std::process::id());
        let mut lab = Lab {
            dir: tempfile::tempdir().expect("temp dir"),
            host: Ns {
                name: format!("{prefix}-host"),
            },
            client: Ns {
                name: format!("{prefix}-client"),
            },
            made: Vec::new(),
            daemons: Vec::new(),
            netfilter: Vec::new(),
        };
        // From here on a panic drops `lab`, which undoes what was made so far.
        for ns in [lab.host.clone(), lab.client.clone()] {
            run("ip", &["netns", "add", &ns.name]);
            lab.made.push(ns.clone());
            ns.must("ip", &["link", "set", "lo", "up"]);
        }
        lab.netfilter = [&lab.host, &lab.client]
            .iter()
            .map(|ns| netfilter(ns))
            .collect();
        lab.start_ovs();
        let (host, client) = (&lab.host.name, &lab.client.name);
        let (h, c) = (format!("{HOST}/24"), format!("{CLIENT}/24"));
        // The veth is born in the host namespace with its peer in the client's: never a link in
        // the test process's own namespace.
        run(
            "ip",
            &[
                "-n", host, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns",
                client,
            ],
        );
        lab.vsctl(&["add-port", "br0", "up0"]);
        run("ip", &["-n", host, "link", "set", "up0", "up"]);
        run("ip", &["-n", host, "addr", "add", &h, "dev", "br0"]);
        run("ip", &["-n", host, "link", "set", "br0", "up"]);
        run("ip", &["-n", client, "addr", "add", &c, "dev", "eth0"]);
        run("ip", &["-n", client, "link", "set", "eth0", "up"]);
        // The userspace datapath does not fill in checksums a veth left to offload: TCP needs
        // TX checksumming in software on both ends.
        lab.host.must("ethtool", &["-K", "up0", "tx", "off"]);
        lab.client.must("ethtool", &["-K", "eth0", "tx", "off"]);
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// ovsdb-server and ovs-vswitchd in the host namespace, all their files in the temp dir,
    /// and bridge br0 on the userspace datapath.
    fn start_ovs(&mut self) {
        let db = self.path("conf.db");
        run(
            "ovsdb-tool",
            &[
                "create",
                path_str(&db),
                "/usr/share/openvswitch/vswitch.ovsschema",
            ],
        );
        let sock = self.path("db.sock");
        let mut ovsdb = self.ovs_command("ovsdb-server");
        ovsdb.args([
            path_str(&db).to_owned(),
            format!("--remote=punix:{}", sock.display()),
            format!("--unixctl={}", self.path("ovsdb.ctl").display()),
            format!("--log-file={}", self.path("ovsdb.log").display()),
        ]);
        let child = self.host.spawn(ovsdb);
        self.daemons.push(("ovsdb-server", child));
        self.wait_for(&sock, "ovsdb.log");
        self.vsctl(&["--no-wait", "init"]);
        let mut vswitchd = self.ovs_command("ovs-vswitchd");
        vswitchd.args([
            format!("unix:{}", sock.display()),
            format!("--unixctl={}", self.path("vs.ctl").display()),
            format!("--log-file={}", self.path("vs.log").display()),
        ]);
        let child = self.host.spawn(vswitchd);
        self.daemons.push(("ovs-vswitchd", child));
        // Without --no-wait, ovs-vsctl waits until ovs-vswitchd has made the bridge.
        self.vsctl(&[
            "add-br",
            "br0",
            "--",
            "set",
            "bridge",
            "br0",
            "datapath_type=netdev",
        ]);
        self.wait_for(&self.path("br0.mgmt"), "vs.log");
    }

    /// An OVS daemon that keeps every file in the temp dir and logs only to its log file.
    fn ovs_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            cmd.env(var, self.dir.path());
        }
        cmd.arg("--no-chdir")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// Waits until the daemon made `socket`; panics with its log if it died or took too long.
    fn wait_for(&mut self, socket: &Path, log: &str) {
        let deadline = Instant::now() + DEADLINE;
        while !socket.exists() {
            let exited = self
                .daemons
                .iter_mut()
                .find_map(|(name, c)| c.try_wait().ok().flatten().map(|s| format!("{name} {s}")));
            if exited.is_some() || Instant::now() > deadline {
                let text = std::fs::read_to_string(self.path(log)).unwrap_or_default();
                panic!(
                    "{} did not appear ({}); {log}:\n{text}",
                    socket.display(),
                    exited.unwrap_or_else(|| "timed out".into())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `ovs-vsctl` against the lab's database.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db=unix:{}", self.path("db.sock").display());
        let mut all = vec![db.as_str(), "--timeout=20"];
        all.extend_from_slice(args);
        run("ovs-vsctl", &all)
    }

    /// The bridge's OpenFlow management target, `unix:<dir>/br0.mgmt`.
    pub fn target(&self) -> String {
        format!("unix:{}", self.path("br0.mgmt").display())
    }

    /// The firewall's [`Ofctl`] for br0.
    pub fn ofctl(&self) -> Ofctl {
        Ofctl::new(
            self.target(),
            std::sync::Arc::new(cloudlet_netovs::run::TokioRunner),
        )
    }

    /// Runs `ovs-ofctl ARGS` with the bridge's target in place of `BR`.
    pub fn ofctl_raw(&self, args: &[&str]) -> String {
        let target = self.target();
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "BR" { target.as_str() } else { a })
            .collect();
        run("ovs-ofctl", &args)
    }

    /// The scope the tests use: the host behind LOCAL with 10.88.0.1, tables 200-209, zone 7.
    pub fn scope(&self) -> Scope {
        Scope {
            host_port: HostPort::Local,
            host_addrs: vec![HOST],
            tables: TableRange::new(200..=209).expect("a valid range"),
            ct_zone: 7,
        }
    }

    /// Removes every datapath flow, so that the next packets are looked up in the OpenFlow
    /// tables as they are now (the datapath's cache is otherwise revalidated asynchronously).
    pub fn purge_datapath(&self) {
        let ctl = format!("--target={}", self.path("vs.ctl").display());
        run("ovs-appctl", &[&ctl, "revalidator/purge"]);
    }

    /// Asserts that iptables and nftables hold in both namespaces what they held when the lab
    /// was made (tools that are not installed are reported and not compared).
    pub fn assert_netfilter_unchanged(&self) {
        for (ns, before) in [&self.host, &self.client].iter().zip(&self.netfilter) {
            let now = netfilter(ns);
            if now.iptables.is_none() || now.nft.is_none() {
                eprintln!(
                    "note: iptables-save or nft is not installed (apt packages iptables, \
                     nftables): netfilter not compared in {}",
                    ns.name
                );
            }
            assert_eq!(&now, before, "netfilter changed in {}", ns.name);
        }
    }
}

impl Drop for Lab {
    /// Stops the daemons (SIGTERM, then SIGKILL after 5 s) and deletes the namespaces.
    /// Failures are reported, not raised: this also runs while a failed test unwinds.
    fn drop(&mut self) {
        for (name, child) in self.daemons.iter_mut().rev() {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("lab: {name} ignored SIGTERM, killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for ns in self.made.iter().rev() {
            match Command::new("ip").args(["netns", "del", &ns.name]).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "lab: `ip netns del {}` failed: {}",
                    ns.name,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("lab: `ip netns del {}`: {e}", ns.name),
            }
        }
    }
}

/// iptables-save (without its comment lines, which carry a timestamp) and `nft list ruleset`.
fn netfilter(ns: &Ns) -> Netfilter {
    let tool = |program: &str, args: &[&str]| {
        let mut cmd = Command::new(program);
        cmd.args(args);
        let out = ns.run(move || cmd.output()).ok()?;
        assert!(
            out.status.success(),
            "{program} in {} failed: {}",
            ns.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let text = String::from_utf8_lossy(&out.stdout);
        Some(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };
    Netfilter {
        iptables: tool("iptables-save", &[]),
        nft: tool("nft", &["list", "ruleset"]),
    }
}

/// Runs `program args` in the test's own namespace (only `ip`, OVS tools on the lab's sockets);
/// panics with its stderr when it fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`{program}`: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp dir paths are UTF-8")
}
