//! Watchers: the consumer side ([`Watcher`]) and the producer side a backend feeds after each
//! commit ([`WatchSender`]).
//!
//! Owns: the bounded-buffer rule (a slow watcher never blocks a writer: when its buffer is full
//! it is ended with [`StoreError::WatchLagged`]) and the replay of history before live events.
//! Must never: block, or deliver a revision twice or out of order.

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Revision, StoreError, WatchEvent};

type Item = Result<WatchEvent, StoreError>;
/// A replayed part of history: its events and the next revision to read.
type Chunk = Result<(Vec<WatchEvent>, Revision), StoreError>;

/// A stream of changes under a prefix, in revision order, without gaps or duplicates.
///
/// It first replays history from the requested revision, then delivers live changes.
///
/// **Slow consumers.** Live events wait in a bounded buffer (see
/// [`RedbOptions::watch_buffer`](crate::RedbOptions::watch_buffer)). Writers never wait for a
/// watcher: when a revision's events do not fit, the watcher gets
/// [`StoreError::WatchLagged`] `{ resume_from }` after the events it already has, and then ends.
/// Watch again from `resume_from`; if that revision is compacted, list the prefix again and watch
/// from the listed revision + 1. An [`EtcdStore`](crate::EtcdStore) watcher never lags: with
/// its buffer ([`EtcdOptions::watch_buffer`](crate::EtcdOptions::watch_buffer)) full it stops
/// reading its etcd stream and etcd keeps the rest; it ends with [`StoreError::Compacted`] if
/// etcd compacts past it meanwhile, or [`StoreError::EtcdWatchEnded`] if the stream breaks.
///
/// [`Watcher::next`] returns `None` when the store is closed; after an error it returns `None`.
/// `next` is cancel-safe: dropping its future (in a `select!`) loses no event.
pub struct Watcher {
    replay: Option<Replay>,
    buffered: VecDeque<WatchEvent>,
    live: mpsc::Receiver<Item>,
    done: bool,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("replaying", &self.replay.is_some())
            .field("buffered", &self.buffered.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// A watcher that replays `replay` (if any) and then reads `live`.
    pub(crate) fn new(live: mpsc::Receiver<Item>, replay: Option<Replay>) -> Self {
        Watcher {
            replay,
            buffered: VecDeque::new(),
            live,
            done: false,
        }
    }

    /// The next change, an error (after which the watcher ends), or `None` once it has ended.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Some(Ok(event));
            }
            if let Some(replay) = &mut self.replay {
                match replay.next_chunk().await {
                    Ok(Some(events)) => {
                        self.buffered.extend(events);
                        if replay.is_complete() {
                            // Release the backend (it keeps the database open) right away.
                            self.replay = None;
                        }
                    }
                    Ok(None) => self.replay = None,
                    Err(err) => return self.end(err),
                }
                continue;
            }
            return match self.live.recv().await {
                Some(Ok(event)) => Some(Ok(event)),
                Some(Err(err)) => self.end(err),
                None => {
                    self.done = true;
                    None
                }
            };
        }
    }

    fn end(&mut self, err: StoreError) -> Option<Item> {
        self.done = true;
        self.replay = None;
        Some(Err(err))
    }
}

/// Reads committed history for replay. Blocking: called on the blocking thread pool.
pub(crate) trait HistorySource: Send + Sync + 'static {
    /// Events under `prefix` of revisions `from..=upto` (or a first part of that range, at least
    /// one revision), and the next revision to read. Fails with [`StoreError::Compacted`] if
    /// `from` is no longer kept.
    fn read_history(&self, prefix: &str, from: Revision, upto: Revision) -> Chunk;

    /// The database path, for errors.
    fn path(&self) -> PathBuf;
}

/// The history part of a watch: revisions `next..=upto`, read in chunks on demand so a long
/// replay does not sit in memory.
pub(crate) struct Replay {
    source: Arc<dyn HistorySource>,
    prefix: Arc<str>,
    next: Revision,
    upto: Revision,
    pending: Option<JoinHandle<Chunk>>,
}

impl Replay {
    pub(crate) fn new(
        source: Arc<dyn HistorySource>,
        prefix: &str,
        from: Revision,
        upto: Revision,
    ) -> Self {
        Replay {
            source,
            prefix: prefix.into(),
            next: from,
            upto,
            pending: None,
        }
    }

    fn is_complete(&self) -> bool {
        self.pending.is_none() && self.next > self.upto
    }

    /// The next chunk of events (possibly empty), or `None` when the replay is complete.
    /// Cancel-safe: the read in flight is kept in `pending`.
    async fn next_chunk(&mut self) -> Result<Option<Vec<WatchEvent>>, StoreError> {
        if self.pending.is_none() {
            if self.next > self.upto {
                return Ok(None);
            }
            let (source, prefix) = (self.source.clone(), self.prefix.clone());
            let (from, upto) = (self.next, self.upto);
            self.pending = Some(tokio::task::spawn_blocking(move || {
                source.read_history(&prefix, from, upto)
            }));
        }
        let Some(pending) = &mut self.pending else {
            return Ok(None);
        };
        let joined = pending.await;
        self.pending = None;
        let (events, next) = joined.map_err(|err| StoreError::Task {
            path: self.source.path(),
            detail: err.to_string(),
        })??;
        self.next = next;
        Ok(Some(events))
    }
}

/// The producer side of one watcher, kept by the backend and fed after every commit.
#[derive(Debug)]
pub(crate) struct WatchSender {
    prefix: String,
    start: Revision,
    tx: mpsc::Sender<Item>,
}

/// A watcher's live channel: events under `prefix` from revision `start` on, at most `buffer`
/// of them waiting.
pub(crate) fn channel(
    prefix: &str,
    start: Revision,
    buffer: usize,
) -> (WatchSender, mpsc::Receiver<Item>) {
    // One slot more than the buffer, kept free for the final WatchLagged error.
    let (tx, rx) = mpsc::channel(buffer.saturating_add(1));
    let sender = WatchSender {
        prefix: prefix.to_string(),
        start,
        tx,
    };
    (sender, rx)
}

impl WatchSender {
    /// Delivers the matching events of one committed revision, all or none. Returns false when
    /// the watcher is finished (dropped, or just ended for lagging) and must be forgotten.
    /// Never blocks.
    pub(crate) fn send_revision(&self, revision: Revision, events: &[WatchEvent]) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        if revision < self.start {
            return true;
        }
        let matching = events
            .iter()
            .filter(|event| event.kv.key.starts_with(&self.prefix));
        let count = matching.clone().count();
        if count == 0 {
            return true;
        }
        // The backend sends from one thread under its commit lock, so the capacity can only
        // grow between this check and the sends below.
        if self.tx.capacity() <= count {
            // The reserved slot is always free: every send leaves at least one.
            let _ = self.tx.try_send(Err(StoreError::WatchLagged {
                resume_from: revision,
            }));
            return false;
        }
        matching
            .into_iter()
            .all(|event| self.tx.try_send(Ok(event.clone())).is_ok())
    }

    /// Ends the watcher with `err` (for example when the backend lost track of what it sent).
    pub(crate) fn end(self, err: StoreError) {
        let _ = self.tx.try_send(Err(err));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;

    fn put(key: &str, revision: Revision) -> WatchEvent {
        WatchEvent {
            kind: EventKind::Put,
            kv: crate::KeyValue {
                key: key.to_string(),
                value: b"v".to_vec(),
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                lease: None,
            },
        }
    }

    #[tokio::test]
    async fn filters_by_prefix_and_start_revision() {
        let (sender, rx) = channel("a/", 3, 16);
        let mut watcher = Watcher::new(rx, None);
        assert!(sender.send_revision(2, &[put("a/1", 2)]));
        assert!(sender.send_revision(3, &[put("b/1", 3), put("a/2", 3)]));
        assert!(sender.send_revision(4, &[put("a/3", 4)]));
        drop(sender);
        let mut seen = Vec::new();
        while let Some(event) = watcher.next().await {
            seen.push(event.unwrap().kv.key);
        }
        assert_eq!(seen, ["a/2", "a/3"]);
    }

    #[tokio::test]
    async fn a_full_buffer_ends_the_watcher_with_the_resume_revision() {
        let (sender, rx) = channel("", 1, 3);
        let mut watcher = Watcher::new(rx, None);
        assert!(sender.send_revision(1, &[put("a", 1), put("b", 1)]));
        // Revision 2 has two events and only one slot is left: nothing of it is delivered.
        assert!(!sender.send_revision(2, &[put("c", 2), put("d", 2)]));
        let mut seen = Vec::new();
        while let Some(item) = watcher.next().await {
            seen.push(item.map(|e| e.kv.key).map_err(|e| e.to_string()));
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0], Ok("a".to_string()));
        assert_eq!(seen[1], Ok("b".to_string()));
        let err = seen[2].clone().unwrap_err();
        assert!(err.contains("watch again from revision 2"), "{err}");
    }

    #[tokio::test]
    async fn a_dropped_watcher_is_forgotten() {
        let (sender, rx) = channel("", 1, 3);
        drop(rx);
        assert!(!sender.send_revision(1, &[put("a", 1)]));
    }
}
