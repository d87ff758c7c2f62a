//! OVSDB latencies against the lab's `ovsdb-server`: small transactions (set
//! `external_ids:bench` on the root row) by cloudlet's client, by `ovsdb-client transact` and by
//! `ovs-vsctl --no-wait set` (a process a call, as Cloudpods' host agent does it), interleaved
//! call by call; and monitor notifications (a change sent by cloudlet's client until it is
//! delivered) to cloudlet's `State::monitor` and to `ovsdb-client monitor`, one after the other.
//!
//! Owns: those measurements and the check that every write landed. Must never: write anything
//! but the `bench` key of the root row's `external_ids`, or leave a process it started running
//! (the peer's monitor is killed and reaped before its function returns).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloudlet_netovs::ovsdb::vswitch::{DATABASE, State};
use cloudlet_netovs::ovsdb::{Client, ClientOptions, Datum, Mutation, Mutator, Operation};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::mpsc;

use crate::lab::{self, Lab};
use crate::report::{Line, Samples};

/// How long a change may take to reach a monitor before the bench gives up.
const NOTIFY_LIMIT: Duration = Duration::from_secs(5);
/// The key every write sets.
const KEY: &str = "bench";

/// Calls made before measuring, on each side (connections, caches, page faults).
pub const WARMUP: usize = 20;

/// `external_ids:bench=value` on the root row: delete the key, insert it with the value (a
/// `mutate`, so other keys stay).
fn set_bench(value: &str) -> Vec<Operation> {
    vec![Operation::mutate(
        "Open_vSwitch",
        Vec::new(),
        vec![
            Mutation::new("external_ids", Mutator::Delete, Datum::set([KEY])),
            Mutation::new("external_ids", Mutator::Insert, Datum::map([(KEY, value)])),
        ],
    )]
}

/// Connects a client of cloudlet's to the lab.
async fn connect(lab: &Lab) -> Result<Client, String> {
    Client::connect(lab.endpoint(), ClientOptions::default())
        .await
        .map_err(|e| format!("connecting to {}: {e}", lab.db()))
}

/// The root row's `external_ids:bench`, read by `client`.
async fn bench_value(client: &Client) -> Result<Option<String>, String> {
    let state = State::read(client)
        .await
        .map_err(|e| format!("reading the database: {e}"))?;
    Ok(state.root.and_then(|r| r.external_ids.get(KEY).cloned()))
}

/// Runs `program args` to completion on this worker thread (the runtime goes on elsewhere) and
/// returns how long it took; an error when it fails or `check` rejects its stdout.
fn timed_process(
    program: &str,
    args: &[&str],
    check: impl Fn(&str) -> bool,
) -> Result<Duration, String> {
    tokio::task::block_in_place(|| {
        let start = Instant::now();
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("`{program}`: {e}"))?;
        let took = start.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !check(&stdout) {
            return Err(format!(
                "`{program} {}` failed ({}): {} {}",
                args.join(" "),
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(took)
    })
}

/// `calls` transactions by each side, interleaved call by call after [`WARMUP`] unmeasured
/// rounds: cloudlet's client (one connection, kept), `ovsdb-client transact` and `ovs-vsctl`.
pub async fn transact(lab: &Lab, calls: usize) -> Result<Vec<Line>, String> {
    let client = connect(lab).await?;
    let db = lab.db();
    let db_flag = format!("--db={db}");
    let (mut ours, mut raw, mut vsctl) = Default::default();
    let mut last = String::new();
    for i in 0..WARMUP + calls {
        let measured = i >= WARMUP;
        let keep = |samples: &mut Samples, took| {
            if measured {
                samples.push(took);
            }
        };

        let value = format!("c{i}");
        let ops = set_bench(&value);
        let start = Instant::now();
        client
            .transact(DATABASE, &ops)
            .await
            .map_err(|e| format!("transact {i}: {e}"))?;
        keep(&mut ours, start.elapsed());

        // The same operation, as ovsdb-client sends it: one mutate that must match the row.
        let value = format!("t{i}");
        let params: Vec<Value> = std::iter::once(json!(DATABASE))
            .chain(set_bench(&value).iter().map(Operation::to_json))
            .collect();
        let request = Value::Array(params).to_string();
        let took = timed_process("ovsdb-client", &["transact", &db, &request], |out| {
            out.contains("\"count\":1")
        })?;
        keep(&mut raw, took);

        let value = format!("v{i}");
        let set = format!("external_ids:{KEY}={value}");
        let took = timed_process(
            "ovs-vsctl",
            &[
                &db_flag,
                "--no-wait",
                "--timeout=10",
                "set",
                "Open_vSwitch",
                ".",
                &set,
            ],
            |_| true,
        )?;
        keep(&mut vsctl, took);
        last = value;
    }
    let stored = bench_value(&client).await?;
    if stored.as_deref() != Some(last.as_str()) {
        return Err(format!(
            "external_ids:{KEY} is {stored:?} after the transactions, not {last:?}"
        ));
    }
    Ok(vec![
        Line::new("cloudlet client (one connection)", ours),
        Line::new("ovsdb-client transact (a process a call)", raw),
        Line::new("ovs-vsctl --no-wait set (a process a call)", vsctl),
    ])
}

/// What a monitor saw, and when it was delivered.
type Seen = Result<(String, Instant), String>;

/// `changes` changes made by cloudlet's client, each until cloudlet's `State::monitor` (on a
/// connection of its own, each event decoded and applied to a `State`) delivers it, then as many
/// until `ovsdb-client monitor` prints it. Both are timed from the moment the change is sent.
pub async fn monitor(lab: &Lab, changes: usize) -> Result<Vec<Line>, String> {
    let writer = connect(lab).await?;

    let watcher = connect(lab).await?;
    let mut events = State::monitor(&watcher)
        .await
        .map_err(|e| format!("monitor: {e}"))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    let task = tokio::spawn(async move {
        let mut state = State::default();
        while let Some(event) = events.next().await {
            let seen = match state.apply(&event) {
                Ok(()) => {
                    let bench = state.root.as_ref().and_then(|r| r.external_ids.get(KEY));
                    Ok((bench.cloned().unwrap_or_default(), Instant::now()))
                }
                Err(e) => Err(format!("applying a monitor event: {e}")),
            };
            if tx.send(seen).is_err() {
                break;
            }
        }
    });
    // The initial snapshot.
    next_seen(&mut rx, "cloudlet's monitor").await?;
    let ours = notifications(
        &writer,
        &mut rx,
        "m",
        changes,
        "cloudlet's monitor",
        |seen, v| seen == v,
    )
    .await;
    task.abort();
    drop(watcher);
    let ours = ours?;

    let log = lab.path("ovsdb-client-monitor.log");
    let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut command = tokio::process::Command::new("ovsdb-client");
    command
        .args(["--format=csv", "monitor", &lab.db(), DATABASE])
        .args(["Open_vSwitch", "external_ids"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .process_group(0);
    let mut child = lab::spawn_tracked(|| command.spawn(), tokio::process::Child::id)
        .map_err(|e| format!("starting ovsdb-client monitor: {e}"))?;
    let pid = child.id();
    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            loop {
                let seen = match lines.next_line().await {
                    Ok(Some(line)) => Ok((line, Instant::now())),
                    Ok(None) => Err("ovsdb-client monitor closed its stdout".to_owned()),
                    Err(e) => Err(format!("reading ovsdb-client monitor: {e}")),
                };
                let end = seen.is_err();
                if tx.send(seen).is_err() || end {
                    break;
                }
            }
        });
    }
    let peer = async {
        // Its first table: the header, then the row as it is (action `initial`).
        while !next_seen(&mut rx, "ovsdb-client monitor")
            .await?
            .0
            .contains(",initial,")
        {}
        // A modification prints the old row, then `,new,{bench=<value>}`.
        notifications(
            &writer,
            &mut rx,
            "p",
            changes,
            "ovsdb-client monitor",
            |line, v| line.contains(",new,") && line.contains(&format!("={v}}}")),
        )
        .await
    }
    .await;
    lab::forget(pid);
    let _ = child.kill().await;
    let peer = peer.map_err(|e| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        format!("{e}; its stderr: {}", text.trim())
    })?;
    Ok(vec![
        Line::new("cloudlet State::monitor (decoded, applied)", ours),
        Line::new("ovsdb-client monitor (its stdout line)", peer),
    ])
}

/// The next thing a monitor saw, within [`NOTIFY_LIMIT`].
async fn next_seen(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    who: &str,
) -> Result<(String, Instant), String> {
    match tokio::time::timeout(NOTIFY_LIMIT, rx.recv()).await {
        Ok(Some(seen)) => seen,
        Ok(None) => Err(format!("{who} ended")),
        Err(_) => Err(format!("{who} delivered nothing for {NOTIFY_LIMIT:?}")),
    }
}

/// [`WARMUP`] + `changes` writes of `<prefix><i>` by `writer`, each timed from its sending until
/// `rx` yields something `shows` it; the measured ones.
async fn notifications(
    writer: &Client,
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    prefix: &str,
    changes: usize,
    who: &str,
    shows: impl Fn(&str, &str) -> bool,
) -> Result<Samples, String> {
    let mut samples = Samples::default();
    for i in 0..WARMUP + changes {
        let value = format!("{prefix}{i}");
        let start = Instant::now();
        writer
            .transact(DATABASE, &set_bench(&value))
            .await
            .map_err(|e| format!("transact {value}: {e}"))?;
        let delivered = loop {
            let (seen, at) = next_seen(rx, who)
                .await
                .map_err(|e| format!("waiting for {value}: {e}"))?;
            if shows(&seen, &value) {
                break at;
            }
        };
        if i >= WARMUP {
            samples.push(delivered.saturating_duration_since(start));
        }
    }
    Ok(samples)
}
