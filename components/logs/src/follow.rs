//! Following a service's logs (`ctl logs -f`): the records [`read`](crate::read) would return,
//! then every record appended later, across rotations. Wake-ups come from inotify on the log
//! directory, wrapped in tokio's `AsyncFd` (the one `unsafe` of this crate: tokio 1.54 requires
//! it to register a raw descriptor). While no watch can be held (no inotify instance left, or the
//! directory does not exist yet or was removed) it polls every 100 ms instead and keeps trying to
//! watch. File reads run on tokio's blocking pool.
//!
//! It must never return a record twice or skip one that is still on disk, and must never block
//! the async runtime. Its only limit: files that retention deletes before the follower read them
//! (more than `max_files` rotations between two wake-ups) are gone.

use std::collections::VecDeque;
use std::os::fd::{AsFd as _, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::Stream;
use jiff::Timestamp;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use crate::LogsError;
use crate::format::LogRecord;
use crate::reader::{Cursor, LogQuery, RunSelect, Selection};

/// How often to look at the files when inotify cannot be used.
const POLL: Duration = Duration::from_millis(100);

/// Starts following the logs in `dir`: first the records `read(dir, query)` returns, then new
/// ones as they are appended (with `since` applied; with [`RunSelect::Current`], the current run
/// and any later one). With [`RunSelect::Previous`] there is nothing to follow: the follower ends
/// after the previous run's records.
pub async fn follow(dir: &Path, query: &LogQuery) -> Result<Follower, LogsError> {
    // Watch before reading, so that nothing appended after the read goes unnoticed.
    let watch = Watch::new(dir);
    let (dir_owned, query_owned) = (dir.to_path_buf(), query.clone());
    let (cursor, initial, top_run) = tokio::task::spawn_blocking(move || {
        let mut select = Selection::new(&query_owned);
        let cursor = Cursor::open(&dir_owned, &mut |r| select.push(r))?;
        let top_run = select.top_run();
        Ok::<_, LogsError>((cursor, select.finish(&dir_owned)?, top_run))
    })
    .await
    .map_err(|e| LogsError::Task(e.to_string()))??;
    Ok(Follower {
        ready: initial.into(),
        cursor: Some(cursor),
        reading: None,
        watch,
        since: query.since,
        min_run: match query.run {
            RunSelect::Current => top_run.unwrap_or(0),
            RunSelect::All | RunSelect::Previous => 0,
        },
        live: query.run != RunSelect::Previous,
    })
}

type Polled = (Cursor, Result<Vec<LogRecord>, LogsError>);

/// Records of a log directory as they come; made by [`follow`].
#[derive(Debug)]
pub struct Follower {
    /// Records read but not yet handed out.
    ready: VecDeque<LogRecord>,
    /// Where reading stopped; away (in `reading`) while a blocking read runs.
    cursor: Option<Cursor>,
    /// The blocking read under way. Kept here, so that `next` can be cancelled and called again.
    reading: Option<JoinHandle<Polled>>,
    watch: Watch,
    since: Option<Timestamp>,
    min_run: u64,
    /// False when there is nothing to follow (`Previous`).
    live: bool,
}

impl Follower {
    /// The next record, waiting for one to be appended if needed. `None` when following ended:
    /// after the records of [`RunSelect::Previous`], or after a [`LogsError::Task`] error. Other
    /// errors (a file that cannot be read) do not end it: the next call tries again.
    /// Cancel-safe: dropping the future loses no record.
    pub async fn next(&mut self) -> Option<Result<LogRecord, LogsError>> {
        loop {
            if let Some(record) = self.ready.pop_front() {
                return Some(Ok(record));
            }
            if !self.live {
                return None;
            }
            if self.reading.is_none() {
                self.watch.changed().await;
                let mut cursor = self.cursor.take()?;
                self.reading = Some(tokio::task::spawn_blocking(move || {
                    let mut records = Vec::new();
                    let result = cursor.poll(&mut |r| records.push(r));
                    (cursor, result.map(|()| records))
                }));
            }
            let polled = match &mut self.reading {
                Some(task) => task.await,
                None => continue,
            };
            self.reading = None;
            match polled {
                Ok((cursor, result)) => {
                    self.cursor = Some(cursor);
                    let (since, min_run) = (self.since, self.min_run);
                    let wanted =
                        |r: &LogRecord| r.run >= min_run && since.is_none_or(|s| r.ts >= s);
                    match result {
                        Ok(records) => self.ready.extend(records.into_iter().filter(wanted)),
                        Err(e) => return Some(Err(e)),
                    }
                }
                Err(e) => {
                    self.live = false;
                    return Some(Err(LogsError::Task(e.to_string())));
                }
            }
        }
    }

    /// This follower as a [`Stream`] (for streaming response bodies).
    pub fn into_stream(self) -> impl Stream<Item = Result<LogRecord, LogsError>> {
        futures_util::stream::unfold(self, |mut follower| async move {
            follower.next().await.map(|item| (item, follower))
        })
    }
}

/// Wakes the follower when something in the log directory changes.
#[derive(Debug)]
struct Watch {
    dir: PathBuf,
    /// `None` if no inotify instance could be made: then only polling.
    inotify: Option<AsyncFd<InotifyFd>>,
    /// The directory is watched (else: poll, and try to watch again).
    watching: bool,
}

/// Gives tokio the raw descriptor it registers with epoll.
#[derive(Debug)]
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Watch {
    fn new(dir: &Path) -> Watch {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .ok()
            .and_then(|inotify| {
                // SAFETY: `InotifyFd` owns its descriptor (an `OwnedFd` inside `Inotify`, closed
                // only when dropped) and `as_raw_fd` always returns that one; the `AsyncFd` owns
                // the `InotifyFd`, so the descriptor stays open and the same while registered.
                unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }
                    .ok()
            });
        let mut watch = Watch {
            dir: dir.to_path_buf(),
            inotify,
            watching: false,
        };
        watch.try_watch();
        watch
    }

    fn try_watch(&mut self) {
        if let Some(fd) = &self.inotify {
            let mask = AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_ONLYDIR;
            self.watching = fd.get_ref().0.add_watch(&self.dir, mask).is_ok();
        }
    }

    /// Returns after something in the directory may have changed.
    async fn changed(&mut self) {
        let Some(fd) = self.inotify.as_ref().filter(|_| self.watching) else {
            tokio::time::sleep(POLL).await;
            self.try_watch();
            return;
        };
        let Ok(mut guard) = fd.readable().await else {
            self.watching = false;
            return;
        };
        // Drain every queued event; one look at the files answers them all.
        loop {
            match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
                Ok(Ok(events)) => {
                    if events
                        .iter()
                        .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                    {
                        // The directory is gone: poll until it (or a new one) can be watched.
                        self.watching = false;
                    }
                }
                Ok(Err(_)) => {
                    self.watching = false;
                    return;
                }
                Err(_would_block) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(20);

    #[tokio::test]
    async fn inotify_wakes_on_changes_and_the_watch_follows_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("svc");
        let mut watch = Watch::new(&dir);
        assert!(watch.inotify.is_some());
        assert!(
            !watch.watching,
            "nothing to watch before the directory exists"
        );
        std::fs::create_dir(&dir).unwrap();
        tokio::time::timeout(WAIT, watch.changed()).await.unwrap();
        assert!(watch.watching);

        // While watching there is no timer: only an event ends the wait.
        assert!(
            tokio::time::timeout(POLL * 3, watch.changed())
                .await
                .is_err()
        );
        std::fs::write(dir.join("current.log"), "x").unwrap();
        tokio::time::timeout(WAIT, watch.changed()).await.unwrap();
        assert!(watch.watching);

        std::fs::remove_dir_all(&dir).unwrap();
        tokio::time::timeout(WAIT, async {
            while watch.watching {
                watch.changed().await;
            }
        })
        .await
        .unwrap();
        std::fs::create_dir(&dir).unwrap();
        tokio::time::timeout(WAIT, watch.changed()).await.unwrap();
        assert!(watch.watching, "watching the new directory");
    }
}
