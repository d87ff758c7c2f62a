//! Watches on etcd: one etcd watch stream per [`Watcher`], read by a task that forwards its
//! events into the watcher's bounded channel.
//!
//! Owns: waiting for etcd to confirm the watch before returning (so every write after `watch`
//! returns is seen), the namespace stripping of events, and the ending of a watcher on
//! compaction or a broken stream with the revision to resume from. Must never: buffer more than
//! [`EtcdOptions::watch_buffer`](crate::EtcdOptions::watch_buffer) events: when the channel is
//! full the task waits, and etcd holds the rest (HTTP/2 flow control on the stream).

use std::sync::Arc;

use etcd_client::{EventType, WatchOptions, WatchResponse, WatchStream};
use tokio::sync::mpsc;

use super::EtcdStore;
use super::codec::Codec;
use crate::{Revision, StoreError, WatchEvent, Watcher};

type Item = Result<WatchEvent, StoreError>;

/// Starts a watch of `prefix` from `from` (`None` or 0: after the current revision).
pub(super) async fn start(
    store: &EtcdStore,
    prefix: &str,
    from: Option<Revision>,
) -> Result<Watcher, StoreError> {
    let codec = store.inner.codec.clone();
    let (start, end) = codec.prefix_range(prefix);
    let from = from.filter(|revision| *revision > 0);
    let mut options = WatchOptions::new().with_range(end);
    if let Some(revision) = from {
        options = options.with_start_revision(codec.to_etcd(revision)?);
    }
    let mut client = store.inner.client.watch_client();
    let mut stream = store
        .call(
            "watch",
            &start,
            None,
            client.watch(start.clone(), Some(options)),
        )
        .await?;
    // The first answer confirms the watch; only then are later writes sure to be seen.
    let created = store
        .call("watch", &start, None, stream.message())
        .await?
        .ok_or_else(|| {
            ended(
                &codec,
                &start,
                from.unwrap_or(0),
                "etcd closed the new watch",
            )
        })?;
    let resume_from = match from {
        Some(revision) => revision,
        None => codec
            .header_revision(&start, created.header())?
            .saturating_add(1),
    };
    let (tx, rx) = mpsc::channel(store.inner.options.watch_buffer);
    let forward = Forward {
        codec,
        prefix: start,
        requested: resume_from,
        resume_from,
        tx,
    };
    tokio::spawn(forward.run(stream, created));
    Ok(Watcher::new(rx, None))
}

/// [`StoreError::EtcdWatchEnded`].
fn ended(codec: &Codec, prefix: &[u8], resume_from: Revision, detail: &str) -> StoreError {
    StoreError::EtcdWatchEnded {
        endpoints: codec.endpoints.to_string(),
        prefix: String::from_utf8_lossy(prefix).into_owned(),
        resume_from,
        detail: detail.to_string(),
    }
}

/// The task between one etcd watch stream and one watcher.
struct Forward {
    codec: Arc<Codec>,
    /// The watched prefix, with the namespace.
    prefix: Vec<u8>,
    /// The revision the watch started from.
    requested: Revision,
    /// The first revision not yet delivered.
    resume_from: Revision,
    tx: mpsc::Sender<Item>,
}

impl Forward {
    /// Forwards until the watcher is dropped or the stream ends; then the stream is dropped,
    /// which cancels the watch on etcd.
    async fn run(mut self, mut stream: WatchStream, first: WatchResponse) {
        let mut response = Some(first);
        loop {
            let current = match response.take() {
                Some(current) => current,
                None => {
                    let message = tokio::select! {
                        () = self.tx.closed() => return,
                        message = stream.message() => message,
                    };
                    match message {
                        Ok(Some(current)) => current,
                        Ok(None) => return self.end("etcd closed the stream").await,
                        Err(err) => return self.end(&err.to_string()).await,
                    }
                }
            };
            if !self.deliver(&current).await {
                return;
            }
        }
    }

    /// Sends one response's events, waiting for room. False when the watcher is done.
    async fn deliver(&mut self, response: &WatchResponse) -> bool {
        if response.compact_revision() > 0 {
            let oldest = Revision::try_from(response.compact_revision()).unwrap_or(0);
            let err = StoreError::Compacted {
                requested: self.requested,
                oldest,
            };
            let _ = self.tx.send(Err(err)).await;
            return false;
        }
        if response.canceled() {
            let reason = format!("etcd cancelled the watch: {}", response.cancel_reason());
            self.end(&reason).await;
            return false;
        }
        let mut last = None;
        for event in response.events() {
            let item = self.event(event);
            let failed = item.is_err();
            if let Ok(event) = &item {
                last = Some(event.revision());
            }
            if self.tx.send(item).await.is_err() || failed {
                return false;
            }
        }
        // etcd never splits one revision's events over two responses.
        if let Some(last) = last {
            self.resume_from = last.saturating_add(1);
        }
        true
    }

    fn event(&self, event: &etcd_client::Event) -> Item {
        let Some(kv) = event.kv() else {
            return Err(self.codec.data(&self.prefix, "a watch event without a key"));
        };
        match event.event_type() {
            EventType::Put => Ok(WatchEvent {
                kind: crate::EventKind::Put,
                kv: self.codec.key_value(kv)?,
            }),
            EventType::Delete => Ok(WatchEvent::delete(
                self.codec.strip(kv.key())?,
                self.codec.revision(kv.key(), kv.mod_revision())?,
            )),
        }
    }

    async fn end(&self, detail: &str) {
        let err = ended(&self.codec, &self.prefix, self.resume_from, detail);
        let _ = self.tx.send(Err(err)).await;
    }
}
