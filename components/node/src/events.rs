//! The event log: a task that writes events into the store in batches and keeps at most
//! `max_events` of them (the oldest go first).
//!
//! Writing is off every hot path: senders never wait for the store. When the store refuses a write
//! (its disk is full), events wait in memory (bounded by `max_events`, the overflow counted and
//! reported as an event of its own) and are written once the store accepts writes again.

use std::collections::VecDeque;
use std::time::Duration;

use cloudlet_api::dto::{Event, EventsQuery, ExitInfo};
use cloudlet_api::{ApiError, EventStream};
use cloudlet_store::{EventKind, KeyValue, Op, Store, Txn};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::NodeError;
use crate::records::{EVENTS, EventRecord, event_key, event_seq};

/// Sends events to the writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::UnboundedSender<EventRecord>,
}

impl EventSink {
    /// Queues an event.
    pub fn send(&self, event: EventRecord) {
        let _ = self.tx.send(event);
    }
}

/// Largest number of events written in one transaction.
const BATCH: usize = 256;

/// Starts the writer. Reads the existing events once to continue their numbering.
pub async fn spawn_writer<S: Store>(store: S, max_events: usize) -> Result<EventSink, NodeError> {
    let (kvs, _) = store.list(EVENTS).await?;
    let mut seqs: VecDeque<u64> = kvs.iter().filter_map(|kv| event_seq(&kv.key)).collect();
    let (tx, rx) = mpsc::unbounded_channel();
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
    };
    tokio::spawn(writer.run(rx));
    Ok(EventSink { tx })
}

struct Writer<S> {
    store: S,
    max_events: usize,
    next: u64,
    seqs: VecDeque<u64>,
    pending: VecDeque<EventRecord>,
    overflow: u64,
}

impl<S: Store> Writer<S> {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<EventRecord>) {
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
                    if self.overflow > 0 {
                        let lost = std::mem::take(&mut self.overflow);
                        let note = EventRecord {
                            time: jiff::Timestamp::now(),
                            service: None,
                            node: String::new(),
                            reason: "EventsDropped".into(),
                            message: format!(
                                "{lost} events were dropped while the store refused writes"
                            ),
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
