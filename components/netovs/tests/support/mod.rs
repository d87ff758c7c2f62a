//! An `ovsdb-server` of the test's own for the OVSDB client's tests, and the `ovs-*` tools
//! pointed at it to cross-check what the client wrote.
//!
//! [`OvsdbServer`] owns a temp dir (database, sockets, pid file, log) and the server process,
//! its child, never detached: it can SIGKILL, SIGSTOP and restart it, and dropping it (also
//! while a failed test unwinds) kills and reaps it. No ovs-vswitchd: bridges are just rows. It
//! never touches the host's Open vSwitch. Needs openvswitch-switch (`scripts/install-deps.sh`).

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cloudlet_netovs::ovsdb::Endpoint;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// How long the server may take to start.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// A running `ovsdb-server` with an initialized `Open_vSwitch` database.
#[derive(Debug)]
pub struct OvsdbServer {
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl OvsdbServer {
    /// Creates the database, starts the server on `db.sock` and runs `ovs-vsctl init`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`OvsdbServer::start`], with more arguments for `ovsdb-server`.
    pub fn start_with(extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("conf.db");
        run("ovsdb-tool", &["create", path_str(&db), SCHEMA]);
        let mut server = Self {
            dir,
            extra_args: extra_args.iter().map(|&a| a.to_owned()).collect(),
            child: None,
        };
        server.restart();
        server.vsctl(&["init"]);
        server
    }

    /// A file in the server's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The client's way in.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Unix(self.path("db.sock"))
    }

    /// Starts the server (again, after [`OvsdbServer::kill`]) on the same database and socket,
    /// and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let mut cmd = Command::new("ovsdb-server");
        cmd.arg(self.path("conf.db"))
            .arg(format!("--remote=punix:{}", self.path("db.sock").display()))
            .arg(format!("--pidfile={}", self.path("ovsdb.pid").display()))
            .arg(format!("--unixctl={}", self.path("ovsdb.ctl").display()))
            .arg(format!("--log-file={}", self.path("ovsdb.log").display()))
            .arg("--no-chdir")
            .args(&self.extra_args);
        for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            cmd.env(var, self.dir.path());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("spawn ovsdb-server"));
        self.wait_until_accepting(&self.path("db.sock"));
    }

    /// Waits until `socket` (the server's, or a remote it was told to add) accepts a connection.
    pub fn wait_until_accepting(&self, socket: &Path) {
        let deadline = Instant::now() + START_DEADLINE;
        // No event tells when a daemon has bound its socket: bounded retries.
        while UnixStream::connect(socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} does not accept connections; log:\n{}",
                socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("the server is running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        kill(pid, signal).unwrap_or_else(|e| panic!("kill -{signal} ovsdb-server: {e}"));
    }

    /// SIGKILLs the server and reaps it (its socket file stays behind, as after a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `ovs-vsctl` against the server and returns its output.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db=unix:{}", self.path("db.sock").display());
        let mut all = vec![db.as_str(), "--no-wait", "--timeout=10"];
        all.extend_from_slice(args);
        run("ovs-vsctl", &all)
    }

    /// Runs `ovs-appctl` against the server.
    pub fn appctl(&self, args: &[&str]) -> String {
        let target = self.path("ovsdb.ctl");
        let mut all = vec!["-t", path_str(&target)];
        all.extend_from_slice(args);
        run("ovs-appctl", &all)
    }

    /// Runs a transaction on the database file directly; only while the server is down.
    pub fn transact_offline(&self, transaction: &str) -> String {
        assert!(self.child.is_none(), "the server holds the database");
        run(
            "ovsdb-tool",
            &["transact", path_str(&self.path("conf.db")), transaction],
        )
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("ovsdb.log")).unwrap_or_default()
    }
}

impl Drop for OvsdbServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped server too.
        self.kill();
    }
}

/// Runs `program args`; panics with its stderr if it fails.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}
