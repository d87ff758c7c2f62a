//! Tests of what is specific to the redb backend: absolute revisions, history length, the
//! watch buffer, persistence across reopen, and opening errors.

use std::time::Duration;

use cloudlet_store::{EventKind, RedbOptions, RedbStore, Store, StoreError, Watcher};
use tempfile::TempDir;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(30);

fn open(dir: &TempDir, options: RedbOptions) -> RedbStore {
    RedbStore::open(&dir.path().join("store.redb"), options).expect("open store")
}

async fn next(watcher: &mut Watcher) -> Option<Result<cloudlet_store::WatchEvent, StoreError>> {
    timeout(WAIT, watcher.next())
        .await
        .expect("watch timed out")
}

#[tokio::test]
async fn a_new_store_is_at_revision_zero_and_the_first_write_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, RedbOptions::default());
    assert_eq!(store.current_revision().await.unwrap(), 0);
    assert_eq!(store.list("").await.unwrap(), (vec![], 0));
    assert_eq!(store.put("a", b"1".to_vec(), None).await.unwrap(), 1);
    assert_eq!(store.put("b", b"2".to_vec(), None).await.unwrap(), 2);
}

#[tokio::test]
async fn history_keeps_the_configured_number_of_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let options = RedbOptions {
        history: 10,
        ..RedbOptions::default()
    };
    let store = open(&dir, options);
    for i in 1..=30 {
        assert_eq!(store.put(&format!("k/{i}"), vec![], None).await.unwrap(), i);
    }
    let err = store.watch("k/", Some(20)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Compacted {
                requested: 20,
                oldest: 21
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "revision 20 is compacted: the oldest revision kept is 21; list again and watch from the listed revision + 1"
    );
    let mut watcher = store.watch("k/", Some(21)).await.unwrap();
    for i in 21..=30 {
        let event = next(&mut watcher).await.unwrap().unwrap();
        assert_eq!((event.kv.key, event.kv.mod_revision), (format!("k/{i}"), i));
    }
    // Compaction drops history only: every key is still there.
    assert_eq!(store.list("k/").await.unwrap().0.len(), 30);
}

#[tokio::test]
async fn a_slow_watcher_is_ended_and_never_holds_up_writers() {
    let dir = tempfile::tempdir().unwrap();
    let options = RedbOptions {
        watch_buffer: 8,
        ..RedbOptions::default()
    };
    let store = open(&dir, options);
    let mut slow = store.watch("", None).await.unwrap();
    // Twenty writes complete although nobody reads the watcher.
    for i in 1..=20 {
        store.put(&format!("k/{i:02}"), vec![], None).await.unwrap();
    }
    for revision in 1..=8 {
        let event = next(&mut slow).await.unwrap().unwrap();
        assert_eq!(event.kv.mod_revision, revision);
    }
    let err = next(&mut slow).await.unwrap().unwrap_err();
    assert!(
        matches!(err, StoreError::WatchLagged { resume_from: 9 }),
        "{err:?}"
    );
    assert!(next(&mut slow).await.is_none(), "the watcher ended");

    // Resuming from the reported revision delivers the rest exactly.
    let mut resumed = store.watch("", Some(9)).await.unwrap();
    for revision in 9..=20 {
        let event = next(&mut resumed).await.unwrap().unwrap();
        assert_eq!(
            (event.kv.key, event.kv.mod_revision),
            (format!("k/{revision:02}"), revision)
        );
    }
}

#[tokio::test]
async fn watching_a_future_revision_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, RedbOptions::default());
    let mut watcher = store.watch("", Some(3)).await.unwrap();
    for key in ["a", "b", "c", "d"] {
        store.put(key, vec![], None).await.unwrap();
    }
    let event = next(&mut watcher).await.unwrap().unwrap();
    assert_eq!((event.kv.key.as_str(), event.kv.mod_revision), ("c", 3));
}

#[tokio::test]
async fn reopen_keeps_revision_keys_history_and_leases() {
    let dir = tempfile::tempdir().unwrap();
    let (lease, a, c, history) = {
        let store = open(&dir, RedbOptions::default());
        store.put("a", b"1".to_vec(), None).await.unwrap();
        store.put("a", b"2".to_vec(), None).await.unwrap();
        store.put("b", b"x".to_vec(), None).await.unwrap();
        store.delete("b").await.unwrap();
        let lease = store.grant_lease(Duration::from_secs(600)).await.unwrap();
        store
            .put("c", b"leased".to_vec(), Some(lease))
            .await
            .unwrap();
        let a = store.get("a").await.unwrap().unwrap();
        let c = store.get("c").await.unwrap().unwrap();
        let history = collect(&store, 5).await;
        (lease, a, c, history)
    };

    let store = open(&dir, RedbOptions::default());
    assert_eq!(store.current_revision().await.unwrap(), 5);
    assert_eq!(store.get("a").await.unwrap(), Some(a));
    assert_eq!(store.get("b").await.unwrap(), None);
    assert_eq!(store.get("c").await.unwrap(), Some(c));
    assert_eq!(collect(&store, 5).await, history, "history is persisted");

    store.keep_alive(lease).await.unwrap();
    let second = store.grant_lease(Duration::from_secs(600)).await.unwrap();
    assert_ne!(second, lease, "lease ids are not reused after reopen");
    store.revoke_lease(lease).await.unwrap();
    assert_eq!(
        store.get("c").await.unwrap(),
        None,
        "the lease knew its key"
    );
    assert_eq!(store.current_revision().await.unwrap(), 6);
}

/// Every event of revisions 1..=upto (one event each).
async fn collect(store: &RedbStore, upto: u64) -> Vec<(EventKind, String, u64)> {
    let mut watcher = store.watch("", Some(1)).await.expect("watch from 1");
    let mut events = Vec::new();
    for _ in 1..=upto {
        let event = next(&mut watcher)
            .await
            .expect("watcher ended")
            .expect("watch event");
        events.push((event.kind, event.kv.key, event.kv.mod_revision));
    }
    events
}

#[tokio::test]
async fn a_surviving_lease_gets_a_fresh_ttl_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(1);
    let revision = {
        let store = open(&dir, RedbOptions::default());
        let lease = store.grant_lease(ttl).await.unwrap();
        store.put("k", b"v".to_vec(), Some(lease)).await.unwrap()
    };
    // Waiting is the point: the lease's first TTL passes while the store is closed.
    tokio::time::sleep(ttl + ttl / 2).await;

    let reopened = Instant::now();
    let store = open(&dir, RedbOptions::default());
    let mut watcher = store.watch("", Some(revision + 1)).await.unwrap();
    let event = next(&mut watcher).await.unwrap().unwrap();
    assert_eq!(
        (event.kind, event.kv.key.as_str()),
        (EventKind::Delete, "k")
    );
    assert!(
        reopened.elapsed() >= ttl,
        "expired {:?} after reopen, before a full ttl",
        reopened.elapsed()
    );
}

#[tokio::test]
async fn opening_an_open_store_again_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(&dir, RedbOptions::default());
    let path = dir.path().join("store.redb");
    let err = RedbStore::open(&path, RedbOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyOpen { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn opening_outside_a_tokio_runtime_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = RedbStore::open(&dir.path().join("store.redb"), RedbOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::NoRuntime { .. }), "{err:?}");
}

#[tokio::test]
async fn invalid_options_and_ttls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    for options in [
        RedbOptions {
            history: 0,
            ..RedbOptions::default()
        },
        RedbOptions {
            watch_buffer: 0,
            ..RedbOptions::default()
        },
    ] {
        let err = RedbStore::open(&path, options).unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    }
    let store = RedbStore::open(&path, RedbOptions::default()).unwrap();
    let err = store.grant_lease(Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_distinct_consecutive_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, RedbOptions::default());
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..25 {
                let key = format!("w{writer}/{i}");
                revisions.push(store.put(&key, vec![], None).await.unwrap());
            }
            revisions
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let revisions = task.await.unwrap();
        assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
        all.extend(revisions);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<u64>>());
}
