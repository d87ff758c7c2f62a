//! Per-service log files: the line format, writing with size-based rotation, reading across
//! rotations (tail, since, current and previous run), following, and pruning.
//!
//! This crate must never lose a line silently: a line that could not be written is counted
//! ([`LogWriter::dropped_total`]) and the count is written into the log as soon as writing works
//! again (`dropped N lines: <first error>`).
//!
//! # Files
//!
//! Each service has a directory of its own. The writer appends to `current.log`; when that would
//! grow past [`LogLimits::max_size`] it is renamed to `1.log` (after `n.log` became `(n+1).log`
//! and the oldest beyond [`LogLimits::max_files`] was deleted) and a new `current.log` is created.
//! So the order, oldest first, is `N.log`, ..., `2.log`, `1.log`, `current.log`. Files are created
//! with mode 0600 and the directory with 0700: logs may hold secrets.
//!
//! # Record format (stable: other tools may parse these files)
//!
//! One record per line, each ending in `\n`:
//!
//! ```text
//! <timestamp> <stream> <run> <F|P> <text>
//! 2026-11-27T03:18:33.123456789Z stdout 3 F listening on :8080
//! ```
//!
//! - `timestamp`: RFC 3339 in UTC with exactly nine fractional digits and a `Z`.
//! - `stream`: `stdout`, `stderr`, or `event` (lines the shim writes itself: `started pid 123`,
//!   `exited with code 1`, `dropped 12 lines: <reason>`).
//! - `run`: the decimal number of the service process run (1, 2, 3, ...) the line belongs to.
//! - `F` is a full line; `P` is a part of a line longer than [`MAX_LINE`] (16 KiB): such a line
//!   is stored as one or more `P` records followed by a final `F` record. A last line without a
//!   trailing newline (the pipe closed) is stored as `F`.
//! - `text`: the raw bytes of the line without its `\n` (a `\r` before it is kept), after exactly
//!   one space. Bytes that are not UTF-8 are written as they are; the reader decodes lossily.
//!   Text never contains `\n`: [`LogWriter::write`] stores text holding `\n` as several records.
//!
//! # Durability
//!
//! The writer never calls fsync (it would cost a disk flush per line): a record is one `write(2)`
//! into the page cache, so it survives a crash of the shim or of cloudlet, but not a power loss.
//!
//! # Reading
//!
//! [`read`] returns records oldest first; a line that cannot be parsed (a torn write after a
//! crash or a full disk, a hand-edited file) is not fatal and not hidden: it comes back as an
//! `event` record with the text `unreadable log record: <the line>`, with the timestamp and run of
//! the record before it. [`follow`] gives the same records and then the ones appended later,
//! woken by inotify on the directory (or, where inotify is not available, by a 100 ms poll).

#![warn(missing_docs)]

mod error;
mod follow;
mod format;
mod layout;
mod prune;
mod reader;
mod splitter;
mod writer;

pub use error::LogsError;
pub use follow::{Follower, follow};
pub use format::{LogFormat, LogRecord, Stream};
pub use prune::{PruneReport, prune};
pub use reader::{LogQuery, RunSelect, read};
pub use splitter::{LineSplitter, MAX_LINE};
pub use writer::{LogLimits, LogWriter};
