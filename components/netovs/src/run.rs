//! How this crate runs the tools it needs (`ovs-ofctl`, `ip`, `ping`): through a [`Runner`] the
//! caller gives it, because a cloudlet node reaps every child of its process (it is a child
//! subreaper) and only its own reaper may wait for one. [`TokioRunner`] is the runner for a
//! process that reaps nothing by itself (tests, tools).
//!
//! This module only runs what it is asked to; it never decides what.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// A command to run: program, arguments, what to feed its stdin, and how long it may take.
#[derive(Debug, Clone)]
pub struct Job {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its stdin (none: `/dev/null`).
    pub input: Option<String>,
    /// It is killed after this long.
    pub timeout: Duration,
}

impl Job {
    /// `program args...` with no input and a 10 s timeout.
    pub fn new(program: impl Into<PathBuf>, args: &[&str]) -> Job {
        Job {
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            input: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// The command line, for messages.
    pub fn line(&self) -> String {
        format!("{} {}", self.program.display(), self.args.join(" "))
    }
}

/// The result of a [`Runner::run`].
pub type Running<'a> = Pin<Box<dyn Future<Output = std::io::Result<Output>> + Send + 'a>>;

/// Runs a [`Job`] to completion and returns its exit status and output.
pub trait Runner: Send + Sync + fmt::Debug {
    /// Runs `job`.
    fn run(&self, job: Job) -> Running<'_>;
}

/// Runs jobs with `tokio::process`: only for a process nothing else reaps children in.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioRunner;

impl Runner for TokioRunner {
    fn run(&self, job: Job) -> Running<'_> {
        Box::pin(async move {
            let mut child = tokio::process::Command::new(&job.program)
                .args(&job.args)
                .stdin(if job.input.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            if let (Some(input), Some(mut stdin)) = (job.input, child.stdin.take()) {
                // A program that exits without reading all of it is not an error here.
                let _ = stdin.write_all(input.as_bytes()).await;
            }
            tokio::time::timeout(job.timeout, child.wait_with_output())
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("killed after {:?}", job.timeout),
                    )
                })?
        })
    }
}
