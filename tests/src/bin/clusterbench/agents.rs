//! The simulated agents. Each does over the wire exactly what `cloudlet agent` does
//! (`components/node/src/agent.rs`): it fetches the CA bundle over an unverified connection and
//! checks it against the token's pin, joins with a CSR of a fresh key over a verified connection,
//! then heartbeats over its own mutual-TLS connection (a realistic node status and service list)
//! and fetches its assignments whenever their revision changes. What each call took and how it
//! ended goes to a [`Tally`].
//!
//! It must never reach the server other than through the API, as a real agent would, and never
//! write a key anywhere: the keys live in this process's memory only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cloudlet_api::dto::{
    DesiredState, ExitInfo, Heartbeat, HeartbeatResponse, JoinRequest, NodeCondition, NodeDisk,
    NodeResources, NodeStatus, ServiceState, ServiceStatus,
};
use cloudlet_api::{ApiError, Client, heartbeat};
use cloudlet_pki::{KeyPair, ReloadingResolver, Token};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, timeout};

/// How long one call may take, as the real agent allows it.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a join refused with 409 is tried again, and the backoff (times the attempt).
const JOIN_RETRIES: u32 = 20;
const JOIN_BACKOFF: Duration = Duration::from_millis(50);
/// The agent API every simulated node announces: the server never calls it in this bench.
const ADDRESS: &str = "https://127.0.0.1:1";
/// The services every simulated node reports, with the label `tier`.
const SERVICES: [(&str, &str); 8] = [
    ("postgres", "data"),
    ("redis", "data"),
    ("api", "app"),
    ("worker", "app"),
    ("nginx", "edge"),
    ("node-exporter", "ops"),
    ("log-shipper", "ops"),
    ("backup", "ops"),
];

/// A joined agent: its node name and its mutual-TLS client.
#[derive(Debug)]
pub struct Agent {
    /// The node name, `sim-0001`...
    pub name: String,
    client: Client,
}

/// The joins of every agent.
#[derive(Debug)]
pub struct Joined {
    /// The agents, in name order.
    pub agents: Vec<Agent>,
    /// From the first join's start to the last one's end.
    pub took: Duration,
    /// What each join took (CA download, pin check, key, CSR, join), waiting for a slot aside.
    pub each: Vec<Duration>,
    /// Joins the server refused with 409 ("too many joins at once; try again"), retried.
    pub refused: u32,
}

/// The name of the agent with 0-based `index`.
pub fn name(index: usize) -> String {
    format!("sim-{:04}", index + 1)
}

/// Joins `count` agents to the server at `url` with `token`, at most `parallel` at once. Fails
/// at the first join that fails (the others are abandoned).
pub async fn join_all(
    url: &str,
    token: &str,
    count: usize,
    parallel: usize,
) -> Result<Joined, String> {
    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(parallel));
    let mut joins = JoinSet::new();
    for index in 0..count {
        let (slots, url, token) = (Arc::clone(&slots), url.to_owned(), token.to_owned());
        joins.spawn(async move {
            let _slot = slots
                .acquire_owned()
                .await
                .map_err(|e| format!("join slots: {e}"))?;
            let begun = Instant::now();
            let (agent, refused) = join(&url, &token, name(index)).await?;
            Ok::<_, String>((index, agent, begun.elapsed(), refused))
        });
    }
    let mut joined = Vec::with_capacity(count);
    while let Some(done) = joins.join_next().await {
        joined.push(done.map_err(|e| format!("a join task: {e}"))??);
    }
    let took = started.elapsed();
    joined.sort_by_key(|(index, ..)| *index);
    let each = joined.iter().map(|(_, _, took, _)| *took).collect();
    let refused = joined.iter().map(|(.., refused)| refused).sum();
    Ok(Joined {
        agents: joined.into_iter().map(|(_, agent, ..)| agent).collect(),
        took,
        each,
        refused,
    })
}

/// One join, as `cloudlet agent --token` does it: nothing secret is sent before the server's CA
/// matches the token's pin. Returns the agent and how many times the server refused the join
/// with 409 before it took it.
async fn join(url: &str, token_text: &str, name: String) -> Result<(Agent, u32), String> {
    let failed = |what: &str, e: &dyn std::fmt::Display| format!("{name}: {what}: {e}");
    let token = Token::parse(token_text).map_err(|e| failed("the token", &e))?;
    let insecure = Client::https(
        url,
        Arc::new(cloudlet_pki::unverified_client_config().map_err(|e| e.to_string())?),
    )
    .map_err(|e| failed("the URL", &e))?;
    let bundle = timeout(CALL_TIMEOUT, insecure.cacerts())
        .await
        .map_err(|_| failed("GET /v1/cacerts", &"no answer"))?
        .map_err(|e| failed("GET /v1/cacerts", &e))?;
    let pinned: Vec<_> = cloudlet_pki::certs_from_pem(&bundle)
        .map_err(|e| failed("the CA bundle", &e))?
        .into_iter()
        .filter(|c| cloudlet_pki::pin_of(c) == token.ca_hash())
        .collect();
    if pinned.is_empty() {
        return Err(failed("the CA bundle", &"no CA matches the token's pin"));
    }
    let verified = Client::https(
        url,
        Arc::new(
            cloudlet_pki::verified_client_config_without_cert(&pinned)
                .map_err(|e| failed("the pinned CA", &e))?,
        ),
    )
    .map_err(|e| failed("the URL", &e))?;
    let key = KeyPair::generate().map_err(|e| failed("a key", &e))?;
    let request = JoinRequest {
        token: token.to_string(),
        node_name: name.clone(),
        csr: key.csr_pem(&name).map_err(|e| failed("the CSR", &e))?,
        labels: BTreeMap::from([("bench".to_owned(), "clusterbench".to_owned())]),
        address: Some(ADDRESS.to_owned()),
        node_secret: Some(format!("clusterbench-{name}-{}", std::process::id())),
    };
    // A token's use count is a compare-and-swap: joins that lose it too often are refused with
    // 409 "try again", which a real agent meets as an exit and a restart by its service manager.
    let mut refused = 0;
    let answer = loop {
        match timeout(CALL_TIMEOUT, verified.join(&request)).await {
            Err(_) => return Err(failed("POST /v1/join", &"no answer")),
            Ok(Ok(answer)) => break answer,
            Ok(Err(ApiError::Status { code: 409, .. })) if refused < JOIN_RETRIES => {
                refused += 1;
                tokio::time::sleep(JOIN_BACKOFF * refused).await;
            }
            Ok(Err(e)) => return Err(failed("POST /v1/join", &e)),
        }
    };
    let resolver = ReloadingResolver::new(&answer.certificate, &key.to_pem())
        .map_err(|e| failed("the certificate", &e))?;
    let roots = cloudlet_pki::certs_from_pem(&answer.ca).map_err(|e| failed("the CAs", &e))?;
    let config = cloudlet_pki::client_config(&roots, Arc::new(resolver))
        .map_err(|e| failed("the TLS config", &e))?;
    let client = Client::https(url, Arc::new(config)).map_err(|e| failed("the URL", &e))?;
    Ok((Agent { name, client }, refused))
}

/// What the agents saw, since the last [`Tally::take`].
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Heartbeats answered.
    pub ok: u64,
    /// Heartbeats that failed or timed out.
    pub failed: u64,
    /// What each answered heartbeat took, from the request to the whole answer.
    pub latencies: Vec<Duration>,
    /// Why heartbeats failed, with how often.
    pub errors: BTreeMap<String, u64>,
    /// Assignment fetches (a changed revision), answered.
    pub assignments_ok: u64,
    /// Assignment fetches that failed.
    pub assignments_failed: u64,
}

/// The counts of every agent, shared.
#[derive(Debug, Default)]
pub struct Tally {
    counts: Mutex<Counts>,
}

impl Tally {
    /// The counts so far, which start again from zero.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.lock())
    }

    fn beat(&self, took: Duration, result: Result<(), String>) {
        let mut counts = self.lock();
        match result {
            Ok(()) => {
                counts.ok += 1;
                counts.latencies.push(took);
            }
            Err(error) => {
                counts.failed += 1;
                *counts.errors.entry(error).or_default() += 1;
            }
        }
    }

    fn assignments(&self, ok: bool) {
        let mut counts = self.lock();
        match ok {
            true => counts.assignments_ok += 1,
            false => counts.assignments_failed += 1,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts every agent's heartbeat loop, their first beats spread evenly over one `interval`.
/// The loops run until the set is dropped.
pub fn start_beats(agents: Vec<Agent>, interval: Duration, tally: &Arc<Tally>) -> JoinSet<()> {
    let start = Instant::now();
    let count = u32::try_from(agents.len()).unwrap_or(u32::MAX).max(1);
    let mut beats = JoinSet::new();
    for (index, agent) in (0..).zip(agents) {
        let first = start + interval * index / count;
        beats.spawn(beat(agent, first, interval, Arc::clone(tally)));
    }
    beats
}

/// One agent's loop: a heartbeat every `interval` from `first`, and the assignments when the
/// revision the server answers differs from the one last fetched.
async fn beat(agent: Agent, first: Instant, interval: Duration, tally: Arc<Tally>) {
    let mut tick = tokio::time::interval_at(first, interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut node, services) = report(&agent.name);
    // As `cloudlet agent` does: only what changed since the last acknowledged heartbeat.
    let mut sender = heartbeat::Sender::new();
    let mut synced: Option<u64> = None;
    loop {
        tick.tick().await;
        refresh(&mut node);
        let heartbeat = sender.next(node.clone(), services.clone());
        let sent = Instant::now();
        let answer = match timeout(
            CALL_TIMEOUT,
            agent.client.heartbeat(&agent.name, &heartbeat),
        )
        .await
        {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                sender.failed();
                tally.beat(sent.elapsed(), Err(error.to_string()));
                continue;
            }
            Err(_) => {
                sender.failed();
                tally.beat(
                    sent.elapsed(),
                    Err(format!("no answer in {CALL_TIMEOUT:?}")),
                );
                continue;
            }
        };
        sender.answered(&answer);
        tally.beat(sent.elapsed(), Ok(()));
        if synced != Some(answer.assignments_revision) {
            match timeout(CALL_TIMEOUT, agent.client.assignments(&agent.name)).await {
                Ok(Ok(assignments)) => {
                    synced = Some(answer.assignments_revision.max(assignments.revision));
                    tally.assignments(true);
                }
                _ => tally.assignments(false),
            }
        }
    }
}

/// What changes between two beats of a real node: when it was read, and what is free.
fn refresh(node: &mut NodeStatus) {
    let now = jiff::Timestamp::now();
    let jitter = u64::from(now.subsec_nanosecond().unsigned_abs() % 65_536) * 4096;
    node.observed_at = now;
    node.memory_available_bytes = 5 * GIB + jitter;
    node.pids_in_use = 412 + jitter % 37;
}

const GIB: u64 = 1 << 30;

/// The sizes of a heartbeat's JSON: full, and a delta of a node whose services did not change.
pub fn heartbeat_sizes() -> (usize, usize) {
    let (node, services) = report(&name(0));
    let mut sender = heartbeat::Sender::new();
    let full = sender.next(node.clone(), services.clone());
    sender.answered(&HeartbeatResponse {
        assignments_revision: 0,
        ca_hash: String::new(),
        deltas: true,
    });
    let delta = sender.next(node, services);
    let size = |h: &Heartbeat| serde_json::to_vec(h).map_or(0, |b| b.len());
    (size(&full), size(&delta))
}

/// What a realistic node reports: a 4-CPU 8 GiB node with two watched disks, its five conditions
/// (as `cloudlet agent` reports them: four pressures and LimitsNotEnforced) and eight running
/// services.
pub fn report(name: &str) -> (NodeStatus, Vec<ServiceStatus>) {
    let now = jiff::Timestamp::now();
    let condition = |kind: &str, reason: &str| NodeCondition {
        kind: kind.to_owned(),
        status: false,
        severity: None,
        reason: reason.to_owned(),
        since: now,
    };
    let disk = |path: &str, mount: &str, total: u64, free: u64| NodeDisk {
        path: path.to_owned(),
        mount_point: mount.to_owned(),
        total_bytes: total,
        free_bytes: free,
        free_pct: 100.0 * free as f64 / total as f64,
    };
    let capacity = NodeResources {
        cpu_millis: 4000,
        memory_bytes: 8 * GIB,
        pids: 32768,
    };
    let reserve = NodeResources {
        cpu_millis: 250,
        memory_bytes: GIB / 2,
        pids: 1024,
    };
    let node = NodeStatus {
        name: name.to_owned(),
        capacity,
        reserve,
        allocatable: NodeResources {
            cpu_millis: capacity.cpu_millis - reserve.cpu_millis,
            memory_bytes: capacity.memory_bytes - reserve.memory_bytes,
            pids: capacity.pids - reserve.pids,
        },
        requested: NodeResources {
            cpu_millis: 2600,
            memory_bytes: 5 * GIB,
            pids: 2048,
        },
        memory_available_bytes: 5 * GIB,
        pids_in_use: 412,
        disks: vec![
            disk("/var/lib/cloudlet", "/", 64 * GIB, 41 * GIB),
            disk("/srv/data", "/srv", 512 * GIB, 300 * GIB),
        ],
        conditions: vec![
            condition(
                "MemoryPressure",
                "memory: 5.0 GiB available of 8.0 GiB, PSI some avg10 0.0%",
            ),
            condition(
                "DiskPressure",
                "disks: least free /var/lib/cloudlet: 64.1% free, 41.0 GiB of 64.0 GiB",
            ),
            condition("PIDPressure", "pids: 412 of 32768 in use (1.3%)"),
            condition("CPUPressure", "cpu: tasks stalled 0.4% of the last 10 s"),
            condition(
                "LimitsNotEnforced",
                "cpu, memory, pids and io limits are enforced by cgroup v2",
            ),
        ],
        limits: "enforced".to_owned(),
        observed_at: now,
        roles: vec!["compute".to_owned()],
        labels: BTreeMap::from([
            ("bench".to_owned(), "clusterbench".to_owned()),
            ("zone".to_owned(), "z1".to_owned()),
        ]),
        state: String::new(),
        cordoned: false,
        draining: false,
        address: Some(ADDRESS.to_owned()),
        last_heartbeat: None,
        cert_not_after: None,
        cert_serial: None,
        services: 0,
    };
    let services = (1000..)
        .zip(SERVICES)
        .map(|(pid, (service, tier))| ServiceStatus {
            name: service.to_owned(),
            node: name.to_owned(),
            state: ServiceState::Running,
            ready: true,
            pid: Some(pid),
            restarts: u64::from(pid % 3),
            run: u64::from(pid % 3) + 1,
            last_exit: (pid % 3 != 0).then(|| ExitInfo {
                code: Some(1),
                signal: None,
                reason: "Error".to_owned(),
                at: now,
            }),
            since: now,
            waiting_for: Vec::new(),
            message: None,
            labels: BTreeMap::from([
                ("app".to_owned(), service.to_owned()),
                ("tier".to_owned(), tier.to_owned()),
            ]),
            desired: DesiredState::Running,
            next_restart_at: None,
            dropped_log_lines: 0,
            owner: None,
            group: None,
            limits: Some("enforced".to_owned()),
            spec_digest: None,
        })
        .collect();
    (node, services)
}

/// The value at `percent` of `samples` (nearest rank), `None` when there are none.
pub fn percentile(samples: &[Duration], percent: usize) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let last = sorted.len().checked_sub(1)?;
    sorted.get((last * percent.min(100)).div_ceil(100)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_what_a_real_node_reports() {
        let (node, services) = report(&name(0));
        assert_eq!(node.name, "sim-0001");
        assert_eq!((node.disks.len(), node.conditions.len()), (2, 5));
        assert_eq!(services.len(), 8);
        assert!(services.iter().all(|s| s.node == "sim-0001"));
        // It is what the server's decoder expects, every key present.
        let beat = heartbeat::Sender::new().next(node, services);
        let json = serde_json::to_value(&beat).unwrap();
        let back: Heartbeat = serde_json::from_value(json).unwrap();
        assert_eq!(back, beat);
        let (full, delta) = heartbeat_sizes();
        assert!(
            delta * 2 < full,
            "a steady node's delta is small: {delta} vs {full}"
        );
    }

    #[test]
    fn percentiles() {
        let ms: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 50), Some(Duration::from_millis(51)));
        assert_eq!(percentile(&ms, 99), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&ms, 0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50), None);
    }
}
