//! The event log's queue against a real redb store: a flood of local events is bounded and its
//! drops reported; a batch an agent pushes is taken whole or refused whole.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::Duration;

use cloudlet_api::dto::{Event, EventsQuery};
use cloudlet_node::events::{MAX_PUSH, spawn_writer_with_queue, stream};
use cloudlet_node::records::EventRecord;
use cloudlet_store::{RedbOptions, RedbStore};
use futures_util::StreamExt;

const PATIENCE: Duration = Duration::from_secs(10);

fn event(i: usize) -> EventRecord {
    EventRecord {
        time: jiff::Timestamp::now(),
        service: Some("web".to_owned()),
        node: "n1".to_owned(),
        reason: "Started".to_owned(),
        message: format!("event {i}"),
        exit: None,
    }
}

fn store(dir: &tempfile::TempDir) -> RedbStore {
    RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap()
}

/// Follows the stored events until `until` holds for one; that one.
async fn wait_for(store: &RedbStore, until: impl Fn(&Event) -> bool) -> Event {
    let query = EventsQuery {
        follow: true,
        ..EventsQuery::default()
    };
    let mut events = stream(store, query).await.unwrap();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let event = events.next().await.unwrap().unwrap();
            if until(&event) {
                return event;
            }
        }
    })
    .await
    .expect("the awaited event was never written")
}

async fn stored(store: &RedbStore) -> Vec<Event> {
    let (events, _) = cloudlet_node::events::read(store, None, None, None)
        .await
        .unwrap();
    events
}

#[tokio::test]
async fn a_flood_of_local_events_is_bounded_and_its_drops_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let sink = spawn_writer_with_queue(store.clone(), 10_000, 8)
        .await
        .unwrap();
    // One thread, no await: the writer cannot take any before all are sent.
    for i in 0..1000 {
        sink.send(event(i));
    }
    let note = wait_for(&store, |e| e.reason == "EventsDropped").await;
    assert!(
        note.message
            .contains("992 because they came faster than they were written"),
        "{}",
        note.message
    );
    let written = stored(&store).await;
    assert_eq!(written.len(), 9, "8 queued and the note: {written:?}");
}

#[tokio::test]
async fn a_pushed_batch_is_taken_whole_or_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let sink = spawn_writer_with_queue(store.clone(), 10_000, 8)
        .await
        .unwrap();
    sink.push((0..5).map(event).collect()).unwrap();
    // No room for five more until the writer has run: refused whole, with 503.
    let refused = sink.push((5..10).map(event).collect()).unwrap_err();
    assert_eq!(refused.status_code().as_u16(), 503, "{refused}");
    wait_for(&store, |e| e.message == "event 4").await;
    sink.push((5..10).map(event).collect()).unwrap();
    wait_for(&store, |e| e.message == "event 9").await;
    let messages: Vec<String> = stored(&store)
        .await
        .into_iter()
        .map(|e| e.message)
        .collect();
    let want: Vec<String> = (0..10).map(|i| format!("event {i}")).collect();
    assert_eq!(messages, want);
    // A push larger than any agent's batch is refused as such.
    let too_many = sink.push((0..=MAX_PUSH).map(event).collect()).unwrap_err();
    assert_eq!(too_many.status_code().as_u16(), 400, "{too_many}");
}
