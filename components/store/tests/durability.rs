//! Durability and failure tests with real processes: an acknowledged write survives SIGKILL,
//! and a write that the filesystem refuses leaves the store usable.
//!
//! Each test re-executes this test binary (`std::env::current_exe`) with `CHILD_MODE` set; the
//! child runs the store and reports on stdout, the parent kills it or checks its report.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cloudlet_store::{RedbOptions, RedbStore, Store, StoreError};

const CHILD_MODE: &str = "CLOUDLET_STORE_TEST_CHILD_MODE";
const CHILD_DB: &str = "CLOUDLET_STORE_TEST_CHILD_DB";

/// The mode this process was started in, if it is a child of one of these tests.
fn child_db(mode: &str) -> Option<PathBuf> {
    (std::env::var(CHILD_MODE).ok()? == mode)
        .then(|| PathBuf::from(std::env::var(CHILD_DB).expect("the parent sets the database path")))
}

/// Arguments that make this test binary run only `test`, printing straight to stdout.
fn child_args(test: &str) -> [&str; 4] {
    ["--exact", test, "--nocapture", "--test-threads=1"]
}

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn value(i: u64) -> Vec<u8> {
    let size = usize::try_from(i % 64).expect("small") * 100 + 1;
    format!("value-{i}-").into_bytes().repeat(size)
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    const ACKS_BEFORE_KILL: usize = 300;
    if let Some(db) = child_db("writer") {
        writer_child(&db).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.redb");
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(&exe)
        .args(child_args("acknowledged_writes_survive_sigkill"))
        .env(CHILD_MODE, "writer")
        .env(CHILD_DB, &db)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut acked = BTreeSet::new();
    for line in lines.by_ref() {
        if let Some(i) = line.unwrap().strip_prefix("ack ") {
            acked.insert(i.parse::<u64>().unwrap());
            if acked.len() == ACKS_BEFORE_KILL {
                break;
            }
        }
    }
    assert_eq!(acked.len(), ACKS_BEFORE_KILL, "the writer stopped early");
    child.0.kill().unwrap(); // SIGKILL
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "the writer was killed: {status:?}");
    // Acknowledgements still in the pipe were acknowledged before the kill too.
    for line in lines {
        if let Some(i) = line.unwrap().strip_prefix("ack ") {
            acked.insert(i.parse::<u64>().unwrap());
        }
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = RedbStore::open(&db, RedbOptions::default()).unwrap();
        for &i in &acked {
            let kv = store.get(&format!("k/{i:06}")).await.unwrap();
            let kv = kv.unwrap_or_else(|| panic!("acknowledged write {i} was lost"));
            assert_eq!(kv.value, value(i), "write {i}");
            assert_eq!(kv.mod_revision, i + 1, "write {i}");
        }
        let revision = store.current_revision().await.unwrap();
        let last = *acked.last().unwrap();
        assert!(revision > last, "revision {revision} lost write {last}");
        // The reopened store takes writes again.
        assert_eq!(
            store.put("after", vec![], None).await.unwrap(),
            revision + 1
        );
    });
}

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Writes keys one at a time, printing each acknowledged one, until killed.
fn writer_child(db: &Path) -> TestResult {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let store = RedbStore::open(db, RedbOptions::default())?;
        // Bounded so that a child whose parent died does not write forever.
        for i in 0..100_000 {
            store.put(&format!("k/{i:06}"), value(i), None).await?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "ack {i}")?;
            stdout.flush()?;
        }
        Ok(())
    })
}

/// The filesystem refusing a write (here RLIMIT_FSIZE, which fails it with EFBIG the way a full
/// disk fails it with ENOSPC, on an ordinary filesystem) fails that write only: reads keep
/// working, and later writes succeed once the filesystem takes bytes again.
#[test]
fn a_refused_write_leaves_the_store_usable() {
    if let Some(db) = child_db("refused") {
        refused_write_child(&db).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.redb");
    let exe = std::env::current_exe().unwrap();
    // A file-size limit raises SIGXFSZ, which kills by default; the shell ignores it, and an
    // ignored signal stays ignored across exec.
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"trap '' XFSZ; exec "$0" "$@""#)
        .arg(&exe)
        .args(child_args("a_refused_write_leaves_the_store_usable"))
        .env(CHILD_MODE, "refused")
        .env(CHILD_DB, &db)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("refused-write-ok"),
        "child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
}

fn refused_write_child(db: &Path) -> TestResult {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let store = RedbStore::open(db, RedbOptions::default())?;
        let before = store.put("before", b"small".to_vec(), None).await?;

        let (soft, hard) = getrlimit(Resource::RLIMIT_FSIZE)?;
        let size = std::fs::metadata(db)?.len();
        setrlimit(Resource::RLIMIT_FSIZE, size, hard)?;
        let big = vec![7u8; 8 << 20];
        let err = store
            .put("big", big.clone(), None)
            .await
            .expect_err("a write past the file-size limit must fail");
        println!("refused write: {err}");
        assert!(
            matches!(err, StoreError::Redb { .. } | StoreError::DiskFull { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&db.display().to_string()), "{err}");

        // Reads still work, and nothing of the failed write is visible.
        assert_eq!(store.current_revision().await?, before);
        let kept = store.get("before").await?.ok_or("lost an earlier key")?;
        assert_eq!(kept.value, b"small");
        assert_eq!(store.get("big").await?, None);
        let (listed, revision) = store.list("").await?;
        assert_eq!((listed.len(), revision), (1, before));

        // Space is back: the next write succeeds at the next revision.
        setrlimit(Resource::RLIMIT_FSIZE, soft, hard)?;
        assert_eq!(store.put("big", big.clone(), None).await?, before + 1);
        let written = store.get("big").await?.ok_or("lost the write")?;
        assert_eq!(written.value, big);
        drop(store);

        let store = RedbStore::open(db, RedbOptions::default())?;
        assert_eq!(store.current_revision().await?, before + 1);
        let written = store.get("big").await?.ok_or("lost the write on reopen")?;
        assert_eq!(written.value, big);
        println!("refused-write-ok");
        Ok(())
    })
}
