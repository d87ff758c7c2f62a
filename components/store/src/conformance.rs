//! The conformance suite: checks every [`Store`] backend must pass, written against the trait
//! only, so the same checks run on redb and on etcd.
//!
//! Owns: the executable form of the [`Store`] contract. Must never: use anything
//! backend-specific, or assume absolute revisions (etcd starts at 1, redb at 0): every check
//! measures revisions relative to where it started.
//!
//! Each check is a `pub async fn` that panics with a message when the store misbehaves. A check
//! expects a store of its own (other writers would move the revision under it). Lease checks
//! take the TTL to use: etcd counts whole seconds and has a minimum, redb takes milliseconds.
//! Use [`run_all`] to run everything, or call the checks one by one (one test each).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::{Instant, timeout};

use crate::{
    Compare, CompareOp, EventKind, KeyValue, LeaseId, Op, Revision, Store, StoreError, Txn,
    WatchEvent, Watcher,
};

/// How long a check waits for an awaited event before it fails (generous for loaded CI).
const WAIT: Duration = Duration::from_secs(30);

/// Runs every check, each on a fresh store from `make`. Lease checks use `lease_ttl`.
pub async fn run_all<S: Store>(make: impl Fn() -> S, lease_ttl: Duration) {
    revision_counts_write_transactions(&make()).await;
    versions_and_create_mod_revisions(&make()).await;
    compare_and_swap(&make()).await;
    invalid_transactions_change_nothing(&make()).await;
    delete_prefix(&make()).await;
    list_is_sorted_with_its_revision(&make()).await;
    watch_reports_puts_and_deletes_under_its_prefix(&make()).await;
    watch_replays_then_continues_live(&make()).await;
    watch_of_compacted_revision_errors(&make()).await;
    lease_expiry_deletes_keys_and_notifies(&make(), lease_ttl).await;
    keep_alive_extends_lease(&make(), lease_ttl).await;
    revoke_deletes_keys_in_one_revision(&make()).await;
    unknown_lease_is_rejected(&make()).await;
}

/// The next event of `watcher`, failing the check on an error, the end, or a timeout.
async fn next_event(watcher: &mut Watcher) -> WatchEvent {
    match timeout(WAIT, watcher.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(err))) => panic!("watcher failed: {err}"),
        Ok(None) => panic!("watcher ended unexpectedly"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

async fn put<S: Store>(store: &S, key: &str, value: &str) -> Revision {
    store
        .put(key, value.as_bytes().to_vec(), None)
        .await
        .unwrap_or_else(|err| panic!("put {key}: {err}"))
}

async fn get<S: Store>(store: &S, key: &str) -> Option<KeyValue> {
    store
        .get(key)
        .await
        .unwrap_or_else(|err| panic!("get {key}: {err}"))
}

async fn current<S: Store>(store: &S) -> Revision {
    store
        .current_revision()
        .await
        .expect("current_revision failed")
}

async fn txn<S: Store>(store: &S, txn: Txn) -> crate::TxnResponse {
    store
        .txn(txn.clone())
        .await
        .unwrap_or_else(|err| panic!("txn {txn:?}: {err}"))
}

async fn watch<S: Store>(store: &S, prefix: &str, from: Option<Revision>) -> Watcher {
    store
        .watch(prefix, from)
        .await
        .unwrap_or_else(|err| panic!("watch {prefix} from {from:?}: {err}"))
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

/// Every write transaction adds exactly one revision, whatever it writes; reads, deletes of
/// absent keys and lease grants add none.
pub async fn revision_counts_write_transactions<S: Store>(store: &S) {
    let r0 = current(store).await;
    assert_eq!(put(store, "rev/a", "1").await, r0 + 1, "first put");
    assert_eq!(put(store, "rev/b", "2").await, r0 + 2, "second put");

    let ops = vec![
        Op::put("rev/c", "3"),
        Op::put("rev/d", "4"),
        Op::delete("rev/a"),
    ];
    let response = txn(store, Txn::ops(ops)).await;
    assert!(response.succeeded);
    assert_eq!(
        response.revision,
        r0 + 3,
        "a txn of three writes is one revision"
    );
    for key in ["rev/c", "rev/d"] {
        let kv = get(store, key).await.expect("written by the txn");
        assert_eq!(
            kv.mod_revision,
            r0 + 3,
            "{key} written at the txn's revision"
        );
    }
    assert_eq!(get(store, "rev/a").await, None);
    assert_eq!(current(store).await, r0 + 3);

    let deleted = store.delete("rev/missing").await.expect("delete missing");
    assert_eq!(deleted, (r0 + 3, false), "deleting an absent key");
    let response = txn(store, Txn::ops(vec![Op::get("rev/b")])).await;
    assert_eq!(response.revision, r0 + 3, "a read-only txn");
    let read = response.gets[0].as_ref().expect("rev/b exists");
    assert_eq!(read.mod_revision, r0 + 2);
    let response = txn(store, Txn::ops(vec![Op::delete_prefix("rev/none/")])).await;
    assert_eq!(
        response.revision,
        r0 + 3,
        "a prefix delete that matched nothing"
    );

    let lease = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    assert_eq!(current(store).await, r0 + 3, "granting a lease");
    store.revoke_lease(lease).await.expect("revoke");
    assert_eq!(
        current(store).await,
        r0 + 3,
        "revoking a lease without keys"
    );

    let deleted = store.delete("rev/b").await.expect("delete rev/b");
    assert_eq!(deleted, (r0 + 4, true));
    assert_eq!(current(store).await, r0 + 4);
}

/// `version` counts writes since creation, `create_revision` is the creating write and
/// `mod_revision` the last one; a delete starts the key's life over.
pub async fn versions_and_create_mod_revisions<S: Store>(store: &S) {
    let r1 = put(store, "ver/k", "one").await;
    let kv = get(store, "ver/k").await.expect("written");
    let expected = KeyValue {
        key: "ver/k".to_string(),
        value: b"one".to_vec(),
        create_revision: r1,
        mod_revision: r1,
        version: 1,
        lease: None,
    };
    assert_eq!(kv, expected);

    let r2 = put(store, "ver/k", "two").await;
    let kv = get(store, "ver/k").await.expect("written");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r2, 2)
    );
    assert_eq!(kv.value, b"two");

    let (r3, existed) = store.delete("ver/k").await.expect("delete");
    assert!(existed);
    assert_eq!(r3, r2 + 1);
    assert_eq!(get(store, "ver/k").await, None);

    let r4 = put(store, "ver/k", "three").await;
    let kv = get(store, "ver/k").await.expect("written");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r4, r4, 1),
        "a recreated key starts over"
    );
    let (listed, _) = store.list("ver/").await.expect("list");
    assert_eq!(listed, vec![kv]);
}

/// Compares on mod revision, version, value and existence pick the branch; the failure branch
/// reports what the key is now.
pub async fn compare_and_swap<S: Store>(store: &S) {
    use CompareOp::*;
    let key = "cas/k";
    let create = Txn {
        compares: vec![Compare::absent(key)],
        success: vec![Op::put(key, "a")],
        failure: vec![Op::get(key)],
    };
    let created = txn(store, create.clone()).await;
    assert!(created.succeeded, "create if absent");
    let r1 = created.revision;

    let again = txn(store, create).await;
    assert!(!again.succeeded, "second create if absent must fail");
    assert_eq!(
        again.revision, r1,
        "a failed CAS without writes adds no revision"
    );
    let seen = again.gets[0].as_ref().expect("failure branch read the key");
    assert_eq!((seen.value.as_slice(), seen.mod_revision), (&b"a"[..], r1));

    let update = |expected: Revision, value: &str| Txn {
        compares: vec![Compare::mod_revision(key, Equal, expected)],
        success: vec![Op::put(key, value)],
        failure: vec![Op::get(key)],
    };
    let updated = txn(store, update(r1, "b")).await;
    assert!(updated.succeeded, "update at the current mod revision");
    let r2 = updated.revision;
    assert_eq!(r2, r1 + 1);

    let stale = txn(store, update(r1, "c")).await;
    assert!(!stale.succeeded, "update at a stale mod revision must fail");
    assert_eq!(stale.revision, r2);
    let seen = stale.gets[0].as_ref().expect("failure branch read the key");
    assert_eq!((seen.value.as_slice(), seen.mod_revision), (&b"b"[..], r2));
    assert_eq!(get(store, key).await.expect("exists").value, b"b");

    let by_version = Txn {
        compares: vec![Compare::version(key, Equal, 2)],
        success: vec![Op::put(key, "c")],
        failure: vec![],
    };
    let r3 = txn(store, by_version).await;
    assert!(r3.succeeded, "version 2 after two puts");
    let r3 = r3.revision;

    let all_hold = Txn {
        compares: vec![
            Compare::exists(key),
            Compare::value(key, Equal, "c"),
            Compare::value(key, NotEqual, "x"),
            Compare::version(key, Greater, 2),
            Compare::mod_revision(key, Less, r3 + 1),
            Compare::mod_revision(key, Greater, r3 - 1),
        ],
        success: vec![Op::delete(key)],
        failure: vec![],
    };
    let deleted = txn(store, all_hold).await;
    assert!(deleted.succeeded, "every compare holds");
    assert_eq!(deleted.revision, r3 + 1);
    assert_eq!(get(store, key).await, None);

    let one_fails = Txn {
        compares: vec![Compare::absent(key), Compare::value(key, NotEqual, "x")],
        success: vec![Op::put(key, "never")],
        failure: vec![Op::put("cas/failure-ran", "yes")],
    };
    let response = txn(store, one_fails).await;
    assert!(
        !response.succeeded,
        "a value compare on an absent key is false"
    );
    assert_eq!(response.revision, r3 + 2, "the failure branch wrote");
    assert_eq!(get(store, key).await, None);
    assert!(get(store, "cas/failure-ran").await.is_some());

    let version_zero = Txn {
        compares: vec![
            Compare::version(key, Equal, 0),
            Compare::mod_revision(key, Equal, 0),
        ],
        success: vec![Op::put(key, "again")],
        failure: vec![],
    };
    let response = txn(store, version_zero).await;
    assert!(
        response.succeeded,
        "an absent key has version and mod revision 0"
    );
    assert_eq!(response.revision, r3 + 3);
}

/// A transaction writing one key twice, or with an empty key, is refused whole.
pub async fn invalid_transactions_change_nothing<S: Store>(store: &S) {
    let r0 = current(store).await;
    let twice = Txn::ops(vec![
        Op::put("inv/a", "1"),
        Op::put("inv/b", "1"),
        Op::put("inv/a", "2"),
    ]);
    let err = store.txn(twice).await.expect_err("a key put twice");
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    let overlap = Txn::ops(vec![Op::put("inv/a/1", "1"), Op::delete_prefix("inv/a/")]);
    let err = store.txn(overlap).await.expect_err("put and prefix delete");
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    let err = store
        .put("", b"x".to_vec(), None)
        .await
        .expect_err("empty key");
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(current(store).await, r0, "nothing was written");
    let (listed, _) = store.list("inv/").await.expect("list");
    assert!(listed.is_empty(), "{listed:?}");
}

/// `DeletePrefix` deletes exactly the keys under the prefix, at one revision.
pub async fn delete_prefix<S: Store>(store: &S) {
    for key in ["dp/a/1", "dp/a/2", "dp/ab", "dp/b"] {
        put(store, key, "v").await;
    }
    let mut watcher = watch(store, "dp/", None).await;
    let response = txn(store, Txn::ops(vec![Op::delete_prefix("dp/a/")])).await;
    let (listed, _) = store.list("dp/").await.expect("list");
    assert_eq!(keys(&listed), ["dp/ab", "dp/b"]);

    let mut deleted = Vec::new();
    for _ in 0..2 {
        let event = next_event(&mut watcher).await;
        assert_eq!(event.kind, EventKind::Delete, "{event:?}");
        assert_eq!(event.kv.mod_revision, response.revision, "{event:?}");
        deleted.push(event.kv.key);
    }
    deleted.sort();
    assert_eq!(deleted, ["dp/a/1", "dp/a/2"]);

    let everything = txn(store, Txn::ops(vec![Op::delete_prefix("dp/")])).await;
    assert_eq!(everything.revision, response.revision + 1);
    let (listed, _) = store.list("dp/").await.expect("list");
    assert!(listed.is_empty(), "{listed:?}");
}

/// `list` returns the keys under the prefix in key order, and the revision it read at; a watch
/// from that revision + 1 starts exactly after the listing.
pub async fn list_is_sorted_with_its_revision<S: Store>(store: &S) {
    for key in ["ls/c", "ls/a", "ls/b/x", "ls/b", "lsx", "ls"] {
        put(store, key, key).await;
    }
    let (listed, revision) = store.list("ls/").await.expect("list");
    assert_eq!(keys(&listed), ["ls/a", "ls/b", "ls/b/x", "ls/c"]);
    assert_eq!(revision, current(store).await);
    for kv in &listed {
        assert_eq!(kv.value, kv.key.as_bytes());
    }
    let (listed, _) = store.list("ls/b").await.expect("list");
    assert_eq!(keys(&listed), ["ls/b", "ls/b/x"]);
    let (listed, empty_revision) = store.list("nothing/").await.expect("list");
    assert!(listed.is_empty());
    assert_eq!(empty_revision, revision);

    let next = put(store, "ls/d", "d").await;
    let mut watcher = watch(store, "ls/", Some(revision + 1)).await;
    let event = next_event(&mut watcher).await;
    assert_eq!(
        (event.kind, event.kv.key.as_str(), event.kv.mod_revision),
        (EventKind::Put, "ls/d", next)
    );
}

/// A watcher sees puts (with the full key-value) and deletes (key and deleting revision) under
/// its prefix only, and all events of one transaction at that transaction's revision.
pub async fn watch_reports_puts_and_deletes_under_its_prefix<S: Store>(store: &S) {
    let mut watcher = watch(store, "wk/a", None).await;
    let r1 = put(store, "wk/b", "ignored").await;
    let r2 = put(store, "wk/a1", "x").await;
    let (r3, _) = store.delete("wk/a1").await.expect("delete");
    let r4 = txn(
        store,
        Txn::ops(vec![
            Op::put("wk/a2", "y"),
            Op::put("wk/b2", "ignored"),
            Op::put("wk/a3", "z"),
        ]),
    )
    .await
    .revision;
    assert!(r1 < r2 && r2 < r3 && r3 < r4);

    let event = next_event(&mut watcher).await;
    let expected = KeyValue {
        key: "wk/a1".to_string(),
        value: b"x".to_vec(),
        create_revision: r2,
        mod_revision: r2,
        version: 1,
        lease: None,
    };
    assert_eq!(event.kind, EventKind::Put);
    assert_eq!(event.kv, expected);
    let event = next_event(&mut watcher).await;
    assert_eq!(event, WatchEvent::delete("wk/a1".to_string(), r3));
    let mut from_txn = Vec::new();
    for _ in 0..2 {
        let event = next_event(&mut watcher).await;
        assert_eq!((event.kind, event.kv.mod_revision), (EventKind::Put, r4));
        from_txn.push(event.kv.key);
    }
    from_txn.sort();
    assert_eq!(from_txn, ["wk/a2", "wk/a3"]);
}

/// A watch from a past revision replays history, then continues live, with no gap and no
/// duplicate, while a writer keeps writing during the watch's setup. A second watcher started
/// mid-stream sees an exact contiguous tail.
pub async fn watch_replays_then_continues_live<S: Store>(store: &S) {
    const WRITES: usize = 1000;
    const SET_UP_AFTER: usize = 100;
    let mut expected: Vec<(String, Revision)> = Vec::new();
    for i in 0..10 {
        let key = format!("wr/pre/{i}");
        expected.push((key.clone(), put(store, &key, &key).await));
    }
    let from = expected[0].1;

    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut started = Some(started_tx);
            let mut written = Vec::with_capacity(WRITES);
            for i in 0..WRITES {
                let key = format!("wr/live/{i:04}");
                written.push((key.clone(), put(&store, &key, &key).await));
                if i == SET_UP_AFTER
                    && let Some(started) = started.take()
                {
                    let _ = started.send(());
                }
            }
            written
        })
    };
    started_rx.await.expect("writer started");
    // Both watches are set up while the writer keeps writing.
    let replaying = watch(store, "wr/", Some(from)).await;
    let late = watch(store, "wr/live/", None).await;
    let collect = |mut watcher: Watcher| {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let event = next_event(&mut watcher).await;
                assert_eq!(event.kind, EventKind::Put, "{event:?}");
                assert_eq!(event.kv.value, event.kv.key.as_bytes(), "{event:?}");
                let done = event.kv.key == "wr/live/end";
                seen.push((event.kv.key, event.kv.mod_revision));
                if done {
                    return seen;
                }
            }
        })
    };
    let (replaying, late) = (collect(replaying), collect(late));
    expected.extend(writer.await.expect("writer task"));
    // A last write both watchers see, however early the writer finished.
    expected.push((
        "wr/live/end".to_string(),
        put(store, "wr/live/end", "wr/live/end").await,
    ));

    let replayed = replaying.await.expect("replaying watcher");
    if replayed != expected {
        let first_difference = replayed.iter().zip(&expected).position(|(a, b)| a != b);
        panic!(
            "replaying watcher saw {} events, expected {}; first difference at {first_difference:?}",
            replayed.len(),
            expected.len()
        );
    }
    for pair in expected.windows(2) {
        assert_eq!(pair[1].1, pair[0].1 + 1, "one revision per put: {pair:?}");
    }
    let late = late.await.expect("late watcher");
    let tail = &expected[expected.len() - late.len()..];
    assert_eq!(late, tail, "the late watcher sees a contiguous tail");
}

/// Watching from a compacted revision fails with `Compacted`; from the oldest kept revision it
/// replays; compacting the future is refused.
pub async fn watch_of_compacted_revision_errors<S: Store>(store: &S) {
    let mut revisions = Vec::new();
    for i in 0..5 {
        revisions.push(put(store, &format!("cw/{i}"), "v").await);
    }
    let keep_from = revisions[3];
    store.compact(keep_from).await.expect("compact");

    let requested = revisions[1];
    let err = match store.watch("cw/", Some(requested)).await {
        Err(err) => err,
        Ok(mut watcher) => match timeout(WAIT, watcher.next()).await {
            Ok(Some(Err(err))) => err,
            other => panic!("watch from a compacted revision gave {other:?}"),
        },
    };
    match err {
        StoreError::Compacted {
            requested: r,
            oldest,
        } => assert_eq!((r, oldest), (requested, keep_from)),
        other => panic!("expected Compacted, got {other:?}"),
    }

    let mut watcher = watch(store, "cw/", Some(keep_from)).await;
    for (i, revision) in revisions.iter().enumerate().skip(3) {
        let event = next_event(&mut watcher).await;
        assert_eq!(
            (event.kv.key, event.kv.mod_revision),
            (format!("cw/{i}"), *revision)
        );
    }
    assert_eq!(
        get(store, "cw/0").await.map(|kv| kv.value),
        Some(b"v".to_vec())
    );

    let now = current(store).await;
    let err = store
        .compact(now + 10)
        .await
        .expect_err("compact the future");
    assert!(matches!(err, StoreError::FutureRevision { .. }), "{err:?}");
}

/// When a lease expires, its keys are deleted in one revision, watchers see the deletes, and
/// the lease is gone.
pub async fn lease_expiry_deletes_keys_and_notifies<S: Store>(store: &S, ttl: Duration) {
    let granted = Instant::now();
    let lease = store.grant_lease(ttl).await.expect("grant");
    for key in ["le/a", "le/b"] {
        store
            .put(key, b"v".to_vec(), Some(lease))
            .await
            .expect("put with lease");
    }
    let last = put(store, "le/c", "no lease").await;
    let kv = get(store, "le/a").await.expect("written");
    assert_eq!(kv.lease, Some(lease));

    let mut watcher = watch(store, "le/", Some(last + 1)).await;
    let mut deleted = BTreeMap::new();
    for _ in 0..2 {
        let event = next_event(&mut watcher).await;
        assert_eq!(event.kind, EventKind::Delete, "{event:?}");
        deleted.insert(event.kv.key, event.kv.mod_revision);
    }
    assert!(
        granted.elapsed() >= ttl,
        "the lease ended after {:?}, before its ttl {ttl:?}",
        granted.elapsed()
    );
    let revisions: Vec<Revision> = deleted.values().copied().collect();
    assert_eq!(revisions, [last + 1, last + 1], "one revision: {deleted:?}");
    assert_eq!(deleted.keys().collect::<Vec<_>>(), ["le/a", "le/b"]);

    assert_eq!(get(store, "le/a").await, None);
    assert!(
        get(store, "le/c").await.is_some(),
        "keys without the lease stay"
    );
    let err = store.keep_alive(lease).await.expect_err("expired lease");
    assert!(
        matches!(err, StoreError::LeaseNotFound(id) if id == lease),
        "{err:?}"
    );
    let err = store
        .put("le/d", b"v".to_vec(), Some(lease))
        .await
        .expect_err("put with an expired lease");
    assert!(matches!(err, StoreError::LeaseNotFound(_)), "{err:?}");
}

/// Keep-alives hold a lease (and its keys) past its TTL; once they stop, it expires.
pub async fn keep_alive_extends_lease<S: Store>(store: &S, ttl: Duration) {
    let lease = store.grant_lease(ttl).await.expect("grant");
    let revision = store
        .put("ka/k", b"v".to_vec(), Some(lease))
        .await
        .expect("put with lease");
    let granted = Instant::now();
    let mut last_keep_alive = granted;
    while granted.elapsed() < ttl * 2 {
        // Waiting is the point here: time must pass for a TTL to matter.
        tokio::time::sleep(ttl / 4).await;
        store.keep_alive(lease).await.expect("keep alive");
        last_keep_alive = Instant::now();
    }
    let kv = get(store, "ka/k")
        .await
        .expect("kept alive past twice its ttl");
    assert_eq!(kv.lease, Some(lease));

    let mut watcher = watch(store, "ka/", Some(revision + 1)).await;
    let event = next_event(&mut watcher).await;
    assert_eq!(
        (event.kind, event.kv.key.as_str()),
        (EventKind::Delete, "ka/k")
    );
    assert!(
        last_keep_alive.elapsed() >= ttl,
        "expired {:?} after the last keep-alive, before its ttl {ttl:?}",
        last_keep_alive.elapsed()
    );
}

/// Revoking a lease deletes its keys in one revision; a key re-put without the lease is
/// detached from it.
pub async fn revoke_deletes_keys_in_one_revision<S: Store>(store: &S) {
    let lease = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    for key in ["rv/a", "rv/b", "rv/detached"] {
        store
            .put(key, b"v".to_vec(), Some(lease))
            .await
            .expect("put with lease");
    }
    put(store, "rv/detached", "now without lease").await;
    let before = put(store, "rv/c", "no lease").await;
    let mut watcher = watch(store, "rv/", None).await;

    store.revoke_lease(lease).await.expect("revoke");
    assert_eq!(
        current(store).await,
        before + 1,
        "one revision for the revoke"
    );
    let mut deleted = Vec::new();
    for _ in 0..2 {
        let event = next_event(&mut watcher).await;
        assert_eq!(
            (event.kind, event.kv.mod_revision),
            (EventKind::Delete, before + 1)
        );
        deleted.push(event.kv.key);
    }
    deleted.sort();
    assert_eq!(deleted, ["rv/a", "rv/b"]);
    let (listed, _) = store.list("rv/").await.expect("list");
    assert_eq!(keys(&listed), ["rv/c", "rv/detached"]);

    let err = store.keep_alive(lease).await.expect_err("revoked lease");
    assert!(matches!(err, StoreError::LeaseNotFound(_)), "{err:?}");
    let err = store.revoke_lease(lease).await.expect_err("revoked twice");
    assert!(matches!(err, StoreError::LeaseNotFound(_)), "{err:?}");
}

/// Writes naming a lease that does not exist fail whole and change nothing.
pub async fn unknown_lease_is_rejected<S: Store>(store: &S) {
    let r0 = current(store).await;
    let unknown = LeaseId(0x7ead_beef);
    let err = store
        .put("ul/k", b"v".to_vec(), Some(unknown))
        .await
        .expect_err("unknown lease");
    assert!(
        matches!(err, StoreError::LeaseNotFound(id) if id == unknown),
        "{err:?}"
    );
    let ops = vec![
        Op::put("ul/other", "v"),
        Op::Put {
            key: "ul/k".to_string(),
            value: b"v".to_vec(),
            lease: Some(unknown),
        },
    ];
    let err = store
        .txn(Txn::ops(ops))
        .await
        .expect_err("unknown lease in txn");
    assert!(matches!(err, StoreError::LeaseNotFound(_)), "{err:?}");
    assert_eq!(current(store).await, r0);
    assert_eq!(
        get(store, "ul/other").await,
        None,
        "the txn was not half applied"
    );
    let err = store.keep_alive(unknown).await.expect_err("unknown lease");
    assert!(matches!(err, StoreError::LeaseNotFound(_)), "{err:?}");
}
