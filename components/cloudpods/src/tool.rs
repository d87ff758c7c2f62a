//! Running a tool the bootstrap needs (the `mariadb` client, `mariadb-install-db`) to its end
//! within a deadline, with its input given and its output kept (bounded), and a private file
//! for what must not go on a command line.
//!
//! Written on `std::process` rather than `tokio::process`: a step runs one tool at a time, and
//! tokio's process driver (its SIGCHLD handling) would only add to the one binary every node and
//! every shim maps.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How much of each output stream is kept.
const MAX_OUTPUT: usize = 64 << 10;
/// How often a running tool is looked at.
const POLL: Duration = Duration::from_millis(20);

/// How a tool ended.
#[derive(Debug)]
pub struct Ran {
    /// Its exit status.
    pub status: ExitStatus,
    /// The first [`MAX_OUTPUT`] bytes of its standard output.
    pub stdout: Vec<u8>,
    /// The first [`MAX_OUTPUT`] bytes of its standard error.
    pub stderr: Vec<u8>,
}

impl Ran {
    /// Its output as text, stderr then stdout, trimmed.
    pub fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.stderr).trim().to_owned();
        let out = String::from_utf8_lossy(&self.stdout);
        if !out.trim().is_empty() {
            if !text.is_empty() {
                text.push_str(" | ");
            }
            text.push_str(out.trim());
        }
        text
    }
}

/// Runs `command` with `input` on its standard input; `Ok(None)` when it did not end within
/// `limit` (it is killed then).
pub fn run(command: &mut Command, input: &[u8], limit: Duration) -> std::io::Result<Option<Ran>> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    if let Some(mut stdin) = child.stdin.take() {
        // A tool that exits without reading its input closes the pipe: not an error here, its
        // status says what happened.
        let _ = stdin.write_all(input);
    }
    let Some(status) = wait(&mut child, limit)? else {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(None);
    };
    let join = |h: std::thread::JoinHandle<Vec<u8>>| h.join().unwrap_or_default();
    Ok(Some(Ran {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    }))
}

fn wait(child: &mut Child, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// Reads a stream to its end on a thread of its own (so that a full pipe never blocks the tool),
/// keeping the first [`MAX_OUTPUT`] bytes.
fn drain(stream: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut stream) = stream {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
        kept
    })
}

/// A file only this user may read, made new (never an existing one, never through a link) in
/// `dir`, removed when dropped.
#[derive(Debug)]
pub struct PrivateFile {
    path: PathBuf,
}

impl PrivateFile {
    /// Writes `content` to a new file named after `prefix` in `dir`, mode 0600.
    pub fn new(dir: &Path, prefix: &str, content: &[u8]) -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = dir.join(format!("{prefix}{}-{nanos}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let file_guard = Self { path };
        file.write_all(content)?;
        file.sync_all()?;
        Ok(file_guard)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_gets_its_input_and_a_hung_one_is_killed_at_its_deadline() {
        let ran = run(
            Command::new("/bin/sh").args(["-c", "cat; echo oops >&2; exit 3"]),
            b"hello\n",
            Duration::from_secs(10),
        )
        .unwrap()
        .unwrap();
        assert_eq!(ran.status.code(), Some(3));
        assert_eq!(ran.stdout, b"hello\n");
        assert_eq!(ran.text(), "oops | hello");
        let started = Instant::now();
        let hung = run(
            Command::new("/bin/sleep").arg("30"),
            b"",
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(hung.is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_private_file_is_0600_new_and_gone_after_use() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let f = PrivateFile::new(dir.path(), ".t-", b"secret").unwrap();
            let mode = std::fs::metadata(f.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert_eq!(std::fs::read(f.path()).unwrap(), b"secret");
            f.path().to_owned()
        };
        assert!(!path.exists());
    }
}
