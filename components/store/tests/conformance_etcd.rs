//! Runs the `Store` conformance suite against `EtcdStore` on a real etcd (Debian's 3.4.23),
//! plus what only etcd has: namespaces sharing one etcd, mutual TLS, timeouts, a dying etcd
//! under a watcher, and watches cancelled on etcd when dropped.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cloudlet_store::{EtcdStore, EventKind, Op, Store, StoreError, Txn, conformance};
use common::etcd::Etcd;
use tokio::time::{Instant, timeout};

/// etcd's minimum TTL with its default 1 s election timeout is 1.5 s, rounded up to 2 s.
const LEASE_TTL: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(30);

/// Every check, one after the other (they share etcd's global revision), each in a namespace
/// of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_real_etcd() {
    let mut etcd = Etcd::start(false);
    let base = etcd.store("/conformance/").await;
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    conformance::run_all(
        || {
            let n = next.fetch_add(1, Ordering::Relaxed);
            base.namespaced(&format!("check{n}/")).unwrap()
        },
        LEASE_TTL,
    )
    .await;
    assert_eq!(next.load(Ordering::Relaxed), 13, "every check ran");
    eprintln!("conformance suite on etcd: {:?}", started.elapsed());
}

async fn next_event(watcher: &mut cloudlet_store::Watcher) -> cloudlet_store::WatchEvent {
    match timeout(WAIT, watcher.next()).await {
        Ok(Some(Ok(event))) => event,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

/// Two namespaces on one etcd never see each other's keys, in reads, writes, prefix deletes or
/// watches; the keys sit in etcd under their namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_isolate_stores_sharing_one_etcd() {
    let mut etcd = Etcd::start(false);
    let root = etcd.store("").await;
    let a = root.namespaced("/cluster-a/").unwrap();
    let b = root.namespaced("/cluster-b/").unwrap();
    assert_eq!(a.namespace(), "/cluster-a/");

    let mut a_watch = a.watch("", None).await.unwrap();
    b.put("k", b"from b".to_vec(), None).await.unwrap();
    b.put("only-b", b"x".to_vec(), None).await.unwrap();
    let a_put = a.put("k", b"from a".to_vec(), None).await.unwrap();

    assert_eq!(a.get("k").await.unwrap().unwrap().value, b"from a");
    assert_eq!(b.get("k").await.unwrap().unwrap().value, b"from b");
    assert_eq!(a.get("only-b").await.unwrap(), None);
    let (listed, _) = a.list("").await.unwrap();
    let keys: Vec<_> = listed.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["k"]);
    // The first event a's watcher sees is a's own put, not b's two earlier ones.
    let event = next_event(&mut a_watch).await;
    assert_eq!(
        (event.kind, event.kv.key.as_str(), event.kv.mod_revision),
        (EventKind::Put, "k", a_put)
    );

    // Deleting a's whole keyspace leaves b alone.
    let response = a.txn(Txn::ops(vec![Op::delete_prefix("")])).await.unwrap();
    assert!(response.succeeded);
    assert_eq!(a.list("").await.unwrap().0, vec![]);
    assert_eq!(b.list("").await.unwrap().0.len(), 2);
    let event = next_event(&mut a_watch).await;
    assert_eq!(
        (event.kind, event.kv.key.as_str()),
        (EventKind::Delete, "k")
    );

    // The namespace is a plain key prefix in etcd.
    let (raw, _) = root.list("/cluster-").await.unwrap();
    let raw: Vec<_> = raw.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(raw, ["/cluster-b/k", "/cluster-b/only-b"]);
}

/// A watcher whose reader stops holds etcd's stream back (bounded buffer, no lag error); if
/// etcd compacts past what it still had to send, the watcher ends with `Compacted` after a
/// gap-free run of events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_back_watcher_ends_with_compacted_after_a_gap_free_prefix() {
    let mut etcd = Etcd::start(false);
    let options = cloudlet_store::EtcdOptions {
        watch_buffer: 4,
        ..etcd.options("/held/")
    };
    let store = EtcdStore::connect(options).await.unwrap();
    etcd.wait_ready(&store).await;
    let first = store.put("w/0", vec![0; 64], None).await.unwrap();
    let mut watcher = store.watch("w/", Some(first)).await.unwrap();
    // Far more than the watcher's buffer, etcd's send queue and the HTTP/2 window hold.
    const WRITES: u64 = 2000;
    let value = vec![7u8; 4096];
    let mut last = first;
    for i in 1..WRITES {
        last = store
            .put(&format!("w/{i}"), value.clone(), None)
            .await
            .unwrap();
    }
    store.compact(last).await.unwrap();

    let mut expected = first;
    let err = loop {
        match timeout(WAIT, watcher.next()).await {
            Ok(Some(Ok(event))) => {
                assert_eq!(event.kv.mod_revision, expected, "no gap, no duplicate");
                expected += 1;
            }
            Ok(Some(Err(err))) => break err,
            other => panic!("watcher ended without an error: {other:?}"),
        }
    };
    eprintln!(
        "held-back watcher: {} events before Compacted",
        expected - first
    );
    assert!(
        expected < first + WRITES,
        "every event arrived: etcd was not held back"
    );
    match err {
        StoreError::Compacted { requested, oldest } => {
            assert_eq!((requested, oldest), (first, last));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(timeout(WAIT, watcher.next()).await.unwrap().is_none());
}

/// Over mutual TLS (certificates from rcgen): the store works, and a client without a
/// certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls() {
    let mut etcd = Etcd::start(true);
    let store = etcd.store("/tls/").await;
    let mut watcher = store.watch("", None).await.unwrap();
    let revision = store.put("k", b"v".to_vec(), None).await.unwrap();
    assert_eq!(
        store.get("k").await.unwrap().unwrap().mod_revision,
        revision
    );
    let event = next_event(&mut watcher).await;
    assert_eq!(
        (event.kv.key.as_str(), event.kv.mod_revision),
        ("k", revision)
    );

    let mut options = etcd.options("/tls/");
    options.request_timeout = Duration::from_secs(5);
    if let Some(tls) = &mut options.tls {
        tls.client = None;
    }
    let anonymous = EtcdStore::connect(options).await.unwrap();
    let err = anonymous.get("k").await.expect_err("no client certificate");
    assert!(
        matches!(
            err,
            StoreError::Etcd { .. } | StoreError::EtcdTimeout { .. }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    eprintln!("without a client certificate: {message}");
    assert!(message.contains(&etcd.endpoint), "{message}");
}

/// A request to an etcd that stopped answering (SIGSTOP) fails with `EtcdTimeout` naming the
/// endpoint and key, after the request timeout and not much later; when etcd continues, the
/// same store works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_etcd_times_out_and_the_store_recovers() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut etcd = Etcd::start(false);
    let options = cloudlet_store::EtcdOptions {
        request_timeout: Duration::from_secs(1),
        ..etcd.options("/stopped/")
    };
    let store = EtcdStore::connect(options).await.unwrap();
    etcd.wait_ready(&store).await;
    store.put("k", b"v".to_vec(), None).await.unwrap();

    let pid = Pid::from_raw(i32::try_from(etcd.pid()).unwrap());
    kill(pid, Signal::SIGSTOP).unwrap();
    // The stop is delivered to each of etcd's threads in turn: under load one of them answered
    // a request after kill() had returned. Wait until the kernel shows the whole process stopped.
    wait_stopped(etcd.pid());
    let started = Instant::now();
    let result = store.put("k", b"w".to_vec(), None).await;
    let took = started.elapsed();
    kill(pid, Signal::SIGCONT).unwrap();
    let err = result.expect_err("etcd is stopped");
    assert!(matches!(err, StoreError::EtcdTimeout { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&etcd.endpoint) && message.contains("/stopped/k"),
        "{message}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );

    etcd.wait_ready(&store).await;
    store.put("k", b"x".to_vec(), None).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"x");
}

/// Waits until every thread of `pid` is stopped (state `T` in each `/proc/PID/task/*/stat`).
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let all_stopped = tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                // The state follows the command name's closing parenthesis.
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('T'))
            })
        });
        if all_stopped {
            return;
        }
        assert!(Instant::now() < deadline, "etcd {pid} never showed stopped");
        // No event tells another process's stop; poll the kernel's view.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// When etcd dies under a watcher, the watcher ends with `EtcdWatchEnded` and the revision to
/// resume from; after etcd restarts on its data, the same store reconnects and a watch from
/// that revision delivers exactly the writes the first watcher did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_a_dead_etcd_ends_with_where_to_resume() {
    let mut etcd = Etcd::start(false);
    let store = etcd.store("/restart/").await;
    let mut watcher = store.watch("w/", None).await.unwrap();
    let first = store.put("w/1", b"1".to_vec(), None).await.unwrap();
    assert_eq!(next_event(&mut watcher).await.kv.mod_revision, first);

    etcd.kill();
    let err = match timeout(WAIT, watcher.next()).await {
        Ok(Some(Err(err))) => err,
        other => panic!("expected the watcher to end with an error, got {other:?}"),
    };
    let resume_from = match &err {
        StoreError::EtcdWatchEnded {
            resume_from,
            endpoints,
            ..
        } => {
            assert_eq!(endpoints, &etcd.endpoint);
            *resume_from
        }
        other => panic!("expected EtcdWatchEnded, got {other:?}"),
    };
    assert_eq!(resume_from, first + 1, "{err}");
    assert!(timeout(WAIT, watcher.next()).await.unwrap().is_none());

    etcd.restart();
    etcd.wait_ready(&store).await;
    let second = store.put("w/2", b"2".to_vec(), None).await.unwrap();
    let mut resumed = store.watch("w/", Some(resume_from)).await.unwrap();
    let event = next_event(&mut resumed).await;
    assert_eq!(
        (event.kv.key.as_str(), event.kv.mod_revision),
        ("w/2", second)
    );
}

/// etcd's count of open watchers (its `/metrics` on the client URL).
fn etcd_watchers(etcd: &Etcd) -> u64 {
    use std::io::{Read, Write};
    let address = etcd.endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    let line = body
        .lines()
        .find(|line| line.starts_with("etcd_debugging_mvcc_watcher_total "))
        .unwrap_or_else(|| panic!("no watcher gauge in etcd's metrics"));
    // etcd prints this gauge as an integer.
    line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
}

/// Dropping a watcher cancels its etcd watch, whether it was idle or held back on a full
/// buffer: etcd's watcher count returns to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watchers_cancel_their_etcd_watches() {
    let mut etcd = Etcd::start(false);
    let options = cloudlet_store::EtcdOptions {
        watch_buffer: 1,
        ..etcd.options("/dropped/")
    };
    let store = EtcdStore::connect(options).await.unwrap();
    etcd.wait_ready(&store).await;
    let mut watchers = Vec::new();
    for i in 0..10 {
        watchers.push(store.watch(&format!("idle/{i}/"), None).await.unwrap());
    }
    for _ in 0..10 {
        watchers.push(store.watch("busy/", None).await.unwrap());
    }
    for i in 0..5 {
        store
            .put(&format!("busy/{i}"), b"v".to_vec(), None)
            .await
            .unwrap();
    }
    assert_eq!(etcd_watchers(&etcd), 20);
    drop(watchers);
    let started = Instant::now();
    while etcd_watchers(&etcd) != 0 {
        assert!(
            started.elapsed() < WAIT,
            "etcd still has {} watchers",
            etcd_watchers(&etcd)
        );
        // etcd has no notification for this: poll its gauge.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A list read in many pages is one snapshot: while a writer adds keys, every listed key has a
/// mod revision at most the listed revision, and every key written at or before it is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_list_is_one_snapshot_under_concurrent_writes() {
    let mut etcd = Etcd::start(false);
    let options = cloudlet_store::EtcdOptions {
        list_page: 7,
        ..etcd.options("/paged/")
    };
    let store = EtcdStore::connect(options).await.unwrap();
    etcd.wait_ready(&store).await;
    let mut written = Vec::new();
    for i in 0..100 {
        let key = format!("p/{i:03}");
        written.push((
            key.clone(),
            store.put(&key, b"v".to_vec(), None).await.unwrap(),
        ));
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 100..300 {
                let key = format!("p/{i:03}");
                written.push((
                    key.clone(),
                    store.put(&key, b"v".to_vec(), None).await.unwrap(),
                ));
            }
            written
        })
    };
    let mut lists = Vec::new();
    for _ in 0..5 {
        lists.push(store.list("p/").await.unwrap());
    }
    written.extend(writer.await.unwrap());
    for (listed, revision) in lists {
        let expected: Vec<_> = written
            .iter()
            .filter(|(_, at)| *at <= revision)
            .map(|(key, at)| (key.clone(), *at))
            .collect();
        let got: Vec<_> = listed
            .iter()
            .map(|kv| (kv.key.clone(), kv.mod_revision))
            .collect();
        assert_eq!(got, expected, "list at revision {revision}");
    }
}
