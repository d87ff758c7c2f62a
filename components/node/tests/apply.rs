//! `node::apply` against a real redb store: all or nothing, idempotent, CAS-guarded deletes.
#![allow(clippy::unwrap_used, reason = "tests")]

use cloudlet_node::apply::{Applied, Checks, Hold, apply, delete};
use cloudlet_store::{RedbOptions, RedbStore};

const A: &str = "apiVersion: cloudlet/v1
kind: Service
metadata: {name: a}
spec:
  command: [/bin/sleep, '100']
  restart: {policy: always, backoff: {initial: 100ms, max: 30s}, resetAfter: 60s}
  logs: {maxSize: 10Mi, maxFiles: 5}
  resources: {requests: {cpu: 100m, memory: 64Mi}}
";
const B: &str = "apiVersion: cloudlet/v1
kind: Service
metadata: {name: b}
spec:
  command: [/bin/sleep, '100']
  dependsOn: [a]
";

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect()
}

#[tokio::test]
async fn apply_is_idempotent_and_reports_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
    let first = apply(
        &store,
        &files(&[("a.yaml", A), ("b.yaml", B)]),
        &Checks::default(),
    )
    .await
    .unwrap();
    assert!(
        first.iter().all(|o| o.applied == Applied::Created),
        "{first:?}"
    );
    let again = apply(
        &store,
        &files(&[("a.yaml", A), ("b.yaml", B)]),
        &Checks::default(),
    )
    .await
    .unwrap();
    assert!(
        again.iter().all(|o| o.applied == Applied::Unchanged),
        "{again:?}"
    );
    let changed = apply(
        &store,
        &files(&[("a.yaml", &A.replace("'100'", "'200'"))]),
        &Checks::default(),
    )
    .await
    .unwrap();
    assert_eq!(changed[0].applied, Applied::Configured);
}

#[tokio::test]
async fn a_bad_document_applies_nothing_and_deps_guard_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
    let bad = format!(
        "{A}---\napiVersion: cloudlet/v1\nkind: Service\nmetadata: {{name: c}}\nspec: {{command: []}}\n"
    );
    let err = apply(&store, &files(&[("x.yaml", &bad)]), &Checks::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("x.yaml: document 2: spec.command"),
        "{err}"
    );
    use cloudlet_store::Store;
    assert!(store.list("/services/").await.unwrap().0.is_empty());

    apply(
        &store,
        &files(&[("a.yaml", A), ("b.yaml", B)]),
        &Checks::default(),
    )
    .await
    .unwrap();
    let err = delete(&store, "a").await.unwrap_err();
    assert!(err.to_string().contains("dependency of b"), "{err}");
    delete(&store, "b").await.unwrap();
    delete(&store, "a").await.unwrap();
    assert!(
        delete(&store, "a")
            .await
            .unwrap_err()
            .to_string()
            .contains("not found")
    );
}

#[tokio::test]
async fn requests_that_do_not_fit_allocatable_are_refused_naming_node_and_resource() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
    let fit = Checks {
        fit: Some((
            "node-1".to_owned(),
            cloudlet_host::Resources {
                cpu_millis: 1000,
                memory_bytes: 100 << 20,
                pids: 1000,
            },
        )),
        ..Checks::default()
    };
    // A requests 100m and 64Mi: fits.
    apply(&store, &files(&[("a.yaml", A)]), &fit).await.unwrap();
    let big = "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: big}\nspec:\n  command: [x]\n  resources: {requests: {memory: 64Mi}}\n";
    let err = apply(&store, &files(&[("big.yaml", big)]), &fit)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("big.yaml: document 1: spec.resources.requests.memory: service big does not fit node node-1"), "{err}");
    assert!(
        err.contains("memory requests would total 134217728 bytes, allocatable is 104857600 bytes"),
        "{err}"
    );
    // Re-applying A with a smaller request makes room: replacing counts once, not twice.
    let smaller = A.replace("memory: 64Mi", "memory: 16Mi");
    apply(
        &store,
        &files(&[("a.yaml", &smaller), ("big.yaml", big)]),
        &fit,
    )
    .await
    .unwrap();
}

/// A held manifest (one a rollout rolled back from) is not written: the service keeps its stored
/// manifest and the outcome says why; any other manifest for it, and other services, apply.
#[tokio::test]
async fn a_held_manifest_is_not_written_and_says_why() {
    use cloudlet_node::records::{ServiceRecord, manifest_digest, service_key};
    use cloudlet_store::Store;
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
    apply(&store, &files(&[("a.yaml", A)]), &Checks::default())
        .await
        .unwrap();
    let bad = A.replace("'100'", "'666'");
    let parsed = cloudlet_spec::parse_file("a.yaml", &bad).unwrap();
    let mut checks = Checks::default();
    checks.holds.insert(
        "a".to_owned(),
        Hold {
            digest: manifest_digest(parsed[0].as_service().unwrap()),
            why: "rollout 3 rolled it back".to_owned(),
        },
    );
    let stored = || async {
        let kv = store.get(&service_key("a")).await.unwrap().unwrap();
        ServiceRecord::decode(&kv.key, &kv.value)
            .unwrap()
            .manifest
            .spec
            .command
    };
    let out = apply(&store, &files(&[("a.yaml", &bad), ("b.yaml", B)]), &checks)
        .await
        .unwrap();
    assert_eq!(
        out.iter()
            .map(|o| (o.applied, o.held.as_deref()))
            .collect::<Vec<_>>(),
        [
            (Applied::Held, Some("rollout 3 rolled it back")),
            (Applied::Created, None)
        ]
    );
    assert_eq!(stored().await, ["/bin/sleep", "100"]);
    // Another manifest is not held; without holds the held one applies too.
    let other = A.replace("'100'", "'200'");
    let out = apply(&store, &files(&[("a.yaml", &other)]), &checks)
        .await
        .unwrap();
    assert_eq!(out[0].applied, Applied::Configured);
    assert_eq!(stored().await, ["/bin/sleep", "200"]);
    let out = apply(&store, &files(&[("a.yaml", &bad)]), &Checks::default())
        .await
        .unwrap();
    assert_eq!(out[0].applied, Applied::Configured);
    assert_eq!(stored().await, ["/bin/sleep", "666"]);
}
