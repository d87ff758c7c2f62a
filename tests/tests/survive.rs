//! End to end: services outlive cloudlet (SIGKILL and SIGTERM of the server), adoption keeps PIDs,
//! restart counts and logs, orphans are reaped, acknowledged writes survive a crash.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "tests; PIDs fit in u32"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cloudlet_tests::{Cluster, alive};

const T: Duration = Duration::from_secs(60);

/// Lines `line <i> pid <pid>` in the text, per pid, in order.
fn numbered_lines(text: &str) -> BTreeMap<u64, Vec<u64>> {
    let mut by_pid: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if let [.., "line", i, "pid", p] = w.as_slice()
            && let (Ok(i), Ok(p)) = (i.parse(), p.parse())
        {
            by_pid.entry(p).or_default().push(i);
        }
    }
    by_pid
}

#[test]
fn sigkill_of_the_server_leaves_ten_services_running_and_they_are_adopted() {
    let mut c = Cluster::start();
    let mut events = c.events();
    let mut docs = Vec::new();
    for i in 0..10 {
        docs.push(Cluster::workload_manifest(
            &format!("s{i}"),
            &["--print", "0", "--interval", "20ms"],
            "",
        ));
    }
    c.apply_ok("ten.yaml", &docs.join("---\n"));
    for i in 0..10 {
        events.wait_for(&format!("s{i}"), "Ready", T);
    }
    // One crash first, so that a restart count is there to keep.
    let s0 = c.service("s0");
    cloudlet_tests::signal(
        s0["pid"].as_u64().unwrap() as u32,
        nix::sys::signal::Signal::SIGKILL,
    );
    events.wait("s0 run 2", T, |e| {
        e["service"] == "s0"
            && e["reason"] == "Started"
            && e["message"].as_str().unwrap().contains("run 2")
    });
    drop(events);
    let before = c.pids_and_restarts();
    assert_eq!(before["s0"].1, 1);

    let log0 = c.data_dir().join("logs/s5/current.log");
    let size_at_kill = std::fs::metadata(&log0).unwrap().len();
    c.kill_server();
    // Lines go on being written while no server runs.
    let deadline = Instant::now() + T;
    while std::fs::metadata(&log0).unwrap().len() < size_at_kill + 2000 {
        assert!(
            Instant::now() < deadline,
            "no log lines while the server was down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, (pid, _)) in &before {
        assert!(alive(*pid as u32), "{name} died with the server");
    }
    c.start_server();
    let after = c.pids_and_restarts();
    assert_eq!(before, after, "same PIDs and restart counts after adoption");
    // The API answers before adoption is over (and its events are written a moment after).
    let adopted = |c: &Cluster| {
        c.all_events()
            .iter()
            .filter(|e| e["reason"] == "Adopted")
            .count()
    };
    c.wait_until("ten Adopted events", T, |c| adopted(c) >= 10);
    assert_eq!(adopted(&c), 10);

    // The log of the current run has every line, before, during and after the server's absence.
    let log = c.ctl_ok(&["logs", "s5"]);
    let lines = numbered_lines(&log);
    let pid = before["s5"].0;
    let seq = &lines[&pid];
    assert!(seq.len() > 30, "{} lines", seq.len());
    for (k, w) in seq.windows(2).enumerate() {
        assert_eq!(w[1], w[0] + 1, "gap in the log at line {k}");
    }
}

#[test]
fn sigterm_stops_cloudlet_and_never_the_services() {
    let mut c = Cluster::start();
    let mut events = c.events();
    c.apply_ok("a.yaml", &Cluster::workload_manifest("a", &[], ""));
    events.wait_for("a", "Ready", T);
    drop(events);
    let pid = c.service("a")["pid"].as_u64().unwrap() as u32;
    let status = c.stop_server();
    assert!(status.success(), "server exit: {status}");
    assert!(alive(pid));
    assert!(
        !c.data_dir().join("cloudlet.sock").exists(),
        "socket removed"
    );
    c.start_server();
    assert_eq!(c.service("a")["pid"].as_u64().unwrap() as u32, pid);
}

/// The server's executable and its `argv[0]`.
fn exe_and_name(pid: u32) -> (std::path::PathBuf, String) {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let first = cmdline.split(|b| *b == 0).next().unwrap();
    (exe, String::from_utf8_lossy(first).into_owned())
}

#[test]
fn the_server_runs_from_a_private_copy_of_each_installed_version() {
    let mut c = Cluster::unstarted(Some("data"), &[]);
    // An installed binary the test may replace, as an operator's upgrade does.
    let installed = c.path("cloudlet");
    std::fs::copy(cloudlet_tests::cloudlet_bin(), &installed).unwrap();
    c.set_bin(installed.clone());
    c.start_server();
    let bin = c.data_dir().join("bin");
    let (first, name) = exe_and_name(c.server_pid());
    assert_eq!(first.parent(), Some(bin.as_path()), "{}", first.display());
    let file = first.file_name().unwrap().to_string_lossy().into_owned();
    assert!(file.starts_with("cloudlet-server-"), "{file}");
    assert_eq!(
        name,
        installed.display().to_string(),
        "ps names the installed binary"
    );
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&installed).unwrap()
    );
    let mut events = c.events();
    c.apply_ok("a.yaml", &Cluster::workload_manifest("a", &[], ""));
    events.wait_for("a", "Ready", T);
    drop(events);
    let pid = c.service("a")["pid"].as_u64().unwrap() as u32;

    // The same version again: the same copy, the same pid for the service.
    assert!(c.stop_server().success());
    c.start_server();
    assert_eq!(exe_and_name(c.server_pid()).0, first);

    // A new version installed under the running server (trailing bytes after an ELF file do
    // not change what it runs, they change its content): the running server keeps its copy; the
    // next start makes a new one and removes the old.
    let mut upgraded = std::fs::read(&installed).unwrap();
    upgraded.extend_from_slice(b"next version");
    let staged = c.path("cloudlet.new");
    std::fs::write(&staged, &upgraded).unwrap();
    std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&staged, &installed).unwrap();
    assert_eq!(c.service("a")["state"], "running");
    assert!(c.stop_server().success());
    c.start_server();
    let (second, name) = exe_and_name(c.server_pid());
    assert_ne!(second, first);
    assert_eq!(second.parent(), Some(bin.as_path()));
    assert_eq!(name, installed.display().to_string());
    assert!(!first.exists(), "the older copy is removed");
    assert_eq!(std::fs::read(&second).unwrap(), upgraded);
    assert_eq!(c.service("a")["pid"].as_u64().unwrap() as u32, pid);
}

#[test]
fn no_private_exe_runs_the_installed_binary() {
    let mut c = Cluster::unstarted(None, &["--no-private-exe"]);
    c.start_server();
    let (exe, _) = exe_and_name(c.server_pid());
    assert_eq!(exe, cloudlet_tests::cloudlet_bin().canonicalize().unwrap());
    let copies: Vec<_> = std::fs::read_dir(c.data_dir().join("bin"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("cloudlet-server-")
        })
        .collect();
    assert!(copies.is_empty(), "{copies:?}");
}

#[test]
fn an_exit_while_the_server_is_down_is_handled_by_policy_on_adoption() {
    let mut c = Cluster::start();
    let mut events = c.events();
    c.apply_ok(
        "a.yaml",
        &Cluster::workload_manifest(
            "a",
            &[],
            "  restart: {policy: always, backoff: {initial: 100ms, max: 1s}}\n",
        ),
    );
    events.wait_for("a", "Ready", T);
    drop(events);
    let pid = c.service("a")["pid"].as_u64().unwrap() as u32;
    c.kill_server();
    cloudlet_tests::signal(pid, nix::sys::signal::Signal::SIGKILL);
    // The shim reaps it and keeps the exit for the next server.
    assert!(cloudlet_tests::wait_exit(pid, T));
    c.start_server();
    let mut events = c.events();
    let adopted = events.wait_for("a", "Adopted", T);
    assert!(
        adopted["message"]
            .as_str()
            .unwrap()
            .contains("while cloudlet was away"),
        "{adopted}"
    );
    events.wait("run 2", T, |e| {
        e["service"] == "a"
            && e["reason"] == "Started"
            && e["message"].as_str().unwrap().contains("run 2")
    });
    let s = c.service("a");
    assert_eq!(s["restarts"], 1, "{s}");
    assert_eq!(s["lastExit"]["signal"], "SIGKILL");
}

#[test]
fn fifty_orphans_are_reaped_and_no_zombie_remains() {
    let c = Cluster::start();
    let mut events = c.events();
    c.apply_ok(
        "o.yaml",
        &Cluster::workload_manifest("orphaner", &["orphans", "50", "--linger", "1500ms"], ""),
    );
    events.wait_for("orphaner", "Ready", T);
    // Wait for the line that lists the orphans, then until they have all exited.
    let line = c.wait_log("orphaner", T, |l| l.contains("orphaned 50 pids:"));
    let pids: Vec<u32> = line
        .split("pids:")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 50);
    let shim_pids = shims_of(&c);
    assert!(!shim_pids.is_empty());
    // While they linger, the orphans belong to the shim (a child subreaper), not to init.
    let adopted = children_of(&shim_pids)
        .iter()
        .filter(|(p, _)| pids.contains(p))
        .count();
    assert!(adopted > 0, "no orphan was re-parented to the shim");
    for p in &pids {
        assert!(cloudlet_tests::wait_exit(*p, T), "orphan {p} never exited");
    }
    // Exited; now they must be reaped (the shim reaps on SIGCHLD; nothing to await from here).
    let deadline = Instant::now() + T;
    loop {
        let zombies = children_of(&shim_pids)
            .iter()
            .filter(|(_, state)| state == "Z")
            .count();
        let left = pids
            .iter()
            .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .count();
        if zombies == 0 && left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{zombies} zombies, {left} orphans not reaped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The service itself is still running.
    assert_eq!(c.service("orphaner")["state"], "running");
}

fn shims_of(c: &Cluster) -> Vec<u32> {
    let needle = c.data_dir().join("run").display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&cmd).contains(&needle)
        {
            out.push(pid);
        }
    }
    out
}

/// (pid, state letter) of every process whose parent is one of `parents`.
fn children_of(parents: &[u32]) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        if let [state, ppid, ..] = rest.as_slice()
            && let Ok(ppid) = ppid.parse::<u32>()
            && parents.contains(&ppid)
        {
            out.push((pid, (*state).to_owned()));
        }
    }
    out
}

#[test]
fn an_acknowledged_apply_survives_sigkill_of_the_server() {
    let mut c = Cluster::start();
    c.apply_ok(
        "a.yaml",
        &Cluster::workload_manifest("durable", &[], "  restart: {policy: never}\n"),
    );
    c.kill_server();
    c.start_server();
    let s = c.service("durable");
    assert_eq!(s["name"], "durable");
}

#[test]
fn a_killed_shim_takes_its_run_with_it_and_the_service_comes_back() {
    let c = Cluster::start();
    let mut events = c.events();
    c.apply_ok("a.yaml", &Cluster::workload_manifest("a", &[], ""));
    events.wait_for("a", "Ready", T);
    let pid = c.service("a")["pid"].as_u64().unwrap() as u32;
    let shims = shims_of(&c);
    assert_eq!(shims.len(), 1);
    cloudlet_tests::signal(shims[0], nix::sys::signal::Signal::SIGKILL);
    let lost = events.wait_for("a", "ShimLost", T);
    assert!(
        lost["message"].as_str().unwrap().contains(&pid.to_string()),
        "{lost}"
    );
    events.wait("run 2 under a new shim", T, |e| {
        e["service"] == "a"
            && e["reason"] == "Started"
            && e["message"].as_str().unwrap().starts_with("run 2 ")
    });
    // Never two copies: the orphaned run was killed before the new one started.
    assert!(
        cloudlet_tests::wait_exit(pid, T),
        "the old run {pid} is still alive"
    );
    let s = c.service("a");
    assert_eq!(s["state"], "running", "{s}");
    assert_ne!(s["pid"].as_u64().unwrap() as u32, pid);
    assert_eq!(s["lastExit"]["reason"], "ShimLost");
    assert_eq!(s["restarts"], 1, "the new shim continues the count: {s}");
}

/// A run dir outlives reboots and pids are reused: adoption signals a dead shim's process group
/// only when the pid file proves it is still that run (boot, start time, cgroup). Here two run
/// dirs name an unrelated process, one in the old pid-only form, one with a start time that is
/// not its own; the server finds both shims gone and signals nothing.
#[test]
fn adoption_never_signals_a_process_its_pid_file_does_not_prove() {
    use std::os::unix::process::CommandExt as _;

    /// Killed and reaped however the test ends.
    struct Bystander(std::process::Child);
    impl Drop for Bystander {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let mut c = Cluster::unstarted(None, &[]);
    let bystander = Bystander(
        std::process::Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let pid = bystander.0.id();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    for (name, record) in [
        ("ghost", format!("{pid}\n")),
        (
            "ghost2",
            format!("{pid}\nboot_id={}\nstart=1\ncgroup=/\n", boot.trim()),
        ),
    ] {
        let run = c.data_dir().join("run").join(name);
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("service.pid"), record).unwrap();
    }
    c.start_server();
    let lost = |c: &Cluster| -> Vec<_> {
        c.all_events()
            .into_iter()
            .filter(|e| e["reason"] == "ShimLost")
            .collect()
    };
    c.wait_until("both shims found gone", T, |c| lost(c).len() == 2);
    let lost = lost(&c);
    for e in &lost {
        assert!(
            e["message"].as_str().unwrap().contains("nothing signalled"),
            "{e}"
        );
    }
    assert!(alive(pid), "adoption killed an unrelated process {pid}");
}

/// The data dir holds the store (the services' CA key, secrets in manifests) and the keys: a dir
/// made 0755 beforehand (an installer, an operator) is made 0711 before anything is written (no
/// listing; passage for services' users to their own dirs), and the store, created with the
/// umask's mode, loses group and other access once serving.
#[test]
fn the_data_dir_and_the_store_are_private_whatever_made_them() {
    use std::os::unix::fs::PermissionsExt as _;

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut c = Cluster::unstarted(Some("data"), &[]);
    std::fs::create_dir(c.data_dir()).unwrap();
    std::fs::set_permissions(c.data_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    c.start_server();
    assert_eq!(mode(c.data_dir()), 0o711);
    c.wait_until("the store and the logs private", T, |c| {
        mode(&c.data_dir().join("store.redb")) & 0o077 == 0
            && mode(&c.data_dir().join("logs")) & 0o077 == 0
    });
    assert!(c.server_log().contains("was mode 0755; made it 0711"));
}

/// Adoption never holds up the API: three shims that accept a connection and never answer (each
/// costs adoption its 10 s call timeout) leave `GET /v1/healthz` answering at once, and the
/// supervisor goes on to run what is applied once it has given up on them. Before, the server
/// listened only after adoption: 30 s of silence, so `ctl` could not reach a server whose
/// adoption was stuck (or crashed it) to delete what did it.
#[test]
fn stuck_shims_do_not_delay_the_api() {
    let mut c = Cluster::unstarted(None, &[]);
    let mut listeners = Vec::new();
    for name in ["stuck1", "stuck2", "stuck3"] {
        let run = c.data_dir().join("run").join(name);
        std::fs::create_dir_all(&run).unwrap();
        listeners.push(std::os::unix::net::UnixListener::bind(run.join("shim.sock")).unwrap());
    }
    // Accept and hold every connection, answering nothing, until the test ends.
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    for l in listeners {
        let held = std::sync::Arc::clone(&held);
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                held.lock().unwrap().push(conn);
            }
        });
    }
    let started = Instant::now();
    c.start_server();
    let up = started.elapsed();
    assert!(up < Duration::from_secs(5), "the API took {up:?} to answer");
    let mut events = c.events();
    c.apply_ok("a.yaml", &Cluster::workload_manifest("a", &[], ""));
    events.wait_for("a", "Ready", T);
    assert!(
        !held.lock().unwrap().is_empty(),
        "the server never tried the stuck shims"
    );
}

/// The pid of the shim of service `name`.
fn shim_of(c: &Cluster, name: &str) -> u32 {
    let needle = format!("{}\0", c.data_dir().join("run").join(name).display());
    shims_of(c)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains(&needle))
        })
        .unwrap_or_else(|| panic!("no shim of {name}"))
}

/// A shim that is there but does not answer at adoption (here: stopped with SIGSTOP while no
/// server ran) may still hold its run: its service is quarantined (`invalid`, a `Quarantined`
/// event), not started next to it; once the shim answers it is adopted with its run, and `ctl
/// delete` removes one that never answers. Before, the new server tried to start it again every
/// backoff (each new shim refused: a shim already listens) and never adopted the old one.
#[test]
fn a_shim_that_does_not_answer_at_adoption_is_quarantined_then_adopted() {
    let mut c = Cluster::start();
    let mut events = c.events();
    let docs = [
        Cluster::workload_manifest("a", &[], ""),
        Cluster::workload_manifest("b", &[], ""),
    ];
    c.apply_ok("ab.yaml", &docs.join("---\n"));
    events.wait_for("a", "Ready", T);
    events.wait_for("b", "Ready", T);
    drop(events);
    let pid_a = c.service("a")["pid"].as_u64().unwrap() as u32;
    let (shim_a, shim_b) = (shim_of(&c, "a"), shim_of(&c, "b"));
    c.kill_server();
    cloudlet_tests::signal(shim_a, nix::sys::signal::Signal::SIGSTOP);
    cloudlet_tests::signal(shim_b, nix::sys::signal::Signal::SIGSTOP);
    c.start_server();
    let mut events = c.events();
    // (The stream starts with the history: run 1's start is the first server's.)
    for name in ["a", "b"] {
        let e = events.wait(&format!("{name}'s fate"), T, |e| {
            e["service"] == name
                && ((e["reason"] == "Started"
                    && !e["message"].as_str().unwrap().contains("run 1 "))
                    || e["reason"] == "StartFailed"
                    || e["reason"] == "Quarantined")
        });
        assert_eq!(e["reason"], "Quarantined", "{e}");
        assert!(
            e["message"].as_str().unwrap().contains("did not answer"),
            "{e}"
        );
        assert_eq!(c.service(name)["state"], "invalid");
    }
    cloudlet_tests::signal(shim_a, nix::sys::signal::Signal::SIGCONT);
    events.wait_for("a", "Adopted", T);
    let a = c.service("a");
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(a["pid"].as_u64(), Some(u64::from(pid_a)), "{a}");
    c.ctl_ok(&["delete", "service", "b"]);
    events.wait_for("b", "Deleted", T);
    assert_eq!(shim_of(&c, "a"), shim_a, "a's shim is the old one");
    cloudlet_tests::signal(shim_b, nix::sys::signal::Signal::SIGCONT);
}
