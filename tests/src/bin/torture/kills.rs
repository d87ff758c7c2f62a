//! The kills phase: a one-node server SIGKILLed while `ctl apply` (a new oneshot step) and
//! `ctl restart` (of one service set aside for it) are in flight, over and over. Afterwards:
//! every apply `ctl` acknowledged is in the store, no service was restarted automatically, the
//! services nobody asked about kept their pids, and no process cloudlet started is a zombie.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloudlet_tests::{Cluster, cloudlet_bin};

use crate::Rows;

/// Services nobody touches: their pids must survive every kill.
const KEEPERS: usize = 4;
/// The service `ctl restart` is aimed at.
const CHURN: &str = "churn";
/// How long the server may take to converge after the last kill.
const SETTLE: Duration = Duration::from_secs(60);

/// Runs the phase and adds its rows.
pub fn run(kills: u64, rows: &mut Rows) {
    let mut c = Cluster::start();
    let mut docs: Vec<String> = (0..KEEPERS)
        .map(|i| Cluster::workload_manifest(&format!("keep{i}"), &["sleep"], ""))
        .collect();
    docs.push(Cluster::workload_manifest(CHURN, &["sleep"], ""));
    c.apply_ok("services.yaml", &docs.join("---\n"));
    c.wait_until("every service running", SETTLE, |c| {
        let s = c.services();
        s.len() == KEEPERS + 1 && s.iter().all(|s| s["state"] == "running")
    });
    let before = c.pids_and_restarts();
    let started = Instant::now();
    let mut acked = Vec::new();
    let (mut applies, mut restarts, mut acked_restarts) = (0u64, 0u64, 0u64);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..kills {
        if crate::stopping() {
            break;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let apply = i % 2 == 0;
        let step = format!("t{i}");
        let child = if apply {
            applies += 1;
            let file = c.path(&format!("{step}.yaml"));
            let yaml = format!(
                "apiVersion: cloudlet/v1\nkind: Service\nmetadata:\n  name: {step}\nspec:\n  \
                 type: oneshot\n  command: [/bin/true]\n"
            );
            std::fs::write(&file, yaml).expect("write a manifest");
            ctl(c.data_dir(), &["apply", "-f", &file.display().to_string()])
        } else {
            restarts += 1;
            ctl(c.data_dir(), &["restart", CHURN])
        };
        // Somewhere in the request: before it is read, while it is written, after the answer
        // (an apply takes ~50-150 ms here).
        std::thread::sleep(Duration::from_micros(seed % 250_000));
        c.kill_server();
        let acknowledged = child
            .wait_with_output()
            .is_ok_and(|out| out.status.success());
        match (acknowledged, apply) {
            (true, true) => acked.push(step),
            (true, false) => acked_restarts += 1,
            _ => {}
        }
        c.start_server();
    }
    let took = started.elapsed();
    // Converged: every service (the steps too) settled.
    c.wait_until("every service settled after the last kill", SETTLE, |c| {
        c.services()
            .iter()
            .all(|s| s["state"] == "running" || s["state"] == "completed")
    });
    let services = c.services();
    let names: std::collections::BTreeSet<&str> =
        services.iter().filter_map(|s| s["name"].as_str()).collect();
    let lost = acked.iter().filter(|s| !names.contains(s.as_str())).count() as u64;
    let after = c.pids_and_restarts();
    let automatic: u64 = after.values().map(|(_, r)| *r).sum::<u64>()
        - before.values().map(|(_, r)| *r).sum::<u64>();
    let moved = (0..KEEPERS)
        .map(|i| format!("keep{i}"))
        .filter(|k| before.get(k).map(|b| b.0) != after.get(k).map(|a| a.0))
        .count() as u64;
    let zombies = zombies_under(c.data_dir());
    let log = c.server_log();
    const P: &str = "kills";
    rows.info(P, "server SIGKILLs", kills);
    rows.info(P, "duration", format!("{:.1} s", took.as_secs_f64()));
    rows.info(P, "applies in flight at a kill", applies);
    rows.info(P, "  acknowledged", acked.len());
    rows.zero(P, "  acknowledged, then lost", lost);
    rows.info(P, "restarts in flight at a kill", restarts);
    rows.info(P, "  acknowledged", acked_restarts);
    rows.zero(P, "automatic service restarts", automatic);
    for (name, (_, r)) in after
        .iter()
        .filter(|(n, a)| before.get(*n).map_or(0, |b| b.1) != a.1)
    {
        rows.info(P, &format!("  restarted: {name}"), r);
        let quoted = format!("service=\"{name}\"");
        for line in log
            .lines()
            .filter(|l| l.contains(&quoted) && !l.contains("still running"))
        {
            eprintln!("torture: {line}");
        }
    }
    rows.zero(P, "untouched services with a new pid", moved);
    rows.zero(P, "zombies of cloudlet's processes", zombies);
    rows.zero(P, "server panics", log.matches("panicked").count() as u64);
}

/// `cloudlet ctl --data-dir DIR ARGS`, started and not waited for.
fn ctl(data_dir: &Path, args: &[&str]) -> std::process::Child {
    Command::new(cloudlet_bin())
        .arg("ctl")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cloudlet ctl")
}

/// Zombies whose parent's command line names `data_dir` (the server and its shims).
fn zombies_under(data_dir: &Path) -> u64 {
    let dir = data_dir.display().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut count = 0;
    for entry in procs.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses; split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (Some(state), Some(ppid)) = (fields.next(), fields.next()) else {
            continue;
        };
        if state != "Z" {
            continue;
        }
        let parent = std::fs::read(format!("/proc/{ppid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&parent).contains(&dir) {
            count += 1;
        }
    }
    count
}
