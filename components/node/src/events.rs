//! The event log: a task that writes events into the store in batches and keeps at most
//! `max_events` of them (the oldest go first).
//!
//! Writing is off every hot path: senders never wait for the store. When the store refuses a write
//! (its disk is full), events wait in memory (bounded by `max_events`, the overflow counted and
//! reported as an event of its own) and are written once the store accepts writes again.

use std::collections::VecDeque;
use std::time::Duration;

use cloudlet_store::{Op, Store, Txn};
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
