//! The bench's own Open vSwitch: a network namespace made for the run, an `ovsdb-server` with a
//! fresh `Open_vSwitch` database, and (for the firewall) an `ovs-vswitchd` with bridge `br0` on
//! the userspace (`netdev`) datapath, every file of theirs in a temp dir.
//!
//! Owns: the namespace, the temp dir and the daemons (children of the bench, each in a process
//! group of its own so that a Ctrl-C at the terminal is the bench's to handle), and the record of
//! them ([`LIVE`]) from which [`abandon`] kills everything when a signal ends the run. [`Lab`]'s
//! drop stops the daemons (SIGTERM, then SIGKILL) and deletes the namespace and the temp dir.
//! Must never: touch the host's namespace or Open vSwitch (every tool is pointed at the lab's
//! own sockets), or signal a process it did not start.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cloudlet_netovs::ovsdb::Endpoint;
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// How long a daemon may take to make its socket.
const START: Duration = Duration::from_secs(20);
/// How long a SIGTERMed daemon may take to exit before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What the bench has made and not yet removed, for [`abandon`].
#[derive(Debug)]
struct Live {
    /// Processes started (daemons, the peer's monitor), never reaped while listed.
    pids: Vec<i32>,
    /// The namespace, once made.
    netns: Option<String>,
    /// The temp dir.
    dir: Option<PathBuf>,
}

/// The one record of what is live.
static LIVE: Mutex<Live> = Mutex::new(Live {
    pids: Vec::new(),
    netns: None,
    dir: None,
});

/// The record of what is live, locked.
fn live() -> MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `spawn` and lists the child it made for [`abandon`] (under the record's lock, so that a
/// signal cannot come between the two). Take it off with [`forget`] before reaping it.
pub fn spawn_tracked<T>(
    spawn: impl FnOnce() -> std::io::Result<T>,
    pid: impl Fn(&T) -> Option<u32>,
) -> Result<T, String> {
    let mut live = live();
    let child = spawn().map_err(|e| e.to_string())?;
    let id = pid(&child).and_then(|p| i32::try_from(p).ok());
    live.pids.extend(id);
    Ok(child)
}

/// Takes `pid` off the list of processes [`abandon`] kills (it is about to be reaped).
pub fn forget(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        live().pids.retain(|&p| p != pid);
    }
}

/// Kills every process listed, deletes the namespace and the temp dir: the cleanup when a signal
/// ends the run. Holds the record's lock until the end, so that it never races [`Lab`]'s drop,
/// and leaves the record empty.
pub fn abandon() {
    let mut live = live();
    for pid in live.pids.drain(..) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    if let Some(name) = live.netns.take() {
        delete_netns(&name);
    }
    if let Some(dir) = live.dir.take() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The lab: see the module docs.
#[derive(Debug)]
pub struct Lab {
    dir: tempfile::TempDir,
    netns: String,
    daemons: Vec<(&'static str, Child)>,
}

impl Lab {
    /// Makes the namespace and the database and starts `ovsdb-server` in the namespace.
    pub fn start() -> Result<Lab, String> {
        let dir = tempfile::Builder::new()
            .prefix("cl-netbench-")
            .tempdir()
            .map_err(|e| format!("creating a temp dir: {e}"))?;
        let netns = format!("cl-netbench-{}", std::process::id());
        live().dir = Some(dir.path().to_owned());
        let mut lab = Lab {
            dir,
            netns: netns.clone(),
            daemons: Vec::new(),
        };
        // From here on an error drops `lab`, which undoes what was made so far.
        {
            let mut live = live();
            run("ip", &["netns", "add", &netns])?;
            live.netns = Some(netns.clone());
        }
        run("ip", &["-n", &netns, "link", "set", "lo", "up"])?;
        let db = lab.path("conf.db");
        run("ovsdb-tool", &["create", &text(&db)?, SCHEMA])?;
        let sock = lab.path("db.sock");
        let mut ovsdb = lab.daemon("ovsdb-server");
        ovsdb.arg(&db).args([
            format!("--remote=punix:{}", sock.display()),
            format!("--unixctl={}", lab.path("ovsdb.ctl").display()),
            format!("--log-file={}", lab.path("ovsdb.log").display()),
        ]);
        lab.spawn("ovsdb-server", ovsdb)?;
        lab.wait_for(&sock, "ovsdb.log")?;
        lab.vsctl(&["--no-wait", "init"])?;
        Ok(lab)
    }

    /// Starts `ovs-vswitchd` in the namespace and adds bridge `br0` on the userspace datapath;
    /// returns once the bridge's OpenFlow socket exists.
    pub fn start_vswitchd(&mut self) -> Result<(), String> {
        let mut vswitchd = self.daemon("ovs-vswitchd");
        vswitchd.args([
            format!("unix:{}", self.path("db.sock").display()),
            format!("--unixctl={}", self.path("vswitchd.ctl").display()),
            format!("--log-file={}", self.path("vswitchd.log").display()),
        ]);
        self.spawn("ovs-vswitchd", vswitchd)?;
        // Without --no-wait, ovs-vsctl waits until ovs-vswitchd has made the bridge.
        self.vsctl(&[
            "add-br",
            "br0",
            "--",
            "set",
            "bridge",
            "br0",
            "datapath_type=netdev",
        ])?;
        self.wait_for(&self.path("br0.mgmt"), "vswitchd.log")
    }

    /// A file in the lab's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The database's socket, for our client.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Unix(self.path("db.sock"))
    }

    /// The database's socket in the `--db` syntax of the OVS tools.
    pub fn db(&self) -> String {
        self.endpoint().to_string()
    }

    /// The bridge's OpenFlow management target, `unix:<dir>/br0.mgmt`.
    pub fn target(&self) -> String {
        format!("unix:{}", self.path("br0.mgmt").display())
    }

    /// The namespace's name.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Runs `ovs-vsctl` against the lab's database.
    pub fn vsctl(&self, args: &[&str]) -> Result<String, String> {
        let db = format!("--db={}", self.db());
        let mut all = vec![db.as_str(), "--timeout=20"];
        all.extend_from_slice(args);
        run("ovs-vsctl", &all)
    }

    /// An OVS daemon that keeps every file in the temp dir, logs only to its log file, and is in
    /// a process group of its own.
    fn daemon(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            cmd.env(var, self.dir.path());
        }
        cmd.arg("--no-chdir")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        cmd
    }

    /// Spawns `cmd` inside the namespace (from a thread that joined it) and records it.
    fn spawn(&mut self, name: &'static str, cmd: Command) -> Result<(), String> {
        let mut live = live();
        let child = in_netns(&self.netns, cmd).map_err(|e| format!("starting {name}: {e}"))?;
        live.pids.extend(i32::try_from(child.id()).ok());
        self.daemons.push((name, child));
        Ok(())
    }

    /// Waits until a daemon made `socket`; fails with its log if one died or it took too long.
    fn wait_for(&mut self, socket: &Path, log: &str) -> Result<(), String> {
        let deadline = Instant::now() + START;
        // No event tells when a daemon has bound its socket: bounded polling.
        while !socket.exists() {
            let exited = self
                .daemons
                .iter_mut()
                .find_map(|(name, c)| c.try_wait().ok().flatten().map(|s| format!("{name} {s}")));
            if exited.is_some() || Instant::now() > deadline {
                let text = std::fs::read_to_string(self.path(log)).unwrap_or_default();
                return Err(format!(
                    "{} did not appear ({}); {log}:\n{text}",
                    socket.display(),
                    exited.unwrap_or_else(|| "timed out".into())
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Lab {
    /// Stops the daemons (SIGTERM, then SIGKILL), deletes the namespace and the temp dir.
    /// Holds the record's lock throughout, so a signal's [`abandon`] waits and finds nothing.
    fn drop(&mut self) {
        let mut live = live();
        for (name, child) in self.daemons.iter_mut().rev() {
            let Ok(pid) = i32::try_from(child.id()) else {
                continue;
            };
            live.pids.retain(|&p| p != pid);
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("netbench: {name} ignored SIGTERM, killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if live.netns.take().is_some() {
            delete_netns(&self.netns);
        }
        live.dir = None;
        // The TempDir removes itself after this.
    }
}

/// Spawns `cmd` from a thread of its own that joined namespace `name`: the child lives there.
fn in_netns(name: &str, mut cmd: Command) -> Result<Child, String> {
    let path = format!("/run/netns/{name}");
    let handle = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    std::thread::spawn(move || {
        setns(&handle, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {path}: {e}"))?;
        cmd.spawn().map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "the spawning thread panicked".to_owned())?
}

fn delete_netns(name: &str) {
    if let Err(e) = run("ip", &["netns", "del", name]) {
        eprintln!("netbench: {e}");
    }
}

/// Runs `program args` in the bench's own namespace (only `ip`, and OVS tools on the lab's
/// sockets); its stdout, or an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{program}`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn text(path: &Path) -> Result<String, String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))
}
