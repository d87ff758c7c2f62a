//! The event log: a task that writes events into the store in batches and keeps at most
//! `max_events` of them (the oldest go first).
//!
//! Writing is off every hot path: senders never wait for the store. Events reach the writer
//! through a queue of [`QUEUE`] events; when the store refuses a write (its disk is full), they
//! wait in memory (bounded by `max_events`) and are written once the store accepts writes again.
//! Nothing here grows without a bound: a local event that finds the queue full is dropped, and
//! every dropped one is counted and reported as an event of its own (`EventsDropped`); a batch
//! an agent pushes is taken whole or refused whole ([`EventSink::push`]: the agent keeps it and
//! pushes again later).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cloudlet_api::dto::{Event, EventsQuery, ExitInfo};
use cloudlet_api::{ApiError, EventStream};
use cloudlet_store::{EventKind, KeyValue, Op, Store, Txn};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::NodeError;
use crate::records::{EVENTS, EventRecord, event_key, event_seq};

/// Events that wait for the writer, at most. The writer takes up to [`BATCH`] per transaction
/// (a few milliseconds); 300 services restarting at once make some 600 events, and an agent
/// pushes at most [`MAX_PUSH`] at a time.
pub const QUEUE: usize = 4096;

/// The most events an agent may push in one request: its batches are 500 (`agent.rs`).
pub const MAX_PUSH: usize = 1000;

/// Sends events to the writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::Sender<EventRecord>,
    /// Events dropped because the queue was full, not yet reported.
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// Queues an event; never waits. With the queue full it is dropped and counted.
    pub fn send(&self, event: EventRecord) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(event) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues a batch an agent pushed: all of it, or none when there is no room for all of it
    /// (503: the agent keeps the batch and pushes it again later). At most [`MAX_PUSH`] events.
    pub fn push(&self, events: Vec<EventRecord>) -> Result<(), ApiError> {
        if events.len() > MAX_PUSH {
            return Err(ApiError::Invalid(format!(
                "{} events in one push: at most {MAX_PUSH}",
                events.len()
            )));
        }
        let permits = self.tx.try_reserve_many(events.len()).map_err(|_| {
            ApiError::Unavailable(format!(
                "the event log is busy ({} of {QUEUE} queued events): push again later",
                QUEUE.saturating_sub(self.tx.capacity())
            ))
        })?;
        for (permit, event) in permits.zip(events) {
            permit.send(event);
        }
        Ok(())
    }
}

/// Largest number of events written in one transaction.
const BATCH: usize = 256;

/// Starts the writer. Reads the existing events once to continue their numbering.
pub async fn spawn_writer<S: Store>(store: S, max_events: usize) -> Result<EventSink, NodeError> {
    spawn_writer_with_queue(store, max_events, QUEUE).await
}

/// [`spawn_writer`] with a queue of `queue` events instead of [`QUEUE`] (tests make it small).
pub async fn spawn_writer_with_queue<S: Store>(
    store: S,
    max_events: usize,
    queue: usize,
) -> Result<EventSink, NodeError> {
    let (kvs, _) = store.list(EVENTS).await?;
    let mut seqs: VecDeque<u64> = kvs.iter().filter_map(|kv| event_seq(&kv.key)).collect();
    let (tx, rx) = mpsc::channel(queue.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    let writer = Writer {
        store,
        max_events: max_events.max(1),
        next: seqs.back().map_or(1, |s| s + 1),
        seqs: {
            seqs.make_contiguous().sort_unstable();
            seqs
        },
        pending: VecDeque::new(),
        overflow: 0,
        dropped: Arc::clone(&dropped),
    };
    tokio::spawn(writer.run(rx));
    Ok(EventSink { tx, dropped })
}

struct Writer<S> {
    store: S,
    max_events: usize,
    next: u64,
    seqs: VecDeque<u64>,
    pending: VecDeque<EventRecord>,
    /// Events dropped from `pending` while the store refused writes.
    overflow: u64,
    /// Events the sink dropped with its queue full.
    dropped: Arc<AtomicU64>,
}

impl<S: Store> Writer<S> {
    async fn run(mut self, mut rx: mpsc::Receiver<EventRecord>) {
        loop {
            // While events wait for a store that refused them, retry every second.
            let got = if self.pending.is_empty() {
                rx.recv().await
            } else {
                match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                    Ok(got) => got,
                    Err(_) => {
                        self.flush().await;
                        continue;
                    }
                }
            };
            let Some(first) = got else {
                self.flush().await;
                return;
            };
            self.queue(first);
            while self.pending.len() < BATCH {
                match rx.try_recv() {
                    Ok(ev) => self.queue(ev),
                    Err(_) => break,
                }
            }
            self.flush().await;
        }
    }

    fn queue(&mut self, ev: EventRecord) {
        if self.pending.len() >= self.max_events {
            self.pending.pop_front();
            self.overflow += 1;
        }
        self.pending.push_back(ev);
    }

    async fn flush(&mut self) {
        while !self.pending.is_empty() {
            let take = self.pending.len().min(BATCH);
            let mut ops = Vec::with_capacity(take * 2);
            let mut seq = self.next;
            let mut written = Vec::with_capacity(take);
            for ev in self.pending.iter().take(take) {
                match serde_json::to_vec(ev) {
                    Ok(bytes) => ops.push(Op::put(event_key(seq), bytes)),
                    Err(e) => tracing::warn!("event not encodable: {e}"),
                }
                written.push(seq);
                seq += 1;
            }
            let excess = (self.seqs.len() + written.len()).saturating_sub(self.max_events);
            let expired: Vec<u64> = self.seqs.iter().take(excess).copied().collect();
            ops.extend(expired.iter().map(|s| Op::delete(event_key(*s))));
            match self.store.txn(Txn::ops(ops)).await {
                Ok(_) => {
                    self.pending.drain(..take);
                    self.next = seq;
                    self.seqs.drain(..expired.len());
                    self.seqs.extend(written);
                    let refused = std::mem::take(&mut self.overflow);
                    let full = self.dropped.swap(0, Ordering::Relaxed);
                    if refused > 0 || full > 0 {
                        let mut why = Vec::new();
                        if refused > 0 {
                            why.push(format!("{refused} while the store refused writes"));
                        }
                        if full > 0 {
                            why.push(format!(
                                "{full} because they came faster than they were written"
                            ));
                        }
                        let note = EventRecord {
                            time: jiff::Timestamp::now(),
                            service: None,
                            node: String::new(),
                            reason: "EventsDropped".into(),
                            message: format!("events were dropped: {}", why.join("; ")),
                            exit: None,
                        };
                        self.pending.push_back(note);
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot write {take} events, will retry: {e}");
                    return;
                }
            }
        }
    }
}

/// The API's form of a stored event.
pub fn event_dto(kv: &KeyValue) -> Result<Event, NodeError> {
    let r = EventRecord::decode(&kv.key, &kv.value)?;
    Ok(Event {
        revision: kv.mod_revision,
        time: r.time,
        service: r.service,
        node: r.node,
        reason: r.reason,
        message: r.message,
        exit: r.exit.as_ref().map(|e| ExitInfo {
            code: e.code,
            signal: e.signal.clone(),
            reason: e.reason.clone(),
            at: e.at,
        }),
    })
}

/// The stored events (of one service, from a revision on, the last `limit`), oldest first, and
/// the store revision they were read at.
pub async fn read<S: Store>(
    store: &S,
    service: Option<&str>,
    since: Option<u64>,
    limit: Option<usize>,
) -> Result<(Vec<Event>, u64), NodeError> {
    let (kvs, revision) = store.list(EVENTS).await?;
    let mut out = Vec::new();
    for kv in &kvs {
        if since.is_some_and(|s| kv.mod_revision < s) {
            continue;
        }
        let ev = event_dto(kv)?;
        if service.is_some_and(|s| ev.service.as_deref() != Some(s)) {
            continue;
        }
        out.push(ev);
    }
    if let Some(limit) = limit
        && out.len() > limit
    {
        out.drain(..out.len() - limit);
    }
    Ok((out, revision))
}

/// `GET /v1/events` over `store`: the stored events, then (with `follow`) new ones as written.
pub async fn stream<S: Store>(store: &S, query: EventsQuery) -> Result<EventStream, ApiError> {
    let (past, revision) = read(
        store,
        query.service.as_deref(),
        query.since_revision,
        query.limit,
    )
    .await
    .map_err(ApiError::from)?;
    let head = futures_util::stream::iter(past.into_iter().map(Ok));
    if !query.follow {
        return Ok(Box::pin(head));
    }
    let watcher = store
        .watch(EVENTS, Some(revision + 1))
        .await
        .map_err(|e| ApiError::from(NodeError::from(e)))?;
    let service = query.service;
    let live = futures_util::stream::unfold(watcher, |mut w| async move {
        let item = w.next().await?;
        Some((item, w))
    })
    .filter_map(move |item| {
        let service = service.clone();
        async move {
            match item {
                Ok(ev) if ev.kind == EventKind::Put => match event_dto(&ev.kv) {
                    Ok(e)
                        if service
                            .as_ref()
                            .is_none_or(|s| e.service.as_ref() == Some(s)) =>
                    {
                        Some(Ok(e))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(ApiError::from(e))),
                },
                Ok(_) => None,
                Err(e) => Some(Err(ApiError::Internal(e.to_string()))),
            }
        }
    });
    Ok(Box::pin(head.chain(live)))
}
