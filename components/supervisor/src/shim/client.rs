//! The server's side of a shim: spawning a shim process and talking to it over its socket.
//!
//! A [`ShimClient`] sends requests and awaits their responses; the shim's notices (a run exited)
//! and the loss of the connection are forwarded as [`ShimEvent`]s to the supervisor's inbox, so the
//! supervisor learns of an exit from the exit itself, never by polling.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Mutex as AsyncMutex, mpsc, oneshot};

use super::process::{READY_LINE, SOCKET_NAME};
use super::proto::{ExitStatus, FromShim, Notice, Op, Reply, Request, ShimStatus};
use crate::SupervisorError;
use crate::reaper::Reaper;

/// What a shim connection reports to the supervisor on its own.
#[derive(Debug, Clone, PartialEq)]
pub enum ShimEvent {
    /// The main process of `run` exited.
    Exited {
        /// Service name.
        name: String,
        /// Which connection reported it (see [`ShimClient::generation`]).
        generation: u64,
        /// The run that ended.
        run: u64,
        /// How it ended.
        status: ExitStatus,
    },
    /// The connection closed: the shim died (or was told to exit).
    Lost {
        /// Service name.
        name: String,
        /// Which connection.
        generation: u64,
    },
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// A connection to one shim.
#[derive(Debug)]
pub struct ShimClient {
    name: String,
    generation: u64,
    next_id: AtomicU64,
    pending: Pending,
    writer: AsyncMutex<OwnedWriteHalf>,
    reader: tokio::task::JoinHandle<()>,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// The read buffer of a shim connection: a status line is a few hundred bytes, and one buffer is
/// held per service (tokio's default of 8 KiB made 240 KiB of a 30-service server's heap).
const READ_BUFFER: usize = 1024;

/// The longest line a shim may send; a longer one ends the connection (the shim is then lost and
/// started afresh), so a misbehaving shim cannot grow the server's memory.
const MAX_LINE: u64 = 64 * 1024;

/// How long a request may take before the shim is considered stuck.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl ShimClient {
    /// Connects to the shim whose run directory is `run_dir`.
    pub async fn connect(
        name: &str,
        run_dir: &Path,
        events: mpsc::UnboundedSender<ShimEvent>,
    ) -> Result<ShimClient, SupervisorError> {
        let path = run_dir.join(SOCKET_NAME);
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|e| SupervisorError::io("connect to shim", &path, e))?;
        let (read, write) = stream.into_split();
        let pending: Pending = Arc::default();
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        let reader = tokio::spawn(read_loop(
            name.to_owned(),
            generation,
            BufReader::with_capacity(READ_BUFFER, read),
            pending.clone(),
            events,
        ));
        Ok(ShimClient {
            name: name.to_owned(),
            generation,
            next_id: AtomicU64::new(1),
            pending,
            writer: AsyncMutex::new(write),
            reader,
        })
    }

    /// Identifies this connection in [`ShimEvent`]s.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Sends `op` and waits for the shim's answer.
    pub async fn call(&self, op: Op) -> Result<ShimStatus, SupervisorError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        let mut line = serde_json::to_vec(&Request { id, op })
            .map_err(|e| SupervisorError::Protocol(format!("encode request: {e}")))?;
        line.push(b'\n');
        let lost = || SupervisorError::ShimLost {
            name: self.name.clone(),
        };
        {
            let mut w = self.writer.lock().await;
            w.write_all(&line).await.map_err(|_| lost())?;
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(Reply::Ok(status))) => Ok(status),
            Ok(Ok(Reply::Err(msg))) => Err(SupervisorError::ShimRefused {
                name: self.name.clone(),
                msg,
            }),
            Ok(Err(_)) => Err(lost()),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                Err(SupervisorError::Protocol(format!(
                    "shim of {} did not answer within {CALL_TIMEOUT:?}",
                    self.name
                )))
            }
        }
    }
}

impl Drop for ShimClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop(
    name: String,
    generation: u64,
    mut read: BufReader<tokio::net::unix::OwnedReadHalf>,
    pending: Pending,
    events: mpsc::UnboundedSender<ShimEvent>,
) {
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut read).take(MAX_LINE).read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) if !line.ends_with('\n') => {
                tracing::warn!(service = %name, "a line from the shim passed {MAX_LINE} bytes");
                break;
            }
            Ok(_) => {}
        }
        match serde_json::from_str::<FromShim>(&line) {
            Ok(FromShim::Response(r)) => {
                let waiter = pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&r.id);
                if let Some(tx) = waiter {
                    let _ = tx.send(r.result);
                }
            }
            Ok(FromShim::Notice(Notice::Exited { run, status })) => {
                let _ = events.send(ShimEvent::Exited {
                    name: name.clone(),
                    generation,
                    run,
                    status,
                });
            }
            Err(e) => tracing::warn!(service = %name, "bad line from shim: {e}"),
        }
    }
    // Fail every waiter by dropping its sender, then report the loss.
    pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    let _ = events.send(ShimEvent::Lost { name, generation });
}

/// Where a shim lives and what it runs from.
#[derive(Debug, Clone)]
pub struct ShimPaths {
    /// The `cloudlet` executable (it runs `cloudlet shim`).
    pub exe: PathBuf,
    /// The shim's run directory (socket, pid file, the shim's own stderr in `shim.log`).
    pub run_dir: PathBuf,
    /// The service's log directory.
    pub log_dir: PathBuf,
}

/// Starts a shim for `name` and waits until its socket accepts connections; returns its pid.
pub async fn spawn_shim(
    reaper: &Reaper,
    name: &str,
    paths: &ShimPaths,
) -> Result<u32, SupervisorError> {
    std::fs::create_dir_all(&paths.run_dir)
        .map_err(|e| SupervisorError::io("create", &paths.run_dir, e))?;
    let shim_log = paths.run_dir.join("shim.log");
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&shim_log)
        .map_err(|e| SupervisorError::io("open", &shim_log, e))?;
    let mut cmd = Command::new(&paths.exe);
    cmd.arg("shim")
        .arg("--name")
        .arg(name)
        .arg("--run-dir")
        .arg(&paths.run_dir)
        .arg("--log-dir")
        .arg(&paths.log_dir)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let (mut child, _exit) = reaper
        .spawn(&mut cmd)
        .map_err(|e| SupervisorError::io("spawn shim", &paths.exe, e))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| SupervisorError::Protocol("shim stdout missing".into()))?;
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout.into())
        .map_err(|e| SupervisorError::io("read from", &paths.exe, e))?;
    let mut lines = BufReader::new(pipe).lines();
    let first = tokio::time::timeout(CALL_TIMEOUT, lines.next_line()).await;
    match first {
        Ok(Ok(Some(line))) if line == READY_LINE => Ok(child.id()),
        Ok(_) => {
            let tail = std::fs::read_to_string(&shim_log).unwrap_or_default();
            let last = tail.lines().last().unwrap_or("no message").to_owned();
            Err(SupervisorError::Spawn(format!(
                "shim for {name} exited before it was ready: {last} (see {})",
                shim_log.display()
            )))
        }
        Err(_) => Err(SupervisorError::Spawn(format!(
            "shim for {name} was not ready within {CALL_TIMEOUT:?} (see {})",
            shim_log.display()
        ))),
    }
}
