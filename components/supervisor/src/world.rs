//! What the supervisor's machine asks of the world, and the real world that does it: shims
//! (spawn, connect, start, stop, exit), process groups, cgroups (prepare, teardown), timers,
//! readiness probes and the logs of a failed step.
//!
//! [`World`] is the seam: the machine ([`crate::transition`]) only returns [`Effect`]s, and a
//! world carries each out, reporting results back into the machine's inbox as [`Input`]s. The
//! real one, [`ShimWorld`], never blocks the async workers: shim calls run as tasks, and file
//! system and cgroup work (which may wait seconds for a cgroup to empty) runs on blocking
//! threads. It decides nothing: every choice of what to do is the machine's.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use cloudlet_cgroups::Hierarchy;

use crate::SupervisorError;
use crate::config::ServiceConfig;
use crate::machine::{SHIMS_CGROUP, SupervisorOptions};
use crate::probe::{self, ProbeSpec};
use crate::reaper::Reaper;
use crate::shim::client::{ShimClient, ShimEvent, ShimPaths, spawn_shim};
use crate::shim::identity;
use crate::shim::pidfile::PidRecord;
use crate::shim::process::PID_FILE_NAME;
use crate::shim::proto::Op;
use crate::transition::{Effect, Input, OpResult, TeardownJob};

/// Where the machine's inputs go.
pub(crate) type Inbox = mpsc::UnboundedSender<Input>;

/// Carries out what the machine asks.
pub(crate) trait World: Send + 'static {
    /// Carries out `effect`; its result, if any, comes back through `inbox`. Never blocks.
    fn execute(&mut self, effect: Effect, inbox: &Inbox);

    /// Reaches the shims an earlier server left: one [`Input::Adopted`] or [`Input::ShimGone`]
    /// per shim that answered or is gone (a shim that is there but does not answer is left
    /// alone).
    fn reach_shims(&mut self) -> impl Future<Output = Vec<Input>> + Send;

    /// The connection to a service's shim, for a live status.
    fn shim(&self, name: &str) -> Option<Arc<ShimClient>>;

    /// Lets go of every shim and probe (services keep running).
    fn shutdown(&mut self);
}

/// The real world: shim processes, their sockets, cgroupfs, tokio timers.
#[derive(Debug)]
pub(crate) struct ShimWorld {
    options: SupervisorOptions,
    reaper: Reaper,
    shim_tx: mpsc::UnboundedSender<ShimEvent>,
    shims: Arc<std::sync::Mutex<HashMap<String, Arc<ShimClient>>>>,
    probes: HashMap<String, JoinHandle<()>>,
}

impl ShimWorld {
    /// A world on `options`' directories; shim notices go to `shim_tx`.
    pub(crate) fn new(
        options: SupervisorOptions,
        reaper: Reaper,
        shim_tx: mpsc::UnboundedSender<ShimEvent>,
    ) -> ShimWorld {
        ShimWorld {
            options,
            reaper,
            shim_tx,
            shims: Arc::default(),
            probes: HashMap::new(),
        }
    }

    fn paths(&self, name: &str) -> ShimPaths {
        ShimPaths {
            exe: self.options.exe.clone(),
            run_dir: self.options.run_root.join(name),
            log_dir: self.options.log_root.join(name),
        }
    }

    fn client(&self, name: &str) -> Option<Arc<ShimClient>> {
        self.shims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn start(
        &self,
        name: String,
        shim: Option<u64>,
        config: Arc<ServiceConfig>,
        run: u64,
        restarts: u64,
        inbox: &Inbox,
    ) {
        let paths = self.paths(&name);
        let reaper = self.reaper.clone();
        let shim_tx = self.shim_tx.clone();
        let shims = Arc::clone(&self.shims);
        let existing = self.client(&name).filter(|c| Some(c.generation()) == shim);
        let cgroups = self.options.cgroups.clone();
        let unenforced = self.options.limits_unenforced.clone();
        let inbox = inbox.clone();
        tokio::spawn(async move {
            let mut run = run;
            let result = async {
                let prepared = {
                    let (cgroups, config) = (cgroups.clone(), Arc::clone(&config));
                    tokio::task::spawn_blocking(move || prepare_cgroup(cgroups.as_deref(), &config))
                        .await
                        .map_err(|e| (None, e.to_string()))?
                };
                let (cgroup_path, note) =
                    prepared.map_err(|e| (None, format!("cgroup {}: {e}", config.cgroup)))?;
                let limits = note.or(unenforced);
                let mut spec = config.process.clone();
                spec.cgroup = cgroup_path;
                let client = match existing {
                    Some(c) => c,
                    None => {
                        // A new shim continues the run numbers found in the service's logs, so
                        // that `logs --previous` never mixes two histories.
                        run = run.max(last_logged_run(&paths.log_dir).await.saturating_add(1));
                        let shim_pid = spawn_shim(&reaper, &name, &paths)
                            .await
                            .map_err(|e| (None, e.to_string()))?;
                        // Shims live in a cgroup of their own, outside any service's limits.
                        if let Some(h) = cgroups.clone() {
                            let placed =
                                tokio::task::spawn_blocking(move || place_shim(&h, shim_pid)).await;
                            if let Ok(Err(e)) = placed {
                                tracing::warn!(service = %name, "shim {shim_pid}: {e}");
                            }
                        }
                        let c = ShimClient::connect(&name, &paths.run_dir, shim_tx)
                            .await
                            .map_err(|e| (None, e.to_string()))?;
                        let c = Arc::new(c);
                        shims
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(name.clone(), Arc::clone(&c));
                        c
                    }
                };
                let generation = Some(client.generation());
                if let Some(user) = spec.user.clone() {
                    let mut env = std::mem::take(&mut spec.env);
                    let (identity, env) = tokio::task::spawn_blocking(move || {
                        let identity = identity::resolve(&user, &mut env);
                        (identity, env)
                    })
                    .await
                    .map_err(|e| (generation, e.to_string()))?;
                    spec.env = env;
                    spec.identity = Some(identity.map_err(|e| (generation, e.to_string()))?);
                }
                let op = Op::Start {
                    spec,
                    run,
                    restarts,
                    tag: config.tag.clone(),
                };
                match client.call(op).await {
                    Ok(status) => Ok(OpResult::Started {
                        shim: client.generation(),
                        status,
                        limits,
                    }),
                    Err(e) => Err((generation, e.to_string())),
                }
            }
            .await;
            let result =
                result.unwrap_or_else(|(shim, error)| OpResult::StartFailed { shim, error });
            let _ = inbox.send(Input::OpDone(name, result));
        });
    }
}

impl World for ShimWorld {
    fn execute(&mut self, effect: Effect, inbox: &Inbox) {
        match effect {
            Effect::Start {
                name,
                shim,
                config,
                run,
                restarts,
            } => self.start(name, shim, config, run, restarts, inbox),
            Effect::Stop {
                name,
                shim,
                signal,
                grace_ms,
            } => {
                let client = self.client(&name).filter(|c| c.generation() == shim);
                let inbox = inbox.clone();
                tokio::spawn(async move {
                    let result = match client {
                        None => OpResult::StopFailed("no connection to its shim".into()),
                        Some(c) => match c.call(Op::Stop { signal, grace_ms }).await {
                            Ok(s) => OpResult::StopSent(s),
                            Err(e) => OpResult::StopFailed(e.to_string()),
                        },
                    };
                    let _ = inbox.send(Input::OpDone(name, result));
                });
            }
            Effect::ExitShim { name, cgroup } => {
                let client = self
                    .shims
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&name);
                let cgroups = self.options.cgroups.clone();
                let inbox = inbox.clone();
                tokio::spawn(async move {
                    if let Some(c) = client {
                        let _ = c.call(Op::Exit).await;
                    }
                    let _ = tokio::task::spawn_blocking(move || {
                        end_cgroup(cgroups.as_deref(), &cgroup, true);
                    })
                    .await;
                    let _ = inbox.send(Input::OpDone(name, OpResult::ShimExited));
                });
            }
            Effect::DropShim { name } => {
                self.shims
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&name);
            }
            Effect::KillGroup { pid } => {
                if let Ok(raw) = i32::try_from(pid) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(raw),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            Effect::Teardown { name, job, then } => {
                let cgroups = self.options.cgroups.clone();
                let run_dir = self.options.run_root.join(&name);
                let inbox = inbox.clone();
                let service = name.clone();
                tokio::spawn(async move {
                    let work = move || teardown(cgroups.as_deref(), &service, &run_dir, &job);
                    if let Err(e) = tokio::task::spawn_blocking(work).await {
                        tracing::warn!(service = %name, "cgroup teardown: {e}");
                    }
                    let _ = inbox.send(Input::OpDone(name, OpResult::TornDown(then)));
                });
            }
            Effect::RemoveRunDir { name } => {
                let dir = self.options.run_root.join(name);
                tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir));
            }
            Effect::Timer { name, token, at } => {
                let inbox = inbox.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    let _ = inbox.send(Input::Timer { name, token });
                });
            }
            Effect::Probe {
                name,
                run,
                probe,
                env,
            } => {
                let task = tokio::spawn(probe_loop(
                    name.clone(),
                    run,
                    probe,
                    env,
                    self.reaper.clone(),
                    inbox.clone(),
                ));
                if let Some(old) = self.probes.insert(name, task) {
                    old.abort();
                }
            }
            Effect::StopProbe { name } => {
                if let Some(p) = self.probes.remove(&name) {
                    p.abort();
                }
            }
            Effect::ReadFailureOutput { name, run } => {
                read_failure_output(self.options.log_root.join(&name), name, run, inbox.clone());
            }
            Effect::AskStatus { name, shim } => {
                let client = self.client(&name).filter(|c| c.generation() == shim);
                let inbox = inbox.clone();
                tokio::spawn(async move {
                    let result = match client {
                        None => OpResult::StatusFailed("no connection to its shim".into()),
                        Some(c) => match c.call(Op::Status).await {
                            Ok(s) => OpResult::Status(s),
                            Err(e) => OpResult::StatusFailed(e.to_string()),
                        },
                    };
                    let _ = inbox.send(Input::OpDone(name, result));
                });
            }
        }
    }

    async fn reach_shims(&mut self) -> Vec<Input> {
        let Ok(entries) = std::fs::read_dir(&self.options.run_root) else {
            return Vec::new();
        };
        // Every shim is reached at once: a stuck one costs adoption one call timeout, not one
        // per shim.
        let mut reaching = tokio::task::JoinSet::new();
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let run_dir = entry.path();
            let shim_tx = self.shim_tx.clone();
            reaching.spawn(async move {
                let reached = match connect_patiently(&name, &run_dir, shim_tx).await {
                    Ok(c) => {
                        let client = Arc::new(c);
                        let answer = client.call(Op::Status).await;
                        Ok((client, answer))
                    }
                    Err(e) => Err(e),
                };
                (name, run_dir, reached)
            });
        }
        let mut found = Vec::new();
        while let Some(joined) = reaching.join_next().await {
            match joined {
                Ok(one) => found.push(one),
                Err(e) => tracing::warn!("adoption task: {e}"),
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut inputs = Vec::new();
        let mut found_client = HashMap::new();
        let found: Vec<_> = found
            .into_iter()
            .map(|(name, run_dir, reached)| {
                let reached = reached.map(|(client, answer)| match answer {
                    Ok(status) => Ok((client, status)),
                    Err(e) => {
                        found_client.insert(name.clone(), client);
                        Err(e)
                    }
                });
                (name, run_dir, reached)
            })
            .collect();
        for (name, run_dir, reached) in found {
            match reached {
                Ok(Ok((client, status))) => {
                    let shim = client.generation();
                    self.shims
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(name.clone(), client);
                    inputs.push(Input::Adopted { name, shim, status });
                }
                Ok(Err(e)) => {
                    // Kept: the connection is how it answers later, or tells it is gone.
                    let client = found_client.remove(&name);
                    tracing::warn!(service = %name, "shim did not answer: {e}");
                    if let Some(client) = client {
                        let shim = client.generation();
                        self.shims
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(name.clone(), client);
                        inputs.push(Input::ShimUnanswered {
                            name,
                            shim,
                            why: e.to_string(),
                        });
                    }
                }
                Err(why) => {
                    let message = end_orphaned_group(&run_dir, &why);
                    inputs.push(Input::ShimGone { name, message });
                }
            }
        }
        inputs
    }

    fn shim(&self, name: &str) -> Option<Arc<ShimClient>> {
        self.client(name)
    }

    fn shutdown(&mut self) {
        for (_, p) in self.probes.drain() {
            p.abort();
        }
        self.shims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

/// A shim that died left its run's process group without a keeper: end it rather than run a
/// second copy next to it — but only if the pid file proves that the group is still the run's
/// (same boot, start time and cgroup): the run dir outlives reboots and pids are reused. Returns
/// what was done, when there is a pid file.
fn end_orphaned_group(run_dir: &Path, why: &str) -> Option<String> {
    let text = std::fs::read_to_string(run_dir.join(PID_FILE_NAME)).ok()?;
    Some(match PidRecord::parse(&text) {
        Some(r) if r.still_running() => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(r.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            format!(
                "shim was gone ({why}); killed its orphaned process group {}",
                r.pid
            )
        }
        Some(r) => format!(
            "shim was gone ({why}); its run's process {} is no longer running \
             (another boot, start time or cgroup): nothing signalled",
            r.pid
        ),
        None => format!(
            "shim was gone ({why}); its pid file does not prove which process it \
             started ({:?}): nothing signalled",
            text.trim()
        ),
    })
}

/// Does a teardown (on a blocking thread).
fn teardown(cgroups: Option<&Hierarchy>, name: &str, run_dir: &Path, job: &TeardownJob) {
    match job {
        TeardownJob::Remove { cgroup } => end_cgroup(cgroups, cgroup, true),
        TeardownJob::LostRun { cgroup } => {
            end_cgroup(cgroups, cgroup, false);
            let _ = std::fs::remove_file(run_dir.join(PID_FILE_NAME));
        }
        TeardownJob::DeadShim => {
            // Whatever still runs in its cgroup: the service's, or a transient one's.
            let mut rels = vec![format!("{}/{name}", cloudlet_cgroups::SERVICES)];
            if let Some(h) = cgroups
                && let Ok(groups) = h.list(cloudlet_cgroups::GROUPS)
            {
                rels.extend(groups.into_iter().map(|g| format!("{g}/{name}")));
            }
            for rel in rels {
                end_cgroup(cgroups, &rel, false);
            }
            let _ = std::fs::remove_dir_all(run_dir);
        }
    }
}

/// Connects to a shim left by an earlier server. Only "no such socket" and "refused" mean the
/// shim is gone; any other error (EAGAIN, EMFILE, a full backlog) is tried again after 100, 200,
/// 400 and 800 ms, with a warning each time, and counts as gone only after that.
async fn connect_patiently(
    name: &str,
    run_dir: &Path,
    shim_tx: mpsc::UnboundedSender<ShimEvent>,
) -> Result<ShimClient, String> {
    let mut wait = Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match ShimClient::connect(name, run_dir, shim_tx.clone()).await {
            Ok(client) => return Ok(client),
            Err(SupervisorError::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(format!("its socket: {source}"));
            }
            Err(e) if attempt > 4 => return Err(format!("{e} ({attempt} attempts)")),
            Err(e) => {
                tracing::warn!(service = %name, "shim not reached yet, trying again: {e}");
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
    }
}

/// The highest run number in a service's logs (0 when there are none).
async fn last_logged_run(dir: &Path) -> u64 {
    let dir = dir.to_owned();
    let query = cloudlet_logs::LogQuery {
        tail: Some(1),
        ..Default::default()
    };
    tokio::task::spawn_blocking(move || cloudlet_logs::read(&dir, &query))
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|records| records.last().map(|r| r.run))
        .unwrap_or(0)
}

/// Reads the last lines run `run` of a failed oneshot step wrote (in `dir`), off the loop; they
/// arrive as [`Input::FailureOutput`].
fn read_failure_output(dir: PathBuf, name: String, run: u64, inbox: Inbox) {
    const LINES: usize = 5;
    const MAX_CHARS: usize = 1000;
    tokio::spawn(async move {
        let query = cloudlet_logs::LogQuery {
            run: cloudlet_logs::RunSelect::Current,
            ..Default::default()
        };
        let read = tokio::task::spawn_blocking(move || cloudlet_logs::read(&dir, &query));
        let Ok(Ok(records)) = read.await else { return };
        let lines: Vec<String> = records
            .iter()
            .filter(|r| r.run == run && r.stream != cloudlet_logs::Stream::Event)
            .map(|r| r.text.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        let tail = &lines[lines.len().saturating_sub(LINES)..];
        if tail.is_empty() {
            return;
        }
        let mut output = tail.join(" | ");
        if output.chars().count() > MAX_CHARS {
            let keep: String = output.chars().rev().take(MAX_CHARS).collect();
            output = format!("…{}", keep.chars().rev().collect::<String>());
        }
        let _ = inbox.send(Input::FailureOutput { name, run, output });
    });
}

/// How often a run that has not passed its probe yet is probed.
const STARTUP_PROBE_INTERVAL: Duration = Duration::from_millis(200);

async fn probe_loop(
    name: String,
    run: u64,
    probe: ProbeSpec,
    env: BTreeMap<String, String>,
    reaper: Reaper,
    inbox: Inbox,
) {
    tokio::time::sleep(probe.initial_delay).await;
    // Until the first success of a run, probe every STARTUP_PROBE_INTERVAL (or the period, if
    // shorter): dependants should not wait a whole period for a service that came up at once.
    let mut passed = false;
    loop {
        let started = tokio::time::Instant::now();
        let result = probe::check(&probe.probe, probe.timeout, &env, &reaper).await;
        passed |= result.is_ok();
        if inbox
            .send(Input::Probe {
                name: name.clone(),
                run,
                result,
            })
            .is_err()
        {
            return;
        }
        let every = if passed {
            probe.period
        } else {
            probe.period.min(STARTUP_PROBE_INTERVAL)
        };
        // `every` is at most ten years (`ServiceConfig::check`); if a clock still cannot reach
        // it, sleeping `every` from now (tokio caps it) is as good.
        match started.checked_add(every) {
            Some(at) => tokio::time::sleep_until(at).await,
            None => tokio::time::sleep(every).await,
        }
    }
}

/// Creates the service's cgroup and applies its limits. Returns the cgroup's path for the shim
/// and, when some limit could not be applied, `not enforced (<why>)`; `enforced` otherwise.
fn prepare_cgroup(
    cgroups: Option<&Hierarchy>,
    config: &ServiceConfig,
) -> Result<(Option<PathBuf>, Option<String>), cloudlet_cgroups::CgroupError> {
    let Some(h) = cgroups else {
        return Ok((None, None));
    };
    let cg = h.service(&config.cgroup)?;
    cg.create()?;
    let mut limits = config.limits.clone();
    let mut why: Vec<String> = Vec::new();
    for io in &config.io {
        match cloudlet_cgroups::block_device_of(&io.device) {
            Ok(device) => limits.io.push(cloudlet_cgroups::IoLimit {
                device,
                rbps: io.rbps,
                wbps: io.wbps,
                riops: io.riops,
                wiops: io.wiops,
            }),
            Err(e) => why.push(format!("io: {e}")),
        }
    }
    let not_applied = cg.apply_limits(&limits)?;
    why.extend(not_applied.iter().map(ToString::to_string));
    let note = if why.is_empty() {
        "enforced".to_owned()
    } else {
        format!("not enforced ({})", why.join("; "))
    };
    Ok((Some(cg.path().to_owned()), Some(note)))
}

fn place_shim(h: &Hierarchy, pid: u32) -> Result<(), cloudlet_cgroups::CgroupError> {
    let cg = h.service(SHIMS_CGROUP)?;
    cg.create()?;
    cg.add_process(pid)
}

/// Kills whatever runs in a service's cgroup (a run whose shim is gone) and, when `remove`,
/// removes the cgroup once it is empty. Blocks up to 5 s: call it on a blocking thread.
fn end_cgroup(cgroups: Option<&Hierarchy>, rel: &str, remove: bool) {
    let Some(h) = cgroups else { return };
    let Ok(cg) = h.service(rel) else { return };
    if !cg.exists() {
        return;
    }
    if cg.is_populated().unwrap_or(false) {
        if let Err(e) = cg.kill() {
            tracing::warn!("kill cgroup {rel}: {e}");
        }
        if let Err(e) = cg.wait_empty(Duration::from_secs(5)) {
            tracing::warn!("cgroup {rel}: {e}");
        }
    }
    if remove && let Err(e) = cg.remove() {
        tracing::warn!("remove cgroup {rel}: {e}");
    }
}
