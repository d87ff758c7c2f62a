//! Runs the `Store` conformance suite against `RedbStore`, one test per check, each on a fresh
//! database in its own temporary directory.

use std::time::Duration;

use cloudlet_store::{RedbOptions, RedbStore, conformance};
use tempfile::TempDir;

/// Short enough to keep the suite quick, long enough for a loaded 2-core CI machine.
const LEASE_TTL: Duration = Duration::from_secs(1);

fn fresh() -> (TempDir, RedbStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RedbStore::open(&dir.path().join("store.redb"), RedbOptions::default())
        .expect("open store");
    (dir, store)
}

macro_rules! check {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, store) = fresh();
            conformance::$name(&store).await;
        }
    };
    ($name:ident, lease_ttl) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, store) = fresh();
            conformance::$name(&store, LEASE_TTL).await;
        }
    };
}

check!(revision_counts_write_transactions);
check!(versions_and_create_mod_revisions);
check!(compare_and_swap);
check!(invalid_transactions_change_nothing);
check!(delete_prefix);
check!(list_is_sorted_with_its_revision);
check!(watch_reports_puts_and_deletes_under_its_prefix);
check!(watch_replays_then_continues_live);
check!(watch_of_compacted_revision_errors);
check!(lease_expiry_deletes_keys_and_notifies, lease_ttl);
check!(keep_alive_extends_lease, lease_ttl);
check!(revoke_deletes_keys_in_one_revision);
check!(unknown_lease_is_rejected);
