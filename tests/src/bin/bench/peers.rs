//! The three supervisors the bench compares: how each is configured for the same services (files
//! written under the run's temp dir only), started, stopped, and which processes are its own.
//!
//! It must never write outside the run's temp dir (no /etc/sv, /etc/supervisor, /var/lib/cloudlet;
//! cloudlet's cgroups go to a subtree named after the temp dir) and never signal anything but the
//! supervisor process it started; `procs::clean_up` kills and removes what is left.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::procs;

/// How long the cloudlet server may take to open its API socket.
const STARTUP: Duration = Duration::from_secs(20);
/// How long a supervisor may take to stop (supervisord stops 30 programs in about 5 s here: its
/// main loop ticks once a second).
const STOP: Duration = Duration::from_secs(30);

/// A supervisor under test, with its executable.
#[derive(Debug, Clone)]
pub enum Peer {
    /// runit: `runsvdir -P DIR`, one `runsv` per service dir.
    Runit { runsvdir: PathBuf },
    /// supervisord in the foreground with one `[program:sN]` per service.
    Supervisord { supervisord: PathBuf },
    /// `cloudlet server` and a manifest applied with `cloudlet ctl`.
    Cloudlet { cloudlet: PathBuf },
}

/// The services to run: `count` copies of `command`, named `s0`, `s1`, ...
#[derive(Debug)]
pub struct Services<'a> {
    /// How many.
    pub count: usize,
    /// The argv every service runs.
    pub command: &'a [String],
}

/// A group of the supervisor's own processes, for the memory split.
#[derive(Debug)]
pub struct Part {
    /// What they are (`server`, `shim`, `runsv`, ...).
    pub role: &'static str,
    /// Their pids.
    pub pids: Vec<i32>,
}

/// A started supervisor.
#[derive(Debug)]
pub struct Running {
    peer: Peer,
    child: Child,
    dir: PathBuf,
}

impl Peer {
    /// The name in the table.
    pub fn name(&self) -> &'static str {
        match self {
            Peer::Runit { .. } => "runit",
            Peer::Supervisord { .. } => "supervisord",
            Peer::Cloudlet { .. } => "cloudlet",
        }
    }

    /// Configures the services under `dir` and starts the supervisor on them. Returns once the
    /// supervisor has been asked to start them all (they announce themselves on the notify socket).
    pub fn start(&self, dir: &Path, services: &Services<'_>) -> Result<Running, String> {
        let log = dir.join(format!("{}.log", self.name()));
        let log = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let stderr = log
            .try_clone()
            .map_err(|e| format!("duplicating the log file: {e}"))?;
        let mut command = match self {
            Peer::Runit { runsvdir } => {
                let sv = dir.join("sv");
                write_runit_services(&sv, services)?;
                let mut c = Command::new(runsvdir);
                c.arg("-P").arg(&sv);
                c
            }
            Peer::Supervisord { supervisord } => {
                let conf = dir.join("supervisord.conf");
                write(&conf, &supervisord_conf(dir, services)?)?;
                mkdir(&dir.join("logs"))?;
                let mut c = Command::new(supervisord);
                c.arg("-c").arg(&conf).arg("-n");
                c
            }
            Peer::Cloudlet { cloudlet } => {
                procs::evict_from_cache(cloudlet)?;
                let mut c = Command::new(cloudlet);
                // Port 0: the kernel picks a free one, so the bench runs beside a live cloudlet
                // (whose 6443 is taken); the bench talks to this server on its unix socket.
                c.args(["server", "--data-dir"])
                    .arg(dir.join("data"))
                    .args(["--node-name", "bench", "--log", "info"])
                    .args(["--listen", "127.0.0.1:0"]);
                if let Some(root) = procs::cgroup_root_for(dir) {
                    c.arg("--cgroup-root").arg(root);
                }
                c
            }
        };
        let child = procs::spawn(
            command
                // Backtraces on: every error the supervisor makes would walk and symbolize its
                // stack (cloudlet's server holds ~700 KiB of symbolizer cache afterwards).
                .env_remove("RUST_BACKTRACE")
                .env_remove("RUST_LIB_BACKTRACE")
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(stderr),
        )
        .map_err(|e| format!("starting {}: {e}", self.name()))?;
        let mut running = Running {
            peer: self.clone(),
            child,
            dir: dir.to_owned(),
        };
        if let Peer::Cloudlet { cloudlet } = self {
            running.wait_for_socket(&dir.join("data").join("cloudlet.sock"))?;
            apply_cloudlet_services(cloudlet, dir, services)?;
        }
        Ok(running)
    }
}

impl Running {
    /// The pid of the process the bench started (supervisord, runsvdir, cloudlet server).
    pub fn pid(&self) -> Result<i32, String> {
        i32::try_from(self.child.id()).map_err(|e| format!("pid {}: {e}", self.child.id()))
    }

    /// The supervisor's own processes, services excluded, grouped by role. Checks that each role
    /// has as many processes as expected (`services` shims or runsv).
    pub fn own_processes(&self, services: usize) -> Result<Vec<Part>, String> {
        let pid = self.pid()?;
        let (role, per_service) = match &self.peer {
            Peer::Supervisord { .. } => {
                // pip's `supervisord` is a Python script: the process is python running it.
                let cmd = procs::cmdline(pid).unwrap_or_default();
                if !cmd.contains("supervisord") {
                    return Err(format!(
                        "pid {pid} is not supervisord (command line {cmd:?})"
                    ));
                }
                return Ok(vec![Part {
                    role: "supervisord",
                    pids: vec![pid],
                }]);
            }
            Peer::Runit { .. } => {
                let runsv = procs::all_pids()
                    .into_iter()
                    .filter(|&p| procs::ppid(p) == Some(pid))
                    .filter(|&p| procs::cmdline(p).is_some_and(|c| c.starts_with("runsv ")))
                    .collect();
                (
                    "runsvdir",
                    Part {
                        role: "runsv",
                        pids: runsv,
                    },
                )
            }
            Peer::Cloudlet { .. } => {
                let data = format!("{}/", self.dir.join("data").display());
                let shims = procs::all_pids()
                    .into_iter()
                    .filter(|&p| p != pid)
                    .filter(|&p| {
                        procs::cmdline(p).is_some_and(|c| c.contains(" shim ") && c.contains(&data))
                    })
                    .collect();
                (
                    "server",
                    Part {
                        role: "shim",
                        pids: shims,
                    },
                )
            }
        };
        if per_service.pids.len() != services {
            return Err(format!(
                "{}: found {} {} processes, expected {services}: {:?}",
                self.peer.name(),
                per_service.pids.len(),
                per_service.role,
                per_service.pids
            ));
        }
        Ok(vec![
            Part {
                role,
                pids: vec![pid],
            },
            per_service,
        ])
    }

    /// Asks the supervisor to stop the way its operator would (cloudlet: SIGTERM, which leaves the
    /// services running by design; supervisord: SIGTERM, which stops its programs; runsvdir:
    /// SIGHUP, which sends TERM to every runsv), and reaps it; SIGKILL after [`STOP`]. The caller
    /// sweeps what is left.
    pub fn stop(mut self) -> Result<(), String> {
        let signal = match self.peer {
            Peer::Runit { .. } => Signal::SIGHUP,
            Peer::Supervisord { .. } | Peer::Cloudlet { .. } => Signal::SIGTERM,
        };
        procs::send(self.pid()?, signal)?;
        let deadline = Instant::now() + STOP;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    // The child's exit has no event we can block on with a deadline: poll.
                    thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!(
                        "{} did not stop within {STOP:?} of {signal}",
                        self.peer.name()
                    ));
                }
                Err(e) => return Err(format!("waiting for {}: {e}", self.peer.name())),
            }
        }
    }

    /// Waits until the cloudlet server accepts connections on its API socket.
    fn wait_for_socket(&mut self, socket: &Path) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP;
        while UnixStream::connect(socket).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "cloudlet server exited with {status}; see {}",
                    self.dir.join("cloudlet.log").display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not appear", socket.display()));
            }
            // The socket appears once; nothing outside the server can wait for it.
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// `DIR/sN/run` for every service: `exec` the command, so runsv's child is the service itself.
fn write_runit_services(sv: &Path, services: &Services<'_>) -> Result<(), String> {
    let exec = services
        .command
        .iter()
        .map(|a| sh_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    for i in 0..services.count {
        let service = sv.join(format!("s{i}"));
        mkdir(&service)?;
        let run = service.join("run");
        write(&run, &format!("#!/bin/sh\nexec {exec}\n"))?;
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", run.display()))?;
    }
    Ok(())
}

/// supervisord's configuration: everything (socket, pid file, logs) under `dir`; restart at once.
fn supervisord_conf(dir: &Path, services: &Services<'_>) -> Result<String, String> {
    let d = dir.display();
    let mut conf = format!(
        "[unix_http_server]\nfile={d}/supervisor.sock\nchmod=0700\n\n\
         [supervisord]\nnodaemon=true\nuser=root\nlogfile={d}/supervisord.log\n\
         pidfile={d}/supervisord.pid\nchildlogdir={d}/logs\n\n\
         [rpcinterface:supervisor]\n\
         supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n"
    );
    let command = services
        .command
        .iter()
        .map(|a| {
            if a.contains(|c: char| c.is_whitespace() || c == '%' || c == '"' || c == '\'') {
                Err(format!("argument {a:?} needs quoting in supervisord.conf"))
            } else {
                Ok(a.as_str())
            }
        })
        .collect::<Result<Vec<_>, _>>()?
        .join(" ");
    for i in 0..services.count {
        let _ = write!(
            conf,
            "\n[program:s{i}]\ncommand={command}\nautostart=true\nautorestart=true\n\
             startsecs=0\nstartretries=1000000\nstopsignal=TERM\nstopwaitsecs=5\n"
        );
    }
    Ok(conf)
}

/// Writes a 30-document manifest and applies it with `cloudlet ctl apply -f`.
fn apply_cloudlet_services(
    cloudlet: &Path,
    dir: &Path,
    services: &Services<'_>,
) -> Result<(), String> {
    let command =
        serde_json::to_string(services.command).map_err(|e| format!("command as JSON: {e}"))?;
    let manifest: Vec<String> = (0..services.count)
        .map(|i| {
            format!(
                "apiVersion: cloudlet/v1\nkind: Service\nmetadata:\n  name: s{i}\nspec:\n  \
                 command: {command}\n  restart: {{policy: always, backoff: {{initial: 100ms, \
                 max: 1s}}, resetAfter: 1s}}\n"
            )
        })
        .collect();
    let path = dir.join("services.yaml");
    write(&path, &manifest.join("---\n"))?;
    let out = procs::spawn(
        Command::new(cloudlet)
            .args(["ctl", "--data-dir"])
            .arg(dir.join("data"))
            .args(["apply", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .and_then(Child::wait_with_output)
    .map_err(|e| format!("running cloudlet ctl apply: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cloudlet ctl apply -f {} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Quotes `arg` for /bin/sh.
fn sh_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn mkdir(path: &Path) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_stay_inside_the_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        let command = vec!["/bin/wl".to_owned(), "it's".to_owned()];
        let services = Services {
            count: 2,
            command: &command,
        };
        write_runit_services(&dir.path().join("sv"), &services).unwrap();
        let run = fs::read_to_string(dir.path().join("sv/s1/run")).unwrap();
        assert_eq!(run, "#!/bin/sh\nexec '/bin/wl' 'it'\\''s'\n");

        let err = supervisord_conf(dir.path(), &services).unwrap_err();
        assert!(err.contains("needs quoting"), "{err}");
        let command = vec!["/bin/wl".to_owned(), "sleep".to_owned()];
        let conf = supervisord_conf(
            dir.path(),
            &Services {
                count: 2,
                command: &command,
            },
        )
        .unwrap();
        assert_eq!(conf.matches("[program:").count(), 2);
        assert!(conf.contains("command=/bin/wl sleep\n"));
        for line in conf.lines().filter(|l| l.contains('/')) {
            assert!(
                line.contains(&*dir.path().to_string_lossy()) || line.starts_with("command="),
                "{line}"
            );
        }
    }
}
