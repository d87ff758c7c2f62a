//! Crate-API tests of writing, rotating, reading and pruning log files, on real files in temp
//! directories. They must never write outside the temp directories they create.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests; the workspace lints aim at library code"
)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use cloudlet_logs::{
    LineSplitter, LogLimits, LogQuery, LogRecord, LogWriter, LogsError, MAX_LINE, RunSelect,
    Stream, prune, read,
};
use jiff::{SignedDuration, Timestamp};

fn ts(second: i64) -> Timestamp {
    let base: Timestamp = "2026-11-27T03:00:00.5Z".parse().unwrap();
    base.checked_add(SignedDuration::from_secs(second)).unwrap()
}

/// Limits that never rotate in these tests.
const BIG: LogLimits = LogLimits {
    max_size: 1 << 30,
    max_files: 3,
};

fn all() -> LogQuery {
    LogQuery::default()
}

fn texts(records: &[LogRecord]) -> Vec<&str> {
    records.iter().map(|r| r.text.as_str()).collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn round_trip_keeps_bytes_partials_streams_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("svc");
    let mut w = LogWriter::open(&dir, BIG).unwrap();
    w.write_at(Stream::Stdout, 1, b"hello world", false, ts(0));
    w.write_at(Stream::Stderr, 1, b"bad \xff\xfe bytes", false, ts(1));
    w.write_at(Stream::Stdout, 2, b"first part ", true, ts(2));
    w.write_at(Stream::Stdout, 2, b"second part", false, ts(2));
    w.write_at(Stream::Stdout, 2, b"", false, ts(3));
    w.write_at(Stream::Stdout, 2, b"crlf\r", false, ts(4));
    w.write_at(Stream::Event, 2, b"two\nlines\n", false, ts(5));
    assert_eq!(w.dropped_total(), 0);

    let got = read(&dir, &all()).unwrap();
    let want = [
        (ts(0), Stream::Stdout, 1, false, "hello world"),
        (
            ts(1),
            Stream::Stderr,
            1,
            false,
            "bad \u{fffd}\u{fffd} bytes",
        ),
        (ts(2), Stream::Stdout, 2, true, "first part "),
        (ts(2), Stream::Stdout, 2, false, "second part"),
        (ts(3), Stream::Stdout, 2, false, ""),
        (ts(4), Stream::Stdout, 2, false, "crlf\r"),
        (ts(5), Stream::Event, 2, false, "two"),
        (ts(5), Stream::Event, 2, false, "lines"),
    ];
    let got: Vec<_> = got
        .iter()
        .map(|r| (r.ts, r.stream, r.run, r.partial, r.text.as_str()))
        .collect();
    assert_eq!(got, want);

    // The bytes on disk are the documented format, invalid UTF-8 included.
    let raw = fs::read(dir.join("current.log")).unwrap();
    let second_line = raw.split(|&b| b == b'\n').nth(1).unwrap();
    assert_eq!(
        second_line,
        b"2026-11-27T03:00:01.500000000Z stderr 1 F bad \xff\xfe bytes"
    );
}

#[test]
fn open_makes_a_private_directory_and_file_and_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b");
    let mut w = LogWriter::open(&dir, BIG).unwrap();
    w.write_at(Stream::Stdout, 1, b"one", false, ts(0));
    drop(w);
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        fs::metadata(dir.join("current.log"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let mut w = LogWriter::open(&dir, BIG).unwrap();
    w.write_at(Stream::Stdout, 1, b"two", false, ts(1));
    assert_eq!(texts(&read(&dir, &all()).unwrap()), ["one", "two"]);
}

#[test]
fn a_40_kib_line_through_the_splitter_is_stored_as_p_p_f() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(tmp.path(), BIG).unwrap();
    let mut input: Vec<u8> = (0..40 * 1024).map(|i| b"0123456789"[i % 10]).collect();
    input.extend_from_slice(b"\nshort\nno newline at the end");
    let mut splitter = LineSplitter::new();
    for chunk in input.chunks(1000) {
        splitter.push(chunk, |line, partial| {
            w.write(Stream::Stdout, 1, line, partial)
        });
    }
    splitter.finish(|line, partial| w.write(Stream::Stdout, 1, line, partial));

    let got = read(tmp.path(), &all()).unwrap();
    let shape: Vec<(usize, bool)> = got.iter().map(|r| (r.text.len(), r.partial)).collect();
    assert_eq!(
        shape,
        [
            (MAX_LINE, true),
            (MAX_LINE, true),
            (8 * 1024, false),
            (5, false),
            (21, false)
        ]
    );
    let joined: String = got[..3].iter().map(|r| r.text.as_str()).collect();
    assert_eq!(joined.as_bytes(), &input[..40 * 1024]);
    assert_eq!(texts(&got[3..]), ["short", "no newline at the end"]);
}

#[test]
fn rotation_keeps_max_files_and_the_newest_records_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = LogLimits {
        max_size: 4096,
        max_files: 3,
    };
    let mut w = LogWriter::open(tmp.path(), limits).unwrap();
    for i in 0..10_000 {
        w.write_at(
            Stream::Stdout,
            1,
            format!("record {i:05}").as_bytes(),
            false,
            ts(i),
        );
    }
    assert_eq!(w.dropped_total(), 0);
    assert_eq!(names(tmp.path()), ["1.log", "2.log", "current.log"]);
    let mut total = 0;
    for name in names(tmp.path()) {
        let size = fs::metadata(tmp.path().join(name)).unwrap().len();
        assert!(size <= limits.max_size, "{size}");
        total += size;
    }
    assert!(total > 2 * limits.max_size, "{total}");

    let got = read(tmp.path(), &all()).unwrap();
    let numbers: Vec<i64> = got
        .iter()
        .map(|r| r.text["record ".len()..].parse().unwrap())
        .collect();
    assert_eq!(numbers.last(), Some(&9_999));
    // Consecutive: nothing lost among the kept files, nothing duplicated, oldest first.
    let first = numbers[0];
    assert!(first > 0);
    assert_eq!(numbers, (first..10_000).collect::<Vec<_>>());
    // Every line of the kept files was returned.
    let lines: usize = names(tmp.path())
        .iter()
        .map(|n| {
            fs::read(tmp.path().join(n))
                .unwrap()
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        })
        .sum();
    assert_eq!(lines, got.len());
    assert!(got.iter().zip(&numbers).all(|(r, &n)| r.ts == ts(n)));
}

#[test]
fn max_files_one_keeps_only_current_log() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(
        tmp.path(),
        LogLimits {
            max_size: 200,
            max_files: 1,
        },
    )
    .unwrap();
    for i in 0..20 {
        w.write_at(
            Stream::Stdout,
            1,
            format!("record {i:02}").as_bytes(),
            false,
            ts(i),
        );
    }
    assert_eq!(names(tmp.path()), ["current.log"]);
    let got = read(tmp.path(), &all()).unwrap();
    assert_eq!(got.last().unwrap().text, "record 19");
    assert!(got.len() < 20);
}

/// Runs 1 to 4 with 100 records each, one second apart, in files of 2 KiB (none deleted).
fn four_runs(dir: &Path) -> LogWriter {
    let mut w = LogWriter::open(
        dir,
        LogLimits {
            max_size: 2048,
            max_files: 100,
        },
    )
    .unwrap();
    for i in 0..400 {
        let run = u64::try_from(i / 100 + 1).unwrap();
        w.write_at(Stream::Stdout, run, format!("{i}").as_bytes(), false, ts(i));
    }
    assert!(names(dir).len() > 5, "{:?}", names(dir));
    w
}

fn numbers(dir: &Path, query: LogQuery) -> Vec<i64> {
    read(dir, &query)
        .unwrap()
        .iter()
        .map(|r| r.text.parse().unwrap())
        .collect()
}

#[test]
fn tail_since_and_runs_across_rotated_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut w = four_runs(dir);
    let range = |a: i64, b: i64| (a..b).collect::<Vec<_>>();
    let q = |tail, since: Option<i64>, run| LogQuery {
        tail,
        since: since.map(ts),
        run,
    };

    assert_eq!(numbers(dir, q(None, None, RunSelect::All)), range(0, 400));
    assert_eq!(
        numbers(dir, q(Some(5), None, RunSelect::All)),
        range(395, 400)
    );
    assert_eq!(numbers(dir, q(Some(0), None, RunSelect::All)), range(0, 0));
    assert_eq!(
        numbers(dir, q(None, Some(150), RunSelect::All)),
        range(150, 400)
    );
    assert_eq!(
        numbers(dir, q(Some(3), Some(150), RunSelect::All)),
        range(397, 400)
    );
    assert_eq!(
        numbers(dir, q(None, None, RunSelect::Current)),
        range(300, 400)
    );
    assert_eq!(
        numbers(dir, q(None, None, RunSelect::Previous)),
        range(200, 300)
    );
    assert_eq!(
        numbers(dir, q(Some(10), None, RunSelect::Previous)),
        range(290, 300)
    );
    assert_eq!(
        numbers(dir, q(None, Some(350), RunSelect::Current)),
        range(350, 400)
    );
    // `since` does not change which run is the current one.
    assert_eq!(
        numbers(dir, q(None, Some(350), RunSelect::Previous)),
        range(0, 0)
    );

    // A late line of run 3 (its pipe drained after run 4 started) belongs to run 3.
    w.write_at(Stream::Stderr, 3, b"1000", false, ts(1000));
    let mut want = range(290, 300);
    want.push(1000);
    assert_eq!(numbers(dir, q(Some(11), None, RunSelect::Previous)), want);
    assert_eq!(
        numbers(dir, q(Some(2), None, RunSelect::Current)),
        range(398, 400)
    );
    assert_eq!(numbers(dir, q(Some(2), None, RunSelect::All)), [399, 1000]);
}

#[test]
fn previous_without_an_earlier_run_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("svc");
    let previous = LogQuery {
        run: RunSelect::Previous,
        ..LogQuery::default()
    };
    let current = LogQuery {
        run: RunSelect::Current,
        ..LogQuery::default()
    };

    // Nothing logged yet: no directory.
    assert_eq!(read(&dir, &all()).unwrap(), []);
    assert_eq!(read(&dir, &current).unwrap(), []);
    let err = read(&dir, &previous).unwrap_err();
    assert!(
        matches!(err, LogsError::NoPreviousRun { current: None, .. }),
        "{err:?}"
    );
    assert!(err.to_string().ends_with("nothing is logged yet"), "{err}");

    let mut w = LogWriter::open(&dir, BIG).unwrap();
    w.write_at(Stream::Event, 1, b"started pid 12", false, ts(0));
    let err = read(&dir, &previous).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no previous run in the logs in {}: only run 1 is logged",
            dir.display()
        )
    );
}

#[test]
fn failed_writes_are_counted_and_reported_when_writing_works_again() {
    // A real failing file: /dev/full answers every write with ENOSPC.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let current = dir.join("current.log");
    std::os::unix::fs::symlink("/dev/full", &current).unwrap();
    let mut w = LogWriter::open(dir, BIG).unwrap();
    w.write_at(Stream::Stdout, 1, b"lost 1", false, ts(0));
    w.write_at(Stream::Stdout, 1, b"lost 2", true, ts(1));
    w.write_at(Stream::Event, 1, b"lost 3\nlost 4", false, ts(2));
    assert_eq!(w.dropped_total(), 4);

    fs::remove_file(&current).unwrap();
    w.write_at(Stream::Stdout, 2, b"back", false, ts(3));
    w.write_at(Stream::Stdout, 2, b"again", false, ts(4));
    assert_eq!(w.dropped_total(), 4);

    let got = read(dir, &all()).unwrap();
    let event = format!(
        "dropped 4 lines: write {}: No space left on device (os error 28)",
        current.display()
    );
    assert_eq!(texts(&got), [event.as_str(), "back", "again"]);
    assert_eq!(
        (got[0].stream, got[0].run, got[0].ts),
        (Stream::Event, 2, ts(3))
    );
}

#[test]
fn a_writer_that_cannot_open_its_file_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("current.log")).unwrap();
    let err = LogWriter::open(tmp.path(), BIG).unwrap_err();
    assert!(matches!(err, LogsError::Open { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&format!(
        "open {}",
        tmp.path().join("current.log").display()
    )));
}

#[test]
fn torn_and_garbled_lines_are_shown_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut w = LogWriter::open(dir, BIG).unwrap();
    w.write_at(Stream::Stdout, 5, b"before", false, ts(0));
    drop(w);
    // A crash in the middle of a record leaves it without its newline.
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(dir.join("current.log"))
        .unwrap();
    std::io::Write::write_all(&mut file, b"2026-11-27T03:00:01.5Z std").unwrap();
    let mut w = LogWriter::open(dir, BIG).unwrap();
    w.write_at(Stream::Stdout, 5, b"after", false, ts(2));

    let got = read(dir, &all()).unwrap();
    assert_eq!(
        texts(&got),
        [
            "before",
            "unreadable log record: 2026-11-27T03:00:01.5Z std",
            "after"
        ]
    );
    assert_eq!(
        (got[1].stream, got[1].run, got[1].ts),
        (Stream::Event, 5, ts(0))
    );
}

#[test]
fn an_unterminated_end_counts_in_rotated_files_but_not_in_current_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(
        dir.join("2.log"),
        "2026-11-27T03:00:00Z stdout 1 F oldest\n",
    )
    .unwrap();
    fs::write(
        dir.join("1.log"),
        "2026-11-27T03:00:01Z stdout 1 F older\n2026-11-27T03:00:02Z stdout 1 F cut",
    )
    .unwrap();
    fs::write(
        dir.join("current.log"),
        "2026-11-27T03:00:03Z stdout 1 F newest\n2026-11-27T03:00:04Z stdout 1 F being writ",
    )
    .unwrap();
    fs::write(dir.join("notes.txt"), "not a log file\n").unwrap();
    assert_eq!(
        texts(&read(dir, &all()).unwrap()),
        ["oldest", "older", "cut", "newest"]
    );
}

#[test]
fn prune_removes_only_stale_unkept_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("logs");
    let old = SystemTime::now() - Duration::from_secs(3 * 3600);
    let make = |name: &str, modified: Option<SystemTime>| {
        let mut w = LogWriter::open(&root.join(name), BIG).unwrap();
        w.write(Stream::Stdout, 1, b"x", false);
        if let Some(t) = modified {
            fs::File::options()
                .write(true)
                .open(root.join(name).join("current.log"))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
    };
    make("kept", Some(old));
    make("deleted", Some(old));
    make("fresh", None);
    fs::create_dir(root.join("empty")).unwrap();
    fs::File::open(root.join("empty"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    fs::write(root.join("plain-file"), "x").unwrap();
    std::os::unix::fs::symlink(root.join("deleted"), root.join("link")).unwrap();
    fs::File::options()
        .write(true)
        .open(root.join("plain-file"))
        .unwrap()
        .set_modified(old)
        .unwrap();

    let report = prune(&root, &|name| name == "kept", Duration::from_secs(3600)).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.removed, ["deleted", "empty"]);
    assert_eq!(names(&root), ["fresh", "kept", "link", "plain-file"]);

    let report = prune(&tmp.path().join("missing"), &|_| false, Duration::ZERO).unwrap();
    assert!(report.removed.is_empty());
}
