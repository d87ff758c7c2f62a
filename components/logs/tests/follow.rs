//! Crate-API tests of following log files while a writer appends and rotates them. They wait
//! for records with bounded timeouts, never with sleeps, and write only in their temp directories.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests; the workspace lints aim at library code"
)]

use std::path::Path;
use std::time::Duration;

use cloudlet_logs::{
    Follower, LogLimits, LogQuery, LogRecord, LogWriter, RunSelect, Stream, follow,
};
use tokio::time::timeout;

/// Long enough for a loaded machine, short enough to fail a hung test.
const WAIT: Duration = Duration::from_secs(20);

async fn next(f: &mut Follower) -> LogRecord {
    timeout(WAIT, f.next())
        .await
        .expect("no record in time")
        .expect("follower ended")
        .unwrap()
}

async fn next_texts(f: &mut Follower, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next(f).await.text);
    }
    out
}

fn write(w: &mut LogWriter, run: u64, text: &str) {
    w.write(Stream::Stdout, run, text.as_bytes(), false);
}

fn strings(range: std::ops::Range<usize>, prefix: &str) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

fn file_count(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[tokio::test]
async fn follow_sees_appended_lines_and_survives_each_rotation() {
    for max_files in [1, 3] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // Every record fills a file: each write after the first rotates.
        let mut w = LogWriter::open(
            dir,
            LogLimits {
                max_size: 1,
                max_files,
            },
        )
        .unwrap();
        write(&mut w, 1, "a");
        let mut f = follow(dir, &LogQuery::default()).await.unwrap();
        assert_eq!(next(&mut f).await.text, "a", "max_files {max_files}");
        for text in ["b", "c", "d", "e", "f"] {
            write(&mut w, 1, text);
            assert_eq!(next(&mut f).await.text, text, "max_files {max_files}");
        }
        assert_eq!(file_count(dir), usize::try_from(max_files).unwrap());
    }
}

#[tokio::test]
async fn follow_keeps_up_with_a_fast_writer_without_loss_or_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // About 25 files of 4 KiB: rotated many times, none deleted before it could be read.
    let limits = LogLimits {
        max_size: 4096,
        max_files: 100,
    };
    let mut w = LogWriter::open(&dir, limits).unwrap();
    for i in 0..5 {
        write(&mut w, 1, &format!("line {i}"));
    }
    let query = LogQuery {
        tail: Some(3),
        ..LogQuery::default()
    };
    let mut f = follow(&dir, &query).await.unwrap();
    assert_eq!(next_texts(&mut f, 3).await, strings(2..5, "line "));

    let writer = std::thread::spawn(move || {
        for i in 5..2_000 {
            write(&mut w, 1, &format!("line {i}"));
        }
        w
    });
    assert_eq!(next_texts(&mut f, 1_995).await, strings(5..2_000, "line "));
    let mut w = writer.join().unwrap();
    assert!(file_count(&dir) > 10);
    // Nothing else was queued in between: the next record is the one written now.
    write(&mut w, 1, "end");
    assert_eq!(next(&mut f).await.text, "end");
}

#[tokio::test]
async fn follow_current_run_takes_later_runs_and_previous_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut w = LogWriter::open(dir, LogLimits::default()).unwrap();
    write(&mut w, 1, "one");
    write(&mut w, 2, "two");

    let previous = LogQuery {
        run: RunSelect::Previous,
        ..LogQuery::default()
    };
    let mut f = follow(dir, &previous).await.unwrap();
    assert_eq!(next(&mut f).await.text, "one");
    assert!(timeout(WAIT, f.next()).await.unwrap().is_none());

    let current = LogQuery {
        run: RunSelect::Current,
        ..LogQuery::default()
    };
    let mut f = follow(dir, &current).await.unwrap();
    assert_eq!(next(&mut f).await.text, "two");
    write(&mut w, 1, "late line of run 1");
    write(&mut w, 3, "three");
    let r = next(&mut f).await;
    assert_eq!((r.run, r.text.as_str()), (3, "three"));
}

#[tokio::test]
async fn follow_waits_for_a_directory_that_does_not_exist_yet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("not-yet");
    let mut f = follow(&dir, &LogQuery::default()).await.unwrap();
    let mut w = LogWriter::open(&dir, LogLimits::default()).unwrap();
    write(&mut w, 1, "first");
    assert_eq!(next(&mut f).await.text, "first");
    write(&mut w, 1, "second");
    assert_eq!(next(&mut f).await.text, "second");
}

#[tokio::test]
async fn a_cancelled_next_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut w = LogWriter::open(dir, LogLimits::default()).unwrap();
    let mut f = follow(dir, &LogQuery::default()).await.unwrap();
    // Nothing to read: the wait is cut short.
    assert!(timeout(Duration::from_millis(50), f.next()).await.is_err());
    write(&mut w, 1, "kept");
    assert_eq!(next(&mut f).await.text, "kept");
}
