//! Reading a service's log files back: opening a consistent set of them while the writer may be
//! rotating, walking them oldest to newest, and selecting records by run, time and count. Blocking
//! file IO (async callers use `spawn_blocking`, as [`Follower`](crate::Follower) does).
//!
//! It must never fail on a garbled line (see the crate docs), never return a record twice or skip
//! one within a consistent set of files, and never hold more than `tail` records of a run in
//! memory when `tail` is given (files are streamed line by line).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead as _, BufReader};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::LogsError;
use crate::format::{Decoder, LogRecord};
use crate::layout::{CURRENT, FileId, rotated_index};

/// Which runs of the service a query returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunSelect {
    /// Every run.
    #[default]
    All,
    /// Only the highest run number present in the logs.
    Current,
    /// Only the highest run number below the current one; an error if there is none.
    Previous,
}

/// What [`read`] and [`follow`](crate::follow) return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only the last N records (after the other filters).
    pub tail: Option<usize>,
    /// Only records stamped at or after this time.
    pub since: Option<Timestamp>,
    /// Which runs.
    pub run: RunSelect,
}

/// Reads the records of the log directory `dir` matching `query`, oldest first: the rotated files
/// from the highest number down, then `current.log`. A directory that does not exist (nothing was
/// logged yet) reads as empty. A record still being written at the end of `current.log` is left
/// out. Blocking.
pub fn read(dir: &Path, query: &LogQuery) -> Result<Vec<LogRecord>, LogsError> {
    let mut select = Selection::new(query);
    Cursor::open(dir, &mut |r| select.push(r))?;
    select.finish(dir)
}

/// Collects records for a query in one pass: the deques of the two highest runs seen so far.
#[derive(Debug)]
pub(crate) struct Selection {
    tail: Option<usize>,
    since: Option<Timestamp>,
    run: RunSelect,
    /// The highest run seen (for `All`: every record, whatever its run).
    top: Option<Bucket>,
    /// The highest run seen below `top`'s (its records are only kept for `Previous`).
    second: Option<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    run: u64,
    records: VecDeque<LogRecord>,
}

impl Bucket {
    fn new(run: u64) -> Bucket {
        Bucket {
            run,
            records: VecDeque::new(),
        }
    }
}

impl Selection {
    pub(crate) fn new(query: &LogQuery) -> Selection {
        Selection {
            tail: query.tail,
            since: query.since,
            run: query.run,
            top: None,
            second: None,
        }
    }

    pub(crate) fn push(&mut self, record: LogRecord) {
        let since = self.since;
        let tail = self.tail;
        let Some(bucket) = self.bucket_for(record.run) else {
            return;
        };
        if since.is_some_and(|since| record.ts < since) {
            return;
        }
        bucket.records.push_back(record);
        if tail.is_some_and(|tail| bucket.records.len() > tail) {
            bucket.records.pop_front();
        }
    }

    /// The bucket a record of run `r` goes to, if it is kept. Runs are counted even for records
    /// that `since` filters out, so that "current" means the same with or without it.
    fn bucket_for(&mut self, r: u64) -> Option<&mut Bucket> {
        if self.run == RunSelect::All {
            return Some(self.top.get_or_insert_with(|| Bucket::new(0)));
        }
        let top = self.top.as_ref().map(|b| b.run);
        if top.is_none_or(|top| r > top) {
            let mut old = self.top.replace(Bucket::new(r));
            if self.run == RunSelect::Current {
                // Only `Previous` needs the records of the run below the top.
                old = old.map(|b| Bucket::new(b.run));
            }
            self.second = old;
            return self.top.as_mut();
        }
        if top == Some(r) {
            return self.top.as_mut();
        }
        let second = self.second.as_ref().map(|b| b.run);
        if second.is_none_or(|second| r > second) {
            self.second = Some(Bucket::new(r));
        } else if second != Some(r) {
            return None;
        }
        match self.run {
            RunSelect::Previous => self.second.as_mut(),
            RunSelect::All | RunSelect::Current => None,
        }
    }

    /// The highest run seen so far, if any record was.
    pub(crate) fn top_run(&self) -> Option<u64> {
        match self.run {
            RunSelect::All => None,
            _ => self.top.as_ref().map(|b| b.run),
        }
    }

    pub(crate) fn finish(self, dir: &Path) -> Result<Vec<LogRecord>, LogsError> {
        let bucket = match self.run {
            RunSelect::All | RunSelect::Current => self.top,
            RunSelect::Previous => match self.second {
                Some(second) => Some(second),
                None => {
                    return Err(LogsError::NoPreviousRun {
                        dir: dir.to_path_buf(),
                        current: self.top.map(|b| b.run),
                    });
                }
            },
        };
        Ok(bucket.map(|b| b.records.into()).unwrap_or_default())
    }
}

/// A position in the stream of records of one log directory: the file being read and the bytes
/// of its last, unfinished line. Reading resumes where it stopped, across rotations.
#[derive(Debug)]
pub(crate) struct Cursor {
    dir: PathBuf,
    /// `current.log` as it was when last seen, read up to its last complete line.
    reading: Option<OpenLog>,
    /// The newest file read from (the one in `reading`, or a rotated one read to its end).
    last_id: Option<FileId>,
    pending: Vec<u8>,
    decoder: Decoder,
}

/// Records go to a sink: the reader's selection or the follower's queue.
pub(crate) type Sink<'a> = dyn FnMut(LogRecord) + 'a;

impl Cursor {
    /// Reads every file of `dir` into `sink` and stops at the end of `current.log`.
    pub(crate) fn open(dir: &Path, sink: &mut Sink<'_>) -> Result<Cursor, LogsError> {
        let mut cursor = Cursor {
            dir: dir.to_path_buf(),
            reading: None,
            last_id: None,
            pending: Vec::new(),
            decoder: Decoder::default(),
        };
        cursor.take(snapshot(dir)?, sink)?;
        Ok(cursor)
    }

    /// Reads what was appended since the last call into `sink`, following `current.log` through
    /// rotations: when `current.log` is no longer the file being read, that file is complete (the
    /// writer renames it only between writes), so it is read to its end, then the files rotated
    /// after it and the new `current.log`. Files deleted by retention before they were read
    /// cannot be read.
    pub(crate) fn poll(&mut self, sink: &mut Sink<'_>) -> Result<(), LogsError> {
        loop {
            // Look at current.log before reading: if it is another file by now, the one being
            // read was complete before this look, so reading it to its end below gets all of it.
            let path = self.dir.join(CURRENT);
            let now = match std::fs::metadata(&path) {
                Ok(meta) => Some(FileId::of(&meta)),
                // Between the rename and the creation of a new one, or no directory (yet).
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(source) => return Err(LogsError::Read { path, source }),
            };
            if let Some(log) = &mut self.reading {
                drain(log, &mut self.pending, &mut self.decoder, sink)?;
            }
            let Some(now) = now else {
                return Ok(());
            };
            if self.reading.as_ref().is_some_and(|log| log.id == now) {
                return Ok(());
            }
            if self.reading.take().is_some() {
                self.flush(sink);
            }
            let files = snapshot(&self.dir)?;
            let start = self
                .last_id
                .and_then(|id| files.iter().position(|f| f.id == id))
                .map_or(0, |i| i + 1);
            self.take(files.into_iter().skip(start), sink)?;
            if self.reading.is_none() {
                // current.log vanished again; the next wake-up will see the new one.
                return Ok(());
            }
        }
    }

    fn take(
        &mut self,
        files: impl IntoIterator<Item = OpenLog>,
        sink: &mut Sink<'_>,
    ) -> Result<(), LogsError> {
        for mut log in files {
            self.last_id = Some(log.id);
            drain(&mut log, &mut self.pending, &mut self.decoder, sink)?;
            if log.current {
                self.reading = Some(log);
            } else {
                self.flush(sink);
            }
        }
        Ok(())
    }

    /// A complete file ended without `\n`: its last bytes are a torn record, read as a line.
    fn flush(&mut self, sink: &mut Sink<'_>) {
        if let Some(record) = self.decoder.decode(&self.pending) {
            sink(record);
        }
        self.pending.clear();
    }
}

/// Reads complete lines from `log` until its end into `sink`; an unfinished last line stays in
/// `pending` (reading continues it next time).
fn drain(
    log: &mut OpenLog,
    pending: &mut Vec<u8>,
    decoder: &mut Decoder,
    sink: &mut Sink<'_>,
) -> Result<(), LogsError> {
    loop {
        let n = log
            .reader
            .read_until(b'\n', pending)
            .map_err(|source| LogsError::Read {
                path: log.path.clone(),
                source,
            })?;
        if n == 0 || pending.last() != Some(&b'\n') {
            return Ok(());
        }
        pending.pop();
        if let Some(record) = decoder.decode(pending) {
            sink(record);
        }
        pending.clear();
    }
}

/// One open log file.
#[derive(Debug)]
pub(crate) struct OpenLog {
    path: PathBuf,
    id: FileId,
    current: bool,
    reader: BufReader<File>,
}

/// A file found by [`scan`].
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    path: PathBuf,
    id: FileId,
    current: bool,
}

/// How often [`snapshot`] tries before giving up, and how long it waits in between.
const SNAPSHOT_TRIES: u32 = 50;
const SNAPSHOT_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Opens every log file of `dir`, oldest first, as one consistent set: the directory is listed
/// before and after opening, and the set is taken only if no file was renamed in between (the
/// writer renames only while rotating, and each rotation renames `current.log`). Even a set
/// listed halfway through a rotation is in the right order: every rename moves a file to a
/// higher, free number.
pub(crate) fn snapshot(dir: &Path) -> Result<Vec<OpenLog>, LogsError> {
    for _ in 0..SNAPSHOT_TRIES {
        if let Some(before) = scan(dir)?
            && let Some(files) = open_all(&before)?
            && scan(dir)?.as_ref() == Some(&before)
        {
            return Ok(files);
        }
        std::thread::sleep(SNAPSHOT_PAUSE);
    }
    Err(LogsError::Unstable {
        dir: dir.to_path_buf(),
    })
}

/// Lists the log files of `dir`, oldest first, with their identities. `None` if a file vanished
/// while listing (a rotation is under way); empty if `dir` does not exist.
fn scan(dir: &Path) -> Result<Option<Vec<Entry>>, LogsError> {
    let list_error = |source| LogsError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(Vec::new())),
        Err(e) => return Err(list_error(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let name = entry.map_err(list_error)?.file_name();
        let order = match rotated_index(&name) {
            Some(n) => n,
            None if name == CURRENT => 0,
            None => continue,
        };
        let path = dir.join(&name);
        match std::fs::metadata(&path) {
            Ok(meta) => found.push((
                order,
                Entry {
                    path,
                    id: FileId::of(&meta),
                    current: order == 0,
                },
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LogsError::Read { path, source }),
        }
    }
    // Highest number (oldest) first; current.log, numbered 0 here, last.
    found.sort_by_key(|(order, _)| std::cmp::Reverse(*order));
    Ok(Some(found.into_iter().map(|(_, entry)| entry).collect()))
}

/// Opens the listed files; `None` if one is gone or is no longer the file that was listed.
fn open_all(entries: &[Entry]) -> Result<Option<Vec<OpenLog>>, LogsError> {
    let mut files = Vec::with_capacity(entries.len());
    for entry in entries {
        let open_error = |source| LogsError::Open {
            path: entry.path.clone(),
            source,
        };
        let file = match File::open(&entry.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(open_error(e)),
        };
        if FileId::of(&file.metadata().map_err(open_error)?) != entry.id {
            return Ok(None);
        }
        files.push(OpenLog {
            path: entry.path.clone(),
            id: entry.id,
            current: entry.current,
            reader: BufReader::with_capacity(64 * 1024, file),
        });
    }
    Ok(Some(files))
}
