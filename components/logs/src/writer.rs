//! Appending records to a service's `current.log` and rotating it by size. Used by the shim:
//! synchronous, no async runtime, one reused buffer and one `write(2)` per record.
//!
//! It must never panic, never block or retry forever, and never lose a record silently: a record
//! that cannot be written is counted, and the next successful write first records
//! `dropped N lines: <first error>`. It never fsyncs (see the crate docs).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::LogsError;
use crate::format::{Stream, encode};
use crate::layout::{CURRENT, rotated_index, rotated_name};

/// How much log a service may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Rotate `current.log` before it would grow past this many bytes. A single record longer than
    /// this still gets a file of its own.
    pub max_size: u64,
    /// Files kept in total, `current.log` included; the oldest beyond it are deleted. 0 counts as 1.
    pub max_files: u32,
}

impl Default for LogLimits {
    /// 10 MiB per file, 5 files.
    fn default() -> Self {
        LogLimits {
            max_size: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// Writes records to `current.log` in one service's log directory, rotating it by size.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    path: PathBuf,
    limits: LogLimits,
    /// `None` after a failure: the next write opens the file again (it may have been deleted,
    /// or the directory removed).
    file: Option<File>,
    /// Bytes in `current.log`, as far as this writer knows.
    size: u64,
    /// The file does not end in `\n` (a torn write): the next record starts with one, so that the
    /// fragment stays a line of its own and this record stays whole.
    torn: bool,
    /// The bytes of the record(s) being written; reused.
    buf: Vec<u8>,
    /// Records dropped since the last successful write, and why the first of them was.
    pending_drops: u64,
    first_error: Option<String>,
    dropped_total: u64,
}

impl LogWriter {
    /// Opens (creating it and `dir`, mode 0700, if needed) `dir/current.log` for appending.
    pub fn open(dir: &Path, limits: LogLimits) -> Result<LogWriter, LogsError> {
        let mut writer = LogWriter {
            dir: dir.to_path_buf(),
            path: dir.join(CURRENT),
            limits,
            file: None,
            size: 0,
            torn: false,
            buf: Vec::with_capacity(256),
            pending_drops: 0,
            first_error: None,
            dropped_total: 0,
        };
        writer.open_current()?;
        Ok(writer)
    }

    /// The limits this writer rotates by.
    pub fn limits(&self) -> LogLimits {
        self.limits
    }

    /// Records lost since this writer was opened (each part of a split line counts as one).
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Writes one record stamped with the current time. See [`write_at`](Self::write_at).
    pub fn write(&mut self, stream: Stream, run: u64, text: &[u8], partial: bool) {
        self.write_at(stream, run, text, partial, Timestamp::now());
    }

    /// Writes one record stamped `ts`. `text` is the line without its `\n`; if it does contain
    /// `\n` (an event message, say), each line of it becomes a record of its own, the last one
    /// taking `partial`, and a trailing `\n` adds no empty record. A failure is counted, not
    /// returned (see [`dropped_total`](Self::dropped_total)).
    pub fn write_at(
        &mut self,
        stream: Stream,
        run: u64,
        text: &[u8],
        partial: bool,
        ts: Timestamp,
    ) {
        self.buf.clear();
        if self.pending_drops > 0 {
            let why = self.first_error.as_deref().unwrap_or("unknown error");
            let msg = format!("dropped {} lines: {why}", self.pending_drops);
            encode(&mut self.buf, ts, Stream::Event, run, false, msg.as_bytes());
        }
        let mut records = 0;
        let mut rest = text;
        loop {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    encode(&mut self.buf, ts, stream, run, false, &rest[..i]);
                    records += 1;
                    rest = &rest[i + 1..];
                    if rest.is_empty() {
                        break;
                    }
                }
                None => {
                    encode(&mut self.buf, ts, stream, run, partial, rest);
                    records += 1;
                    break;
                }
            }
        }
        match self.append() {
            Ok(()) => {
                self.pending_drops = 0;
                self.first_error = None;
            }
            Err(e) => {
                self.file = None;
                self.pending_drops += records;
                self.dropped_total += records;
                if self.first_error.is_none() {
                    self.first_error = Some(e.to_string());
                }
            }
        }
    }

    /// Appends `buf` to `current.log`, rotating first if it would grow past the limit.
    fn append(&mut self) -> Result<(), LogsError> {
        if self.file.is_none() {
            self.open_current()?;
        }
        let len = u64::try_from(self.buf.len()).unwrap_or(u64::MAX);
        if self.size > 0 && self.size.saturating_add(len) > self.limits.max_size {
            self.rotate()?;
        }
        if self.torn {
            self.buf.insert(0, b'\n');
        }
        let Some(file) = &mut self.file else {
            // open_current and rotate leave a file open when they succeed.
            return Err(self.write_error(io::ErrorKind::NotFound.into()));
        };
        let mut done = 0;
        let result = loop {
            if done == self.buf.len() {
                break Ok(());
            }
            match file.write(&self.buf[done..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.size = self
            .size
            .saturating_add(u64::try_from(done).unwrap_or(u64::MAX));
        if done > 0 {
            self.torn = self.buf[done - 1] != b'\n';
        }
        result.map_err(|e| self.write_error(e))
    }

    fn write_error(&self, source: io::Error) -> LogsError {
        LogsError::Write {
            path: self.path.clone(),
            source,
        }
    }

    /// Opens `current.log` (creating the directory and the file as needed) and learns its size
    /// and whether it ends in the middle of a record.
    fn open_current(&mut self) -> Result<(), LogsError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| LogsError::CreateDir {
                path: self.dir.clone(),
                source,
            })?;
        let open_error = |source| LogsError::Open {
            path: self.path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(open_error)?;
        let size = file.metadata().map_err(open_error)?.len();
        let mut last = [b'\n'];
        if size > 0 {
            file.read_at(&mut last, size - 1).map_err(open_error)?;
        }
        self.torn = last[0] != b'\n';
        self.size = size;
        self.file = Some(file);
        Ok(())
    }

    /// Renames `n.log` to `(n+1).log` (deleting those that would pass `max_files`), then
    /// `current.log` to `1.log`, then opens a new `current.log`. Every step is a rename or unlink,
    /// so a crash in between loses or duplicates no record; it can only leave a gap in the numbers,
    /// which readers and the next rotation accept.
    fn rotate(&mut self) -> Result<(), LogsError> {
        let keep = u64::from(self.limits.max_files.max(1));
        let list_error = |source| LogsError::Read {
            path: self.dir.clone(),
            source,
        };
        let mut highest = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(list_error)? {
            if let Some(n) = rotated_index(&entry.map_err(list_error)?.file_name()) {
                highest = highest.max(n);
            }
        }
        // After the shift, n.log would be number n+1, and only numbers below `keep` are kept.
        for n in (keep.saturating_sub(1).max(1)..=highest).rev() {
            remove_if_present(&self.dir.join(rotated_name(n)))?;
        }
        for n in (1..(keep - 1).min(highest + 1)).rev() {
            let from = self.dir.join(rotated_name(n));
            match std::fs::rename(&from, self.dir.join(rotated_name(n + 1))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(LogsError::Rotate {
                        path: from,
                        source: e,
                    });
                }
                _ => {}
            }
        }
        let first = self.dir.join(rotated_name(1));
        std::fs::rename(&self.path, &first).map_err(|source| LogsError::Rotate {
            path: self.path.clone(),
            source,
        })?;
        self.file = None;
        if keep == 1 {
            remove_if_present(&first)?;
        }
        self.open_current()
    }
}

fn remove_if_present(path: &Path) -> Result<(), LogsError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LogsError::Rotate {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}
